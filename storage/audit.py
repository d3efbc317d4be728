"""The tamper-evident audit log: a chain of canonical events linked with HMAC-SHA256 under the
audit key (storage.chain has the formula). Changing, deleting or reordering any event breaks
every later link, and without the key nobody can recompute them; signed checkpoints kept outside
the database (storage.checkpoints) catch a truncated or rolled-back tail.
"""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import String, bindparam, func, insert, select, type_coerce, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from storage.chain import GENESIS, Run, Verification, canonical, check_query, join, link
from storage.db import StorageUnavailable
from storage.models import AuditEvent, AuditHead
from storage.types import iso_utc

__all__ = ["GENESIS", "Event", "SqlAuditLog", "Verification", "append", "append_all", "canonical",
           "export", "format_time", "link", "verify"]


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC to the microsecond: 2026-11-22T17:31:26.036231Z."""
    return iso_utc(moment.astimezone(timezone.utc), "T") + "Z"


_EVENTS = AuditEvent.__table__
_HEAD = AuditHead.__table__
# Locking the head row first serialises appenders until the transaction ends (a row lock on
# PostgreSQL; SQLite's write lock is already held), so concurrent writers cannot fork the chain.
_LOCK_HEAD = (select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.keyed_from).where(_HEAD.c.id == 1)
              .with_for_update())
_SET_HEAD = (update(_HEAD).where(_HEAD.c.id == 1)
             .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"),
                     keyed_from=bindparam("new_keyed_from")))
_INSERT_EVENTS = insert(_EVENTS)
KEYED = "audit.keyed"  # the anchor event of a chain written before the audit key existed
# Canonical details: sorted keys, no spaces, UTF-8 as is.
_DETAILS = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Event:
    actor: str
    action: str
    subject: str
    at: datetime
    details: dict[str, Any] | None = None


def head(session: Session | Connection) -> tuple[int, str]:
    """(seq, hash) of the newest event; (0, GENESIS) for an empty chain."""
    seq, hash_ = session.execute(select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)).one()
    return seq, hash_


def key_id(key: bytes) -> str:
    """Names an audit key without revealing it (in the anchor event, in error messages)."""
    return hmac.digest(key, b"vouch audit key id", "sha256").hex()[:16]


def append_all(session: Session | Connection, events: Sequence[Event], key: bytes) -> list[int]:
    """Chain `events` onto the log, keyed with `key`, in the caller's transaction; returns their
    sequence numbers. A chain written before the key existed first gets its anchor event."""
    if not events:
        return []
    head = session.execute(_LOCK_HEAD).one()
    return _chain(session, head, events, key)[-len(events):]


def anchor(session: Session | Connection, key: bytes, now: datetime) -> bool:
    """Key a chain written before the audit key existed now, rather than at its next append
    (`vouch serve` does this as it starts). False when it was keyed already."""
    head = session.execute(_LOCK_HEAD).one()
    if head.keyed_from is not None:
        return False
    _chain(session, head, [], key, now=now)
    return True


def _chain(session: Session | Connection, head, events: Sequence[Event], key: bytes, *,
           now: datetime | None = None) -> list[int]:
    seq, prev_hash, keyed_from = head
    if keyed_from is None:  # from here on the chain is keyed; the anchor says so in the log
        keyed_from = seq + 1
        anchored = Event("vouch", KEYED, "audit", events[0].at if events else now,
                         {"key_id": key_id(key), "unkeyed_events": seq})
        events = [anchored, *events]
    rows = []
    for event in events:
        seq += 1
        at = event.at.astimezone(timezone.utc)
        details = _DETAILS.encode(event.details or {})
        new_hash = link(prev_hash, canonical(seq, format_time(at), event.actor, event.action,
                                             event.subject, details), key)
        rows.append({"seq": seq, "at": at, "actor": event.actor, "action": event.action,
                     "subject": event.subject, "details": details, "prev_hash": prev_hash,
                     "hash": new_hash})
        prev_hash = new_hash
    session.execute(_SET_HEAD, {"new_seq": seq, "new_hash": prev_hash,
                                "new_keyed_from": keyed_from})
    session.execute(_INSERT_EVENTS, rows)
    return [row["seq"] for row in rows]


def append(session: Session | Connection, key: bytes, *, actor: str, action: str, subject: str,
           details: dict[str, Any] | None = None, now: datetime | None = None) -> int:
    """Add one event in the caller's transaction; returns its sequence number."""
    at = now or datetime.now(timezone.utc)
    return append_all(session, [Event(actor, action, subject, at, details)], key)[-1]


