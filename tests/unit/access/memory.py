"""An in-memory Store (access.ports) for the use cases' unit tests: no database.

A unit works on a copy of the data and replaces it on commit, under one lock (as SQLite's write
lock serialises writers), so a unit that raises leaves nothing behind. `open_units` lets a test
check that no unit is open while something slow (a Slack lookup, a signature) happens.
"""

from __future__ import annotations

import copy
from collections import Counter
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from access.ports import (Activity, Duplicate, HostToken, RegisteredKey, StoredCertificate,
                          StoredHostCertificate)
from access.requests import Kind, Request, State, Vote
from ca.cert import Certificate
from ca.keys import PublicKey


@dataclass
class Row:
    """A request with the bookkeeping storage keeps beside it."""

    request: Request
    issue_serial: int | None = None
    issue_claimed_at: datetime | None = None
    issue_retry_at: datetime | None = None
    reviewed_at: datetime | None = None
    escalated_at: datetime | None = None


@dataclass
class Data:
    requests: dict[str, Row] = field(default_factory=dict)
    certificates: dict[int, StoredCertificate] = field(default_factory=dict)
    reminded: set[int] = field(default_factory=set)
    issued_at: dict[int, datetime] = field(default_factory=dict)
    signed_by: dict[int, str] = field(default_factory=dict)  # serial -> CA fingerprint
    keys: list[RegisteredKey] = field(default_factory=list)
    removed: set[tuple[str, str]] = field(default_factory=set)
    users: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    homes: dict[str, datetime] = field(default_factory=dict)
    signatures: dict[str, datetime] = field(default_factory=dict)
    host_tokens: dict[str, HostToken] = field(default_factory=dict)
    host_certificates: dict[int, StoredHostCertificate] = field(default_factory=dict)
    audit: list[dict] = field(default_factory=list)


