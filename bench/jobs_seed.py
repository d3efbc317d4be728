"""The rows bench/jobs.py plants: a deployment in full swing, with `due` items waiting for each
scheduled sweep and everything around them that the sweeps must walk past.

Rows are column dicts (Python values, as the repositories bind them), bulk-loaded through
bench/storage.py's Backend (one executemany on SQLite, COPY on PostgreSQL), then ANALYZEd.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ca.wire import put_string

REQUEST_TTL = timedelta(minutes=30)
REMIND_WITHIN = timedelta(minutes=15)
REVIEW_WITHIN = timedelta(hours=4)
DIGEST_WINDOW = timedelta(hours=24)
HISTORY = timedelta(days=180)
LIVE_DURATIONS = [timedelta(hours=h) for h in (1, 1, 2, 4, 8)]  # longer than REMIND_WITHIN
OLD_DURATIONS = [timedelta(minutes=m) for m in (15, 30, 60, 60, 120, 240)]
_DECIDED = [("issued", 75), ("revoked", 3), ("expired", 10), ("denied", 7), ("cancelled", 5)]
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
CHANNEL, SECURITY = "C0REQUESTS", "C0SECURITY"


@dataclass(frozen=True)
class Shape:
    live: int = 100_000  # live certificates
    pending: int = 10_000  # pending requests
    due: int = 300  # items due for each sweep
    history: int = 100_000  # requests decided over the past 180 days (with their certificates)
    users: int = 2_000  # everyone holds an active key and most hold certificates


@dataclass
class Tables:
    """Rows per table, in an order the foreign keys accept."""

    requests: list[dict] = field(default_factory=list)
    approvals: list[dict] = field(default_factory=list)
    certificates: list[dict] = field(default_factory=list)
    slack_messages: list[dict] = field(default_factory=list)
    slack_revocation_notices: list[dict] = field(default_factory=list)
    user_keys: list[dict] = field(default_factory=list)

    def items(self):
        return vars(self).items()


def digest_total(tables: Tables, now: datetime) -> int:
    """What reports.activity should count in the 24 hours up to `now`: certificates issued for
    requests, requests denied and expired, certificates revoked, break-glass uses."""
    since = now - DIGEST_WINDOW
    kind = {r["id"]: r["kind"] for r in tables.requests}

    def within(at: datetime | None) -> bool:
        return at is not None and since <= at < now

    return (sum(within(c["issued_at"]) and kind.get(c["request_id"]) == "request"
                for c in tables.certificates)
            + sum(within(c["revoked_at"]) for c in tables.certificates)
            + sum(r["state"] in ("denied", "expired") and within(r["decided_at"])
                  for r in tables.requests)
            + sum(r["kind"] == "breakglass" and within(r["created_at"]) for r in tables.requests))


class Planter:
    def __init__(self, shape: Shape, now: datetime, seed: int = 14) -> None:
        self.shape, self.now = shape, now
        self.rng = random.Random(seed)
        self.t = Tables()
        self.users = [f"U0USER{i:05d}" for i in range(shape.users)]
        self.keys = {user: self._key() for user in self.users}
        self._ids: set[str] = set()
        self._serials: set[int] = set()

    # --- identities ------------------------------------------------------------------------

    def _key(self) -> tuple[str, str]:
        blob = put_string("ssh-ed25519") + put_string(self.rng.randbytes(32))
        fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        return "ssh-ed25519 " + base64.b64encode(blob).decode(), fp

    def _id(self) -> str:
        while (rid := "req-" + "".join(self.rng.choices(_ALPHABET, k=12))) in self._ids:
            pass
        self._ids.add(rid)
        return rid

    def _serial(self) -> int:
        while (serial := self.rng.getrandbits(64) or 1) in self._serials:
            pass
        self._serials.add(serial)
        return serial

    def ago(self, lo: timedelta, hi: timedelta) -> datetime:
        return self.now - lo - (hi - lo) * self.rng.random()

    # --- rows ------------------------------------------------------------------------------

    def request(self, state: str, created: datetime, *, kind: str = "request",
                duration: timedelta = timedelta(hours=1), posted: bool = True, **extra) -> dict:
        user = self.rng.choice(self.users)
        line, fp = self.keys[user]
        decided = None if state == "pending" else \
            created + timedelta(seconds=self.rng.randint(20, 600))
        row = dict(
            id=self._id(), kind=kind, requester=user, target=f"target-{self.rng.randrange(20):02d}",
            duration_seconds=int(duration.total_seconds()),
            reason=f"ticket OPS-{self.rng.randint(1000, 99999)}", key_fingerprint=fp,
            public_key=line, state=state, version=0 if state == "pending" else 2,
            created_at=created, expires_at=created + REQUEST_TTL, decided_at=decided,
            template=None, issue_serial=None, issue_claimed_at=None, issue_error=None,
            issue_attempts=0, issue_retry_at=None, issued_at=None, cancelled_by=None,
            extends=None, reviewed_at=None, reviewed_by=None, review_note=None,
            review_escalated_at=None)
        row.update(extra)
        self.t.requests.append(row)
        if posted:
            self.message(row["id"], SECURITY if kind == "breakglass" else CHANNEL, posted=True)
        return row

    def message(self, request_id: str, channel: str, *, posted: bool) -> None:
        self.t.slack_messages.append(dict(
            request_id=request_id, channel=channel, post_claimed_at=None,
            ts=f"{self.now.timestamp() - self.rng.random() * 1e6:.6f}" if posted else None))

    def certificate(self, request: dict | None, issued: datetime, duration: timedelta, *,
                    reminded: bool = False, revoked: datetime | None = None,
                    announced: bool = True) -> dict:
        serial = self._serial()
        if request is not None:
            holder = request["requester"]
            line, fp = request["public_key"], request["key_fingerprint"]
            request.update(issue_serial=serial, issue_claimed_at=issued, issued_at=issued,
                           decided_at=min(request["decided_at"] or issued, issued),
                           issue_attempts=1, duration_seconds=int(duration.total_seconds()),
                           state="revoked" if revoked else "issued")
            key_id = f"vouch:{request['kind']}:{request['id']}:{holder}"
        else:
            holder, (line, fp) = None, self._key()
            key_id = f"vouch:cli:root:{serial}"
        valid_before = issued + duration
        row = dict(
            serial=serial, key_id=key_id, principals=json.dumps(["postgres"]),
            subject_fingerprint=fp, subject_key=line, ca_fingerprint="SHA256:benchCA",
            valid_after=issued - timedelta(minutes=5), valid_before=valid_before, issued_at=issued,
            issued_by="vouch" if request else "cli:root",
            request_id=request["id"] if request else None, holder=holder,
            revoked_at=revoked, revoked_by="U0SECADMIN" if revoked else None,
            revoke_reason="lost laptop" if revoked else None,
            reminder_sent_at=valid_before - REMIND_WITHIN if reminded else None)
        self.t.certificates.append(row)
        if revoked and announced:
            self.t.slack_revocation_notices.append(dict(serial=serial, at=revoked))
        return row

    # --- the picture -----------------------------------------------------------------------

    def live_certificate(self, *, window: str = "later", **kwargs) -> dict:
        """A certificate of a request, still valid: expiring after the reminder window
        ("later"), or due a reminder in it ("due": late by less than half the window, as
        sweeps.reminders_due wants)."""
        duration = self.rng.choice(LIVE_DURATIONS)
        if window == "due":
            expires = self.now + REMIND_WITHIN * (0.51 + 0.48 * self.rng.random())
        else:
            expires = self.now + REMIND_WITHIN + (duration - REMIND_WITHIN) * self.rng.random() \
                + timedelta(seconds=1)
        issued = expires - duration
        request = self.request("issued", issued - timedelta(seconds=self.rng.randint(30, 900)))
        return self.certificate(request, issued, duration, **kwargs)

    def plant(self) -> Tables:
        shape, due, now = self.shape, self.shape.due, self.now
        # Live certificates: due a reminder; reminded already; revoked and not yet announced;
        # revoked and announced; signed directly (no holder); the rest expire later.
        for _ in range(due):
            self.live_certificate(window="due")
        for _ in range(due):
            self.live_certificate(window="due", reminded=True)
        for _ in range(due):
            self.live_certificate(revoked=self.ago(timedelta(0), timedelta(hours=1)),
                                  announced=False)
        for _ in range(3 * due):
            self.live_certificate(revoked=self.ago(timedelta(0), timedelta(hours=8)))
        for _ in range(shape.live // 20):
            issued = self.ago(timedelta(0), timedelta(hours=1))
            self.certificate(None, issued, timedelta(hours=8))
        while len(self.t.certificates) < shape.live:
            self.live_certificate()
        # Pending: past their TTL; never posted (no message row, or one nobody is posting);
        # the rest posted and still open. A third carry a vote (two-approval targets).
        for i in range(shape.pending):
            if i < due:
                created = self.ago(REQUEST_TTL, REQUEST_TTL + timedelta(hours=1))
            else:
                created = self.ago(timedelta(0), REQUEST_TTL - timedelta(minutes=1))
            row = self.request("pending", created, posted=not due <= i < 2 * due)
            if due <= i < 2 * due and i % 2:
                self.message(row["id"], CHANNEL, posted=False)
            if i % 3 == 0:
                self.t.approvals.append(dict(request_id=row["id"], approver="U0APPROVER",
                                             approve=True, at=created + timedelta(seconds=30),
                                             comment=None))
        # Approved: signing failed and the retry is due; and some just approved, being issued.
        for i in range(due + due // 6):
            decided = self.ago(timedelta(minutes=1), timedelta(minutes=5))
            failed = i < due
            self.request("approved", decided - timedelta(minutes=2), decided_at=decided,
                         expires_at=decided + REQUEST_TTL, issue_attempts=1,
                         issue_serial=self._serial(),
                         issue_claimed_at=None if failed else now - timedelta(seconds=1),
                         issue_retry_at=decided + timedelta(seconds=2) if failed else None,
                         issue_error="the CA key is unavailable" if failed else None)
        # Break-glass: unreviewed past review_within (due an escalation); unreviewed and recent
        # with no alert posted yet; reviewed ones over the past month.
        for _ in range(due):
            self.request("issued", self.ago(REVIEW_WITHIN, REVIEW_WITHIN + timedelta(hours=20)),
                         kind="breakglass", duration=timedelta(minutes=30))
        for _ in range(due):
            self.request("issued", self.ago(timedelta(0), REVIEW_WITHIN - timedelta(minutes=5)),
                         kind="breakglass", duration=timedelta(minutes=30), posted=False)
        for _ in range(1000):
            created = self.ago(timedelta(hours=1), timedelta(days=30))
            self.request("issued", created, kind="breakglass", duration=timedelta(minutes=30),
                         reviewed_at=created + timedelta(hours=1), reviewed_by="U0SECADMIN",
                         review_note="fine")
        self.history()
        for user, (line, fp) in self.keys.items():
            self.t.user_keys.append(dict(user_id=user, key_type="ssh-ed25519", public_key=line,
                                         fingerprint=fp, comment="laptop", removed_at=None,
                                         added_at=now - HISTORY))
        return self.t

    def history(self) -> None:
        """Requests decided over the past 180 days; issued and revoked ones with a certificate
        that has expired since (reminded, when it lasted long enough)."""
        states, weights = zip(*_DECIDED)
        for _ in range(self.shape.history):
            state = self.rng.choices(states, weights)[0]
            duration = self.rng.choice(OLD_DURATIONS)
            created = self.ago(timedelta(hours=9), HISTORY)
            row = self.request(state, created, duration=duration)
            if state in ("issued", "revoked"):
                issued = created + timedelta(seconds=self.rng.randint(30, 900))
                self.certificate(row, issued, duration, reminded=duration > REMIND_WITHIN,
                                 revoked=issued + timedelta(minutes=5) if state == "revoked"
                                 else None)
