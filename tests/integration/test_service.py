"""AccessService end to end on SQLite and PostgreSQL: keys, requests, votes, issuing, break-glass,
expiry, revocation, and what happens when the signer fails."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from access.policy import parse_policy
from access.requests import AlreadyVoted, InvalidTransition, PolicyRefusal, State
from access.service import ISSUE_LEASE, AccessService
from ca.errors import BadInput, SignerUnavailable
from ca.signer import CaKeyType, FileSigner, generate_private_key
from storage import audit, direct
from storage.db import Database, DatabaseBehind
from storage.models import CertificateRecord, RequestRecord
from support.certcheck import parse_certificate_line, verify_signature

POLICY = parse_policy("""
security_channel: C0SEC
request_ttl: 30m
admins: [U0ADMIN]
targets:
  prod-db:
    principals: [postgres]
    max_duration: 4h
    approvers: [U0BOB, U0CAROL, "@dba"]
    approvals_required: 2
  web:
    principals: [www]
    max_duration: 1h
    approvers: [U0BOB]
breakglass:
  users: [U0GLASS]
  max_duration: 1h
  targets: [web]
""")


class Groups:
    def members(self, handle):
        return frozenset({"@dba": {"U0DAVE"}}.get(handle, ()))


class Clock:
    def __init__(self):
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)

    def __call__(self):
        return self.now

    def advance(self, **kwargs):
        self.now += timedelta(**kwargs)


class FlakySigner:
    """A signer that is unavailable until told otherwise, as a token that was unplugged."""

    def __init__(self, inner):
        self.inner, self.down = inner, True
        self.public_key = inner.public_key

    def sign(self, data):
        if self.down:
            raise SignerUnavailable("PKCS#11 token 'ca' is not present")
        return self.inner.sign(data)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(scope="module")
def signer():
    return FileSigner(generate_private_key(CaKeyType.ECDSA_P256))


@pytest.fixture
def service(database, signer, clock, user_keys):
    svc = AccessService(database, signer, policy=lambda: POLICY, directory=Groups(), clock=clock)
    svc.add_key("U0REQ", user_keys["ed25519"].public.line())
    return svc


def _chain_ok(db: Database) -> int:
    with db.session() as session:
        result = audit.verify(session)
    assert result.ok, result.problem
    return result.events


def test_keys_add_list_remove(service, user_keys):
    bare = " ".join(user_keys["ecdsa-p256"].public.line().split()[:2])
    key, newly = service.add_key("U0REQ", bare + " laptop")
    assert newly and key.comment == "laptop"
    assert service.add_key("U0REQ", user_keys["ecdsa-p256"].public.line())[1] is False
    listed = service.list_keys("U0REQ")
    assert [k.fingerprint for k in listed][0] == key.fingerprint  # newest first
    assert len(listed) == 2
    service.remove_key("U0REQ", key.fingerprint)
    assert [k.fingerprint for k in service.list_keys("U0REQ")] == [user_keys["ed25519"].public.fingerprint]
    with pytest.raises(BadInput, match="no registered key"):
        service.remove_key("U0REQ", key.fingerprint)
    with pytest.raises(BadInput, match="DSA|unknown key type|not valid base64"):
        service.add_key("U0REQ", "ssh-dss AAAA")
    # Another user may register the same key; the pair is what is unique.
    assert service.add_key("U0OTHER", user_keys["ecdsa-p256"].public.line())[1]


def test_two_approvals_issue_exactly_one_certificate(service, database, signer, user_keys):
    request = service.open_request(user="U0REQ", target="prod-db", duration=timedelta(hours=2),
                                   reason="investigating slow queries")
    with pytest.raises(PolicyRefusal, match="your own request"):
        service.vote(request.id, approver="U0REQ", approve=True)
    first = service.vote(request.id, approver="U0BOB", approve=True)
    assert not first.decided and first.issued is None
    with pytest.raises(AlreadyVoted):
        service.vote(request.id, approver="U0BOB", approve=True)
    second = service.vote(request.id, approver="U0DAVE", approve=True)  # via @dba
    assert second.decided and second.issued is not None
    certificate = second.issued.certificate
    parsed = parse_certificate_line(certificate.line())
    verify_signature(parsed, signer.public_key.line())
    assert parsed.principals == ["postgres"]
    assert parsed.key_id == f"vouch:request:{request.id}:U0REQ"
    assert parsed.valid_before - parsed.valid_after == 2 * 3600 + 60
    assert certificate.spec.public_key.fingerprint == user_keys["ed25519"].public.fingerprint
    with pytest.raises(InvalidTransition, match="already issued"):
        service.vote(request.id, approver="U0CAROL", approve=True)
    stored, info = service.get(request.id)
    assert stored.state is State.ISSUED and info.serial == certificate.spec.serial
    with database.session() as session:
        rows = session.scalars(select(CertificateRecord).where(CertificateRecord.request_id == request.id)).all()
        assert len(rows) == 1 and rows[0].holder == "U0REQ"
        actions = [e["action"] for e in audit.export(session)]
    assert actions[-6:] == ["request.created", "request.voted", "request.voted", "request.approved",
                            "certificate.reserved", "certificate.issued"]
    _chain_ok(database)


def test_the_issued_request_carries_its_votes(service, clock):
    """The claim brings the votes back in its RETURNING (a JSON subquery per database): in
    order, with their approvers, verdicts and aware UTC times, as service.get reads them."""
    request = service.open_request(user="U0REQ", target="prod-db", duration=timedelta(hours=1),
                                   reason="x")
    clock.advance(microseconds=250_001)
    service.vote(request.id, approver="U0DAVE", approve=True)
    clock.advance(seconds=3)  # a whole second: a zero fraction is stored as such, and read back
    clock.now = clock.now.replace(microsecond=0)
    issued = service.vote(request.id, approver="U0BOB", approve=True).issued
    votes = issued.request.votes
    assert [(v.approver, v.approve) for v in votes] == [("U0DAVE", True), ("U0BOB", True)]
    assert [v.at for v in votes] == [datetime(2026, 11, 22, 12, 0, 0, 250_001, tzinfo=timezone.utc),
                                     datetime(2026, 11, 22, 12, 0, 3, tzinfo=timezone.utc)]
    assert all(v.at.utcoffset() == timedelta(0) for v in votes)
    stored, _ = service.get(request.id)
    assert stored.votes == votes and issued.request.approvers == ["U0DAVE", "U0BOB"]


def test_a_breakglass_certificate_is_issued_with_no_votes(service, user_keys):
    service.add_key("U0GLASS", user_keys["ed25519"].public.line())
    issued = service.breakglass(user="U0GLASS", target="web", duration=timedelta(minutes=30),
                                reason="pager: web down")
    assert issued.request.votes == ()


def test_newest_key_is_certified_unless_another_is_chosen(service, user_keys):
    service.add_key("U0REQ", user_keys["rsa-2048"].public.line())
    request = service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="deploy")
    assert request.key_fingerprint == user_keys["rsa-2048"].public.fingerprint
    chosen = service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="deploy",
                                  key_fingerprint=user_keys["ed25519"].public.fingerprint)
    issued = service.vote(chosen.id, approver="U0BOB", approve=True).issued
    assert issued.certificate.spec.public_key.fingerprint == user_keys["ed25519"].public.fingerprint


def test_refusals_are_specific(service):
    with pytest.raises(PolicyRefusal, match="no registered SSH public key"):
        service.open_request(user="U0NOKEY", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="unknown target 'nope'; targets you can request: prod-db, web"):
        service.open_request(user="U0REQ", target="nope", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="longer than web's maximum of 1h"):
        service.open_request(user="U0REQ", target="web", duration=timedelta(hours=2), reason="x")
    for _ in range(3):
        service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="already have 3 pending"):
        service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(BadInput, match="no request"):
        service.vote("req-doesnotexist", approver="U0BOB", approve=True)


def test_deny_and_expiry_and_cancel(service, clock, database):
    denied = service.open_request(user="U0REQ", target="prod-db", duration=timedelta(hours=1), reason="x")
    result = service.vote(denied.id, approver="U0CAROL", approve=False)
    assert result.decided and result.request.state is State.DENIED
    stale = service.open_request(user="U0REQ", target="prod-db", duration=timedelta(hours=1), reason="y")
    cancelled = service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="z")
    with pytest.raises(PolicyRefusal, match="only the requester or an admin"):
        service.cancel(cancelled.id, user="U0BOB")
    assert service.cancel(cancelled.id, user="U0REQ").state is State.CANCELLED
    clock.advance(minutes=29, seconds=59)
    assert service.expire_due() == []
    clock.advance(seconds=1)
    expired = service.expire_due()
    assert [r.id for r in expired] == [stale.id]
    assert service.get(stale.id)[0].state is State.EXPIRED
    assert service.expire_due() == []  # once only
    with pytest.raises(InvalidTransition):
        service.vote(stale.id, approver="U0BOB", approve=True)
    _chain_ok(database)


def test_breakglass_issues_at_once_and_is_reviewed(service, user_keys, database):
    service.add_key("U0GLASS", user_keys["ecdsa-p384"].public.line())
    with pytest.raises(PolicyRefusal, match="not allowed to break glass"):
        service.breakglass(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="longer than break-glass's maximum of 1h"):
        service.breakglass(user="U0GLASS", target="web", duration=timedelta(hours=2), reason="x")
    issued = service.breakglass(user="U0GLASS", target="web", duration=timedelta(minutes=30),
                                reason="site down")
    assert issued.request.kind.value == "breakglass"
    assert issued.certificate.spec.key_id.startswith("vouch:breakglass:")
    with pytest.raises(PolicyRefusal, match="only admins"):
        service.review(issued.request.id, reviewer="U0BOB")
    service.review(issued.request.id, reviewer="U0ADMIN")
    with pytest.raises(InvalidTransition, match="already reviewed"):
        service.review(issued.request.id, reviewer="U0ADMIN")
    with database.session() as session:
        actions = [e["action"] for e in audit.export(session)]
    assert "breakglass.used" in actions and "breakglass.reviewed" in actions


def test_revocation_rights_and_krl(service, database):
    request = service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    certificate = service.vote(request.id, approver="U0BOB", approve=True).issued.certificate
    serial = str(certificate.spec.serial)
    with pytest.raises(PolicyRefusal, match="only your own"):
        service.revoke(serial, actor="U0BOB", as_user="U0BOB")
    [done] = service.revoke(request.id, actor="U0REQ", as_user="U0REQ", reason="done early")
    assert done.newly and done.serial == certificate.spec.serial
    assert service.get(request.id)[0].state is State.REVOKED
    [again] = service.revoke(serial, actor="U0ADMIN", as_user="U0ADMIN")
    assert not again.newly
    from ca.krl import decode_krl
    [section] = decode_krl(service.krl()).certificates
    assert section.revokes_serial(certificate.spec.serial)
    with pytest.raises(BadInput, match="no certificate with serial 42"):
        service.revoke("42", actor="x")
    with pytest.raises(BadInput, match="not a certificate serial"):
        service.revoke("0", actor="x")


def test_signer_failure_keeps_the_request_approved_and_retry_issues(database, clock, signer, user_keys):
    flaky = FlakySigner(signer)
    service = AccessService(database, flaky, policy=lambda: POLICY, directory=Groups(), clock=clock)
    service.add_key("U0REQ", user_keys["ed25519"].public.line())
    request = service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(SignerUnavailable, match="not present"):
        service.vote(request.id, approver="U0BOB", approve=True)
    stored, info = service.get(request.id)
    assert stored.state is State.APPROVED and "not present" in info.issue_error
    assert info.serial is None
    with database.session() as session:
        assert session.scalar(select(CertificateRecord.id)) is None
    assert service.retry_issuing() == []  # still down: nothing issued, nothing raised
    flaky.down = False
    [issued] = service.retry_issuing()
    assert issued.request.id == request.id
    assert service.get(request.id)[0].state is State.ISSUED
    assert service.retry_issuing() == []
    _chain_ok(database)


def test_an_abandoned_claim_is_retried_after_the_lease(database, clock, signer, user_keys):
    service = AccessService(database, signer, policy=lambda: POLICY, directory=Groups(), clock=clock)
    service.add_key("U0REQ", user_keys["ed25519"].public.line())
    request = service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with database.session() as session:  # a replica approved and claimed it, then died
        session.execute(text("UPDATE requests SET state='approved', issue_claimed_at=:t, issue_serial=5 "
                             "WHERE id=:id"), {"t": clock.now.replace(tzinfo=None) if database.url.startswith("sqlite")
                                                else clock.now, "id": request.id})
    assert service.issue(request.id) is None
    clock.advance(seconds=ISSUE_LEASE.total_seconds() + 1)
    [issued] = service.retry_issuing()
    assert issued.certificate.spec.serial != 5


def test_a_fresh_approval_is_left_to_the_worker_that_approved_it(database, clock, signer, user_keys):
    """Between the deciding vote's commit and its own issue() (or break-glass's), the retry sweep
    of another thread or replica must not take the request: the approver would get nothing."""
    service = AccessService(database, signer, policy=lambda: POLICY, directory=Groups(), clock=clock)
    service.add_key("U0REQ", user_keys["ed25519"].public.line())
    request = service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with database.session() as session:  # approved just now; its worker has not claimed it yet
        now = clock.now.replace(tzinfo=None) if database.url.startswith("sqlite") else clock.now
        session.execute(text("UPDATE requests SET state='approved', decided_at=:t WHERE id=:id"),
                        {"t": now, "id": request.id})
    assert service.retry_issuing() == []
    clock.advance(seconds=ISSUE_LEASE.total_seconds() - 1)
    assert service.retry_issuing() == []
    clock.advance(seconds=2)  # the approving worker died before issuing: the sweep takes over
    [issued] = service.retry_issuing()
    assert issued.request.id == request.id


def test_audit_write_failure_releases_no_certificate(database, clock, signer, user_keys, monkeypatch):
    service = AccessService(database, signer, policy=lambda: POLICY, directory=Groups(), clock=clock)
    service.add_key("U0REQ", user_keys["ed25519"].public.line())
    request = service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    real_append = audit.append

    def failing(session, **kwargs):
        if kwargs["action"] == "certificate.issued":
            raise RuntimeError("audit store full")
        return real_append(session, **kwargs)

    monkeypatch.setattr(audit, "append", failing)
    with pytest.raises(RuntimeError, match="audit store full"):
        service.vote(request.id, approver="U0BOB", approve=True)
    with database.session() as session:
        assert session.scalar(select(CertificateRecord.id)) is None
        assert session.get(RequestRecord, request.id).state == "approved"
    monkeypatch.setattr(audit, "append", real_append)
    clock.advance(seconds=ISSUE_LEASE.total_seconds() + 1)
    assert len(service.retry_issuing()) == 1
    _chain_ok(database)


def test_a_certificate_whose_commit_is_not_known_on_disk_is_not_released(tmp_path, clock, signer,
                                                                         user_keys, monkeypatch):
    """SQLite: the durable commit syncs the WAL itself (storage.direct.sync_wal). If that sync
    fails, the certificate may not be on disk, so it is not handed out."""
    database = Database(f"sqlite:///{tmp_path / 'vouch.db'}")
    database.prepare()
    service = AccessService(database, signer, policy=lambda: POLICY, directory=Groups(), clock=clock)
    service.add_key("U0REQ", user_keys["ed25519"].public.line())
    request = service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")

    def failing(descriptor):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(direct, "_datasync", failing)
    with pytest.raises(OperationalError, match="Input/output error"):
        service.vote(request.id, approver="U0BOB", approve=True)
    database.close()


class SlowSigner:
    """A signer that takes as long as a YubiKey does (tens of milliseconds)."""

    def __init__(self, inner, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.public_key = inner.public_key

    def sign(self, data: bytes) -> bytes:
        time.sleep(self.seconds)
        return self.inner.sign(data)


@pytest.mark.parametrize(("delay", "commits"), [(0.0, [2, 1, 1]), (0.015, [2, 2, 2])])
def test_sqlite_signs_inside_the_transaction_only_after_quick_signatures(tmp_path, clock, signer,
                                                                         user_keys, monkeypatch,
                                                                         delay, commits):
    """The first certificate is issued in two transactions (the claim commits before signing);
    after a signature quicker than QUICK_SIGNING, claim, signature and record share one. A
    signer as slow as a YubiKey never holds the write lock while it signs."""
    database = Database(f"sqlite:///{tmp_path / 'vouch.db'}")
    database.prepare()
    service = AccessService(database, SlowSigner(signer, delay), policy=lambda: POLICY,
                            directory=Groups(), clock=clock)
    service.add_key("U0REQ", user_keys["ed25519"].public.line())
    counted = []
    real_commit = direct.Transaction.commit

    def commit(transaction):
        counted.append(1)
        real_commit(transaction)

    monkeypatch.setattr(direct.Transaction, "commit", commit)
    seen = []
    for _ in commits:
        request = service.open_request(user="U0REQ", target="web",
                                       duration=timedelta(minutes=30), reason="x")
        counted.clear()
        assert service.vote(request.id, approver="U0BOB", approve=True).issued is not None
        seen.append(len(counted))
    assert seen == commits
    _chain_ok(database)
    with database.session() as session:
        actions = [e["action"] for e in audit.export(session)]
    assert actions.count("certificate.reserved") == actions.count("certificate.issued") == 3
    database.close()


def test_a_signature_that_fails_slowly_moves_issuing_out_of_the_transaction(tmp_path, clock, signer,
                                                                             user_keys, monkeypatch):
    """A token that times out after quick signatures must not hold the write lock next time."""
    database = Database(f"sqlite:///{tmp_path / 'vouch.db'}")
    database.prepare()
    slow = SlowSigner(signer, 0.0)
    service = AccessService(database, slow, policy=lambda: POLICY, directory=Groups(), clock=clock)
    service.add_key("U0REQ", user_keys["ed25519"].public.line())
    counted = []
    real_commit = direct.Transaction.commit
    monkeypatch.setattr(direct.Transaction, "commit",
                        lambda transaction: (counted.append(1), real_commit(transaction))[1])

    def request() -> str:
        return service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30),
                                    reason="x").id

    service.vote(request(), approver="U0BOB", approve=True)  # quick: the next one is at once
    failing = request()
    real_sign = slow.sign

    def timing_out(data: bytes) -> bytes:
        time.sleep(0.015)
        raise SignerUnavailable("the token timed out (simulated)")

    slow.sign = timing_out
    counted.clear()
    with pytest.raises(SignerUnavailable):
        service.vote(failing, approver="U0BOB", approve=True)
    assert len(counted) == 1  # signed inside the transaction; failure recorded in it
    assert service.get(failing)[0].state is State.APPROVED
    slow.sign = real_sign
    counted.clear()
    assert service.issue(failing) is not None
    assert len(counted) == 2  # after the slow failure: the claim committed before signing
    _chain_ok(database)
    database.close()


def test_database_behind_migrations_is_refused(database_url):
    db = Database(database_url)
    db.prepare()
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num='0000'"))
    with pytest.raises(DatabaseBehind, match="newer than this Vouch"):
        Database(database_url).prepare()
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(DatabaseBehind, match="no Vouch migration record"):
        Database(database_url).prepare()
    db.close()


def test_audit_details_are_json(service, database):
    service.open_request(user="U0REQ", target="web", duration=timedelta(minutes=30), reason="ünïcode ✓")
    with database.session() as session:
        [event] = [e for e in audit.export(session) if e["action"] == "request.created"]
    assert event["details"]["reason"] == "ünïcode ✓"
    assert json.loads(json.dumps(event))["at"].endswith("Z")
