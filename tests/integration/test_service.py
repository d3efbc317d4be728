"""The use cases end to end on SQLite and PostgreSQL: keys, requests, votes, issuing, break-glass,
expiry, revocation, and what happens when the signer fails."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, select, text

from access import (breakglass, digest, issuing, keys, lookup, opening, revoking, sweeps,
                    voting)
from access.context import Access
from access.errors import AlreadyVoted, InvalidTransition, PolicyRefusal
from access.issuing import ISSUE_LEASE
from access.policy_file import parse_policy
from access.requests import State
from ca.errors import BadInput, SignerUnavailable
from ca.signer import CaKeyType, FileSigner, generate_private_key
from storage import audit
from storage.db import Database, DatabaseBehind
from storage.models import CertificateRecord, RequestRecord
from storage.store import SqlStore
from support.certcheck import parse_certificate_line, verify_signature
from support.audit import AUDIT_KEY

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
    svc = Access(SqlStore(database, AUDIT_KEY), signer, policy=lambda: POLICY, directory=Groups(), clock=clock)
    keys.add_key(svc, "U0REQ", user_keys["ed25519"].public.line())
    return svc


def _chain_ok(db: Database) -> int:
    with db.session() as session:
        result = audit.verify(session, AUDIT_KEY)
    assert result.ok, result.problem
    return result.events


def test_keys_add_list_remove(service, user_keys):
    bare = " ".join(user_keys["ecdsa-p256"].public.line().split()[:2])
    key, newly = keys.add_key(service, "U0REQ", bare + " laptop")
    assert newly and key.comment == "laptop"
    assert keys.add_key(service, "U0REQ", user_keys["ecdsa-p256"].public.line())[1] is False
    listed = keys.list_keys(service, "U0REQ")
    assert [k.fingerprint for k in listed][0] == key.fingerprint  # newest first
    assert len(listed) == 2
    keys.remove_key(service, "U0REQ", key.fingerprint)
    assert [k.fingerprint for k in keys.list_keys(service, "U0REQ")] == [user_keys["ed25519"].public.fingerprint]
    with pytest.raises(BadInput, match="no registered key"):
        keys.remove_key(service, "U0REQ", key.fingerprint)
    with pytest.raises(BadInput, match="DSA|unknown key type|not valid base64"):
        keys.add_key(service, "U0REQ", "ssh-dss AAAA")
    # A key belongs to one user: another is refused while it is registered, and the database
    # enforces it too (ix_user_keys_active_fingerprint), for a race between two registrations.
    with pytest.raises(PolicyRefusal, match="registered by another Slack user"):
        keys.add_key(service, "U0OTHER", user_keys["ed25519"].public.line())
    assert keys.add_key(service, "U0OTHER", user_keys["ecdsa-p256"].public.line())[1]  # removed
    with service.store.db.transaction() as connection:  # past the check, as a racing writer
        from storage.keys import SqlKeys
        from access.ports import Duplicate
        with pytest.raises(Duplicate):
            SqlKeys(connection).add("U0THIRD", user_keys["ed25519"].public, service.clock())


def test_migration_0005_keeps_the_first_of_a_key_registered_twice(database_url, user_keys):
    from alembic import command
    from sqlalchemy import text as sql

    from storage.db import _alembic_config

    db = Database(database_url)
    with db.migrating() as connection:
        command.upgrade(_alembic_config(connection), "0004")
    line = user_keys["ed25519"].public.line()
    fp = user_keys["ed25519"].public.fingerprint
    with db.engine.begin() as connection:
        for user, at in (("U0FIRST", "2026-01-01 10:00:00.000000"),
                         ("U0SECOND", "2026-01-02 10:00:00.000000")):
            connection.execute(sql("INSERT INTO user_keys (user_id, key_type, public_key, "
                                   "fingerprint, comment, added_at) VALUES (:u, 'ssh-ed25519', "
                                   ":k, :f, '', :at)"), {"u": user, "k": line, "f": fp, "at": at})
    db.upgrade()
    with db.engine.connect() as connection:
        rows = connection.execute(sql("SELECT user_id, removed_at IS NULL FROM user_keys "
                                      "ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("U0FIRST", True), ("U0SECOND", False)]
    db.close()


def test_two_approvals_issue_exactly_one_certificate(service, database, signer, user_keys):
    request = opening.open_request(service, user="U0REQ", target="prod-db", duration=timedelta(hours=2),
                                   reason="investigating slow queries")
    with pytest.raises(PolicyRefusal, match="your own request"):
        voting.vote(service, request.id, approver="U0REQ", approve=True)
    first = voting.vote(service, request.id, approver="U0BOB", approve=True)
    assert not first.decided and first.issued is None
    with pytest.raises(AlreadyVoted):
        voting.vote(service, request.id, approver="U0BOB", approve=True)
    second = voting.vote(service, request.id, approver="U0DAVE", approve=True)  # via @dba
    assert second.decided and second.issued is not None
    certificate = second.issued.certificate
    parsed = parse_certificate_line(certificate.line())
    verify_signature(parsed, signer.public_key.line())
    assert parsed.principals == ["postgres"]
    assert parsed.key_id == f"vouch:request:{request.id}:U0REQ"
    assert parsed.valid_before - parsed.valid_after == 2 * 3600 + 60
    assert certificate.spec.public_key.fingerprint == user_keys["ed25519"].public.fingerprint
    with pytest.raises(InvalidTransition, match="already issued"):
        voting.vote(service, request.id, approver="U0CAROL", approve=True)
    stored, stored_certificate = lookup.request(service, request.id)
    assert stored.state is State.ISSUED and stored_certificate.serial == certificate.spec.serial
    with database.session() as session:
        rows = session.scalars(select(CertificateRecord).where(CertificateRecord.request_id == request.id)).all()
        assert len(rows) == 1 and rows[0].holder == "U0REQ"
        actions = [e["action"] for e in audit.export(session)]
    assert actions[-7:] == ["request.created", "request.vote.refused", "request.voted",
                            "request.voted", "request.approved", "certificate.reserved",
                            "certificate.issued"]
    _chain_ok(database)


def test_the_issued_request_carries_its_votes(service, clock):
    """The claimed request carries its votes: in order, with their approvers, verdicts and aware
    UTC times, as lookup.request reads them."""
    request = opening.open_request(service, user="U0REQ", target="prod-db", duration=timedelta(hours=1),
                                   reason="x")
    clock.advance(microseconds=250_001)
    voting.vote(service, request.id, approver="U0DAVE", approve=True)
    clock.advance(seconds=3)  # a whole second: a zero fraction is stored as such, and read back
    clock.now = clock.now.replace(microsecond=0)
    issued = voting.vote(service, request.id, approver="U0BOB", approve=True).issued
    votes = issued.request.votes
    assert [(v.approver, v.approve) for v in votes] == [("U0DAVE", True), ("U0BOB", True)]
    assert [v.at for v in votes] == [datetime(2026, 11, 22, 12, 0, 0, 250_001, tzinfo=timezone.utc),
                                     datetime(2026, 11, 22, 12, 0, 3, tzinfo=timezone.utc)]
    assert all(v.at.utcoffset() == timedelta(0) for v in votes)
    stored, _ = lookup.request(service, request.id)
    assert stored.votes == votes and issued.request.approvers == ["U0DAVE", "U0BOB"]


def test_a_breakglass_certificate_is_issued_with_no_votes(service, user_keys):
    keys.add_key(service, "U0GLASS", user_keys["ecdsa-p521"].public.line())
    issued = breakglass.breakglass(service, user="U0GLASS", target="web", duration=timedelta(minutes=30),
                                reason="pager: web down")
    assert issued.request.votes == ()


def test_newest_key_is_certified_unless_another_is_chosen(service, user_keys):
    keys.add_key(service, "U0REQ", user_keys["rsa-2048"].public.line())
    request = opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="deploy")
    assert request.key_fingerprint == user_keys["rsa-2048"].public.fingerprint
    chosen = opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="deploy",
                                  key_fingerprint=user_keys["ed25519"].public.fingerprint)
    issued = voting.vote(service, chosen.id, approver="U0BOB", approve=True).issued
    assert issued.certificate.spec.public_key.fingerprint == user_keys["ed25519"].public.fingerprint


def test_refusals_are_specific(service):
    with pytest.raises(PolicyRefusal, match="no registered SSH public key"):
        opening.open_request(service, user="U0NOKEY", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="unknown target 'nope'; targets you can request: prod-db, web"):
        opening.open_request(service, user="U0REQ", target="nope", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="longer than web's maximum of 1h"):
        opening.open_request(service, user="U0REQ", target="web", duration=timedelta(hours=2), reason="x")
    for _ in range(3):
        opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="already have 3 pending"):
        opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(BadInput, match="no request"):
        voting.vote(service, "req-doesnotexist", approver="U0BOB", approve=True)


def test_deny_and_expiry_and_cancel(service, clock, database):
    denied = opening.open_request(service, user="U0REQ", target="prod-db", duration=timedelta(hours=1), reason="x")
    result = voting.vote(service, denied.id, approver="U0CAROL", approve=False,
                         comment="not now")
    assert result.decided and result.request.state is State.DENIED
    stale = opening.open_request(service, user="U0REQ", target="prod-db", duration=timedelta(hours=1), reason="y")
    cancelled = opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="z")
    with pytest.raises(PolicyRefusal, match="only the requester or an admin"):
        voting.cancel(service, cancelled.id, user="U0BOB")
    assert voting.cancel(service, cancelled.id, user="U0REQ").state is State.CANCELLED
    clock.advance(minutes=29, seconds=59)
    assert sweeps.expire_due(service) == []
    clock.advance(seconds=1)
    expired = sweeps.expire_due(service)
    assert [r.id for r in expired] == [stale.id]
    assert lookup.request(service, stale.id)[0].state is State.EXPIRED
    assert sweeps.expire_due(service) == []  # once only
    with pytest.raises(InvalidTransition):
        voting.vote(service, stale.id, approver="U0BOB", approve=True)
    _chain_ok(database)


def test_breakglass_issues_at_once_and_is_reviewed(service, user_keys, database):
    keys.add_key(service, "U0GLASS", user_keys["ecdsa-p384"].public.line())
    with pytest.raises(PolicyRefusal, match="not allowed to break glass"):
        breakglass.breakglass(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="longer than break-glass's maximum of 1h"):
        breakglass.breakglass(service, user="U0GLASS", target="web", duration=timedelta(hours=2), reason="x")
    issued = breakglass.breakglass(service, user="U0GLASS", target="web", duration=timedelta(minutes=30),
                                reason="site down")
    assert issued.request.kind.value == "breakglass"
    assert issued.certificate.spec.key_id.startswith("vouch:breakglass:")
    with pytest.raises(PolicyRefusal, match="only admins"):
        breakglass.review(service, issued.request.id, reviewer="U0BOB", note="looked at it")
    breakglass.review(service, issued.request.id, reviewer="U0ADMIN", note="looked at it")
    with pytest.raises(InvalidTransition, match="already reviewed"):
        breakglass.review(service, issued.request.id, reviewer="U0ADMIN", note="looked at it")
    with database.session() as session:
        actions = [e["action"] for e in audit.export(session)]
    assert "breakglass.used" in actions and "breakglass.reviewed" in actions


def test_revocation_rights_and_krl(service, database):
    request = opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    certificate = voting.vote(service, request.id, approver="U0BOB", approve=True).issued.certificate
    serial = str(certificate.spec.serial)
    with pytest.raises(PolicyRefusal, match="only your own"):
        revoking.revoke(service, serial, actor="U0BOB", as_user="U0BOB")
    [done] = revoking.revoke(service, request.id, actor="U0REQ", as_user="U0REQ",
                             reason="done early").certificates
    assert done.newly and done.serial == certificate.spec.serial
    assert lookup.request(service, request.id)[0].state is State.REVOKED
    [again] = revoking.revoke(service, serial, actor="U0ADMIN", as_user="U0ADMIN").certificates
    assert not again.newly
    from ca.krl import decode_krl
    [section] = decode_krl(revoking.krl(service).data).certificates
    assert section.revokes_serial(certificate.spec.serial)
    with pytest.raises(BadInput, match="no certificate with serial 42"):
        revoking.revoke(service, "42", actor="x")
    with pytest.raises(BadInput, match="not a certificate serial"):
        revoking.revoke(service, "0", actor="x")


def test_pending_requests_and_their_votes_take_two_selects(service, clock, database):
    """The App Home's list of pending requests: their votes in one SELECT, not one each."""
    opened = [opening.open_request(service, user="U0REQ", target="prod-db",
                                   duration=timedelta(hours=1), reason=f"r{i}") for i in range(3)]
    voting.vote(service, opened[0].id, approver="U0BOB", approve=True)
    voting.vote(service, opened[2].id, approver="U0CAROL", approve=True, comment="fine")
    selects: list[str] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: selects.append(statement)
                 if statement.lstrip().startswith("SELECT") else None)
    with service.unit(read_only=True) as unit:
        pending = unit.requests.pending(clock.now, 200)
    assert {r.id: [(v.approver, v.comment) for v in r.votes] for r in pending} == {
        opened[0].id: [("U0BOB", None)], opened[1].id: [], opened[2].id: [("U0CAROL", "fine")]}
    assert len(selects) == 2