class MemoryRequests:
    def __init__(self, data: Data) -> None:
        self.data = data

    def add(self, request: Request) -> None:
        if request.id in self.data.requests:
            raise Duplicate(request.id)
        self.data.requests[request.id] = Row(request)

    def get(self, request_id: str, *, lock: bool = False) -> Request | None:
        row = self.data.requests.get(request_id)
        return None if row is None else row.request

    def move(self, before: Request, after: Request) -> bool:
        row = self.data.requests.get(before.id)
        if row is None or (row.request.state, row.request.version) != (before.state, before.version):
            return False
        row.request = replace(row.request, state=after.state, decided_at=after.decided_at,
                              expires_at=after.expires_at, issue_error=after.issue_error,
                              cancelled_by=after.cancelled_by, version=row.request.version + 1)
        return True

    def add_vote(self, request_id: str, vote: Vote) -> None:
        row = self.data.requests[request_id]
        if any(v.approver == vote.approver for v in row.request.votes):
            raise Duplicate("vote")
        row.request = replace(row.request, votes=row.request.votes + (vote,))

    def _all(self, *, state: State | None = None) -> list[Request]:
        return [row.request for row in self.data.requests.values()
                if state is None or row.request.state is state]

    def pending_count(self, requester: str, target: str) -> int:
        return sum(1 for r in self._all(state=State.PENDING)
                   if r.requester == requester and r.target == target)

    def pending_of(self, requester: str) -> list[Request]:
        return sorted((r for r in self._all(state=State.PENDING) if r.requester == requester),
                      key=lambda r: r.created_at)

    def open_of(self, requester: str) -> list[Request]:
        return self.pending_of(requester) + [r for r in self._all(state=State.APPROVED)
                                             if r.requester == requester]

    def pending(self, now: datetime, limit: int) -> list[Request]:
        return sorted((r for r in self._all(state=State.PENDING) if r.expires_at > now),
                      key=lambda r: r.expires_at)[:limit]

    def unreviewed_breakglass(self, limit: int) -> list[Request]:
        return sorted((row.request for row in self.data.requests.values()
                       if row.request.kind is Kind.BREAKGLASS and row.reviewed_at is None),
                      key=lambda r: r.created_at)[:limit]

    def past_ttl(self, now: datetime, limit: int, *, lease: timedelta) -> list[Request]:
        pending = sorted((r for r in self._all(state=State.PENDING) if r.expires_at <= now),
                         key=lambda r: r.expires_at)
        unissued = sorted((row.request for row in self.data.requests.values()
                           if row.request.state is State.APPROVED and row.request.expires_at <= now
                           and not self._claimed(row, now, lease)), key=lambda r: r.expires_at)
        return pending[:limit] + unissued[:limit]

    @staticmethod
    def _claimed(row: Row, now: datetime, lease: timedelta) -> bool:
        return row.issue_claimed_at is not None and row.issue_claimed_at >= now - lease

    def claim_issue(self, request_id: str, *, serial: int, now: datetime, lease: timedelta,
                    max_attempts: int) -> Request | None:
        row = self.data.requests.get(request_id)
        if row is None or row.request.state is not State.APPROVED:
            return None
        if self._claimed(row, now, lease) or row.request.issue_attempts >= max_attempts:
            return None
        row.issue_serial, row.issue_claimed_at = serial, now
        row.request = replace(row.request, issue_attempts=row.request.issue_attempts + 1)
        return row.request

    def release_issue(self, request_id: str, *, serial: int, error: str,
                      retry_at: datetime) -> None:
        row = self.data.requests[request_id]
        if row.issue_serial == serial:
            row.issue_claimed_at, row.issue_retry_at = None, retry_at
            row.request = replace(row.request, issue_error=error[:1000])

    def mark_issued(self, request_id: str, *, serial: int, now: datetime) -> bool:
        row = self.data.requests[request_id]
        if row.request.state is not State.APPROVED or row.issue_serial != serial:
            return False
        row.request = replace(row.request, state=State.ISSUED, issue_error=None,
                              version=row.request.version + 1)
        return True

    def issuable(self, now: datetime, lease: timedelta, max_attempts: int) -> list[str]:
        lapsed = now - lease
        return [row.request.id for row in self.data.requests.values()
                if row.request.state is State.APPROVED
                and row.request.issue_attempts < max_attempts and (
                    (row.issue_claimed_at is not None and row.issue_claimed_at < lapsed)
                    or (row.issue_claimed_at is None and row.request.issue_attempts > 0
                        and row.issue_retry_at <= now)
                    or (row.issue_claimed_at is None and row.request.issue_attempts == 0
                        and (row.request.decided_at or row.request.created_at) < lapsed))]

    def mark_reviewed(self, request_id: str, *, by: str, now: datetime, note: str | None) -> bool:
        row = self.data.requests[request_id]
        if row.request.kind is not Kind.BREAKGLASS or row.reviewed_at is not None:
            return False
        row.reviewed_at = now
        row.request = replace(row.request, reviewed_by=by, reviewed_at=now, review_note=note)
        return True

    def escalate_unreviewed(self, *, due_before: datetime, now: datetime) -> list[Request]:
        due = [row for row in self.data.requests.values()
               if row.request.kind is Kind.BREAKGLASS and row.reviewed_at is None
               and row.request.created_at <= due_before
               and (row.escalated_at is None or row.escalated_at <= due_before)]
        before = [replace(row.request, escalated_at=row.escalated_at) for row in due]
        for row in due:
            row.escalated_at = now
        return before

    def unescalate(self, request: Request, *, escalated_at: datetime) -> bool:
        row = self.data.requests[request.id]
        if row.escalated_at != escalated_at:
            return False
        row.escalated_at = request.escalated_at
        return True


class MemoryCertificates:
    def __init__(self, data: Data) -> None:
        self.data = data

    def add(self, certificate: Certificate, *, ca_fingerprint: str, issued_at: datetime,
            issued_by: str, request_id: str | None, holder: str | None) -> None:
        spec = certificate.spec
        if spec.serial in self.data.certificates or (request_id is not None and any(
                c.request_id == request_id for c in self.data.certificates.values())):
            raise Duplicate("certificate")
        self.data.certificates[spec.serial] = StoredCertificate(
            serial=spec.serial, key_id=spec.key_id, principals=spec.principals,
            valid_before=spec.valid_before, holder=holder, request_id=request_id,
            issued_at=issued_at, line=certificate.line())
        self.data.issued_at[spec.serial] = issued_at
        self.data.signed_by[spec.serial] = ca_fingerprint

    def by_serial(self, serial: int) -> StoredCertificate | None:
        return self.data.certificates.get(serial)

    def of_request(self, request_id: str) -> list[StoredCertificate]:
        return [c for c in self.data.certificates.values() if c.request_id == request_id]

    def live_of(self, holder: str, now: datetime) -> list[StoredCertificate]:
        return sorted((c for c in self.data.certificates.values() if c.holder == holder
                       and c.valid_before > now and c.revoked_at is None),
                      key=lambda c: c.valid_before)

    def live_holders(self, now: datetime) -> list[str]:
        return sorted({c.holder for c in self.data.certificates.values() if c.holder
                       and c.valid_before > now and c.revoked_at is None})

    def due_reminder(self, now: datetime, within: timedelta, limit: int) -> list[StoredCertificate]:
        return sorted((c for c in self.data.certificates.values()
                       if now < c.valid_before <= now + within and c.revoked_at is None
                       and c.serial not in self.data.reminded and c.holder is not None),
                      key=lambda c: c.valid_before)[:limit]

    def mark_reminded(self, serial: int, at: datetime) -> bool:
        if serial in self.data.reminded:
            return False
        self.data.reminded.add(serial)
        return True

    def mark_revoked(self, serial: int, *, at: datetime, by: str, reason: str | None) -> bool:
        certificate = self.data.certificates[serial]
        if certificate.revoked_at is not None:
            return False
        self.data.certificates[serial] = replace(certificate, revoked_at=at, revoked_by=by,
                                                 revoke_reason=reason)
        return True

    def revoked_serials(self, valid_after: datetime, *, ca_fingerprint: str
                        ) -> tuple[set[int], set[int], int]:
        revoked = [c for c in self.data.certificates.values() if c.revoked_at is not None
                   and c.valid_before > valid_after]
        ours = {c.serial for c in revoked if self.data.signed_by[c.serial] == ca_fingerprint}
        return ours, {c.serial for c in revoked} - ours, len(
            [c for c in self.data.certificates.values() if c.revoked_at is not None])


