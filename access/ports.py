"""What the use cases need from persistence, stated as small interfaces; `storage` implements
them (SQLite, PostgreSQL), the unit tests fake them in memory.

A Unit is one transaction: committed when its `with` block ends, rolled back if it raises.
Repositories take and return domain values, never rows. State moves by compare-and-set, so a
repository answers False (or None) when someone else got there first; Duplicate is a unique
constraint's refusal (a concurrent double click, a serial or request certified twice).
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from access.requests import Request, Vote
from ca.cert import Certificate
from ca.keys import PublicKey


class Duplicate(Exception):
    """A unique constraint refused the write: someone else already did this (a lost race)."""


@dataclass(frozen=True)
class RegisteredKey:
    """A public key a user registered; certificates are issued for these only."""

    user: str
    key_type: str
    public_key: str  # OpenSSH line without comment
    fingerprint: str
    comment: str
    added_at: datetime


@dataclass(frozen=True)
class StoredCertificate:
    """A certificate Vouch signed, as recorded."""

    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_before: datetime
    holder: str | None  # the Slack user it was issued to; None when signed directly
    request_id: str | None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    issued_at: datetime | None = None
    line: str | None = None  # the OpenSSH certificate line; None if recorded before Vouch kept it


@dataclass(frozen=True)
class HostToken:
    """A one-time host enrolment token, as stored: its hash only, never the token itself."""

    token_hash: str  # sha256 hex of the token
    hostnames: tuple[str, ...]
    created_at: datetime
    created_by: str
    expires_at: datetime
    used_at: datetime | None = None
    used_by: str | None = None  # the fingerprint of the first host key it certified


@dataclass(frozen=True)
class StoredHostCertificate:
    """A host certificate the host CA signed, as recorded."""

    serial: int
    key_id: str
    hostnames: tuple[str, ...]
    public_key: str  # the host key, OpenSSH line without comment
    fingerprint: str
    ca_key: str  # the host CA's public key line: a KRL section per CA key
    valid_after: datetime
    valid_before: datetime
    issued_at: datetime
    issued_by: str
    via: str  # "token", "renewal" or "operator"
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None

    def live(self, now: datetime) -> bool:
        return self.revoked_at is None and self.valid_after <= now < self.valid_before


@dataclass(frozen=True)
class Activity:
    """What happened in a window of time, for the daily digest: counts per target."""

    issued: dict[str, int]  # certificates issued for approved requests
    denied: dict[str, int]
    expired: dict[str, int]
    revoked: dict[str, int]  # "(signed directly)" for certificates of no request
    breakglass: list[Request]  # the uses, with their review state


class Requests(Protocol):
    def add(self, request: Request) -> None: ...

    def get(self, request_id: str, *, lock: bool = False) -> Request | None:
        """With its votes. lock: hold the row until the unit ends (voters queue, not race)."""

    def move(self, before: Request, after: Request) -> bool:
        """Store `after`'s state, decision and expiry times, issue error and canceller if the
        request is still `before` (its state and version); False when someone else moved it
        first."""

    def add_vote(self, request_id: str, vote: Vote) -> None:
        """Raises Duplicate when this approver already voted."""

    def pending_count(self, requester: str, target: str) -> int: ...

    def pending_of(self, requester: str) -> list[Request]: ...

    def open_of(self, requester: str) -> list[Request]:
        """Their requests nobody has finished: pending, or approved with no certificate yet."""

    def pending(self, now: datetime, limit: int) -> list[Request]:
        """Undecided requests not yet past their TTL, with their votes, soonest expiry first."""

    def unreviewed_breakglass(self, limit: int) -> list[Request]:
        """Break-glass uses nobody has reviewed, oldest first."""

    def past_ttl(self, now: datetime, limit: int, *, lease: timedelta) -> list[Request]:
        """Pending requests, and approved ones nobody is issuing (no claim younger than
        `lease`), whose expiry time passed; oldest first."""

    def claim_issue(self, request_id: str, *, serial: int, now: datetime, lease: timedelta,
                    max_attempts: int) -> Request | None:
        """Reserve `serial` for an approved request unless someone holds a claim younger than
        `lease` or it was tried `max_attempts` times; the request, or None."""

    def release_issue(self, request_id: str, *, serial: int, error: str,
                      retry_at: datetime) -> None:
        """Signing under the claim on `serial` failed: record why; a retry may claim it from
        `retry_at`."""

    def mark_issued(self, request_id: str, *, serial: int, now: datetime) -> bool:
        """approved -> issued, only for the holder of the claim on `serial`."""

    def issuable(self, now: datetime, lease: timedelta, max_attempts: int) -> list[str]:
        """Approved requests to issue again, tried fewer than `max_attempts` times: failed and
        due (retry_at passed), abandoned (claim older than `lease`), or never tried within
        `lease` of their approval."""

    def mark_reviewed(self, request_id: str, *, by: str, now: datetime, note: str | None) -> bool:
        """The first review of a break-glass use stands; False if it was reviewed already."""

    def escalate_unreviewed(self, *, due_before: datetime, now: datetime) -> list[Request]:
        """Unreviewed break-glass uses created before `due_before` and not escalated since:
        mark them escalated `now`; each as it was before (its last escalation)."""

    def unescalate(self, request: Request, *, escalated_at: datetime) -> bool:
        """Undo the mark made at `escalated_at` (the escalation was not posted): back to
        `request.escalated_at`. False if someone else moved it meanwhile."""


class Certificates(Protocol):
    def add(self, certificate: Certificate, *, ca_fingerprint: str, issued_at: datetime,
            issued_by: str, request_id: str | None, holder: str | None) -> None:
        """Raises Duplicate when the serial or the request already has a certificate."""

    def by_serial(self, serial: int) -> StoredCertificate | None: ...

    def of_request(self, request_id: str) -> list[StoredCertificate]: ...

    def live_of(self, holder: str, now: datetime) -> list[StoredCertificate]: ...

    def live_holders(self, now: datetime) -> list[str]:
        """Everyone holding a live (unexpired, unrevoked) certificate."""

    def due_reminder(self, now: datetime, within: timedelta, limit: int) -> list[StoredCertificate]:
        """Live certificates of a holder expiring within `within`, not yet reminded."""

    def mark_reminded(self, serial: int, at: datetime) -> bool:
        """Once only: False when a reminder was already recorded."""

    def mark_revoked(self, serial: int, *, at: datetime, by: str, reason: str | None) -> bool:
        """Once only: False when it was revoked already (the first revocation stands)."""

    def revoked_serials(self, valid_after: datetime, *, ca_fingerprint: str
                        ) -> tuple[set[int], set[int], int]:
        """Serials revoked and still valid after `valid_after`: those signed by the CA with
        `ca_fingerprint`, those signed by any other (a rotated-out CA), and a version that grows
        with every revocation."""


class Keys(Protocol):
    def add(self, user: str, key: PublicKey, at: datetime) -> tuple[RegisteredKey, bool]:
        """Register (or restore a removed) key; True when it was not active before. Raises
        Duplicate when another user's active key it is."""

    def active(self, user: str) -> list[RegisteredKey]:
        """The user's keys, newest first."""

    def holders(self) -> list[str]:
        """Everyone with an active key."""

    def holder(self, fingerprint: str) -> str | None:
        """The user whose active key this is, if anyone's."""

    def remove(self, user: str, fingerprint: str, at: datetime) -> RegisteredKey | None: ...