def test_the_digest_counts_the_day_and_nothing_before_it(service, clock, user_keys):
    """reports.activity through its indexes: certificates issued for requests (not break-glass,
    not signed directly), denials, expiries, revocations (direct ones too), break-glass uses."""
    keys.add_key(service, "U0GLASS", user_keys["ecdsa-p384"].public.line())

    def web(reason: str):
        return opening.open_request(service, user="U0REQ", target="web",
                                    duration=timedelta(minutes=30), reason=reason)

    old = web("the day before")
    voting.vote(service, old.id, approver="U0BOB", approve=True)
    revoking.revoke(service, old.id, actor="U0ADMIN")
    clock.advance(days=1)
    since = clock.now
    issued = web("today")
    voting.vote(service, issued.id, approver="U0BOB", approve=True)
    voting.vote(service, web("no").id, approver="U0BOB", approve=False, comment="not today")
    stale = opening.open_request(service, user="U0REQ", target="prod-db",
                                 duration=timedelta(hours=1), reason="nobody looks")
    used = breakglass.breakglass(service, user="U0GLASS", target="web",
                                 duration=timedelta(minutes=30), reason="fire")
    direct = issuing.sign_direct(service, public_key=user_keys["ed25519"].public,
                                 principals=["www"], duration=timedelta(hours=1), actor="cli:root",
                                 reason="by hand")
    clock.advance(minutes=31)
    assert [r.id for r in sweeps.expire_due(service)] == [stale.id]
    revoking.revoke(service, issued.id, actor="U0ADMIN")
    revoking.revoke(service, str(direct.spec.serial), actor="U0ADMIN")
    day = digest.activity(service, until=since + digest.DIGEST_WINDOW)
    assert (day.issued, day.denied, day.expired) == ({"web": 1}, {"web": 1}, {"prod-db": 1})
    assert day.revoked == {"web": 1, "(signed directly)": 1}
    assert [r.id for r in day.breakglass] == [used.request.id]
    before = digest.activity(service, until=since)
    assert (before.issued, before.revoked, before.breakglass) == ({"web": 1}, {"web": 1}, [])


