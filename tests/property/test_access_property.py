"""Stateful property test: the use cases on a fresh SQLite database, driven by random actions.

A hypothesis RuleBasedStateMachine plays seven Slack users against one policy (two targets, one
needing a single approval and one needing 2 of 3, break-glass on one target) with a fake clock
and an in-memory group directory. Each action is checked against a small oracle (should it have
been accepted?), and after every step the invariants are checked against the DATABASE itself
(the tables, read with a session), never against what the service returned.

Only the refusals the service is meant to give (PolicyRefusal, InvalidTransition, AlreadyVoted,
BadInput) are caught; any other exception fails the test.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, initialize, invariant, multiple,
                                 rule, run_state_machine_as_test)
from sqlmodel import select

from access import breakglass, keys, opening, revoking, sweeps, voting
from access.context import Access
from access.errors import AlreadyVoted, InvalidTransition, PolicyRefusal
from access.policy_file import parse_policy
from ca.errors import BadInput
from ca.signer import CaKeyType, FileSigner, generate_private_key
from storage import audit
from storage.db import Database
from storage.models import ApprovalRecord, AuditEvent, CertificateRecord, RequestRecord
from storage.store import SqlStore
from support.audit import AUDIT_KEY

EXPECTED_REFUSALS = (PolicyRefusal, InvalidTransition, AlreadyVoted, BadInput)

# --- the cast, the directory and the policy ---------------------------------------------

REQ1 = "UREQ1"        # asks for web and db, approves nothing
REQ2 = "UREQ2"        # asks for web and db, and is in @oncall (so approves both, never their own)
BOTH = "UBOTH"        # asks for db, and is a db approver by name
APPR = "UAPPR"        # in @oncall: approves web and db
ADMIN = "UADMIN"      # admin; a web approver by name; may break glass (but not review their own)
BREAK = "UBREAK"      # break-glass user; asks for web
OUTSIDER = "UOUTSIDER"  # nothing at all
USERS = (REQ1, REQ2, BOTH, APPR, ADMIN, BREAK, OUTSIDER)

GROUPS = {"@oncall": frozenset({REQ2, APPR})}


class Groups:
    def members(self, handle: str) -> frozenset[str]:
        return GROUPS.get(handle, frozenset())


POLICY_YAML = """
requests_channel: C0REQUESTS
security_channel: C0SECURITY
request_ttl: 30m
admins: [UADMIN]
targets:
  web:
    principals: [deploy]
    min_duration: 15m
    max_duration: 4h
    approvers: ["@oncall", UADMIN]
    requesters: [UREQ1, UREQ2, UBREAK]
  db:
    principals: [postgres, dba]
    max_duration: 2h
    approvals_required: 2
    approvers: ["@oncall", UBOTH]
    requesters: [UREQ1, UREQ2, UBOTH]
    source_address: [10.0.0.0/8]
breakglass:
  users: [UBREAK, UADMIN]
  targets: [db]
  max_duration: 1h
