"""The audit hash chain on SQLite and PostgreSQL: append/verify/export, every kind of tampering
(through raw SQL, as someone with database access would), concurrent appenders in threads and in
separate processes, and `vouch audit verify` as an operator runs it.

Every test takes the `database`/`database_url` fixture, so it runs once per database kind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy import event as sqlalchemy_event

from storage import audit
from storage.db import Database
from storage.types import UTCDateTime
from support.processes import process_context
from support.audit import AUDIT_KEY

REPO = Path(__file__).resolve().parents[2]
VOUCH = REPO / ".venv" / "bin" / "vouch"
if not VOUCH.exists():  # a venv elsewhere: use the script next to the running interpreter
    VOUCH = Path(sys.executable).with_name("vouch")

BASE = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
N = 10  # events in the standard chain
K = 4  # the event tampered with in the middle


def event_time(i: int) -> datetime:
    """Event i (1-based) happens i seconds (and a few microseconds) after BASE."""
    return BASE + timedelta(seconds=i, microseconds=7 * i)


def event_spec(i: int) -> dict:
    """A varied event: some with unicode and nested details, one with none at all."""
    details: dict | None
    if i % 3 == 0:
        details = {"reason": f"débogage n°{i} — 🔥 ✓ 日本語", "nested": {
            "list": [1, 2.5, None, True, "ß"], "deep": {"rtl": "\u202eabc", "empty": {}}}}
    elif i % 3 == 1:
        details = {"serial": str(2**64 - i), "approve": i % 2 == 0}
    else:
        details = None
    return {"actor": "U0ÄCTÖR" if i % 4 == 0 else f"U0USER{i}", "action": f"test.action{i % 3}",
            "subject": f"request:req-{'ü' * (i % 2)}{i:04d}", "details": details,
            "now": event_time(i)}


def append_events(database: Database, count: int, start: int = 1) -> None:
    for i in range(start, start + count):
        with database.session() as session:
            audit.append(session, AUDIT_KEY, **event_spec(i))


def verify(database: Database, **kwargs) -> audit.Verification:
    with database.session() as session:
        return audit.verify(session, AUDIT_KEY, **kwargs)


def export(database: Database, **kwargs) -> list[dict]:
    with database.session() as session:
        return list(audit.export(session, **kwargs))


def sql(database: Database, statement: str, **params) -> None:
    """Raw SQL in its own transaction, as someone tampering with the database would run it."""
    clause = text(statement)
    if "at" in params:
        clause = clause.bindparams(bindparam("at", type_=UTCDateTime()))
    with database.engine.begin() as connection:
        connection.execute(clause, params)


def row(database: Database, seq: int) -> dict:
    with database.engine.connect() as connection:
        result = connection.execute(
            text("SELECT seq, at, actor, action, subject, details, prev_hash, hash "
                 "FROM audit_events WHERE seq = :seq")
            .columns(at=UTCDateTime()), {"seq": seq}).mappings().one()
        return dict(result)


def seqs(database: Database) -> list[int]:
    with database.engine.connect() as connection:
        return list(connection.execute(text("SELECT seq FROM audit_events ORDER BY seq")).scalars())


def insert_row(database: Database, values: dict) -> None:
    sql(database, "INSERT INTO audit_events "
                  "(seq, at, actor, action, subject, details, prev_hash, hash) "
                  "VALUES (:seq, :at, :actor, :action, :subject, :details, :prev_hash, :hash)",
        **values)


def rehash(values: dict, key: bytes | None = AUDIT_KEY) -> str:
    """The event's hash as someone holding `key` computes it (None: plain SHA-256, what anyone
    can compute who has the database but not the key)."""
    return audit.link(values["prev_hash"], audit.canonical(
        values["seq"], audit.format_time(values["at"]), values["actor"], values["action"],
        values["subject"], values["details"]), key)


# --- appending, verifying, exporting -------------------------------------------------------

def test_empty_chain_verifies(database):
    result = verify(database)
    assert result.ok, result
    assert result.events == 0
    assert result.first_bad is None
    assert export(database) == []


def test_append_verify_export(database):
    append_events(database, N)

    for batch in (10_000, 3, 1):  # small batches exercise yield_per / server-side cursors
        result = verify(database, batch=batch)
        assert result == audit.Verification(True, N), result

    events = export(database)
    assert [e["seq"] for e in events] == list(range(1, N + 1))
    prev = audit.GENESIS
    for i, event in enumerate(events, start=1):
        spec = event_spec(i)
        assert event["at"].endswith("Z"), event
        assert event["at"] == audit.format_time(spec["now"]) == \
            spec["now"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert datetime.fromisoformat(event["at"].replace("Z", "+00:00")) == spec["now"]
        assert (event["actor"], event["action"], event["subject"]) == \
            (spec["actor"], spec["action"], spec["subject"])
        assert event["details"] == (spec["details"] or {})
        assert event["prev_hash"] == prev
        assert len(event["hash"]) == 64 and event["hash"] != prev
        prev = event["hash"]
        json.dumps(event, ensure_ascii=False)  # what `vouch audit export` writes: must serialise

    # the stored details text is the canonical JSON: sorted keys, compact, unicode as is
    stored = row(database, 3)["details"]
    assert stored == json.dumps(event_spec(3)["details"], sort_keys=True, ensure_ascii=False,
                                separators=(",", ":"))
    assert "🔥" in stored and "\\u" not in stored

    # since is inclusive, until exclusive; both compare instants, whatever the time zone given
    assert [e["seq"] for e in export(database, since=event_time(4))] == list(range(4, N + 1))
    assert [e["seq"] for e in export(database, until=event_time(4))] == [1, 2, 3]
    window = export(database, since=event_time(3), until=event_time(6))
    assert [e["seq"] for e in window] == [3, 4, 5]
    plus_two = timezone(timedelta(hours=2))
    later = export(database, since=event_time(8).astimezone(plus_two))
    assert [e["seq"] for e in later] == [8, 9, 10]
    assert [e["seq"] for e in export(database, since=event_time(5) + timedelta(microseconds=1),
                                     until=event_time(7) + timedelta(microseconds=1))] == [6, 7]
    assert export(database, since=event_time(N) + timedelta(seconds=1)) == []
    assert export(database, since=event_time(6), until=event_time(6)) == []


def test_append_joins_the_callers_transaction(database):
    """An event whose transaction rolls back leaves no trace: no event, no gap, head unchanged."""
    append_events(database, 2)
    with pytest.raises(RuntimeError):
        with database.session() as session:
            audit.append(session, AUDIT_KEY, actor="U0X", action="rolled.back", subject="x")
            raise RuntimeError("the caller's transaction fails")
    append_events(database, 1, start=3)
    assert seqs(database) == [1, 2, 3]
    assert verify(database) == audit.Verification(True, 3)
    assert [e["action"] for e in export(database)] == \
        ["test.action1", "test.action2", "test.action0"]


def _head_statements(database: Database) -> list[str]:
    seen: list[str] = []
    sqlalchemy_event.listen(database.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: seen.append(statement)
                 if "audit_head" in statement else None)
    return seen


def test_replicas_appending_in_turn_keep_one_chain(database, database_url):
    """The head row moves first in every append, under its lock: another replica's appends,
    several events in one transaction, and a rolled-back append all leave one whole chain, and
    a batch costs the head two statements however many events it holds."""
    other = Database(database_url)
    try:
        head_statements = _head_statements(database)
        append_events(database, 1)
        append_events(database, 1, start=2)
        assert len(head_statements) == 4  # advance and set, once per append
        append_events(other, 2, start=3)  # the other replica appends in between
        head_statements.clear()
        with database.session() as session:  # a unit's events go in one batch
            assert audit.append_all(session, [audit.Event(**_event(5)), audit.Event(**_event(6))],
                                    AUDIT_KEY) \
                == [5, 6]
        assert len(head_statements) == 2
        with pytest.raises(RuntimeError):  # our own append rolls back: no trace
            with database.session() as session:
                audit.append(session, AUDIT_KEY, **event_spec(7))
                raise RuntimeError("the caller's transaction fails")
        append_events(other, 1, start=8)  # the other replica commits seq 7
        append_events(database, 1, start=9)
    finally:
        other.close()
    assert seqs(database) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [e["actor"] for e in export(database)] == [event_spec(i)["actor"]
                                                       for i in (1, 2, 3, 4, 5, 6, 8, 9)]
    _assert_contiguous_chain(database, 8)
    assert verify(database) == audit.Verification(True, 8)


def _event(i: int) -> dict:
    spec = event_spec(i)
    return {"actor": spec["actor"], "action": spec["action"], "subject": spec["subject"],
            "at": spec.get("now") or datetime.now(timezone.utc), "details": spec.get("details")}


# --- tampering -------------------------------------------------------------------------------

def _modify(field: str, value):
    def tamper(database: Database) -> None:
        if field == "at":
            sql(database, "UPDATE audit_events SET at = :at WHERE seq = :seq", seq=K, at=value)
        else:
            sql(database, f"UPDATE audit_events SET {field} = :value WHERE seq = :seq", seq=K,
                value=value)
    return tamper


def _delete(*numbers: int):
    def tamper(database: Database) -> None:
        for seq in numbers:
            sql(database, "DELETE FROM audit_events WHERE seq = :seq", seq=seq)
    return tamper


def _truncate(keep: int):
    def tamper(database: Database) -> None:
        sql(database, "DELETE FROM audit_events WHERE seq > :keep", keep=keep)
    return tamper


def _swap_rows(a: int, b: int, columns: tuple[str, ...]):
    """Exchange two events' columns: with the hashes it is a reorder, without it a content swap."""
    def tamper(database: Database) -> None:
        first, second = row(database, a), row(database, b)
        assignments = ", ".join(f"{c} = :{c}" for c in columns)
        sql(database, f"UPDATE audit_events SET {assignments} WHERE seq = :seq", seq=a,
            **{c: second[c] for c in columns})
        sql(database, f"UPDATE audit_events SET {assignments} WHERE seq = :seq", seq=b,
            **{c: first[c] for c in columns})
    return tamper