def test_signer_failure_keeps_the_request_approved_and_retry_issues(database, clock, signer, user_keys):
    flaky = FlakySigner(signer)
    service = Access(SqlStore(database, AUDIT_KEY), flaky, policy=lambda: POLICY, directory=Groups(), clock=clock)
    keys.add_key(service, "U0REQ", user_keys["ed25519"].public.line())
    request = opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with pytest.raises(SignerUnavailable, match="not present"):
        voting.vote(service, request.id, approver="U0BOB", approve=True)
    stored, stored_certificate = lookup.request(service, request.id)
    assert stored.state is State.APPROVED and "not present" in stored.issue_error
    assert stored_certificate is None
    with database.session() as session:
        assert session.scalar(select(CertificateRecord.id)) is None
    clock.advance(seconds=issuing.retry_delay(1).total_seconds())
    assert issuing.retry_issuing(service).issued == []  # still down: nothing issued, nothing raised
    flaky.down = False
    assert issuing.retry_issuing(service).issued == []  # backing off after the second failure
    clock.advance(seconds=issuing.retry_delay(2).total_seconds())
    [issued] = issuing.retry_issuing(service).issued
    assert issued.request.id == request.id
    assert lookup.request(service, request.id)[0].state is State.ISSUED
    assert issuing.retry_issuing(service).issued == []
    _chain_ok(database)