class MemoryKeys:
    def __init__(self, data: Data) -> None:
        self.data = data

    def holders(self) -> list[str]:
        return sorted({k.user for k in self.data.keys if (k.user, k.fingerprint)
                       not in self.data.removed})

    def holder(self, fingerprint: str) -> str | None:
        return next((k.user for k in self.data.keys if k.fingerprint == fingerprint
                     and (k.user, fingerprint) not in self.data.removed), None)

    def add(self, user: str, key: PublicKey, at: datetime) -> tuple[RegisteredKey, bool]:
        holder = self.holder(key.fingerprint)
        if holder is not None and holder != user:
            raise Duplicate("key")
        for i, known in enumerate(self.data.keys):
            if (known.user, known.fingerprint) == (user, key.fingerprint):
                if (user, key.fingerprint) not in self.data.removed:
                    return known, False
                self.data.removed.discard((user, key.fingerprint))
                self.data.keys[i] = replace(known, added_at=at, comment=key.comment[:200])
                return self.data.keys[i], True
        registered = RegisteredKey(user=user, key_type=key.type,
                                   public_key=PublicKey(key.type, key.blob, key.bits).line(),
                                   fingerprint=key.fingerprint, comment=key.comment[:200],
                                   added_at=at)
        self.data.keys.append(registered)
        return registered, True

    def active(self, user: str) -> list[RegisteredKey]:
        mine = [(i, k) for i, k in enumerate(self.data.keys)
                if k.user == user and (user, k.fingerprint) not in self.data.removed]
        return [k for _, k in sorted(mine, key=lambda pair: (pair[1].added_at, pair[0]),
                                     reverse=True)]

    def remove(self, user: str, fingerprint: str, at: datetime) -> RegisteredKey | None:
        for key in self.active(user):
            if key.fingerprint == fingerprint:
                self.data.removed.add((user, fingerprint))
                return key
        return None


class MemoryUsers:
    def __init__(self, data: Data) -> None:
        self.data = data

    def remember(self, user: str, *, name: str, tz: str | None, at: datetime) -> None:
        self.data.users[user] = (name, tz)

    def opened_home(self, user: str, at: datetime) -> None:
        self.data.homes[user] = at

    def home_viewers(self, since: datetime, among=None) -> list[str]:
        return [user for user, at in self.data.homes.items()
                if at >= since and (among is None or user in among)]


class MemorySignatures:
    def __init__(self, data: Data) -> None:
        self.data = data

    def first_use(self, replay_key: str, *, at: datetime, forget_before: datetime) -> bool:
        for old in [k for k, seen in self.data.signatures.items() if seen < forget_before]:
            del self.data.signatures[old]
        if replay_key in self.data.signatures:
            return False
        self.data.signatures[replay_key] = at
        return True