class SqlAuditLog:
    """access.ports.AuditLog: events wait for the end of the unit and are chained in one go
    (three statements however many), so the head is locked only for the end of the transaction."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.pending: list[Event] = []

    def record(self, *, actor: str, action: str, subject: str, now: datetime,
               details: dict[str, Any] | None = None) -> None:
        self.pending.append(Event(actor, action, subject, now, details))

    def flush(self, session: Session | Connection) -> int:
        """Chain what was recorded; the new head's seq."""
        if self.key is None:
            raise StorageUnavailable("the audit key is missing: nothing can be recorded")
        seqs = append_all(session, self.pending, self.key)
        self.pending = []
        return seqs[-1]


# Below this many events a verify runs in the calling process: starting workers costs more.
PARALLEL_FROM = 200_000
MAX_WORKERS = 4


class VerifyFailed(StorageUnavailable):
    """A verification worker could not read its part of the chain."""


def _canonical_time(dialect: str):
    """The event time exactly as format_time writes it, produced by the database: formatting a
    million datetimes in Python costs more than hashing them."""
    column = _EVENTS.c.at
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC, see UTCDateTime).
    return func.replace(type_coerce(column, String), " ", "T").concat("Z")


def verify(session: Session, key: bytes, *, batch: int = 10_000, workers: int | None = None,
           checkpoints: Sequence[tuple[int, str, str]] = ()) -> Verification:
    """Check the whole chain with the audit key; name the first event that was modified,
    deleted, moved or forged, or the first checkpoint ((seq, hash, at), signatures checked by
    the caller) the chain no longer reaches or matches. Head and events are read in one
    snapshot, so appends meanwhile are not alarms.

    Long chains are split into seq ranges that worker processes (storage.chain) check side by
    side; `workers` defaults to one per CPU, at most MAX_WORKERS, from PARALLEL_FROM events on.
    """
    if session.get_bind().dialect.name == "postgresql":
        # A connection of its own at REPEATABLE READ: the caller's session may already have run
        # a statement, after which its isolation level can no longer change.
        with session.get_bind().connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                return _verify_on(connection, key, batch, workers, checkpoints)
    # SQLite: every Vouch transaction holds the write lock (BEGIN IMMEDIATE), so while the
    # caller's transaction lasts nobody can append: the caller and the workers (reading through
    # connections of their own) see the same chain.
    return _verify_on(session.connection(), key, batch, workers, checkpoints)


def _anchor_problem(connection: Connection, key: bytes, head_seq: int,
                    keyed_from: int | None) -> Verification | None:
    """What is wrong with where the keyed part of the chain starts, if anything."""
    if keyed_from is None:
        if head_seq == 0:
            return None
        return Verification(False, 0, 1, "no event is linked with the audit key: this chain was "
                            "written before Vouch keyed it and has not been anchored (any write "
                            "with the key anchors it), or its anchor was removed")
    if not 1 <= keyed_from <= head_seq + 1:
        return Verification(False, 0, keyed_from, f"the chain says it is keyed from event "
                            f"{keyed_from}, which does not exist")
    if keyed_from == 1:
        return None
    anchor = connection.execute(select(_EVENTS.c.action, _EVENTS.c.details)
                                .where(_EVENTS.c.seq == keyed_from)).first()
    if anchor is None or anchor.action != KEYED:
        return Verification(False, keyed_from - 1, keyed_from,
                            f"event {keyed_from} should be the {KEYED} anchor and is not")
    written_with = json.loads(anchor.details).get("key_id")
    if written_with != key_id(key):
        return Verification(False, keyed_from - 1, keyed_from,
                            f"the chain was keyed with another audit key (key id {written_with}; "
                            f"this key's is {key_id(key)})")
    return None


def _verify_on(connection: Connection, key: bytes, batch: int, workers: int | None,
               checkpoints: Sequence[tuple[int, str, str]]) -> Verification:
    head_seq, head_hash, keyed_from = connection.execute(
        select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.keyed_from)).one()
    problem = _anchor_problem(connection, key, head_seq, keyed_from)
    if problem is None:
        problem = _check_chain(connection, key, batch, workers, head_seq, head_hash,
                               keyed_from or 1)
    if problem.ok:
        problem = _checkpoint_problem(connection, head_seq, checkpoints) or problem
    return problem


def _checkpoint_problem(connection: Connection, head_seq: int,
                        checkpoints: Sequence[tuple[int, str, str]]) -> Verification | None:
    """The first checkpoint an intact chain no longer reaches (its tail was deleted) or matches
    (it was rewritten with the key, or rolled back to a copy)."""
    for seq, hash_, at in checkpoints:
        if seq > head_seq:
            return Verification(False, head_seq, head_seq + 1,
                                f"the chain ends at event {head_seq}, but the checkpoint of {at} "
                                f"covers event {seq}: events were deleted or rolled back")
    wanted = sorted({seq for seq, _, _ in checkpoints if seq > 0})
    stored: dict[int, str] = {}
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start:start + 1000]
        rows = connection.execute(select(_EVENTS.c.seq, _EVENTS.c.hash)
                                  .where(_EVENTS.c.seq.in_(chunk)))
        stored.update((seq, hash_) for seq, hash_ in rows)
    for seq, hash_, at in sorted(checkpoints):
        if seq > 0 and stored.get(seq) != hash_:
            return Verification(False, seq - 1, seq,
                                f"event {seq} no longer matches the checkpoint of {at}: the chain "
                                "was rewritten or replaced since")
    return None


