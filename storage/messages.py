"""The Slack bot's message bookkeeping (bot.messages.Messages): where each request's message was
posted, and which worker is posting it. Its own table; the core never reads it."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, or_, select, update

from access.ports import Duplicate
from access.requests import Kind, State
from storage.db import Database, unique
from storage.claims import SqlClaims
from storage.models import (CertificateRecord, JobClaim, RequestRecord, SlackMessage,
                            SlackRevocationNotice)
from storage.requests import in_state, of_kind

_MESSAGES = SlackMessage.__table__
_REQUESTS = RequestRecord.__table__
_CERTIFICATES = CertificateRecord.__table__
_NOTICES = SlackRevocationNotice.__table__
_CLAIMS = JobClaim.__table__
_FOREVER = datetime(9999, 1, 1, tzinfo=timezone.utc)


def _postable(now: datetime, lease: timedelta):
    """Not posted, and nobody is posting it (a claim older than `lease` lapsed)."""
    return and_(_MESSAGES.c.ts.is_(None), or_(_MESSAGES.c.post_claimed_at.is_(None),
                                              _MESSAGES.c.post_claimed_at < now - lease))


class SqlMessages:
    def __init__(self, db: Database) -> None:
        self.db = db

    def expect(self, request_id: str, channel: str) -> None:
        try:
            with self.db.transaction() as connection, unique("slack message"):
                connection.execute(_MESSAGES.insert().values(request_id=request_id, channel=channel))
        except Duplicate:
            pass  # expected (or posted) already

    def claim(self, request_id: str, *, now: datetime, lease: timedelta) -> str | None:
        with self.db.transaction() as connection:
            return connection.execute(
                update(_MESSAGES)
                .where(_MESSAGES.c.request_id == request_id, _postable(now, lease))
                .values(post_claimed_at=now).returning(_MESSAGES.c.channel)).scalar()

    def release(self, request_id: str) -> None:
        with self.db.transaction() as connection:
            connection.execute(update(_MESSAGES)
                            .where(_MESSAGES.c.request_id == request_id, _MESSAGES.c.ts.is_(None))
                            .values(post_claimed_at=None))

    def posted(self, request_id: str, channel: str, ts: str) -> None:
        with self.db.transaction() as connection:
            moved = connection.execute(update(_MESSAGES)
                                    .where(_MESSAGES.c.request_id == request_id)
                                    .values(channel=channel, ts=ts)).rowcount
            if not moved:
                with unique("slack message"):
                    connection.execute(_MESSAGES.insert().values(request_id=request_id,
                                                              channel=channel, ts=ts))

    def get(self, request_id: str) -> tuple[str, str] | None:
        with self.db.transaction(read_only=True) as connection:
            row = connection.execute(select(_MESSAGES.c.channel, _MESSAGES.c.ts).where(
                _MESSAGES.c.request_id == request_id, _MESSAGES.c.ts.is_not(None))).first()
        return None if row is None else (row.channel, row.ts)

    def unposted(self, *, now: datetime, lease: timedelta) -> list[tuple[str, str | None]]:
        """(request id, channel or None) of pending requests whose message nobody has posted or
        is posting; None: the request was stored but its channel never was (a crash between)."""
        with self.db.transaction(read_only=True) as connection:
            rows = connection.execute(
                select(_REQUESTS.c.id, _MESSAGES.c.channel)
                .select_from(_REQUESTS.outerjoin(_MESSAGES,
                                                 _MESSAGES.c.request_id == _REQUESTS.c.id))
                .where(in_state(State.PENDING), _REQUESTS.c.kind == Kind.REQUEST.value,
                       or_(_MESSAGES.c.request_id.is_(None), _postable(now, lease)))
                .order_by(_REQUESTS.c.created_at))
            return [(request_id, channel) for request_id, channel in rows]

    def unposted_alerts(self, *, now: datetime, lease: timedelta) -> list[str]:
        """Break-glass uses awaiting review whose alert nobody has posted or is posting."""
        with self.db.transaction(read_only=True) as connection:
            # ix_requests_breakglass_unreviewed. Escalated or not: the alert carries the buttons
            # (an escalation posted first, when Slack came back, must not cancel the alert).
            return list(connection.execute(
                select(_REQUESTS.c.id)
                .select_from(_REQUESTS.outerjoin(_MESSAGES,
                                                 _MESSAGES.c.request_id == _REQUESTS.c.id))
                .where(of_kind(Kind.BREAKGLASS), _REQUESTS.c.reviewed_at.is_(None),
                       or_(_MESSAGES.c.request_id.is_(None), _postable(now, lease)))
                .order_by(_REQUESTS.c.created_at)).scalars())

    def claim_revocation_notice(self, serial: int, *, now: datetime) -> bool:
        try:
            with self.db.transaction() as connection, unique("revocation notice"):
                connection.execute(_NOTICES.insert().values(serial=serial, at=now))
        except Duplicate:
            return False
        return True

    def unannounced_revocations(self, *, now: datetime) -> list[int]:
        with self.db.transaction(read_only=True) as connection:
            # ix_certificates_revoked: live revoked certificates only (an expired one opens nothing)
            return list(connection.execute(
                select(_CERTIFICATES.c.serial)
                .select_from(_CERTIFICATES.outerjoin(_NOTICES,
                                                     _NOTICES.c.serial == _CERTIFICATES.c.serial))
                .where(_CERTIFICATES.c.valid_before > now, _CERTIFICATES.c.revoked_at.is_not(None),
                       _CERTIFICATES.c.holder.is_not(None), _NOTICES.c.serial.is_(None))
                .order_by(_CERTIFICATES.c.revoked_at).limit(100)).scalars())

    def claim_once(self, name: str, *, now: datetime) -> bool:
        # A holder of its own: nobody renews a once-only claim, not even whoever made it.
        return SqlClaims(self.db).claim(name, holder=f"once:{secrets.token_hex(8)}", now=now,
                                        until=_FOREVER)

    def release_once(self, name: str) -> None:
        with self.db.transaction() as connection:
            connection.execute(_CLAIMS.delete().where(_CLAIMS.c.name == name))
