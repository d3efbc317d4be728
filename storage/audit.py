"""The tamper-evident audit log: a SHA-256 hash chain over canonical events.

hash(n) = SHA-256(bytes.fromhex(hash(n-1)) || canonical(n)), hash(0) = 64 zeros, where
canonical(n) = compact JSON of [seq, at, actor, action, subject, details] and `details` is the
stored JSON text itself. Changing, deleting or reordering any event breaks every later link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import String, bindparam, func, insert, select, type_coerce, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from storage.models import AuditEvent, AuditHead

GENESIS = "0" * 64


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_quote = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses per string


def canonical(seq: int, at: str, actor: str, action: str, subject: str, details: str) -> bytes:
    """Compact JSON of [seq, at, actor, action, subject, details], byte for byte what
    json.dumps(..., ensure_ascii=False, separators=(",", ":")) gives, without its per-call cost."""
    return (f"[{seq},{_quote(at)},{_quote(actor)},{_quote(action)},{_quote(subject)},"
            f"{_quote(details)}]").encode()


def link(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


_EVENTS = AuditEvent.__table__
_HEAD = AuditHead.__table__
# Built once: appends happen on every decision, and building a statement costs more than running it.
_ADVANCE_HEAD = (update(_HEAD).where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq + 1)
                 .returning(_HEAD.c.seq, _HEAD.c.hash))
_INSERT_EVENT = insert(_EVENTS)
_SET_HEAD_HASH = update(_HEAD).where(_HEAD.c.id == 1).values(hash=bindparam("new_hash"))


def append(session: Session | Connection, *, actor: str, action: str, subject: str,
           details: dict[str, Any] | None = None, now: datetime | None = None) -> int:
    """Add an event in the caller's transaction (an ORM session or a Core connection); returns
    its sequence number. The head row's UPDATE comes first: it serialises appenders (a row lock
    on PostgreSQL, the write lock on SQLite), so concurrent writers cannot fork the chain."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    seq, prev_hash = session.execute(_ADVANCE_HEAD).one()
    details_text = json.dumps(details or {}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    new_hash = link(prev_hash, canonical(seq, format_time(now), actor, action, subject, details_text))
    session.execute(_INSERT_EVENT, {"seq": seq, "at": now, "actor": actor, "action": action,
                                    "subject": subject, "details": details_text,
                                    "prev_hash": prev_hash, "hash": new_hash})
    session.execute(_SET_HEAD_HASH, {"new_hash": new_hash})
    return seq


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_bad: int | None = None
    problem: str = ""


def _canonical_time(dialect: str):
    """The event time exactly as format_time writes it, produced by the database: formatting a
    million datetimes in Python costs more than hashing them."""
    column = _EVENTS.c.at
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC, see UTCDateTime).
    return func.replace(type_coerce(column, String), " ", "T").concat("Z")


def verify(session: Session, *, batch: int = 10_000) -> Verification:
    """Walk the chain from the start; name the first event that was modified, deleted, moved or
    forged. Head and events are read in one snapshot, so appends meanwhile are not alarms."""
    if session.get_bind().dialect.name == "postgresql":
        # A connection of its own at REPEATABLE READ: the caller's session may already have run
        # a statement, after which its isolation level can no longer change.
        with session.get_bind().connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                return _verify_on(connection, batch)
    # SQLite: every Vouch transaction holds the write lock (BEGIN IMMEDIATE), so the caller's
    # own transaction is already a snapshot no one can append to; a second connection would wait
    # for that very lock.
    return _verify_on(session.connection(), batch)


def _verify_on(connection, batch: int) -> Verification:
    dialect = connection.dialect.name
    head_seq, head_hash = connection.execute(select(_HEAD.c.seq, _HEAD.c.hash)).one()
    query = (select(_EVENTS.c.seq, _canonical_time(dialect), _EVENTS.c.actor, _EVENTS.c.action,
                    _EVENTS.c.subject, _EVENTS.c.details, _EVENTS.c.prev_hash, _EVENTS.c.hash)
             .order_by(_EVENTS.c.seq))
    sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    # Every value is text or an integer already: a plain DB-API cursor skips SQLAlchemy's per-row
    # processing, which otherwise costs more than the hashing (bench/storage.py).
    raw = connection.connection.driver_connection
    cursor = raw.cursor(name="vouch_audit_verify") if dialect == "postgresql" else raw.cursor()
    try:
        cursor.execute(sql)
        return _walk(_batches(cursor, batch), head_seq, head_hash)
    finally:
        cursor.close()


def _batches(cursor, size: int):
    while rows := cursor.fetchmany(size):
        yield from rows


def _walk(rows, head_seq: int, head_hash: str) -> Verification:
    expected_prev, expected_seq = GENESIS, 1
    prev_digest = bytes.fromhex(GENESIS)
    sha256, quote = hashlib.sha256, _quote
    for seq, at, actor, action, subject, details, prev_hash, stored_hash in rows:
        if seq < expected_seq or seq > head_seq:
            return Verification(False, expected_seq - 1, seq,
                                f"event {seq} was never written by Vouch (forged or inserted)")
        if seq != expected_seq:
            return Verification(False, expected_seq - 1, expected_seq,
                                f"event {expected_seq} is missing (deleted?); next is {seq}")
        if prev_hash != expected_prev:
            return Verification(False, seq - 1, seq, f"event {seq} does not follow event {seq - 1} "
                                "(an earlier event was changed, or events were reordered)")
        body = (f"[{seq},{quote(at)},{quote(actor)},{quote(action)},{quote(subject)},"
                f"{quote(details)}]").encode()
        prev_digest = sha256(prev_digest + body).digest()
        computed = prev_digest.hex()
        if computed != stored_hash:
            return Verification(False, seq - 1, seq, f"event {seq} was modified after it was written")
        expected_prev, expected_seq = computed, seq + 1
    count = expected_seq - 1
    if count < head_seq:
        return Verification(False, count, count + 1,
                            f"the chain ends at event {count} but {head_seq} were written "
                            "(the newest events were deleted)")
    if head_hash != expected_prev:
        return Verification(False, count - 1, count,
                            f"event {count} was modified after it was written (it no longer "
                            "matches the chain head)")
    return Verification(True, count)


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
