"""Where the bot posted each request's message (a request's card, a break-glass use's alert), so
every later render updates the same message (and only one worker posts it). The bot's own
bookkeeping: storage.messages implements it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

# A claim to post that is older than this was abandoned (a crashed replica): others may post.
POST_LEASE = timedelta(minutes=2)


class Messages(Protocol):
    def expect(self, request_id: str, channel: str) -> None:
        """The request's message is to be posted in `channel` (idempotent)."""

    def claim(self, request_id: str, *, now: datetime, lease: timedelta) -> str | None:
        """The channel to post in, for the one worker that should post it now; else None."""

    def release(self, request_id: str) -> None:
        """Posting failed: let the next sweep try at once."""

    def posted(self, request_id: str, channel: str, ts: str) -> None: ...

    def get(self, request_id: str) -> tuple[str, str] | None:
        """(channel, ts) of the request's message once posted."""

    def unposted(self, *, now: datetime, lease: timedelta) -> list[tuple[str, str | None]]:
        """(request id, channel or None if never recorded) of pending requests nobody posted."""

    def unposted_alerts(self, *, now: datetime, lease: timedelta) -> list[str]:
        """Break-glass uses awaiting review whose alert nobody posted (or is posting)."""

    def claim_once(self, name: str, *, now: datetime) -> bool:
        """True for the one worker that should do `name` (a day's digest), ever."""

    def release_once(self, name: str) -> None:
        """Doing it failed: let the next attempt claim it."""

    def claim_revocation_notice(self, serial: int, *, now: datetime) -> bool:
        """True for the one worker that should announce this revocation in Slack."""

    def unannounced_revocations(self, *, now: datetime) -> list[int]:
        """Serials of live certificates revoked with no announcement claimed (a revocation made
        by `vouch revoke`, or by a replica that died before announcing it)."""
