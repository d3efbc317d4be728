"""The service that ties the rules, storage and the CA together.

Guarantees, each settled by the database rather than by locks in this process:
- a request is stored (and audited) before anything is posted about it;
- votes on one request are serialised by a compare-and-set on its version;
- exactly one certificate per request: a serial is reserved (claim) and audited before signing,
  the request moves approved -> issued only with that serial, and certificates.request_id is
  unique. The claim commits before signing (_issue_in_two), except on SQLite with a signer that
  answered within QUICK_SIGNING last time, where claim, signature and record share one
  transaction (_issue_at_once): one commit per certificate;
- fail closed: a certificate is handed out only after its record and audit event committed; if
  signing fails the request stays approved, the error is recorded and issuing can be retried.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from access.policy import Directory, NoDirectory, Policy
from access.requests import (AlreadyVoted, InvalidTransition, Kind, PolicyRefusal, Request, State,
                             cast_vote, certificate_spec, check_transition, may_revoke, may_review,
                             open_breakglass, open_request)
from ca.cert import Certificate, CertificateSpec, Signer, new_serial, sign_certificate, validity
from ca.errors import BadInput, VouchError
from ca.keys import PublicKey, parse_public_key
from ca.krl import Revocations, encode_krl
from storage import audit
from storage import certificates as certs
from storage import keys as keys_repo
from storage import requests as requests_repo
from storage.db import Database, Duplicate
from storage.direct import Connection as DirectConnection
from storage.models import CertificateRecord, UserKey

Clock = Callable[[], datetime]

# Hosts may run a little behind: keep revoked certificates in the KRL a day past their expiry.
KRL_EXPIRY_GRACE = timedelta(days=1)
# A claim to issue that is older than this was abandoned (a crashed replica): others may retry.
ISSUE_LEASE = timedelta(minutes=2)
# Likewise for posting a request's message to Slack.
POST_LEASE = timedelta(minutes=2)
# A signer that answered this quickly last time (a file key, SoftHSM2) signs inside the
# issuing transaction on SQLite (AccessService._issue_at_once); a slower one (a YubiKey takes
# tens of milliseconds) must not hold the database's write lock while it works.
QUICK_SIGNING = 0.010  # seconds
_MAX_SERIAL = 2**64 - 1
_VOTE_RETRIES = 20


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Revoked:
    serial: int
    newly: bool  # False when it had been revoked before (revoking twice is not an error)
    holder: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Issued:
    request: Request
    certificate: Certificate
    seconds: float = 0.0  # reserving, signing, recording and auditing it


@dataclass(frozen=True)
class RequestInfo:
    """Where a request was posted, and what became of its certificate."""

    channel: str | None = None
    ts: str | None = None
    issue_error: str | None = None
    serial: int | None = None
    valid_before: datetime | None = None
    reviewed_by: str | None = None


@dataclass(frozen=True)
class HeldCertificate:
    """A live certificate as its holder sees it."""

    holder: str
    serial: int
    request_id: str | None
    principals: list[str]
    valid_before: datetime

    @classmethod
    def of(cls, record: CertificateRecord) -> HeldCertificate:
        return cls(holder=record.holder or "", serial=record.serial, request_id=record.request_id,
                   principals=json.loads(record.principals), valid_before=record.valid_before)


@dataclass(frozen=True)
class VoteResult:
    request: Request          # after the vote
    decided: bool             # this vote approved or denied the request
    issued: Issued | None = None


class _Conflict(Exception):
    """Someone else moved the request between our read and our write: read again."""


class AccessService:
    def __init__(self, db: Database | None, signer: Signer, *,
                 policy: Callable[[], Policy] | None = None, directory: Directory | None = None,
                 clock: Clock = utcnow, one_transaction: bool | None = None) -> None:
        self.db = db
        self.signer = signer
        # Issue in one transaction on SQLite: None decides by the last signature's time.
        self.one_transaction = one_transaction
        self._last_signing: float | None = None
        self._policy = policy
        self.directory = directory or NoDirectory()
        self.clock = clock

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            raise BadInput("this needs the policy file (VOUCH_POLICY_FILE)")
        return self._policy()

    def _require_db(self) -> Database:
        if self.db is None:
            raise BadInput("this needs the database (VOUCH_DATABASE_URL)")
        return self.db

    # --- keys ----------------------------------------------------------------------------

    def add_key(self, user: str, line: str) -> tuple[PublicKey, bool]:
        key = parse_public_key(line)
        now = self.clock()
        with self._require_db().session() as session:
            _, newly = keys_repo.add_key(
                session=session, user_id=user, key_type=key.type,
                public_key=PublicKey(key.type, key.blob, key.bits).line(),
                fingerprint=key.fingerprint, comment=key.comment[:200], at=now)
            if newly:
                audit.append(session, actor=user, action="key.added", subject=f"user:{user}",
                             now=now, details={"fingerprint": key.fingerprint, "type": key.type})
        return key, newly

    def list_keys(self, user: str) -> list[UserKey]:
        with self._require_db().session() as session:
            return keys_repo.active_keys(session=session, user_id=user)

    def remove_key(self, user: str, fingerprint: str) -> UserKey:
        now = self.clock()
        with self._require_db().session() as session:
            key = keys_repo.remove_key(session=session, user_id=user, fingerprint=fingerprint.strip(),
                                       at=now)
            if key is None:
                raise BadInput(f"you have no registered key {fingerprint.strip()[:60]!r}; "
                               "/ssh-key list shows yours")
            audit.append(session, actor=user, action="key.removed", subject=f"user:{user}",
                         now=now, details={"fingerprint": key.fingerprint})
        return key

    def _choose_key(self, session, user: str, fingerprint: str | None) -> UserKey:
        keys = keys_repo.active_keys(session=session, user_id=user)
        if not keys:
            raise PolicyRefusal("you have no registered SSH public key: add one with "
                                "`/ssh-key add ssh-ed25519 AAAA…` (the contents of ~/.ssh/id_ed25519.pub)")
        if fingerprint is None:
            return keys[0]
        for key in keys:
            if key.fingerprint == fingerprint:
                return key
        raise BadInput(f"you have no registered key {fingerprint[:60]!r}; /ssh-key list shows yours")

    # --- requests ------------------------------------------------------------------------

    def open_request(self, *, user: str, target: str, duration: timedelta, reason: str,
                     key_fingerprint: str | None = None, channel: str | None = None) -> Request:
        """Check a request against policy and store it (pending) before anything is posted."""
        policy = self.policy
        now = self.clock()
        with self._require_db().session() as session:
            key = self._choose_key(session, user, key_fingerprint)
            request = open_request(
                policy, requester=user, target_name=target, duration=duration, reason=reason,
                key_fingerprint=key.fingerprint, now=now, directory=self.directory,
                pending_for_target=requests_repo.pending_count(session=session, requester=user,
                                                               target=target))
            requests_repo.insert(session=session, request=request, public_key=key.public_key,
                                 channel=channel)
            audit.append(session, actor=user, action="request.created", subject=f"request:{request.id}",
                         now=now, details=_request_details(request))
        return request

    def get(self, request_id: str) -> tuple[Request, RequestInfo]:
        """The request and its Slack and issuing bookkeeping."""
        with self._require_db().session() as session:
            loaded = requests_repo.load(session=session, request_id=request_id)
            if loaded is None:
                raise BadInput(f"no request {request_id[:64]!r}")
            record, request = loaded
            return request, _info(record, certs.get_by_request(session=session, request_id=request_id))

    def set_message(self, request_id: str, *, channel: str, ts: str) -> None:
        with self._require_db().session() as session:
            requests_repo.set_message(session=session, request_id=request_id, channel=channel, ts=ts)

    def vote(self, request_id: str, *, approver: str, approve: bool) -> VoteResult:
        """One approver's Approve or Deny; the deciding approval issues the certificate."""
        policy = self.policy
        for _ in range(_VOTE_RETRIES):
            try:
                result = self._vote_once(policy, request_id, approver, approve)
                break
            except _Conflict:
                continue
        else:
            raise VouchError("this request is busy; try again", detail=f"vote retries exhausted on {request_id}")
        if result.decided and result.request.state is State.APPROVED:
            issued = self.issue(request_id)
            return VoteResult(result.request, True, issued)
        return result

    def _vote_once(self, policy: Policy, request_id: str, approver: str, approve: bool) -> VoteResult:
        now = self.clock()
        try:
            with self._require_db().session() as session:
                loaded = requests_repo.load(session=session, request_id=request_id, for_update=True)
                if loaded is None:
                    raise BadInput(f"no request {request_id[:64]!r}")
                _, request = loaded
                outcome = cast_vote(policy, request, approver=approver, approve=approve, now=now,
                                    directory=self.directory)
                requests_repo.add_vote(session=session, request_id=request_id, vote=outcome.vote)
                values = {}
                if outcome.decided:
                    values = {"state": outcome.request.state.value, "decided_at": now}
                if not requests_repo.compare_and_set(session=session, request_id=request_id,
                                                     version=request.version, expect=State.PENDING,
                                                     **values):
                    raise _Conflict
                audit.append(session, actor=approver, action="request.voted",
                             subject=f"request:{request_id}", now=now,
                             details={"approve": approve})
                if outcome.decided:
                    audit.append(session, actor=approver, action=f"request.{outcome.request.state.value}",
                                 subject=f"request:{request_id}", now=now,
                                 details={"approvers": outcome.request.approvers})
        except Duplicate:
            # The unique (request, approver) constraint: a concurrent second click by the same person.
            raise AlreadyVoted("you have already voted on this request") from None
        return VoteResult(outcome.request, outcome.decided)

    def cancel(self, request_id: str, *, user: str) -> Request:
        now = self.clock()
        with self._require_db().session() as session:
            loaded = requests_repo.load(session=session, request_id=request_id)
            if loaded is None:
                raise BadInput(f"no request {request_id[:64]!r}")
            _, request = loaded
            if user != request.requester and not self.policy.admins.includes(user, self.directory):
                raise PolicyRefusal("only the requester or an admin can cancel a request")
            check_transition(request.state, State.CANCELLED)
            if not requests_repo.compare_and_set(session=session, request_id=request_id,
                                                 version=request.version, expect=request.state,
                                                 state=State.CANCELLED.value, decided_at=now):
                raise InvalidTransition("this request changed meanwhile; look again")
            audit.append(session, actor=user, action="request.cancelled", subject=f"request:{request_id}",
                         now=now)
        return Request(**{**request.__dict__, "state": State.CANCELLED})

    # --- issuing -------------------------------------------------------------------------

    def issue(self, request_id: str) -> Issued | None:
        """Sign the certificate of an approved request, exactly once across threads and replicas.

        Returns None when another worker holds the claim or already issued it. Raises
        SignerUnavailable when signing fails; the request stays approved, with the error recorded.
        """
        db = self._require_db()
        with db.connection() as connection:  # one checkout from the pool for all of it
            if connection.dialect.name == "sqlite" and self._signs_quickly():
                return self._issue_at_once(connection, request_id)
            return self._issue_in_two(connection, request_id)

    def _signs_quickly(self) -> bool:
        if self.one_transaction is not None:
            return self.one_transaction
        return self._last_signing is not None and self._last_signing < QUICK_SIGNING

    def _issue_in_two(self, connection: DirectConnection, request_id: str) -> Issued | None:
        """The claim commits before signing, so the write lock (SQLite) or the row and audit
        locks (PostgreSQL) are never held while a token signs."""
        now = self.clock()
        started = time.perf_counter()
        serial = new_serial()
        # The claim need not reach the disk by itself: nothing it guards leaves this process
        # before the certificate's own durable commit below, which carries it to disk as well.
        # Lost in a power cut, it costs a retry, never a certificate.
        with connection.transaction(durable=False) as transaction:
            claimed = self._claim(transaction, request_id, serial, now)
            if claimed is None:
                return None  # not approved (any more), or another worker holds the claim
            request, public_line = claimed
        try:
            certificate = self._sign(request, public_line, serial, now)
        except VouchError as exc:
            with connection.transaction() as transaction:
                self._release(transaction, request_id, serial, now, exc.message)
            raise
        try:
            with connection.transaction() as transaction:
                self._record_issued(transaction, request, certificate, now)
        except (_Conflict, Duplicate):
            return None  # another worker issued it first; ours is discarded unreleased
        except Exception as exc:
            # Not recorded, so not released. Free the claim so a retry need not wait out the lease.
            self._release_unrecorded(request_id, serial, now, exc, claimed=True)
            raise
        return _issued(request, certificate, started)

    def _issue_at_once(self, connection: DirectConnection, request_id: str) -> Issued | None:
        """SQLite with a signer that answers within QUICK_SIGNING: claim, sign and record in one
        transaction, so one commit and one WAL sync per certificate instead of two commits.
        Holding SQLite's write lock while signing then costs other writers less than the second
        commit would. The audit trail and every outcome are those of _issue_in_two; only a crash
        while signing differs: it leaves no claim behind, where _issue_in_two leaves one that
        lapses (in either case the certificate never left the process)."""
        now = self.clock()
        started = time.perf_counter()
        serial = new_serial()
        refused: VouchError | None = None
        try:
            with connection.transaction() as transaction:
                claimed = self._claim(transaction, request_id, serial, now)
                if claimed is None:
                    return None
                request, public_line = claimed
                try:
                    certificate = self._sign(request, public_line, serial, now)
                except VouchError as exc:
                    self._release(transaction, request_id, serial, now, exc.message)
                    refused = exc
                else:
                    self._record_issued(transaction, request, certificate, now)
        except (_Conflict, Duplicate):
            return None
        except Exception as exc:
            # Nothing of this attempt was committed. Record it as _issue_in_two would have: the
            # claim and its reservation, released with the reason, so a retry starts at once.
            self._release_unrecorded(request_id, serial, now, exc, claimed=False)
            raise
        if refused is not None:
            raise refused
        return _issued(request, certificate, started)

    def _release_unrecorded(self, request_id: str, serial: int, now: datetime, exc: Exception, *,
                       claimed: bool) -> None:
        """Recording the certificate failed: release the claim on `serial` (making it first if
        the failed transaction took it with it) with the reason. On a connection of its own, as
        the issuing one may be what failed; if even this fails, the lease frees the claim later."""
        try:
            with self._require_db().transaction() as transaction:
                if claimed or self._claim(transaction, request_id, serial, now) is not None:
                    requests_repo.release_issue(
                        session=transaction, request_id=request_id, serial=serial,
                        error=f"recording the certificate failed: {type(exc).__name__}")
        except Exception:  # noqa: BLE001 - the original failure is what matters
            pass

    def _claim(self, transaction, request_id: str, serial: int,
               now: datetime) -> tuple[Request, str] | None:
        """Reserve `serial` for the request and audit the reservation, before any signing."""
        claimed = requests_repo.claim_issue(session=transaction, request_id=request_id,
                                            serial=serial, now=now, lease=ISSUE_LEASE)
        if claimed is not None:
            audit.append(transaction, actor="vouch", action="certificate.reserved",
                         subject=f"request:{request_id}", now=now, details={"serial": str(serial)})
        return claimed

    def _sign(self, request: Request, public_line: str, serial: int, now: datetime) -> Certificate:
        target = self.policy.target(request.target)
        if target is None:
            raise PolicyRefusal(f"target {request.target!r} is no longer in the policy")
        spec = certificate_spec(request, target, _stored_key(public_line), serial=serial, now=now)
        began = time.perf_counter()
        try:
            return sign_certificate(spec, self.signer)
        finally:  # a failure that took long (a token timing out) counts as slow too
            self._last_signing = time.perf_counter() - began

    def _release(self, transaction, request_id: str, serial: int, now: datetime, error: str) -> None:
        """Signing failed: the request stays approved, with the error, for a retry."""
        requests_repo.release_issue(session=transaction, request_id=request_id, serial=serial,
                                    error=error)
        audit.append(transaction, actor="vouch", action="certificate.issue_failed",
                     subject=f"request:{request_id}", now=now,
                     details={"serial": str(serial), "error": error})

    def _record_issued(self, transaction, request: Request, certificate: Certificate,
                       now: datetime) -> None:
        """The certificate row, the request moved to issued by the holder of the claim on its
        serial (else _Conflict), and the audit event: all in the caller's transaction."""
        serial = certificate.spec.serial
        self._record(transaction, certificate, issued_at=now, issued_by="vouch",
                     request_id=request.id, holder=request.requester)
        if not requests_repo.mark_issued(session=transaction, request_id=request.id,
                                         serial=serial, now=now):
            raise _Conflict
        audit.append(transaction, actor="vouch", action="certificate.issued",
                     subject=f"request:{request.id}", now=now, details=_describe(certificate))

    def retry_issuing(self) -> list[Issued]:
        """Issue approved requests whose signing failed earlier or whose claim lapsed."""
        with self._require_db().session() as session:
            due = requests_repo.approved_unissued(session=session, now=self.clock(), lease=ISSUE_LEASE)
        issued = []
        for request_id in due:
            try:
                result = self.issue(request_id)
            except VouchError:
                continue
            if result is not None:
                issued.append(result)
        return issued

    def breakglass(self, *, user: str, target: str, duration: timedelta, reason: str) -> Issued:
        """No approver: issue at once, audited loudly, reviewed after the fact."""
        policy = self.policy
        now = self.clock()
        with self._require_db().session() as session:
            key = self._choose_key(session, user, None)
            request = open_breakglass(policy, user=user, target_name=target, duration=duration,
                                      reason=reason, key_fingerprint=key.fingerprint, now=now,
                                      directory=self.directory)
            requests_repo.insert(session=session, request=request, public_key=key.public_key)
            audit.append(session, actor=user, action="breakglass.used", subject=f"request:{request.id}",
                         now=now, details=_request_details(request))
        issued = self.issue(request.id)
        if issued is None:  # only possible if someone else issued this brand-new request
            raise VouchError("break-glass certificate was not issued", detail=request.id)
        return issued

    def review(self, request_id: str, *, reviewer: str) -> Request:
        now = self.clock()
        if not may_review(self.policy, reviewer, self.directory):
            raise PolicyRefusal("only admins can review break-glass use")
        with self._require_db().session() as session:
            loaded = requests_repo.load(session=session, request_id=request_id)
            if loaded is None or loaded[1].kind is not Kind.BREAKGLASS:
                raise BadInput(f"no break-glass use {request_id[:64]!r}")
            if loaded[1].requester == reviewer:
                raise PolicyRefusal("you cannot review your own break-glass use")
            if not requests_repo.mark_reviewed(session=session, request_id=request_id, by=reviewer, now=now):
                raise InvalidTransition("this break-glass use was already reviewed")
            audit.append(session, actor=reviewer, action="breakglass.reviewed",
                         subject=f"request:{request_id}", now=now)
        return loaded[1]

    def expire_due(self) -> list[Request]:
        """Undecided requests past request_ttl become expired (a scheduled job calls this)."""
        now = self.clock()
        with self._require_db().session() as session:
            moved = requests_repo.expire_pending(session=session, now=now)
            for record in moved:
                audit.append(session, actor="vouch", action="request.expired",
                             subject=f"request:{record.id}", now=now)
            return [requests_repo.to_domain(record, ()) for record in moved]

    def unposted(self) -> list[tuple[str, str]]:
        """(request id, channel) of pending requests never posted to Slack (Slack was down)."""
        with self._require_db().session() as session:
            return requests_repo.unposted(session=session, now=self.clock(), lease=POST_LEASE)

    def claim_post(self, request_id: str) -> bool:
        """True for the one worker that should post this request's message now."""
        with self._require_db().session() as session:
            return requests_repo.claim_post(session=session, request_id=request_id,
                                            now=self.clock(), lease=POST_LEASE)

    def release_post(self, request_id: str) -> None:
        """Posting failed: let the next sweep try at once."""
        with self._require_db().session() as session:
            requests_repo.release_post(session=session, request_id=request_id)

    def status(self, user: str) -> tuple[list[Request], list[HeldCertificate]]:
        """The user's pending requests and live certificates."""
        now = self.clock()
        with self._require_db().session() as session:
            pending = [requests_repo.to_domain(r, ()) for r in
                       requests_repo.pending_of(session=session, requester=user)]
            live = [HeldCertificate.of(r) for r in certs.live_of(session=session, holder=user, now=now)]
        return pending, live

    def reminders_due(self) -> list[HeldCertificate]:
        """Certificates due a reminder (reminder_before their expiry), each claimed once."""
        now = self.clock()
        within = self.policy.reminder_before
        due = []
        with self._require_db().session() as session:
            for record in certs.expiring_unreminded(session=session, now=now, within=within):
                if certs.mark_reminded(session=session, certificate_id=record.id, at=now):
                    due.append(HeldCertificate.of(record))
        return due

    def unreviewed_breakglass(self) -> list[Request]:
        """Break-glass uses past review_within with no review, each escalated once."""
        policy = self.policy
        if policy.breakglass is None:
            return []
        now = self.clock()
        with self._require_db().session() as session:
            records = requests_repo.escalate_unreviewed(
                session=session, before=now - policy.breakglass.review_within, now=now)
            for record in records:
                audit.append(session, actor="vouch", action="breakglass.escalated",
                             subject=f"request:{record.id}", now=now)
            return [requests_repo.to_domain(r, ()) for r in records]

    def remember_user(self, user: str, *, name: str, tz: str | None) -> None:
        with self._require_db().session() as session:
            keys_repo.upsert_user(session=session, user_id=user, name=name, tz=tz, at=self.clock())

    # --- direct signing, revocation, KRL ---------------------------------------------------

    def sign_direct(self, *, public_key: PublicKey, principals: list[str], duration: timedelta,
                    actor: str, key_id: str | None = None, source_address: str | None = None,
                    force_command: str | None = None,
                    extensions: frozenset[str] = frozenset({"permit-pty"})) -> Certificate:
        """The operator's path (`vouch ca sign`): sign one certificate outside any request."""
        now = self.clock()
        valid_after, valid_before = validity(now, duration)
        serial = new_serial()
        options = {}
        if source_address:
            options["source-address"] = source_address
        if force_command:
            options["force-command"] = force_command
        spec = CertificateSpec(
            public_key=public_key, serial=serial, key_id=key_id or f"vouch:{actor}:{serial}",
            principals=tuple(dict.fromkeys(principals)), valid_after=valid_after,
            valid_before=valid_before, critical_options=options, extensions=extensions)
        certificate = sign_certificate(spec, self.signer)
        if self.db is not None:
            with self.db.session() as session:
                self._record(session, certificate, issued_at=now, issued_by=actor, request_id=None,
                             holder=None)
                audit.append(session, actor=actor, action="certificate.signed_direct",
                             subject=f"serial:{serial}", now=now, details=_describe(certificate))
        return certificate

    def _record(self, session, certificate: Certificate, *, issued_at: datetime, issued_by: str,
                request_id: str | None, holder: str | None) -> None:
        spec = certificate.spec
        certs.record_certificate(
            session=session, serial=spec.serial, key_id=spec.key_id, principals=list(spec.principals),
            subject_key=spec.public_key.line(), subject_fingerprint=spec.public_key.fingerprint,
            ca_fingerprint=self.signer.public_key.fingerprint, valid_after=spec.valid_after,
            valid_before=spec.valid_before, issued_at=issued_at, issued_by=issued_by,
            request_id=request_id, holder=holder)

    def revoke(self, reference: str, *, actor: str, reason: str | None = None,
               as_user: str | None = None) -> list[Revoked]:
        """Revoke a certificate by serial, or every certificate of a request by its id.

        `as_user`: a Slack user, allowed only for their own certificates unless an admin. The
        CLI (an operator on the host) passes None.
        """
        now = self.clock()
        with self._require_db().session() as session:
            records = _find(session, reference.strip())
            if as_user is not None:
                for record in records:
                    if not may_revoke(self.policy, holder=record.holder or "", user=as_user,
                                      directory=self.directory):
                        raise PolicyRefusal("you can revoke only your own certificates "
                                            "(admins can revoke any)")
            done = []
            for record in records:
                newly = certs.mark_revoked(session=session, certificate_id=record.id, at=now,
                                           by=actor, reason=reason)
                if newly:
                    audit.append(session, actor=actor, action="certificate.revoked",
                                 subject=f"serial:{record.serial}", now=now,
                                 details={"reason": reason, "key_id": record.key_id,
                                          "request_id": record.request_id})
                    if record.request_id:
                        _move_request(session, record.request_id, State.ISSUED, State.REVOKED)
                done.append(Revoked(serial=record.serial, newly=newly, holder=record.holder,
                                    request_id=record.request_id))
        return done

    def krl(self) -> bytes:
        """PROTOCOL.krl bytes revoking every revoked, not long expired, certificate of this CA."""
        now = self.clock()
        with self._require_db().session() as session:
            serials, version = certs.revoked_serials(session=session,
                                                     valid_after=now - KRL_EXPIRY_GRACE)
        return encode_krl(Revocations(serials=frozenset(serials)),
                          ca_key=self.signer.public_key.blob, version=version,
                          generated_at=int(now.timestamp()), comment="vouch")

    def audit_event(self, *, actor: str, action: str, subject: str, details: dict | None = None) -> None:
        with self._require_db().session() as session:
            audit.append(session, actor=actor, action=action, subject=subject, details=details,
                         now=self.clock())