class MemoryHosts:
    def __init__(self, data: Data) -> None:
        self.data = data

    def add_token(self, token: HostToken) -> None:
        if token.token_hash in self.data.host_tokens:
            raise Duplicate("host token")
        self.data.host_tokens[token.token_hash] = token

    def token(self, token_hash: str) -> HostToken | None:
        return self.data.host_tokens.get(token_hash)

    def use_token(self, token_hash: str, *, now: datetime, by: str) -> bool:
        token = self.data.host_tokens.get(token_hash)
        if token is None or token.used_at is not None or token.expires_at <= now:
            return False
        self.data.host_tokens[token_hash] = replace(token, used_at=now, used_by=by)
        return True

    def add(self, certificate: Certificate, *, ca_key: PublicKey, issued_at: datetime,
            issued_by: str, via: str) -> None:
        spec = certificate.spec
        if spec.serial in self.data.host_certificates:
            raise Duplicate("host certificate")
        self.data.host_certificates[spec.serial] = StoredHostCertificate(
            serial=spec.serial, key_id=spec.key_id, hostnames=spec.principals,
            public_key=PublicKey(spec.public_key.type, spec.public_key.blob, 0).line(),
            fingerprint=spec.public_key.fingerprint,
            ca_key=PublicKey(ca_key.type, ca_key.blob, 0).line(), valid_after=spec.valid_after,
            valid_before=spec.valid_before, issued_at=issued_at, issued_by=issued_by, via=via)

    def by_serial(self, serial: int) -> StoredHostCertificate | None:
        return self.data.host_certificates.get(serial)

    def of_keys(self, fingerprints) -> list[StoredHostCertificate]:
        found = [c for c in self.data.host_certificates.values() if c.fingerprint in fingerprints]
        return sorted(found, key=lambda c: c.issued_at, reverse=True)

    def mark_revoked(self, serial: int, *, at: datetime, by: str, reason: str | None) -> bool:
        certificate = self.data.host_certificates[serial]
        if certificate.revoked_at is not None:
            return False
        self.data.host_certificates[serial] = replace(certificate, revoked_at=at, revoked_by=by,
                                                      revoke_reason=reason)
        return True

    def revoked(self, valid_after: datetime) -> tuple[list[StoredHostCertificate], int]:
        revoked = [c for c in self.data.host_certificates.values() if c.revoked_at is not None]
        return ([c for c in sorted(revoked, key=lambda c: c.serial)
                 if c.valid_before > valid_after], len(revoked))


class MemoryAudit:
    def __init__(self, data: Data) -> None:
        self.data = data

    def record(self, *, actor: str, action: str, subject: str, now: datetime,
               details: dict | None = None) -> None:
        self.data.audit.append({"actor": actor, "action": action, "subject": subject, "at": now,
                                "details": details or {}})


class MemoryReports:
    def __init__(self, data: Data) -> None:
        self.data = data

    def activity(self, since: datetime, until: datetime) -> Activity:
        requests = {row.request.id: row.request for row in self.data.requests.values()}

        def target(certificate: StoredCertificate) -> str:
            request = requests.get(certificate.request_id)
            return request.target if request else "(signed directly)"

        def count(items) -> dict[str, int]:
            return dict(Counter(items))

        def decided(state: State) -> dict[str, int]:
            return count(r.target for r in requests.values() if r.state is state
                         and r.decided_at and since <= r.decided_at < until)

        certificates = self.data.certificates.values()
        return Activity(
            issued=count(target(c) for c in certificates if c.request_id
                         and requests[c.request_id].kind is Kind.REQUEST
                         and since <= self.data.issued_at[c.serial] < until),
            denied=decided(State.DENIED), expired=decided(State.EXPIRED),
            revoked=count(target(c) for c in certificates
                          if c.revoked_at and since <= c.revoked_at < until),
            breakglass=sorted((r for r in requests.values() if r.kind is Kind.BREAKGLASS
                               and since <= r.created_at < until), key=lambda r: r.created_at))


class MemoryUnit:
    def __init__(self, data: Data) -> None:
        self.requests = MemoryRequests(data)
        self.certificates = MemoryCertificates(data)
        self.keys = MemoryKeys(data)
        self.users = MemoryUsers(data)
        self.signatures = MemorySignatures(data)
        self.hosts = MemoryHosts(data)
        self.audit = MemoryAudit(data)
        self.reports = MemoryReports(data)


class MemoryStore:
    def __init__(self) -> None:
        self.data = Data()
        self.open_units = 0
        self._lock = threading.RLock()

    @contextmanager
    def unit(self, *, read_only: bool = False):
        with self._lock:
            assert self.open_units == 0, "units do not nest"
            working = copy.deepcopy(self.data)
            self.open_units += 1
            try:
                yield MemoryUnit(working)
            finally:
                self.open_units -= 1
            if read_only:
                assert working == self.data, "a read-only unit wrote"
            else:
                self.data = working

    def actions(self) -> list[str]:
        return [event["action"] for event in self.data.audit]