def test_an_abandoned_claim_is_retried_after_the_lease(database, clock, signer, user_keys):
    service = Access(SqlStore(database, AUDIT_KEY), signer, policy=lambda: POLICY, directory=Groups(), clock=clock)
    keys.add_key(service, "U0REQ", user_keys["ed25519"].public.line())
    request = opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with database.session() as session:  # a replica approved and claimed it, then died
        session.execute(text("UPDATE requests SET state='approved', issue_claimed_at=:t, issue_serial=5 "
                             "WHERE id=:id"), {"t": clock.now.replace(tzinfo=None) if database.url.startswith("sqlite")
                                                else clock.now, "id": request.id})
    assert issuing.issue(service, request.id) is None
    clock.advance(seconds=ISSUE_LEASE.total_seconds() + 1)
    [issued] = issuing.retry_issuing(service).issued
    assert issued.certificate.spec.serial != 5


def test_a_fresh_approval_is_left_to_the_worker_that_approved_it(database, clock, signer, user_keys):
    """Between the deciding vote's commit and its own issue() (or break-glass's), the retry sweep
    of another thread or replica must not take the request: the approver would get nothing."""
    service = Access(SqlStore(database, AUDIT_KEY), signer, policy=lambda: POLICY, directory=Groups(), clock=clock)
    keys.add_key(service, "U0REQ", user_keys["ed25519"].public.line())
    request = opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    with database.session() as session:  # approved just now; its worker has not claimed it yet
        now = clock.now.replace(tzinfo=None) if database.url.startswith("sqlite") else clock.now
        session.execute(text("UPDATE requests SET state='approved', decided_at=:t WHERE id=:id"),
                        {"t": now, "id": request.id})
    assert issuing.retry_issuing(service).issued == []
    clock.advance(seconds=ISSUE_LEASE.total_seconds() - 1)
    assert issuing.retry_issuing(service).issued == []
    clock.advance(seconds=2)  # the approving worker died before issuing: the sweep takes over
    [issued] = issuing.retry_issuing(service).issued
    assert issued.request.id == request.id