class Users(Protocol):
    def remember(self, user: str, *, name: str, tz: str | None, at: datetime) -> None: ...

    def opened_home(self, user: str, at: datetime) -> None:
        """The user opened their App Home (it is kept fresh for a while after)."""

    def home_viewers(self, since: datetime, among: Collection[str] | None = None) -> list[str]:
        """Who opened their App Home at `since` or later (only those of `among`, if given)."""


class Signatures(Protocol):
    def first_use(self, replay_key: str, *, at: datetime, forget_before: datetime) -> bool:
        """Remember a signed call; False if it was seen before (a replay). Calls seen before
        `forget_before` may be forgotten."""


class Hosts(Protocol):
    def add_token(self, token: HostToken) -> None: ...

    def token(self, token_hash: str) -> HostToken | None: ...

    def use_token(self, token_hash: str, *, now: datetime, by: str) -> bool:
        """Compare-and-set: an unused token not expired at `now` becomes used; False for a
        token used already (a second use, or a lost race), expired or unknown."""

    def add(self, certificate: Certificate, *, ca_key: PublicKey, issued_at: datetime,
            issued_by: str, via: str) -> None:
        """Raises Duplicate when the serial is recorded already."""

    def by_serial(self, serial: int) -> StoredHostCertificate | None: ...

    def of_keys(self, fingerprints: Collection[str]) -> list[StoredHostCertificate]:
        """Every certificate of these host keys, revoked and expired ones too, newest first."""

    def mark_revoked(self, serial: int, *, at: datetime, by: str, reason: str | None) -> bool:
        """Once only: False when it was revoked already (the first revocation stands)."""

    def revoked(self, valid_after: datetime) -> tuple[list[StoredHostCertificate], int]:
        """Certificates revoked and still valid after `valid_after`, and a version that grows
        with every revocation."""


class AuditLog(Protocol):
    def record(self, *, actor: str, action: str, subject: str, now: datetime,
               details: dict[str, Any] | None = None) -> None:
        """An event in the chain, written with the unit (or not at all)."""


class Reports(Protocol):
    def activity(self, since: datetime, until: datetime) -> Activity: ...


class Unit(Protocol):
    requests: Requests
    certificates: Certificates
    keys: Keys
    users: Users
    signatures: Signatures
    hosts: Hosts
    audit: AuditLog
    reports: Reports


class Store(Protocol):
    def unit(self, *, read_only: bool = False) -> AbstractContextManager[Unit]:
        """A transaction; read_only ones take no write lock (and must not write)."""
