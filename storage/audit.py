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

from sqlalchemy import select, update
from sqlmodel import Session

from storage.models import AuditEvent, AuditHead

GENESIS = "0" * 64


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(seq: int, at: str, actor: str, action: str, subject: str, details: str) -> bytes:
    return json.dumps([seq, at, actor, action, subject, details], ensure_ascii=False,
                      separators=(",", ":")).encode()


def link(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


def append(session: Session, *, actor: str, action: str, subject: str,
           details: dict[str, Any] | None = None, now: datetime | None = None) -> AuditEvent:
    """Add an event in the caller's transaction. The head row's UPDATE serialises appenders."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    seq, prev_hash = session.execute(
        update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1)
        .returning(AuditHead.seq, AuditHead.hash)).one()
    details_text = json.dumps(details or {}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    new_hash = link(prev_hash, canonical(seq, format_time(now), actor, action, subject, details_text))
    event = AuditEvent(seq=seq, at=now, actor=actor, action=action, subject=subject,
                       details=details_text, prev_hash=prev_hash, hash=new_hash)
    session.add(event)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=new_hash))
    session.flush()
    return event


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_bad: int | None = None
    problem: str = ""


def verify(session: Session, *, batch: int = 10_000) -> Verification:
    """Walk the chain from the start; name the first event that was modified, deleted, moved or
    forged. Reads the head and the events in one snapshot, so appends meanwhile are not alarms."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    head_seq, head_hash = session.execute(select(AuditHead.seq, AuditHead.hash)).one()
    expected_prev, expected_seq = GENESIS, 1
    rows = session.execute(
        select(AuditEvent.seq, AuditEvent.at, AuditEvent.actor, AuditEvent.action,
               AuditEvent.subject, AuditEvent.details, AuditEvent.prev_hash, AuditEvent.hash)
        .order_by(AuditEvent.seq).execution_options(yield_per=batch))
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
        computed = link(prev_hash, canonical(seq, format_time(at), actor, action, subject, details))
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