def _check_chain(connection: Connection, key: bytes, batch: int, workers: int | None,
                 head_seq: int, head_hash: str, keyed_from: int) -> Verification:
    if workers is None:
        workers = _available_cpus() if head_seq >= PARALLEL_FROM else 1
    workers = max(1, min(workers, MAX_WORKERS, head_seq))
    url = connection.engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        workers = 1  # no other process can open an in-memory database
    if workers == 1:
        return join([_check_here(connection, _events_sql(connection, None, None), head_seq, batch,
                                 key, keyed_from)], head_seq, head_hash)
    snapshot = None
    if connection.dialect.name == "postgresql":
        snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
    step = -(-head_seq // workers)
    # The first and last ranges are open-ended: events forged below 1 or past the head count too.
    bounds = [(None if i == 0 else i * step + 1, None if i == workers - 1 else (i + 1) * step)
              for i in range(workers)]
    args, kwargs = connection.dialect.create_connect_args(url)
    # Connection parameters only; the driver's Python-side extras (psycopg's adapters) stay here.
    kwargs = {k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool))}
    jobs = [{"dialect": connection.dialect.name, "connect": [list(args), kwargs],
             "sql": _events_sql(connection, lo, hi), "head_seq": head_seq, "batch": batch,
             "snapshot": snapshot, "key": key.hex(), "keyed_from": keyed_from}
            for lo, hi in bounds]
    return join(_run_workers(jobs), head_seq, head_hash)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _events_sql(connection: Connection, lo: int | None, hi: int | None) -> str:
    query = select(_EVENTS.c.seq, _canonical_time(connection.dialect.name), _EVENTS.c.actor,
                   _EVENTS.c.action, _EVENTS.c.subject, _EVENTS.c.details, _EVENTS.c.prev_hash,
                   _EVENTS.c.hash)
    if lo is not None:
        query = query.where(_EVENTS.c.seq >= lo)
    if hi is not None:
        query = query.where(_EVENTS.c.seq <= hi)
    return str(query.order_by(_EVENTS.c.seq)
               .compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))


def _check_here(connection: Connection, sql: str, head_seq: int, batch: int, key: bytes,
                keyed_from: int) -> Run:
    # Every value is text or an integer already: a plain DB-API cursor skips SQLAlchemy's per-row
    # processing, which otherwise costs more than the hashing (bench/storage.py).
    raw = connection.connection.driver_connection
    postgresql = connection.dialect.name == "postgresql"
    cursor = raw.cursor(name="vouch_audit_verify") if postgresql else raw.cursor()
    try:
        return check_query(cursor, sql, head_seq, batch, key, keyed_from)
    finally:
        cursor.close()


# The worker: isolated (-I: neither the working directory nor PYTHON* variables can put other
# code on its path); it imports storage.chain from where this process found it.
_WORKER = ("import json, sys; job = json.load(sys.stdin); sys.path[:0] = job.pop('path'); "
           "from storage.chain import main; sys.exit(main(job))")


def _run_workers(jobs: list[dict]) -> list[Run]:
    """One worker process per job, all at once; the job (connect arguments included) goes in on
    stdin, so no secret shows in the process list; the Run comes back as JSON on stdout."""
    path = [p for p in sys.path if p]
    workers = []
    try:
        for job in jobs:
            worker = subprocess.Popen([sys.executable, "-I", "-c", _WORKER],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
            workers.append(worker)
            worker.stdin.write(json.dumps({**job, "path": path}))
            worker.stdin.close()
            worker.stdin = None  # sent; communicate() below only reads
        runs = []
        for worker in workers:
            out, err = worker.communicate()
            if worker.returncode != 0:
                raise VerifyFailed(f"a verification worker failed: {err.strip()[-300:]}")
            try:
                runs.append(Run(**json.loads(out)))
            except (ValueError, TypeError):
                raise VerifyFailed(f"a verification worker answered {out.strip()[:100]!r}") from None
        return runs
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def export(session: Session, *, since: datetime | None = None, until: datetime | None = None,
           batch: int = 10_000) -> Iterator[dict[str, Any]]:
    """Events as dicts for JSON lines, oldest first."""
    query = select(AuditEvent).order_by(AuditEvent.seq)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    for event in session.scalars(query.execution_options(yield_per=batch)):
        yield {"seq": event.seq, "at": format_time(event.at), "actor": event.actor,
               "action": event.action, "subject": event.subject,
               "details": json.loads(event.details), "prev_hash": event.prev_hash,
               "hash": event.hash}
