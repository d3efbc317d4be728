"""Exactly one certificate per request, however many votes and issuers race, on SQLite and
PostgreSQL: 50 approvers clicking at once (threads, and separate processes), one approver
double-clicking, concurrent issuing after a signer failure, and failing closed when the audit
log cannot be written.

Every test takes the `database`/`database_url` fixture, so it runs once per database kind.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from access import issuing, keys, lookup, opening, voting
from access.context import Access
from access.errors import AlreadyVoted, InvalidTransition
from access.issuing import Issued, Retried
from access.policy_file import parse_policy
from access.requests import State
from access.voting import VoteResult
from ca.errors import SignerUnavailable
from ca.signer import CaKeyType, FileSigner, create_file_key
from storage import audit
from storage.db import Database, StorageUnavailable
from storage.store import SqlStore
from support.processes import process_context
from support.audit import AUDIT_KEY

APPROVERS = [f"U0APP{i:02d}" for i in range(50)]
REQUESTER = "U0REQ"
POLICY_TEXT = f"""
request_ttl: 30m
admins: [U0ADMIN]
targets:
  one-approval:
    principals: [deploy]
    max_duration: 2h
    approvers: [{", ".join(APPROVERS)}]
    approvals_required: 1
  two-approvals:
    principals: [deploy, postgres]
    max_duration: 2h
    approvers: [{", ".join(APPROVERS)}]
    approvals_required: 2
"""
THREADS = 50


@functools.cache
def load_policy():
    return parse_policy(POLICY_TEXT, "concurrency-policy.yaml")


class Clock:
    """Real time plus an offset the test can advance (to let an issuing claim lapse)."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(timezone.utc) + self.offset

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.offset += delta


class FlakySigner:
    """Wraps a signer; the first `failures` signatures fail as an unplugged HSM would."""

    def __init__(self, inner: FileSigner, failures: int = 1) -> None:
        self.inner = inner
        self.failures = failures
        self.signed = 0
        self._lock = threading.Lock()

    @property
    def public_key(self):
        return self.inner.public_key

    def sign(self, data: bytes) -> bytes:
        with self._lock:
            if self.failures > 0:
                self.failures -= 1
                raise SignerUnavailable("the HSM is unplugged (simulated)")
            self.signed += 1
        return self.inner.sign(data)

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def ca_key_path(tmp_path):
    path = tmp_path / "ca_key"
    create_file_key(path, CaKeyType.ED25519)
    return path


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_service(database, ca_key_path, clock):
    def make(signer=None) -> Access:
        return Access(SqlStore(database, AUDIT_KEY), signer or FileSigner.load(ca_key_path),
                      policy=load_policy, clock=clock)
    return make


@pytest.fixture
def service(make_service):
    return make_service()


def open_request(service: Access, user_keys, target: str) -> str:
    keys.add_key(service, REQUESTER, user_keys["ed25519"].public.line())
    request = opening.open_request(service, user=REQUESTER, target=target, duration=timedelta(minutes=30),
                                   reason="deploy the hotfix — ünïcode ✓")
    assert request.state is State.PENDING
    return request.id


def classify(call: Callable[[], object]) -> str:
    """What one racer got: issued / decided / counted / a clean refusal / anything else."""
    try:
        result = call()
    except AlreadyVoted:  # before InvalidTransition: it is a subclass
        return "AlreadyVoted"
    except InvalidTransition:
        return "InvalidTransition"
    except Exception as exc:  # noqa: BLE001 - the test wants to see every other outcome
        return f"error: {type(exc).__name__}: {exc}"
    if isinstance(result, VoteResult):
        if result.issued is not None:
            return "issued"
        return "decided" if result.decided else "counted"
    if isinstance(result, Issued):
        return "Issued"
    if isinstance(result, Retried):
        return f"retry:{len(result.issued)}"
    return repr(result)


