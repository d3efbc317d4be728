"""Requests and their votes (access.ports.Requests). State moves only by compare-and-set on
(state, version)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, func, literal, or_, select, update
from sqlmodel import Session

from access.requests import Kind, Request, State, Vote
from storage.db import unique
from storage.models import ApprovalRecord, RequestRecord

_REQUESTS = RequestRecord.__table__
_APPROVALS = ApprovalRecord.__table__
# Every column but the issuing bookkeeping, which the domain does not see.
_COLUMNS = [_REQUESTS.c[name] for name in (
    "id", "kind", "requester", "target", "duration_seconds", "reason", "key_fingerprint",
    "public_key", "state", "version", "created_at", "expires_at", "decided_at", "issue_error",
    "reviewed_by")]


def _literally(column, value: State | Kind):
    """`column = '<value>'` with the value written into the SQL, not bound. A partial index
    (storage.models.LIVE_REQUEST_INDEXES) serves a query only when the planner can see that the
    query's WHERE implies the index's; PostgreSQL's generic plan for a prepared statement
    (psycopg prepares a query from its sixth run on) cannot see a bound value."""
    return column == literal(value.value, literal_execute=True)


def in_state(state: State):
    return _literally(_REQUESTS.c.state, state)


def _request(row, votes=()) -> Request:
    return Request(
        id=row.id, kind=Kind(row.kind), requester=row.requester, target=row.target,
        duration=timedelta(seconds=row.duration_seconds), reason=row.reason,
        key_fingerprint=row.key_fingerprint, public_key=row.public_key, state=State(row.state),
        created_at=row.created_at, expires_at=row.expires_at, votes=tuple(votes),
        version=row.version, decided_at=row.decided_at, issue_error=row.issue_error,
        reviewed_by=row.reviewed_by)


class SqlRequests:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, request: Request) -> None:
        self.session.execute(_REQUESTS.insert().values(
            id=request.id, kind=request.kind.value, requester=request.requester,
            target=request.target, duration_seconds=int(request.duration.total_seconds()),
            reason=request.reason, key_fingerprint=request.key_fingerprint,
            public_key=request.public_key, state=request.state.value, version=request.version,
            created_at=request.created_at, expires_at=request.expires_at,
            decided_at=request.decided_at, issue_attempts=0))

    def get(self, request_id: str, *, lock: bool = False) -> Request | None:
        # lock: the row stays locked (PostgreSQL) until the transaction ends, so concurrent
        # voters queue instead of racing; SQLite's write lock already does that.
        query = select(*_COLUMNS).where(_REQUESTS.c.id == request_id)
        row = self.session.execute(query.with_for_update() if lock else query).first()
        return None if row is None else _request(row, self._votes(request_id))

    def _votes(self, request_id: str) -> list[Vote]:
        rows = self.session.execute(
            select(_APPROVALS.c.approver, _APPROVALS.c.approve, _APPROVALS.c.at)
            .where(_APPROVALS.c.request_id == request_id)
            .order_by(_APPROVALS.c.at, _APPROVALS.c.id))
        return [Vote(approver=r.approver, approve=r.approve, at=r.at) for r in rows]

    def move(self, before: Request, after: Request) -> bool:
        result = self.session.execute(
            update(_REQUESTS)
            .where(_REQUESTS.c.id == before.id, _REQUESTS.c.version == before.version,
                   _REQUESTS.c.state == before.state.value)
            .values(state=after.state.value, decided_at=after.decided_at,
                    version=_REQUESTS.c.version + 1))
        return result.rowcount == 1

    def add_vote(self, request_id: str, vote: Vote) -> None:
        with unique("vote"):
            self.session.execute(_APPROVALS.insert().values(
                request_id=request_id, approver=vote.approver, approve=vote.approve, at=vote.at))

    def pending_count(self, requester: str, target: str) -> int:
        return self.session.scalar(select(func.count()).select_from(_REQUESTS).where(
            _REQUESTS.c.requester == requester, _REQUESTS.c.target == target,
            in_state(State.PENDING))) or 0

    def pending_of(self, requester: str) -> list[Request]:
        rows = self.session.execute(select(*_COLUMNS).where(
            _REQUESTS.c.requester == requester, in_state(State.PENDING))
            .order_by(_REQUESTS.c.created_at))
        return [_request(row) for row in rows]

    def past_ttl(self, now: datetime, limit: int) -> list[Request]:
        # ix_requests_pending_expires_at
        rows = self.session.execute(select(*_COLUMNS).where(
            in_state(State.PENDING), _REQUESTS.c.expires_at <= now)
            .order_by(_REQUESTS.c.expires_at).limit(limit))
        return [_request(row) for row in rows]

    def claim_issue(self, request_id: str, *, serial: int, now: datetime,
                    lease: timedelta) -> Request | None:
        claimed = self.session.execute(
            update(_REQUESTS)
            .where(_REQUESTS.c.id == request_id, _REQUESTS.c.state == State.APPROVED.value,
                   or_(_REQUESTS.c.issue_claimed_at.is_(None),
                       _REQUESTS.c.issue_claimed_at < now - lease))
            .values(issue_serial=serial, issue_claimed_at=now,
                    issue_attempts=_REQUESTS.c.issue_attempts + 1)
            .returning(*_COLUMNS)).first()
        return None if claimed is None else _request(claimed, self._votes(request_id))

    def release_issue(self, request_id: str, *, serial: int, error: str) -> None:
        self.session.execute(
            update(_REQUESTS)
            .where(_REQUESTS.c.id == request_id, _REQUESTS.c.issue_serial == serial)
            .values(issue_claimed_at=None, issue_error=error[:1000]))

    def mark_issued(self, request_id: str, *, serial: int, now: datetime) -> bool:
        result = self.session.execute(
            update(_REQUESTS)
            .where(_REQUESTS.c.id == request_id, _REQUESTS.c.state == State.APPROVED.value,
                   _REQUESTS.c.issue_serial == serial)
            .values(state=State.ISSUED.value, issued_at=now, issue_error=None,
                    version=_REQUESTS.c.version + 1))
        return result.rowcount == 1

    def issuable(self, now: datetime, lease: timedelta) -> list[str]:
        # A fresh approval belongs to the worker that approved it, which issues it next; a sweep
        # taking it first would leave that worker (a break-glass user waiting) with nothing.
        lapsed = now - lease
        unclaimed = _REQUESTS.c.issue_claimed_at.is_(None)
        return list(self.session.scalars(
            select(_REQUESTS.c.id).where(
                in_state(State.APPROVED),
                or_(_REQUESTS.c.issue_claimed_at < lapsed,
                    and_(unclaimed, _REQUESTS.c.issue_attempts > 0),
                    and_(unclaimed, func.coalesce(_REQUESTS.c.decided_at,
                                                  _REQUESTS.c.created_at) < lapsed)))))

    def mark_reviewed(self, request_id: str, *, by: str, now: datetime) -> bool:
        result = self.session.execute(
            update(_REQUESTS)
            .where(_REQUESTS.c.id == request_id, _REQUESTS.c.kind == Kind.BREAKGLASS.value,
                   _REQUESTS.c.reviewed_at.is_(None))
            .values(reviewed_at=now, reviewed_by=by))
        return result.rowcount == 1

    def escalate_unreviewed(self, *, created_before: datetime, now: datetime) -> list[Request]:
        # ix_requests_breakglass_unreviewed; the UPDATE's condition lets one replica win each.
        due = self.session.execute(select(*_COLUMNS).where(
            _literally(_REQUESTS.c.kind, Kind.BREAKGLASS), _REQUESTS.c.reviewed_at.is_(None),
            _REQUESTS.c.review_escalated_at.is_(None), _REQUESTS.c.created_at <= created_before))
        moved = []
        for row in list(due):
            result = self.session.execute(
                update(_REQUESTS)
                .where(_REQUESTS.c.id == row.id, _REQUESTS.c.review_escalated_at.is_(None))
                .values(review_escalated_at=now))
            if result.rowcount == 1:
                moved.append(_request(row))
        return moved