def _info(record, cert: CertificateRecord | None) -> RequestInfo:
    return RequestInfo(channel=record.channel, ts=record.message_ts, issue_error=record.issue_error,
                       serial=cert.serial if cert else None,
                       valid_before=cert.valid_before if cert else None,
                       reviewed_by=record.reviewed_by)


def _move_request(session, request_id: str, expect: State, new: State) -> None:
    loaded = requests_repo.load(session=session, request_id=request_id)
    if loaded is not None and loaded[1].state is expect:
        requests_repo.compare_and_set(session=session, request_id=request_id,
                                      version=loaded[1].version, expect=expect, state=new.value)


def _find(session, reference: str) -> list[CertificateRecord]:
    if reference.isdigit():
        serial = int(reference)
        if not 0 < serial <= _MAX_SERIAL:
            raise BadInput(f"{reference!r} is not a certificate serial (1 to 2^64-1)")
        record = certs.get_by_serial(session=session, serial=serial)
        if record is None:
            raise BadInput(f"no certificate with serial {serial}")
        return [record]
    records = certs.list_by_request(session=session, request_id=reference)
    if not records:
        raise BadInput(f"no certificate with serial or request id {reference[:64]!r}")
    return records


def _request_details(request: Request) -> dict:
    return {"kind": request.kind.value, "target": request.target,
            "duration_seconds": int(request.duration.total_seconds()), "reason": request.reason,
            "key_fingerprint": request.key_fingerprint}


@functools.lru_cache(maxsize=1024)
def _stored_key(line: str) -> PublicKey:
    """A registered key as stored with its request, parsed once: the same few keys are
    certified again and again."""
    return parse_public_key(line)


def _issued(request: Request, certificate: Certificate, started: float) -> Issued:
    return Issued(Request(**{**request.__dict__, "state": State.ISSUED}), certificate,
                  seconds=time.perf_counter() - started)


def _describe(certificate: Certificate) -> dict:
    spec = certificate.spec
    return {"serial": str(spec.serial), "key_id": spec.key_id, "principals": list(spec.principals),
            "subject_fingerprint": spec.public_key.fingerprint,
            "valid_after": audit.format_time(spec.valid_after),
            "valid_before": audit.format_time(spec.valid_before),
            "critical_options": dict(spec.critical_options), "extensions": sorted(spec.extensions)}