"""
POLICY = parse_policy(POLICY_YAML)

# The same policy, written out independently of access/ (groups resolved by hand).
TTL = timedelta(minutes=30)
ADMINS = {ADMIN}
TARGETS = {
    "web": {"min": timedelta(minutes=15), "max": timedelta(hours=4), "required": 1,
            "approvers": {REQ2, APPR, ADMIN}, "requesters": {REQ1, REQ2, BREAK},
            "principals": ["deploy"]},
    "db": {"min": timedelta(minutes=5), "max": timedelta(hours=2), "required": 2,
           "approvers": {REQ2, APPR, BOTH}, "requesters": {REQ1, REQ2, BOTH},
           "principals": ["postgres", "dba"]},
}
BREAKGLASS = {"users": {BREAK, ADMIN}, "targets": {"db"}, "max": timedelta(hours=1)}
BACKDATE = timedelta(seconds=60)

FINAL = {"denied", "expired", "cancelled", "revoked"}
# Where each state may go in one step or several (pending -> issued happens within one vote).
NEXT = {"pending": {"approved", "denied", "expired", "cancelled"},
        "approved": {"issued", "cancelled"},
        "issued": {"revoked", "expired"}}


def reachable(state: str) -> set[str]:
    seen, todo = set(), [state]
    while todo:
        for nxt in NEXT.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def reason_ok(reason: str) -> bool:
    normal = " ".join(reason.split())
    return 0 < len(normal) <= 500


@lru_cache(maxsize=None)
def ca_signer(key_type: CaKeyType) -> FileSigner:
    return FileSigner(generate_private_key(key_type))


# --- strategies --------------------------------------------------------------------------

users = st.sampled_from(USERS)
# Mostly plausible input, so that requests get far enough to be voted on, issued and revoked;
# the rest probes the refusals (unknown targets, limits, empty or overlong reasons).
requesters = st.one_of(st.sampled_from([REQ1, REQ2, BOTH, BREAK]), users)
target_names = st.sampled_from(["web", "db", "web", "db", "web", "db", "nope", "WEB", ""])
# Whole seconds, as parse_duration gives them; the edges of every limit in the policy, and more.
durations = st.one_of(
    st.integers(900, 3600),  # within every limit in the policy
    st.sampled_from([1, 60, 299, 300, 301, 899, 900, 901, 3599, 3600, 3601, 7199, 7200, 7201,
                     14399, 14400, 14401, 86400]),
    st.integers(1, 5 * 3600),
).map(lambda s: timedelta(seconds=s))
reasons = st.one_of(
    st.sampled_from(["deploy hotfix", "INC-4711: disk full", "  spaced \n out  ", "x" * 500,
                     "ünïcødé ✓ — reason"]),
    st.sampled_from(["", "   ", "\t\n ", "\u2003", "y" * 501]),
    st.text(max_size=30),
)
clock_steps = st.one_of(st.integers(1, 120), st.integers(120, 3600), st.integers(3600, 4 * 3600))
microseconds = st.one_of(st.just(0), st.integers(0, 999_999))


class AccessMachine(RuleBasedStateMachine):
    user_keys: dict = {}  # set by the test from the session-scoped `user_keys` fixture

    requests = Bundle("requests")   # request ids the service accepted
    issued = Bundle("issued")       # request ids that got a certificate

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="vouch-prop-")
        self.db = Database(f"sqlite:///{self.tmp}/vouch.db")
        self.db.prepare()
        self.now = datetime(2030, 1, 1, 9, 0, tzinfo=timezone.utc)
        self.fingerprints: dict[str, str] = {}   # user -> registered key fingerprint
        self.seen: dict[str, str] = {}           # request id -> last state seen in the database
        self.service: Access | None = None

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers -------------------------------------------------------------------------

    def attempt(self, what: str, fn):
        try:
            return True, fn()
        except EXPECTED_REFUSALS as exc:
            note(f"{what}: refused ({type(exc).__name__}: {exc})")
            return False, exc

    def load(self, request_id: str):
        with self.db.session() as session:
            record = session.get(RequestRecord, request_id)
            votes = list(session.scalars(select(ApprovalRecord)
                                         .where(ApprovalRecord.request_id == request_id)))
            cert = session.scalars(select(CertificateRecord)
                                   .where(CertificateRecord.request_id == request_id)).first()
            return record, votes, cert

    def states(self) -> dict[str, str]:
        with self.db.session() as session:
            return dict(session.execute(select(RequestRecord.id, RequestRecord.state)).all())

    def pending_for(self, user: str, target: str) -> int:
        with self.db.session() as session:
            return len(list(session.scalars(select(RequestRecord.id).where(
                RequestRecord.requester == user, RequestRecord.target == target,
                RequestRecord.state == "pending"))))

    # --- set-up --------------------------------------------------------------------------

    # Each user a key of their own (a key belongs to one person), or none: a permutation.
    @initialize(key_order=st.permutations(
        ["ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "sk-ed25519",
         "sk-ecdsa-p256", None, None, None]),
        ca_type=st.sampled_from([CaKeyType.ECDSA_P256, CaKeyType.ED25519, CaKeyType.ECDSA_P384,
                                 CaKeyType.RSA_3072]))
    def setup(self, key_order, ca_type):
        key_types = dict(zip(USERS, key_order))
        self.service = Access(SqlStore(self.db, AUDIT_KEY), ca_signer(ca_type), policy=lambda: POLICY,
                              directory=Groups(), clock=lambda: self.now)
        for user, key_type in key_types.items():
            if key_type is None:
                continue  # this user never registered a key
            key = self.user_keys[key_type]
            public, newly = keys.add_key(self.service, user, key.public_path.read_text())
            assert newly
            self.fingerprints[user] = public.fingerprint

    # --- actions -------------------------------------------------------------------------

    @rule(target=requests, user=requesters, target_name=target_names, duration=durations,
          reason=reasons)
    def open_request(self, user, target_name, duration, reason):
        return self._open(user, target_name, duration, reason)

    # The same, with input that should pass (unless the user has no key or 3 pending): without
    # it most short runs never get a request far enough to be voted on.
    @rule(target=requests, user_target=st.sampled_from(
        [(u, t) for t, spec in TARGETS.items() for u in sorted(spec["requesters"])]),
        duration=st.integers(900, 7200).map(lambda s: timedelta(seconds=s)),
        reason=st.sampled_from(["deploy hotfix", "INC-4711: disk full"]))
    def open_plausible_request(self, user_target, duration, reason):
        return self._open(*user_target, duration, reason)

    def _open(self, user, target_name, duration, reason):
        spec = TARGETS.get(target_name)
        expect = (user in self.fingerprints and spec is not None and user in spec["requesters"]
                  and spec["min"] <= duration <= spec["max"] and reason_ok(reason)
                  and self.pending_for(user, target_name) < 3)
        ok, result = self.attempt("open_request", lambda: opening.open_request(self.service, 
            user=user, target=target_name, duration=duration, reason=reason))
        assert ok == expect, f"open_request by {user} for {target_name!r} {duration} " \
                             f"reason={reason!r}: expected {'accept' if expect else 'refusal'}, " \
                             f"got {result!r}"
        if not ok:
            return multiple()
        record, votes, cert = self.load(result.id)
        assert record is not None and record.state == "pending" and not votes and cert is None
        assert (record.kind, record.requester, record.target) == ("request", user, target_name)
        assert record.duration_seconds == duration.total_seconds()
        assert record.key_fingerprint == self.fingerprints[user]
        assert record.expires_at == self.now + TTL
        return result.id

    @rule(target=issued, request_id=requests,
          voter=st.one_of(st.sampled_from([REQ2, APPR, BOTH, ADMIN]), users),
          approve=st.sampled_from([True, True, True, False]))
    def vote(self, request_id, voter, approve):
        before, votes, _ = self.load(request_id)
        spec = TARGETS[before.target]
        voted = {v.approver for v in votes}
        expect = (before.state == "pending" and self.now < before.expires_at
                  and voter != before.requester and voter in spec["approvers"]
                  and voter not in voted)
        ok, result = self.attempt("vote", lambda: voting.vote(
            self.service, request_id, approver=voter, approve=approve,
            comment=None if approve else "property test says no"))
        assert ok == expect, f"vote by {voter} ({approve}) on {before.state} request of " \
                             f"{before.requester} for {before.target}: expected " \
                             f"{'accept' if expect else 'refusal'}, got {result!r}"
        after, votes_after, cert = self.load(request_id)
        if not ok:
            assert after.state == before.state and len(votes_after) == len(votes)
            return multiple()
        approvals = {v.approver for v in votes if v.approve} | {voter}
        if not approve:
            assert after.state == "denied"
        elif len(approvals) >= spec["required"]:
            assert after.state == "issued", f"{len(approvals)} approvals but {after.state}"
            assert cert is not None and result.issued is not None
            assert result.issued.certificate.spec.serial == cert.serial
            return request_id
        else:
            assert after.state == "pending"
        return multiple()

    # An approval by someone the model says may still vote (the `pick`-th of them, by name).
    @rule(target=issued, request_id=requests, pick=st.integers(0, 2))
    def approve_plausibly(self, request_id, pick):
        record, votes, _ = self.load(request_id)
        eligible = sorted(TARGETS[record.target]["approvers"] - {record.requester}
                          - {v.approver for v in votes})
        if not eligible:
            return multiple()
        return self.vote(request_id, eligible[pick % len(eligible)], True)

    @rule(seconds=clock_steps, micro=microseconds)
    def advance_clock(self, seconds, micro):
        self.now += timedelta(seconds=seconds, microseconds=micro)

    @rule()
    def expire_due(self):
        with self.db.session() as session:
            pending = list(session.scalars(select(RequestRecord).where(
                RequestRecord.state == "pending")))
            due = {r.id for r in pending if r.expires_at <= self.now}
        before = self.states()
        moved = {r.id for r in sweeps.expire_due(self.service)}
        assert moved == due, f"expired {sorted(moved)}, due {sorted(due)}"
        after = self.states()
        for rid, state in after.items():
            assert state == ("expired" if rid in due else before[rid]), \
                f"expire_due moved {rid} from {before.get(rid)} to {state}"

    @rule(request_id=requests, user=users)
    def cancel(self, request_id, user):
        before, _, _ = self.load(request_id)
        expect = ((user == before.requester or user in ADMINS)
                  and before.state in ("pending", "approved"))
        ok, result = self.attempt("cancel", lambda: voting.cancel(self.service, request_id, user=user))
        assert ok == expect, f"cancel by {user} of {before.state} request of {before.requester}: " \
                             f"expected {'accept' if expect else 'refusal'}, got {result!r}"
        after, _, _ = self.load(request_id)
        assert after.state == ("cancelled" if ok else before.state)

    @rule(request_id=issued, user=users, by_request=st.booleans())
    def revoke(self, request_id, user, by_request):
        _, _, cert = self.load(request_id)
        assert cert is not None
        reference = request_id if by_request else str(cert.serial)
        expect = user == cert.holder or user in ADMINS
        ok, result = self.attempt("revoke", lambda: revoking.revoke(
            self.service, reference, actor=user, reason="property test", as_user=user).certificates)
        assert ok == expect, f"revoke by {user} of {cert.holder}'s certificate: expected " \
                             f"{'accept' if expect else 'refusal'}, got {result!r}"
        after_request, _, after = self.load(request_id)
        if not ok:
            assert after.revoked_at == cert.revoked_at
            return
        assert [r.serial for r in result] == [cert.serial]
        assert result[0].newly == (cert.revoked_at is None)
        assert after.revoked_at is not None
        if cert.revoked_at is None:
            assert after.revoked_by == user and after.revoked_at == self.now
        else:
            assert (after.revoked_by, after.revoked_at) == (cert.revoked_by, cert.revoked_at)
        assert after_request.state == "revoked"

    @rule(target=issued, user=st.one_of(st.just(BREAK), users),
          target_name=st.one_of(st.just("db"), target_names),
          duration=st.one_of(durations, st.sampled_from([1, 3599, 3600, 3601]).map(
              lambda s: timedelta(seconds=s))),
          reason=reasons)
    def breakglass(self, user, target_name, duration, reason):
        expect = (user in BREAKGLASS["users"] and user in self.fingerprints
                  and target_name in BREAKGLASS["targets"] and duration <= BREAKGLASS["max"]
                  and reason_ok(reason))
        ok, result = self.attempt("breakglass", lambda: breakglass.breakglass(self.service, 
            user=user, target=target_name, duration=duration, reason=reason))
        assert ok == expect, f"breakglass by {user} on {target_name!r} {duration} " \
                             f"reason={reason!r}: expected {'accept' if expect else 'refusal'}, " \
                             f"got {result!r}"
        if not ok:
            return multiple()
        record, votes, cert = self.load(result.request.id)
        assert record.kind == "breakglass" and record.state == "issued" and not votes
        assert cert is not None and cert.serial == result.certificate.spec.serial
        return result.request.id

    @rule(request_id=st.one_of(issued, requests), reviewer=st.one_of(st.just(ADMIN), users))
    def review(self, request_id, reviewer):
        before, _, _ = self.load(request_id)
        expect = (reviewer in ADMINS and before.kind == "breakglass"
                  and before.requester != reviewer and before.reviewed_at is None)
        ok, result = self.attempt("review", lambda: breakglass.review(
            self.service, request_id, reviewer=reviewer, note="property test looked"))
        assert ok == expect, f"review by {reviewer} of {before.kind} by {before.requester} " \
                             f"(reviewed_by={before.reviewed_by}): expected " \
                             f"{'accept' if expect else 'refusal'}, got {result!r}"
        after, _, _ = self.load(request_id)
        if ok:
            assert after.reviewed_by == reviewer and after.reviewed_at == self.now
        else:
            assert after.reviewed_by == before.reviewed_by

    # --- invariants, read from the tables --------------------------------------------------

    @invariant()
    def database_is_consistent(self):
        if self.service is None:
            return
        with self.db.session() as session:
            requests = {r.id: r for r in session.scalars(select(RequestRecord))}
            certs = list(session.scalars(select(CertificateRecord)))
            votes: dict[str, list[ApprovalRecord]] = {}
            for v in session.scalars(select(ApprovalRecord)):
                votes.setdefault(v.request_id, []).append(v)
            verification = audit.verify(session, AUDIT_KEY)
            events = session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()))

        assert verification.ok, verification
        assert verification.events == (events or 0)

        # Requests never leave a final state, and move only along the state machine.
        for rid, record in requests.items():
            old = self.seen.get(rid)
            if old is not None and old != record.state:
                assert old not in FINAL, f"{rid} left final state {old} for {record.state}"
                assert record.state in reachable(old), f"{rid} went {old} -> {record.state}"
            self.seen[rid] = record.state
        assert set(self.seen) == set(requests), "a request row disappeared"

        # Votes: only by the target's approvers, never the requester's own, only while pending,
        # and the state agrees with them.
        for rid, record in requests.items():
            request_votes = votes.get(rid, [])
            if record.kind == "breakglass":
                assert not request_votes, f"votes on break-glass use {rid}"
                continue
            spec = TARGETS[record.target]
            for v in request_votes:
                assert v.approver in spec["approvers"] and v.approver != record.requester, \
                    f"{v.approver} voted on {record.requester}'s request for {record.target}"
                assert v.at < record.expires_at, f"vote by {v.approver} after the request expired"
            approvals = {v.approver for v in request_votes if v.approve}
            denials = [v for v in request_votes if not v.approve]
            if record.state == "pending":
                assert not denials and len(approvals) < spec["required"], \
                    f"pending with {len(approvals)} approvals and {len(denials)} denials"
            if record.state == "denied":
                assert denials, "denied without a deny vote"

        # At most one certificate per request; issued/revoked requests have exactly one.
        by_request: dict[str, list[CertificateRecord]] = {}
        for cert in certs:
            assert cert.request_id is not None  # no direct signing in this test
            by_request.setdefault(cert.request_id, []).append(cert)
        for rid, found in by_request.items():
            assert len(found) == 1, f"{len(found)} certificates for {rid}"
        for rid, record in requests.items():
            if record.state in ("issued", "revoked"):
                assert rid in by_request, f"{record.state} request {rid} has no certificate"
            # The signer never fails here, so nothing may be left approved-but-unissued.
            assert record.state != "approved", f"{rid} left approved without a certificate"

        for cert in certs:
            record = requests[cert.request_id]
            assert record.state in ("issued", "revoked", "expired"), \
                f"certificate {cert.serial} for a {record.state} request"
            assert cert.holder == record.requester
            assert cert.subject_fingerprint == record.key_fingerprint
            assert cert.key_id == f"vouch:{record.kind}:{record.id}:{record.requester}"
            assert json.loads(cert.principals) == TARGETS[record.target]["principals"]
            duration = timedelta(seconds=record.duration_seconds)
            assert cert.valid_before - cert.valid_after - BACKDATE == duration, \
                f"certificate {cert.serial} lasts {cert.valid_before - cert.valid_after}, " \
                f"request asked {duration}"
            request_votes = votes.get(record.id, [])
            if record.kind == "request":
                spec = TARGETS.get(record.target)
                assert spec is not None, f"certificate for unknown target {record.target!r}"
                assert spec["min"] <= duration <= spec["max"]
                approvers = {v.approver for v in request_votes if v.approve}
                assert not [v for v in request_votes if not v.approve], "certificate despite a deny"
                assert len(approvers) >= spec["required"], \
                    f"certificate with {len(approvers)} approvals of {spec['required']}"
                assert record.requester not in approvers, "self-approved certificate"
                assert approvers <= spec["approvers"], \
                    f"approved by non-approvers {approvers - spec['approvers']}"
            else:
                assert record.kind == "breakglass"
                assert not request_votes
                assert record.requester in BREAKGLASS["users"]
                assert record.target in BREAKGLASS["targets"]
                assert timedelta(0) < duration <= BREAKGLASS["max"]
            # Revoked only by its holder or an admin; the request follows its certificate.
            if cert.revoked_at is not None:
                assert cert.revoked_by in {cert.holder} | ADMINS, \
                    f"{cert.revoked_by} revoked {cert.holder}'s certificate"
                assert record.state == "revoked"
            else:
                assert record.state != "revoked"


# Budget: each example builds a fresh SQLite database (migrations, ~0.15 s) and runs up to 30
# service calls, each a few transactions plus a signature and a full invariant pass (audit chain
# included); 40 examples take ~25-35 s. A failure costs more: shrinking replays hundreds of
# examples (minutes). For a deeper search raise max_examples / stateful_step_count locally
# (400 x 50 took ~9 minutes and passed).
BUDGET = settings(max_examples=40, stateful_step_count=30, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_access_service_state_machine(user_keys):
    AccessMachine.user_keys = user_keys
    run_state_machine_as_test(AccessMachine, settings=BUDGET)
