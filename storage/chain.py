"""The audit hash chain itself, free of SQLAlchemy: the canonical event, the link, and checking a
run of stored events. storage.audit writes and reads the chain; this module is also the worker
process that checks one range of it (see storage.audit), which starts in a few tens of
milliseconds because it imports nothing but the standard library and the database driver.

hash(n) = HMAC-SHA256(audit key, bytes.fromhex(hash(n-1)) || canonical(n)), hash(0) = 64 zeros,
where canonical(n) = compact JSON of [seq, at, actor, action, subject, details] and `details` is
the stored JSON text itself. The key is not in the database, so someone who can write to it can
neither forge an event nor recompute the chain after changing one. Events written before Vouch
keyed its chain (before `keyed_from`, the anchor) are linked with plain SHA-256; the anchor's keyed
link covers their last hash, so they cannot be rewritten either.

Every event also stores prev_hash, its predecessor's hash. So a chain can be checked in pieces:
each piece checks its events against the prev_hash stored on its first event, and join() checks
that each piece's first prev_hash is the hash its predecessor ended with.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass

GENESIS = "0" * 64

_quote = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses per string


def canonical(seq: int, at: str, actor: str, action: str, subject: str, details: str) -> bytes:
    """Compact JSON of [seq, at, actor, action, subject, details], byte for byte what
    json.dumps(..., ensure_ascii=False, separators=(",", ":")) gives, without its per-call cost."""
    return (f"[{seq},{_quote(at)},{_quote(actor)},{_quote(action)},{_quote(subject)},"
            f"{_quote(details)}]").encode()


def link(prev_hash: str, body: bytes, key: bytes | None) -> str:
    """The hash of an event: keyed (HMAC-SHA256) from the anchor on, plain SHA-256 before it."""
    data = bytes.fromhex(prev_hash) + body
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.digest(key, data, "sha256").hex()


class KeyedHash:
    """HMAC-SHA256 (RFC 2104) with the key's two padded blocks hashed once, for checking many
    events: hmac.digest derives them again for every call, which made verifying 2.5 times
    slower (bench/README.md). The same function as link()'s, which a unit test holds it to."""

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # SHA-256's block size
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __call__(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_bad: int | None = None
    problem: str = ""


@dataclass(frozen=True)
class Run:
    """What checking consecutive stored events found. The first event's own position and link
    are left to join(), which knows what came before it."""

    first_seq: int | None = None  # None: there were no events
    first_prev: str | None = None  # prev_hash stored on the first event
    next_seq: int = 0  # the seq expected after the last good event
    last_hash: str | None = None  # hash of the last good event
    bad: int | None = None
    problem: str = ""


def _forged(seq: int) -> str:
    return f"event {seq} was never written by Vouch (forged or inserted)"


def _missing(seq: int, found: int) -> str:
    return f"event {seq} is missing (deleted?); next is {found}"


def _unlinked(seq: int) -> str:
    return (f"event {seq} does not follow event {seq - 1} "
            "(an earlier event was changed, or events were reordered)")


def check_run(rows: Iterable[tuple], head_seq: int, key: bytes, keyed_from: int) -> Run:
    """Check rows of (seq, at as format_time writes it, actor, action, subject, details,
    prev_hash, hash) in seq order, keyed with `key` from event `keyed_from` on; stop at the
    first problem."""
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return Run()
    first_seq, first_prev = first[0], first[6]
    try:
        prev_digest = bytes.fromhex(first_prev)
    except (TypeError, ValueError):  # not a hash at all: join() reports the broken link
        return Run(first_seq, first_prev, first_seq, None, first_seq, _unlinked(first_seq))
    expected_prev, expected_seq = first_prev, first_seq
    sha256, keyed, quote = hashlib.sha256, KeyedHash(key), _quote
    for seq, at, actor, action, subject, details, prev_hash, stored_hash in itertools.chain(
            (first,), rows):
        if seq != expected_seq or prev_hash != expected_prev:  # never for the first row
            if seq < expected_seq or seq > head_seq:
                return Run(first_seq, first_prev, expected_seq, expected_prev, seq, _forged(seq))
            if seq != expected_seq:
                return Run(first_seq, first_prev, expected_seq, expected_prev, expected_seq,
                           _missing(expected_seq, seq))
            return Run(first_seq, first_prev, expected_seq, expected_prev, seq, _unlinked(seq))
        body = (f"[{seq},{quote(at)},{quote(actor)},{quote(action)},{quote(subject)},"
                f"{quote(details)}]").encode()
        prev_digest = (keyed(prev_digest + body) if seq >= keyed_from
                       else sha256(prev_digest + body).digest())
        computed = prev_digest.hex()
        if computed != stored_hash:
            problem = f"event {seq} was modified after it was written{_key_hint(seq, keyed_from)}"
            return Run(first_seq, first_prev, expected_seq, expected_prev, seq, problem)
        expected_prev, expected_seq = computed, seq + 1
    return Run(first_seq, first_prev, expected_seq, expected_prev)


def _key_hint(seq: int, keyed_from: int) -> str:
    # The first keyed event fails the same way for a changed event and for the wrong key.
    return (" (or the audit key is not the one the chain was written with)"
            if seq == keyed_from else "")


def join(runs: Iterable[Run], head_seq: int, head_hash: str) -> Verification:
    """Chain runs (in seq order, together covering every stored event) from the genesis to the
    head row; the first problem wins, as in one walk over the whole chain."""
    expected_seq, expected_prev = 1, GENESIS
    for run in runs:
        seq = run.first_seq
        if seq is None:
            continue
        if seq < expected_seq or seq > head_seq:
            return Verification(False, expected_seq - 1, seq, _forged(seq))
        if seq != expected_seq:
            return Verification(False, expected_seq - 1, expected_seq, _missing(expected_seq, seq))
        if run.first_prev != expected_prev:
            return Verification(False, seq - 1, seq, _unlinked(seq))
        if run.bad is not None:
            return Verification(False, run.next_seq - 1, run.bad, run.problem)
        expected_seq, expected_prev = run.next_seq, run.last_hash
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


def check_query(cursor, sql: str, head_seq: int, batch: int, key: bytes, keyed_from: int) -> Run:
    """Run the events query storage.audit built on a DB-API cursor and check what it returns,
    fetching `batch` rows at a time."""
    cursor.execute(sql)
    return check_run(_batches(cursor, batch), head_seq, key, keyed_from)


def _batches(cursor, size: int):
    while rows := cursor.fetchmany(size):
        yield from rows


# --- the worker process ------------------------------------------------------------------------

def _work(job: dict) -> Run:
    """Run job["sql"] (built by storage.audit) and check what it returns. job["connect"] holds
    the driver's connect arguments as SQLAlchemy would pass them, job["key"] the audit key; they
    arrive on stdin, so neither a password nor the key shows in the process list."""
    args, kwargs = job["connect"]
    chain = (bytes.fromhex(job["key"]), job["keyed_from"])
    if job["dialect"] == "sqlite":
        import sqlite3

        # One SELECT is one consistent read; the parent holds the write lock meanwhile.
        connection = sqlite3.connect(*args, **{**kwargs, "timeout": 30})
        try:
            return check_query(connection.cursor(), job["sql"], job["head_seq"], job["batch"],
                               *chain)
        finally:
            connection.close()
    import psycopg

    with psycopg.connect(*args, **kwargs) as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        # The parent's snapshot: every worker sees exactly the chain the parent read the head of.
        connection.execute("SET TRANSACTION SNAPSHOT %s" % _literal(job["snapshot"]))
        with connection.cursor(name="vouch_audit_verify") as cursor:
            run = check_query(cursor, job["sql"], job["head_seq"], job["batch"], *chain)
        connection.rollback()
        return run


def _literal(snapshot: str) -> str:
    if not snapshot or not all(c in "0123456789ABCDEFabcdef-" for c in snapshot):
        raise ValueError(f"unexpected snapshot id {snapshot!r}")
    return f"'{snapshot}'"


def main(job: dict | None = None) -> int:
    try:
        run = _work(job if job is not None else json.load(sys.stdin))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which names it
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"{type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    json.dump(asdict(run), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