def test_audit_write_failure_releases_no_certificate(database, clock, signer, user_keys, monkeypatch):
    service = Access(SqlStore(database, AUDIT_KEY), signer, policy=lambda: POLICY, directory=Groups(), clock=clock)
    keys.add_key(service, "U0REQ", user_keys["ed25519"].public.line())
    request = opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="x")
    real_append = audit.append_all

    def failing(session, events, key):
        if any(event.action == "certificate.issued" for event in events):
            raise RuntimeError("audit store full")
        return real_append(session, events, key)

    monkeypatch.setattr(audit, "append_all", failing)
    with pytest.raises(RuntimeError, match="audit store full"):
        voting.vote(service, request.id, approver="U0BOB", approve=True)
    with database.session() as session:
        assert session.scalar(select(CertificateRecord.id)) is None
        assert session.get(RequestRecord, request.id).state == "approved"
    monkeypatch.setattr(audit, "append_all", real_append)
    clock.advance(seconds=ISSUE_LEASE.total_seconds() + 1)
    assert len(issuing.retry_issuing(service).issued) == 1
    _chain_ok(database)


class LockProbe:
    """A signer that, while it signs, checks that the issuing path holds no lock another writer
    would wait for: the claim committed before signing, as a YubiKey takes tens of milliseconds."""

    def __init__(self, inner, database: Database) -> None:
        self.inner, self.database, self.probes = inner, database, 0
        self.public_key = inner.public_key

    def sign(self, data: bytes) -> bytes:
        url = self.database.engine.url
        if url.get_backend_name() == "sqlite":
            other = sqlite3.connect(url.database, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # "database is locked" if a writer held it
                other.execute("ROLLBACK")
            finally:
                other.close()
        else:
            with self.database.engine.connect() as connection:
                with connection.begin():
                    connection.exec_driver_sql("SET LOCAL lock_timeout = '1ms'")
                    connection.exec_driver_sql("SELECT 1 FROM audit_head FOR UPDATE")
                    connection.exec_driver_sql("SELECT 1 FROM requests FOR UPDATE")
        self.probes += 1
        return self.inner.sign(data)


def test_no_lock_is_held_while_the_signer_works(database, clock, signer, user_keys):
    probe = LockProbe(signer, database)
    service = Access(SqlStore(database, AUDIT_KEY), probe, policy=lambda: POLICY, directory=Groups(), clock=clock)
    keys.add_key(service, "U0REQ", user_keys["ed25519"].public.line())
    keys.add_key(service, "U0GLASS", user_keys["ecdsa-p384"].public.line())
    request = opening.open_request(service, user="U0REQ", target="web",
                                   duration=timedelta(minutes=30), reason="x")
    assert voting.vote(service, request.id, approver="U0BOB", approve=True).issued is not None
    assert breakglass.breakglass(service, user="U0GLASS", target="web",
                                 duration=timedelta(minutes=30), reason="pager") is not None
    assert probe.probes == 2
    _chain_ok(database)


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
    opening.open_request(service, user="U0REQ", target="web", duration=timedelta(minutes=30), reason="ünïcode ✓")
    with database.session() as session:
        [event] = [e for e in audit.export(session) if e["action"] == "request.created"]
    assert event["details"]["reason"] == "ünïcode ✓"
    assert json.loads(json.dumps(event))["at"].endswith("Z")


def test_the_life_of_a_request_is_stored_as_it_happened(database, clock, signer, user_keys):
    """A deny's reason, who cancelled, what an extension extends, a review's note, and the
    App Home's lists, through the SQL store on both databases."""
    service = Access(SqlStore(database, AUDIT_KEY), signer, policy=lambda: POLICY,
                     directory=Groups(), clock=clock)
    keys.add_key(service, "U0REQ", user_keys["ed25519"].public.line())
    keys.add_key(service, "U0GLASS", user_keys["ecdsa-p256"].public.line())
    denied = opening.open_request(service, user="U0REQ", target="web",
                                  duration=timedelta(minutes=30), reason="x")
    voting.vote(service, denied.id, approver="U0BOB", approve=False, comment="not this week")
    assert lookup.request(service, denied.id)[0].deny_reason == "not this week"
    again = opening.open_request(service, user="U0REQ", target="web",
                                 duration=timedelta(minutes=30), reason="x", extends=denied.id)
    waiting = opening.open_request(service, user="U0REQ", target="prod-db",
                                   duration=timedelta(minutes=30), reason="y")
    assert [r.id for r in lookup.overview(service, "U0DAVE").awaiting] == [waiting.id]  # @dba
    assert {r.id for r in lookup.overview(service, "U0REQ").pending} == {again.id, waiting.id}
    voting.cancel(service, again.id, user="U0REQ")
    stored = lookup.request(service, again.id)[0]
    assert (stored.extends, stored.cancelled_by, stored.state) == (denied.id, "U0REQ",
                                                                  State.CANCELLED)
    used = breakglass.breakglass(service, user="U0GLASS", target="web",
                                 duration=timedelta(minutes=30), reason="fire")
    assert [r.id for r in lookup.overview(service, "U0ADMIN").unreviewed] == [used.request.id]
    breakglass.review(service, used.request.id, reviewer="U0ADMIN", note="all fine")
    assert lookup.request(service, used.request.id)[0].review_note == "all fine"
    assert lookup.overview(service, "U0ADMIN").unreviewed == []
    _chain_ok(database)