def _modify_and_rehash(seq: int):
    """The careful forger: change an event and recompute its own hash (but not later links)."""
    def tamper(database: Database) -> None:
        values = row(database, seq)
        values["actor"] = "U0MALLORY"
        values["hash"] = rehash(values)
        sql(database, "UPDATE audit_events SET actor = :actor, hash = :hash WHERE seq = :seq",
            seq=seq, actor=values["actor"], hash=values["hash"])
    return tamper


def _forge_at_end(*, correct_link: bool):
    """An extra event after the newest one, chained to it exactly as append would."""
    def tamper(database: Database) -> None:
        last = row(database, N)
        forged = {"seq": N + 1, "at": event_time(N + 1), "actor": "U0MALLORY",
                  "action": "certificate.issued", "subject": "request:req-forged",
                  "details": "{}", "prev_hash": last["hash"] if correct_link else "ab" * 32}
        forged["hash"] = rehash(forged)
        insert_row(database, forged)
    return tamper


def _forge_in_middle(*, correct_link: bool):
    """Make room at K by renumbering K..N one up, and put a forged event there."""
    def tamper(database: Database) -> None:
        sql(database, "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= :k", k=K)
        sql(database, "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000")
        forged = {"seq": K, "at": event_time(K) - timedelta(microseconds=1), "actor": "U0MALLORY",
                  "action": "request.approved", "subject": "request:req-forged", "details": "{}",
                  "prev_hash": row(database, K - 1)["hash"]}
        forged["hash"] = rehash(forged) if correct_link else "cd" * 32
        insert_row(database, forged)
    return tamper