def race(calls: list[Callable[[], object]]) -> list[str]:
    """Run every call in its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait(timeout=60)
        return classify(call)

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [f.result(timeout=180) for f in futures]


def scalar(database: Database, statement: str, **params):
    with database.engine.connect() as connection:
        return connection.execute(text(statement), params).scalar_one()


def certificates_for(database: Database, request_id: str) -> int:
    return scalar(database, "SELECT count(*) FROM certificates WHERE request_id = :id",
                  id=request_id)


def request_row(database: Database, request_id: str) -> dict:
    """The stored request (state and issuing bookkeeping), read straight from its table."""
    with database.engine.connect() as connection:
        return dict(connection.execute(
            text("SELECT state, version, issue_serial, issue_claimed_at, issue_error, "
                 "issue_attempts, issued_at FROM requests WHERE id = :id"),
            {"id": request_id}).mappings().one())


def approvals_for(database: Database, request_id: str) -> int:
    return scalar(database, "SELECT count(*) FROM approvals WHERE request_id = :id", id=request_id)


def audit_actions(database: Database, request_id: str) -> Counter:
    with database.session() as session:
        return Counter(e["action"] for e in audit.export(session)
                       if e["subject"] == f"request:{request_id}")


def assert_chain_intact(database: Database) -> None:
    with database.session() as session:
        result = audit.verify(session, AUDIT_KEY)
    assert result.ok, result


def assert_issued_once(database: Database, service: Access, request_id: str) -> None:
    assert certificates_for(database, request_id) == 1
    stored = request_row(database, request_id)
    assert stored["state"] == State.ISSUED.value, stored
    assert stored["issue_error"] is None and stored["issued_at"] is not None, stored
    request, _ = lookup.request(service, request_id)
    assert request.state is State.ISSUED, request
    assert_chain_intact(database)
    actions = audit_actions(database, request_id)
    assert actions["certificate.issued"] == 1, actions


def assert_vote_outcomes(outcomes: list[str], required: int) -> Counter:
    counts = Counter(outcomes)
    print(f"\nvote outcomes (approvals_required={required}): {dict(counts)}")
    unexpected = {k: v for k, v in counts.items()
                  if k not in {"issued", "counted", "InvalidTransition", "AlreadyVoted"}}
    assert not unexpected, f"votes that neither counted nor were cleanly refused: {unexpected}"
    assert counts["issued"] == 1, counts
    assert counts["counted"] == required - 1, counts
    return counts


# --- 50 approvers at once --------------------------------------------------------------------

@pytest.mark.parametrize("target,required", [("one-approval", 1), ("two-approvals", 2)])
def test_fifty_approvers_in_threads_issue_one_certificate(database, service, user_keys, target,
                                                          required):
    request_id = open_request(service, user_keys, target)
    outcomes = race([functools.partial(voting.vote, service, request_id, approver=a, approve=True)
                     for a in APPROVERS[:THREADS]])

    assert_vote_outcomes(outcomes, required)
    assert approvals_for(database, request_id) == required
    assert_issued_once(database, service, request_id)
    actions = audit_actions(database, request_id)
    assert actions["request.voted"] == required and actions["request.approved"] == 1, actions
    assert actions["certificate.reserved"] == 1, actions


def process_voter(url: str, key_path: str, approver: str, request_id: str, barrier,
                  results) -> None:
    """Runs in a spawned process: its own Database, Access and FileSigner, one vote."""
    try:
        database = Database(url)
        service = Access(SqlStore(database, AUDIT_KEY), FileSigner.load(key_path), policy=load_policy)
        database.ping()  # connect before the barrier so the race is about the vote
        barrier.wait(timeout=300)
        outcome = classify(lambda: voting.vote(service, request_id, approver=approver,
                                               approve=True))
        database.close()
    except BaseException as exc:  # noqa: BLE001 - report, do not die silently
        outcome = f"error: {type(exc).__name__}: {exc}"
    results.put((approver, outcome))


def test_fifty_approvers_in_processes_issue_one_certificate(database, database_url, service,
                                                            ca_key_path, user_keys):
    request_id = open_request(service, user_keys, "one-approval")
    context = process_context()
    barrier = context.Barrier(len(APPROVERS))
    results = context.Queue()
    workers = [context.Process(target=process_voter,
                               args=(database_url, str(ca_key_path), a, request_id, barrier,
                                     results))
               for a in APPROVERS]
    for worker in workers:
        worker.start()
    outcomes = dict(results.get(timeout=300) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * len(workers)

    assert sorted(outcomes) == sorted(APPROVERS)
    locked = {a: o for a, o in outcomes.items() if "locked" in o}
    assert not locked, f"SQLite writers did not queue behind BEGIN IMMEDIATE: {locked}"
    assert_vote_outcomes(list(outcomes.values()), 1)
    assert approvals_for(database, request_id) == 1
    assert_issued_once(database, service, request_id)


# --- one approver, many clicks ------------------------------------------------------------------

def test_double_click_records_one_vote(database, service, user_keys):
    request_id = open_request(service, user_keys, "two-approvals")
    outcomes = race([functools.partial(voting.vote, service, request_id, approver=APPROVERS[7],
                                       approve=True) for _ in range(20)])
    counts = Counter(outcomes)
    print(f"\ndouble-click outcomes: {dict(counts)}")
    assert counts == Counter({"counted": 1, "AlreadyVoted": 19}), counts
    assert approvals_for(database, request_id) == 1
    request, _ = lookup.request(service, request_id)
    assert request.state is State.PENDING and request.approvers == [APPROVERS[7]]
    assert certificates_for(database, request_id) == 0
    assert audit_actions(database, request_id)["request.voted"] == 1
    assert_chain_intact(database)

    # a second approver still decides it, once
    result = voting.vote(service, request_id, approver=APPROVERS[8], approve=True)
    assert result.decided and result.issued is not None
    assert_issued_once(database, service, request_id)


# --- issuing after a failure ---------------------------------------------------------------------

def test_concurrent_issue_after_signer_failure(database, make_service, ca_key_path, user_keys):
    signer = FlakySigner(FileSigner.load(ca_key_path), failures=1)
    service = make_service(signer)
    request_id = open_request(service, user_keys, "one-approval")

    with pytest.raises(SignerUnavailable):
        voting.vote(service, request_id, approver=APPROVERS[0], approve=True)
    stored = request_row(database, request_id)
    assert stored["state"] == State.APPROVED.value, stored
    assert "unplugged" in (stored["issue_error"] or ""), stored
    assert stored["issue_claimed_at"] is None, stored  # released: a retry may claim at once
    assert certificates_for(database, request_id) == 0
    assert audit_actions(database, request_id)["certificate.issue_failed"] == 1

    calls = [functools.partial(issuing.issue, service, request_id) if i % 2 == 0
             else functools.partial(issuing.retry_issuing, service) for i in range(20)]
    outcomes = race(calls)
    counts = Counter(outcomes)
    print(f"\nconcurrent issue/retry outcomes: {dict(counts)}")
    winners = counts["Issued"] + counts["retry:1"]
    assert winners == 1, counts
    assert set(counts) <= {"Issued", "retry:1", "None", "retry:0"}, counts
    assert signer.signed == 1
    assert_issued_once(database, service, request_id)
    actions = audit_actions(database, request_id)
    assert actions["certificate.reserved"] == 2, actions  # the failed claim and the one winner
    assert actions["certificate.issue_failed"] == 1, actions


# --- fail closed -----------------------------------------------------------------------------

def test_issue_fails_closed_when_audit_fails(database, service, clock, user_keys, monkeypatch):
    request_id = open_request(service, user_keys, "one-approval")
    real_append = audit.append_all

    def failing_append(session, events, key):
        if any(event.action == "certificate.issued" for event in events):
            raise StorageUnavailable("audit log unavailable (simulated)")
        return real_append(session, events, key)

    monkeypatch.setattr(audit, "append_all", failing_append)
    with pytest.raises(StorageUnavailable):
        voting.vote(service, request_id, approver=APPROVERS[3], approve=True)
    assert certificates_for(database, request_id) == 0, "a certificate was recorded unaudited"
    stored = request_row(database, request_id)
    assert stored["state"] == State.APPROVED.value, stored
    assert_chain_intact(database)
    actions = audit_actions(database, request_id)
    assert actions["certificate.issued"] == 0 and actions["certificate.reserved"] == 1, actions

    # the failed attempt released its claim and recorded why, so no lease has to lapse
    assert stored["issue_claimed_at"] is None, stored
    assert "recording the certificate failed" in stored["issue_error"], stored

    # once the audit log is back, concurrent retries issue exactly one
    monkeypatch.setattr(audit, "append_all", real_append)
    outcomes = race([functools.partial(issuing.retry_issuing, service) for _ in range(10)])
    counts = Counter(outcomes)
    assert counts["retry:1"] == 1 and counts["retry:0"] == 9, counts
    assert_issued_once(database, service, request_id)
    assert audit_actions(database, request_id)["certificate.reserved"] == 2
