"""Signed checkpoints of the audit chain: `vouch audit checkpoint`, `vouch audit verify
[--checkpoints FILE]` against the attacks a keyed chain alone cannot catch (its newest events
deleted and the head moved back, the database rolled back to a copy, a rewrite by someone who
holds the key), forged or foreign checkpoints, and `vouch serve`'s own checkpoints every 100
events."""

from __future__ import annotations

import json
import shutil
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from ca.signer import CaKeyType, FileSigner, generate_private_key
from conftest import run
from storage import audit, checkpoints
from storage.db import Database
from storage.store import SqlStore
from test_cli import Vouch, assert_bad_input, assert_no_traceback

START = datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def vouch(tmp_path) -> Vouch:
    cli = Vouch(tmp_path)
    cli.ok("ca", "init")
    return cli


def key_of(vouch: Vouch) -> bytes:
    return (vouch.cwd / "audit_key").read_text().strip().encode()


def database(vouch: Vouch) -> Database:
    db = Database(vouch.env["VOUCH_DATABASE_URL"])
    db.prepare()
    return db


def append(vouch: Vouch, count: int) -> None:
    db = database(vouch)
    try:
        for i in range(count):
            with db.session() as session:
                audit.append(session, key_of(vouch), actor=f"U0USER{i}", action="test.event",
                             subject=f"request:req-{i}", now=START + timedelta(seconds=i))
    finally:
        db.close()


def sql(vouch: Vouch, statement: str, **params) -> None:
    db = database(vouch)
    try:
        with db.engine.begin() as connection:
            connection.execute(text(statement), params)
    finally:
        db.close()


def refused(result, *words: str) -> str:
    assert_no_traceback(result)
    assert result.returncode == 1, result
    for word in words:
        assert word in result.err, result
    return result.err


def test_a_checkpoint_is_signed_by_the_ca_and_openssh_can_check_it(vouch, tmp_path):
    append(vouch, 10)
    vouch.ok("audit", "checkpoint")
    path = tmp_path / "audit-checkpoints.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [checkpoint] = checkpoints.read(path)
    assert checkpoint.seq == 10
    (tmp_path / "message").write_bytes(checkpoint.message())
    (tmp_path / "message.sig").write_text(checkpoint.signature)
    with open(tmp_path / "message", "rb") as message:
        checked = run("ssh-keygen", "-Y", "check-novalidate", "-n", "vouch-audit", "-s",
                      str(tmp_path / "message.sig"), stdin=message, check=False)
    assert checked.returncode == 0, checked.stderr
    ca_line = vouch.ok("ca", "pubkey").stdout.split()
    assert checkpoints.sshsig.verify(checkpoint.signature, checkpoint.message(),
                                     "vouch-audit").line().split() == ca_line[:2]
    result = vouch.ok("audit", "verify")
    assert "1 signed checkpoints match (the newest, event 10" in result.stdout


def test_the_newest_events_deleted_behind_a_checkpoint_are_caught(vouch):
    append(vouch, 10)
    vouch.ok("audit", "checkpoint")
    append(vouch, 2)
    # The attack: drop the newest events, move the head back. The rest is a valid keyed chain.
    sql(vouch, "DELETE FROM audit_events WHERE seq > 7")
    sql(vouch, "UPDATE audit_head SET seq = 7, hash = (SELECT hash FROM audit_events "
               "WHERE seq = 7) WHERE id = 1")
    err = refused(vouch.run("audit", "verify"), "broken at event 8",
                  "the chain ends at event 7", "covers event 10", "deleted or rolled back")
    assert "checkpoint of 2" in err  # names it by its time


def test_a_database_rolled_back_to_an_older_copy_is_caught(vouch, tmp_path):
    append(vouch, 5)
    shutil.copy(tmp_path / "vouch.db", tmp_path / "backup.db")
    append(vouch, 5)
    vouch.ok("audit", "checkpoint")
    shutil.copy(tmp_path / "backup.db", tmp_path / "vouch.db")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"vouch.db{suffix}").unlink(missing_ok=True)
    refused(vouch.run("audit", "verify"), "covers event 10")


def test_a_rewrite_by_someone_with_the_key_no_longer_matches_its_checkpoint(vouch):
    append(vouch, 10)
    vouch.ok("audit", "checkpoint")
    db = database(vouch)
    try:  # rewrite from event 4 on, keyed, as an insider holding the key could
        with db.engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_events WHERE seq >= 4"))
            head = connection.execute(text("SELECT hash FROM audit_events WHERE seq = 3")).scalar()
            connection.execute(text("UPDATE audit_head SET seq = 3, hash = :h WHERE id = 1"),
                               {"h": head})
        for i in range(7):
            with db.session() as session:
                audit.append(session, key_of(vouch), actor="U0MALLORY", action="test.event",
                             subject=f"request:req-{i}", now=START + timedelta(minutes=i))
    finally:
        db.close()
    assert vouch.run("audit", "verify", "--checkpoints", "/dev/null").returncode == 0
    refused(vouch.run("audit", "verify"), "event 10 no longer matches the checkpoint")


def test_forged_and_foreign_checkpoints_are_refused(vouch, tmp_path):
    append(vouch, 10)
    vouch.ok("audit", "checkpoint")
    path = tmp_path / "audit-checkpoints.log"
    line = json.loads(path.read_text())
    forged = tmp_path / "forged.log"
    forged.write_text(json.dumps({**line, "seq": 3}) + "\n")
    refused(vouch.run("audit", "verify", "--checkpoints", forged), "checkpoint of event 3",
            "forged")
    other = FileSigner(generate_private_key(CaKeyType.ED25519))
    foreign = tmp_path / "foreign.log"
    checkpoints.append(foreign, checkpoints.sign(other, 10, line["hash"], START))
    refused(vouch.run("audit", "verify", "--checkpoints", foreign), "not by this CA")
    garbled = tmp_path / "garbled.log"
    garbled.write_text(path.read_text() + "{not json\n")
    assert_bad_input(vouch.run("audit", "verify", "--checkpoints", garbled), "garbled.log:2",
                     "not a checkpoint line")
    assert_bad_input(vouch.run("audit", "verify", "--checkpoints", tmp_path / "missing.log"),
                     "does not exist")


def test_without_checkpoints_verify_says_what_it_cannot_see(vouch):
    append(vouch, 3)
    result = vouch.ok("audit", "verify")
    assert "no signed checkpoints yet" in result.stdout


def test_serve_writes_a_checkpoint_every_hundred_events(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'vouch.db'}")
    db.prepare()
    signer = FileSigner(generate_private_key(CaKeyType.ECDSA_P256))
    path = tmp_path / "checkpoints.log"
    checkpointer = checkpoints.Checkpointer(db, signer, path)
    store = SqlStore(db, b"k" * 32, after_append=checkpointer.maybe)
    try:
        for i in range(250):
            with store.unit() as unit:
                unit.audit.record(actor="U0A", action="test.event", subject=f"x:{i}",
                                  now=START + timedelta(seconds=i))
        written = checkpoints.read(path)
        assert [c.seq for c in written] == [100, 200]
        assert checkpoints.unsigned(written, signer.public_key) is None
        with db.session() as session:
            assert audit.verify(session, b"k" * 32,
                                checkpoints=[(c.seq, c.hash, c.at) for c in written]).ok
        # A restart picks up where the file ends: no checkpoint until 100 more events.
        again = checkpoints.Checkpointer(db, signer, path)
        assert again.maybe() is None
    finally:
        db.close()
    Path(path).chmod(0o600)