def _forge_before_first(database: Database) -> None:
    forged = {"seq": 0, "at": event_time(0), "actor": "U0MALLORY", "action": "request.approved",
              "subject": "request:req-forged", "details": "{}", "prev_hash": audit.GENESIS}
    forged["hash"] = rehash(forged)
    insert_row(database, forged)


# (tampering, first bad event, words the problem must contain, words it must not contain)
TAMPERING = {
    "actor": (_modify("actor", "U0MALLORY"), K, ["modified"], []),
    "action": (_modify("action", "request.denied"), K, ["modified"], []),
    "subject": (_modify("subject", "request:req-other"), K, ["modified"], []),
    "details-value": (_modify("details", json.dumps({"serial": "1", "approve": True},
                                                     sort_keys=True, separators=(",", ":"))),
                      K, ["modified"], []),
    # the same JSON value, merely re-spaced: the stored text is what is hashed
    "details-whitespace": (_modify("details", json.dumps(event_spec(K)["details"],
                                                         sort_keys=True, ensure_ascii=False)),
                           K, ["modified"], []),
    "details-unicode": (_modify("details", json.dumps(event_spec(3)["details"], sort_keys=True,
                                                      separators=(",", ":")).replace("🔥", "💧")),
                        K, ["modified"], []),
    "at-one-microsecond": (_modify("at", event_time(K) + timedelta(microseconds=1)), K,
                           ["modified"], []),
    "at-one-day-earlier": (_modify("at", event_time(K) - timedelta(days=1)), K, ["modified"], []),
    "prev-hash": (_modify("prev_hash", "0" * 64), K, ["does not follow"], []),
    "delete-middle": (_delete(K), K, ["missing"], []),
    "delete-first": (_delete(1), 1, ["missing"], []),
    "delete-two": (_delete(K + 2, K), K, ["missing"], []),
    "truncate-newest": (_truncate(N - 3), N - 2, ["deleted"], []),
    "truncate-newest-one": (_truncate(N - 1), N, ["deleted"], []),
    "truncate-all": (_truncate(0), 1, ["deleted"], []),
    "reorder": (_swap_rows(K, K + 2, ("at", "actor", "action", "subject", "details", "prev_hash",
                                      "hash")), K, ["reordered"], []),
    "reorder-adjacent": (_swap_rows(K, K + 1, ("at", "actor", "action", "subject", "details",
                                               "prev_hash", "hash")), K, ["reordered"], []),
    "swap-contents": (_swap_rows(K, K + 1, ("at", "actor", "action", "subject", "details")), K,
                      ["modified"], []),
    # verify cannot tell "K changed and rehashed" from "K+1's prev_hash changed": K+1 is named
    "rehash-middle": (_modify_and_rehash(K), K + 1, ["does not follow", "changed"], []),
    "rehash-first": (_modify_and_rehash(1), 2, ["does not follow", "changed"], []),
    # the newest event has no successor: only the head row can catch it
    "rehash-newest": (_modify_and_rehash(N), N, [], ["deleted"]),
    "forge-in-middle-bad-hash": (_forge_in_middle(correct_link=False), K, ["modified"], []),
    "forge-in-middle-linked": (_forge_in_middle(correct_link=True), K + 1, ["does not follow"], []),
    "forge-at-end-bad-link": (_forge_at_end(correct_link=False), N + 1, ["never written"], []),
    "forge-at-end-linked": (_forge_at_end(correct_link=True), N + 1, [], ["deleted"]),
    "forge-before-first": (_forge_before_first, 0, [], ["missing"]),
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def reusable_database(request, tmp_path_factory):
    """One prepared database of each kind for the many tampering cases (a fresh PostgreSQL
    database plus migrations for each would cost more than the cases themselves)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('audit') / 'vouch.db'}"
    else:
        url = request.getfixturevalue("postgres_cluster").create_database()
    database = Database(url)
    database.prepare()
    yield database
    database.close()


@pytest.fixture
def empty_chain(reusable_database):
    """The reusable database with its audit log emptied, as a fresh one has it."""
    with reusable_database.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events"))
        connection.execute(text("UPDATE audit_head SET seq = 0, hash = :genesis, keyed_from = 1 "
                                "WHERE id = 1"), {"genesis": audit.GENESIS})
    assert verify(reusable_database) == audit.Verification(True, 0)
    return reusable_database


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_detected(empty_chain, case):
    database = empty_chain
    tamper, first_bad, words, not_words = TAMPERING[case]
    append_events(database, N)
    assert verify(database).ok
    tamper(database)

    result = verify(database)
    assert not result.ok, f"{case}: tampering not detected: {result}"
    assert result.first_bad == first_bad, f"{case}: {result}"
    if first_bad:
        assert result.events == first_bad - 1, f"{case}: {result}"
    for word in words:
        assert word in result.problem, f"{case}: {word!r} not in {result.problem!r}"
    for word in not_words:
        assert word not in result.problem, f"{case}: misleading problem: {result.problem!r}"
    # the same answer in small batches, and from worker processes each checking a range of
    # seqs (ranges 1-4, 5-8 and 9-: K is the last event of the first, K + 1 opens the second)
    assert verify(database, batch=2) == result
    assert verify(database, workers=3) == result, f"{case}: in 3 ranges"


# --- an insider without the key ---------------------------------------------------------------

def _rewrite_from(first: int, key: bytes | None):
    """Change event `first`'s actor and recompute it and every later event, and the head, with
    `key` (None: plain SHA-256): what someone with write access to the database can do."""
    def tamper(database: Database) -> None:
        prev = row(database, first - 1)["hash"] if first > 1 else audit.GENESIS
        for seq in range(first, N + 1):
            values = row(database, seq)
            if seq == first:
                values["actor"] = "U0MALLORY"
            values["prev_hash"] = prev
            values["hash"] = prev = rehash(values, key)
            sql(database, "UPDATE audit_events SET actor = :actor, prev_hash = :prev_hash, "
                          "hash = :hash WHERE seq = :seq", **{k: values[k] for k in
                                                              ("actor", "prev_hash", "hash", "seq")})
        sql(database, "UPDATE audit_head SET hash = :hash WHERE id = 1", hash=prev)
    return tamper


def _drop_tail_and_head(keep: int):
    """Delete the newest events and move the head back to the last one kept."""
    def tamper(database: Database) -> None:
        sql(database, "DELETE FROM audit_events WHERE seq > :keep", keep=keep)
        sql(database, "UPDATE audit_head SET seq = :keep, hash = :hash WHERE id = 1", keep=keep,
            hash=row(database, keep)["hash"])
    return tamper


@pytest.mark.parametrize("case", ["sha256", "guessed-key", "from-first"])
def test_a_rewrite_with_recomputed_hashes_fails_without_the_key(empty_chain, case):
    """The review's high: an approver changed and every later hash recomputed verified as
    intact. The links are keyed now: without the key nobody can recompute them."""
    database = empty_chain
    append_events(database, N)
    key = {"sha256": None, "guessed-key": b"guessed-" * 5, "from-first": None}[case]
    first = 1 if case == "from-first" else K
    _rewrite_from(first, key)(database)
    result = verify(database)
    assert not result.ok and result.first_bad == first, result
    assert "modified" in result.problem, result
    assert verify(database, workers=3) == result


def test_a_chain_checked_with_another_key_fails(empty_chain):
    append_events(empty_chain, N)
    with empty_chain.session() as session:
        result = audit.verify(session, b"another-key-" * 4)
    assert not result.ok and result.first_bad == 1
    assert "not the one the chain was written with" in result.problem


def test_the_deleted_tail_with_the_head_moved_back_is_not_caught_by_the_chain_alone(empty_chain):
    """Why checkpoints exist: a consistent prefix is a valid chain. (test_checkpoints.py shows
    the signed checkpoints catching it.)"""
    append_events(empty_chain, N)
    _drop_tail_and_head(N - 3)(empty_chain)
    assert verify(empty_chain) == audit.Verification(True, N - 3)


def _unkeyed_chain(database: Database, count: int) -> None:
    """A chain as Vouch wrote it before the audit key (plain SHA-256, head not keyed)."""
    sql(database, "UPDATE audit_head SET keyed_from = NULL WHERE id = 1")
    prev = audit.GENESIS
    for i in range(1, count + 1):
        spec = event_spec(i)
        values = {"seq": i, "at": spec["now"], "actor": spec["actor"], "action": spec["action"],
                  "subject": spec["subject"],
                  "details": json.dumps(spec["details"] or {}, sort_keys=True, ensure_ascii=False,
                                        separators=(",", ":")), "prev_hash": prev}
        values["hash"] = prev = rehash(values, None)
        insert_row(database, values)
    sql(database, "UPDATE audit_head SET seq = :seq, hash = :hash WHERE id = 1", seq=count,
        hash=prev)


def test_an_existing_unkeyed_chain_is_anchored_and_then_cannot_be_rewritten(empty_chain):
    database = empty_chain
    _unkeyed_chain(database, 5)
    result = verify(database)
    assert not result.ok and "no event is linked with the audit key" in result.problem
    with database.transaction() as connection:
        assert audit.anchor(connection, AUDIT_KEY, event_time(6))
    with database.transaction() as connection:
        assert not audit.anchor(connection, AUDIT_KEY, event_time(6))  # once
    append_events(database, 2, start=7)
    assert verify(database) == audit.Verification(True, 8)
    [anchor] = [e for e in export(database) if e["action"] == "audit.keyed"]
    assert anchor["seq"] == 6 and anchor["details"]["unkeyed_events"] == 5
    assert anchor["details"]["key_id"] == audit.key_id(AUDIT_KEY)
    # The old events cannot be rewritten either: the anchor's keyed link covers their last hash.
    for seq in range(2, 6):
        values = row(database, seq)
        if seq == 2:
            values["actor"] = "U0MALLORY"
        values["prev_hash"] = row(database, seq - 1)["hash"]
        values["hash"] = rehash(values, None)
        sql(database, "UPDATE audit_events SET actor = :actor, prev_hash = :prev_hash, "
                      "hash = :hash WHERE seq = :seq",
            **{k: values[k] for k in ("actor", "prev_hash", "hash", "seq")})
    result = verify(database)
    assert not result.ok and result.first_bad == 6, result
    with database.session() as session:
        other = audit.verify(session, b"another-key-" * 4)
    assert not other.ok and "keyed with another audit key" in other.problem
    # Nor can the anchor be dropped to make the whole chain look unkeyed.
    sql(database, "UPDATE audit_head SET keyed_from = NULL WHERE id = 1")
    assert "no event is linked with the audit key" in verify(database).problem


# --- concurrent appenders ----------------------------------------------------------------------

def _assert_contiguous_chain(database: Database, total: int) -> None:
    result = verify(database)
    assert result == audit.Verification(True, total), result
    assert seqs(database) == list(range(1, total + 1))
    events = export(database)
    assert len({e["hash"] for e in events}) == total
    for before, after in zip(events, events[1:]):
        assert after["prev_hash"] == before["hash"]


def test_concurrent_threads_cannot_fork_the_chain(database):
    threads, each = 8, 50
    barrier = threading.Barrier(threads)

    def appender(worker: int) -> None:
        barrier.wait()
        for i in range(each):
            with database.session() as session:
                audit.append(session, AUDIT_KEY, actor=f"U0T{worker}", action="test.concurrent",
                             subject=f"thread:{worker}", details={"i": i, "ü": "✓"})

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(appender, w) for w in range(threads)]:
            future.result(timeout=120)
    _assert_contiguous_chain(database, threads * each)
    # every worker's events are there, in its own order
    events = export(database)
    for worker in range(threads):
        mine = [e["details"]["i"] for e in events if e["actor"] == f"U0T{worker}"]
        assert mine == list(range(each))


def test_a_worker_that_fails_is_reported_never_taken_for_a_verdict(database, monkeypatch):
    append_events(database, 6)
    monkeypatch.setattr(audit, "_WORKER", "import sys; sys.stdin.read(); "
                        "sys.stderr.write('OperationalError: could not read the range'); sys.exit(1)")
    with pytest.raises(audit.VerifyFailed, match="could not read the range"):
        verify(database, workers=2)
    assert verify(database, workers=1) == audit.Verification(True, 6)


def test_verify_while_others_append(database):
    """`vouch audit verify` runs while the service keeps appending: an intact chain must verify.

    verify reads the events and then the head row in two statements of one transaction; unless
    both come from one snapshot, an append committed in between looks like truncation.
    """
    append_events(database, 20)
    stop = threading.Event()

    def appender(worker: int) -> int:
        done = 0
        while not stop.is_set():
            with database.session() as session:
                audit.append(session, AUDIT_KEY, actor=f"U0W{worker}", action="test.background",
                             subject="busy")
            done += 1
        return done

    results = []
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(appender, w) for w in range(2)]
        try:
            for i in range(40):
                # every fourth in worker processes, which must share the parent's snapshot
                results.append(verify(database, workers=2 if i % 4 == 0 else 1))
        finally:
            stop.set()
        appended = sum(f.result(timeout=60) for f in futures)
    assert appended > 0
    bad = [r for r in results if not r.ok]
    assert not bad, f"{len(bad)} of {len(results)} verifications of an intact chain failed, " \
                    f"e.g. {bad[0]}"
    _assert_contiguous_chain(database, 20 + appended)


def process_appender(url: str, worker: int, count: int, barrier, errors) -> None:
    """Runs in a spawned process: its own engine from the URL, `count` appends."""
    try:
        database = Database(url)
        barrier.wait(timeout=120)
        for i in range(count):
            with database.session() as session:
                audit.append(session, AUDIT_KEY, actor=f"U0P{worker}", action="test.process",
                             subject=f"process:{worker}", details={"i": i, "pid": os.getpid()})
        database.close()
    except BaseException as exc:  # report to the parent rather than dying silently
        errors.put(f"worker {worker}: {type(exc).__name__}: {exc}")
        raise


def test_concurrent_processes_cannot_fork_the_chain(database, database_url):
    processes, each = 4, 50
    context = process_context()
    barrier = context.Barrier(processes)
    errors = context.Queue()
    workers = [context.Process(target=process_appender,
                               args=(database_url, w, each, barrier, errors))
               for w in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, problems
    assert [w.exitcode for w in workers] == [0] * processes
    _assert_contiguous_chain(database, processes * each)
    events = export(database)
    assert len({e["details"]["pid"] for e in events}) == processes


# --- the CLI ---------------------------------------------------------------------------------

def run_verify(database_url: str, cwd: Path, key: bytes = AUDIT_KEY) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOUCH_")}
    env["VOUCH_DATABASE_URL"] = database_url
    env["VOUCH_AUDIT_KEY"] = key.decode()
    return subprocess.run([str(VOUCH), "audit", "verify"], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)


def test_cli_audit_verify(database, database_url, tmp_path):
    append_events(database, N)
    before = run_verify(database_url, tmp_path)
    assert before.returncode == 0, before
    assert f"{N} events" in before.stdout, before
    assert "Traceback" not in before.stderr, before

    _modify("subject", "request:req-other")(database)
    after = run_verify(database_url, tmp_path)
    assert after.returncode == 1, after
    assert "Traceback" not in after.stderr, after
    lines = [line for line in after.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, after
    assert f"event {K}" in lines[0] and "modified" in lines[0], after
    assert after.stdout == "", after
