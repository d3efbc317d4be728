"""Storage at scale: the scheduler's two scans at 100k rows, audit verification at 1M events.

Run from the repository root:  .venv/bin/python bench/storage.py [--rows N] [--events N] [--runs N]

On SQLite (a file, WAL, as storage.db opens it) and PostgreSQL (a private cluster with fsync on):
  scans   100k certificates and 100k requests are bulk-loaded with a realistic spread (most
          expired or decided long ago, a few hundred due now), ANALYZEd; then
          - "certificates due a reminder" (expiring within 15 minutes, not reminded):
            storage.certificates.SqlCertificates.due_reminder, the SELECT of reminders_due
          - "requests past their TTL": storage.requests.SqlRequests.past_ttl, the SELECT of
            expire_due (pending, expires_at <= now, ordered, limited), without its UPDATEs
          both with the sweeps' limit (access.sweeps.BATCH), are each timed over --runs runs
          (median, a fresh db.transaction() per run, as the store's units run them), and each
          query's plan is printed (SQLite EXPLAIN QUERY PLAN, PostgreSQL EXPLAIN ANALYZE) with the
          index it uses. Each query must return exactly the rows planted as due: that also proves
          the bulk-loaded values are stored the way the repositories write them. Target: median
          under 50 ms.
  audit   1M chained events are precomputed with storage.audit's own canonical() and link() and
          bulk-inserted (not 1M append calls); then storage.audit.verify(session, key) is timed end to
          end in a Database.session(), as `vouch audit verify` runs it: by default the chain is
          split into seq ranges checked by one worker process per CPU (worker start-up included).
          verify(workers=1), all in this process, is timed too, for reference. Target: over
          200,000 events/s. When it misses (or with --profile), the single-process check is
          taken apart: cProfile grouped by where the time goes, and per-event costs of each step
          measured without the profiler.

The PostgreSQL cluster runs as the postgres user (needs root) and is removed at the end. The whole
run takes about 1-5 minutes on 2 cores; --rows/--events scale it down. Exit status 0 either way:
this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import json
import json.encoder
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import event  # noqa: E402

from access.ports import StoredCertificate  # noqa: E402
from access.requests import Request  # noqa: E402
from access.sweeps import BATCH  # noqa: E402
from bench.common import loadavg, machine, postgres_cluster, print_top_functions  # noqa: E402
from bench.common import AUDIT_KEY, verdict  # noqa: E402
from ca.wire import put_string  # noqa: E402
from storage import audit  # noqa: E402
from storage.certificates import SqlCertificates  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models import AuditEvent, CertificateRecord, RequestRecord  # noqa: E402
from storage.requests import SqlRequests  # noqa: E402
from storage.types import UTCDateTime  # noqa: E402

TARGET_QUERY_MS = 50.0
TARGET_VERIFY_PER_S = 200_000
REMIND_WITHIN = timedelta(minutes=15)  # policy reminder_before, as the scheduler passes it
REQUEST_TTL = timedelta(minutes=30)
HISTORY = timedelta(days=180)  # how far back the loaded rows reach
SWEEP_LIMIT = BATCH  # what expire_due and reminders_due pass as the limit


# --- data ----------------------------------------------------------------------------------

_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
_DURATIONS = [timedelta(minutes=m) for m in (15, 30, 60, 60, 120, 240)]
_REASONS = ["deploy", "debug", "migration", "incident"]
_STATES_DECIDED = [("issued", 75), ("revoked", 3), ("expired", 10), ("denied", 7), ("cancelled", 5)]


@dataclass
class Planted:
    """What the loaded data holds, so the queries' answers can be checked."""

    certificates: int
    requests: int
    certs_due: int  # live request certificates, unreminded, expiring within 15 min
    requests_due: int  # pending, expires_at <= now


def _user_keys(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """(OpenSSH line, SHA256 fingerprint) of n Ed25519-shaped public keys (random points)."""
    keys = []
    for _ in range(n):
        blob = put_string("ssh-ed25519") + put_string(rng.randbytes(32))
        fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        keys.append(("ssh-ed25519 " + base64.b64encode(blob).decode(), fp))
    return keys


def make_rows(rows: int, now: datetime, seed: int = 7) -> tuple[list[dict], list[dict], Planted]:
    """`rows` requests and `rows` certificates as column dicts (Python values, as the ORM binds).

    Requests: a few hundred pending and past their TTL (due now), some pending not yet due, a few
    approved, the rest decided over the past 180 days (mostly issued). Certificates: one per
    issued/revoked request, the rest signed directly by an operator (no holder). A few hundred
    request certificates expire within the next 15 minutes and were not reminded (due now); near
    them sit some already reminded, revoked or holder-less ones the query must skip; a few hundred
    live ones expire later; everything else expired long ago (and was reminded).
    """
    rng = random.Random(seed)
    keys = _user_keys(rng, 300)
    users = [f"U0USER{i:04d}" for i in range(500)]
    targets = [f"target-{i:02d}" for i in range(20)]
    due = max(5, rows * 3 // 1000)
    pending_live = max(2, rows // 1000)
    approved = max(1, rows // 10_000)
    in_window_reminded = max(1, rows // 2000)
    in_window_revoked = max(1, rows // 10_000)
    live_later = max(3, rows * 3 // 1000)
    ids: set[str] = set()

    def new_id() -> str:
        while True:
            rid = "req-" + "".join(rng.choices(_ALPHABET, k=12))
            if rid not in ids:
                ids.add(rid)
                return rid

    serials: set[int] = set()

    def new_serial() -> int:
        while True:
            serial = rng.getrandbits(64) or 1
            if serial not in serials:
                serials.add(serial)
                return serial

    def past(lo: timedelta, hi: timedelta) -> datetime:
        return now - lo - (hi - lo) * rng.random()

    requests: list[dict] = []
    certificates: list[dict] = []

    def request(state: str, created: datetime, duration: timedelta) -> dict:
        user, (line, fp) = rng.choice(users), rng.choice(keys)
        decided = None if state == "pending" else created + timedelta(seconds=rng.randint(20, 900))
        row = dict(
            id=new_id(),
            kind="breakglass" if rng.random() < 0.01 else "request",
            requester=user,
            target=rng.choice(targets),
            duration_seconds=int(duration.total_seconds()),
            reason=f"ticket OPS-{rng.randint(1000, 99999)}: {rng.choice(_REASONS)}",
            key_fingerprint=fp,
            public_key=line,
            state=state,
            version={"pending": 0, "approved": 1}.get(state, 2),
            created_at=created,
            expires_at=created + REQUEST_TTL,
            decided_at=decided,
            issue_serial=None,
            issue_claimed_at=None,
            issue_error=None,
            issue_attempts=0,
            issued_at=None,
            reviewed_at=None,
            reviewed_by=None,
            review_escalated_at=None,
        )
        requests.append(row)
        return row

    def certificate(
        req: dict | None,
        valid_before: datetime,
        duration: timedelta,
        *,
        reminded: bool,
        revoked: bool,
    ) -> None:
        valid_after = valid_before - duration - timedelta(minutes=5)
        issued = valid_after + timedelta(minutes=5)
        if req is not None:
            line, fp, holder, rid = (
                req["public_key"],
                req["key_fingerprint"],
                req["requester"],
                req["id"],
            )
            req["created_at"] = issued - timedelta(seconds=rng.randint(30, 1200))
            req["expires_at"] = req["created_at"] + REQUEST_TTL
            req["decided_at"] = req["issued_at"] = req["issue_claimed_at"] = issued
            req["issue_serial"] = serial = new_serial()
            req["issue_attempts"] = 1
            req["duration_seconds"] = int(duration.total_seconds())
            key_id = f"vouch:{req['kind']}:{rid}:{holder}"
        else:
            (line, fp), holder, rid, serial = rng.choice(keys), None, None, new_serial()
            key_id = f"vouch:cli:root:{serial}"
        certificates.append(
            dict(
                serial=serial,
                key_id=key_id,
                principals=json.dumps([rng.choice(["postgres", "deploy", "root"])]),
                subject_fingerprint=fp,
                subject_key=line,
                ca_fingerprint="SHA256:benchCA",
                valid_after=valid_after,
                valid_before=valid_before,
                issued_at=issued,
                issued_by="vouch" if req is not None else "cli:root",
                request_id=rid,
                holder=holder,
                revoked_at=issued + timedelta(minutes=1) if revoked else None,
                revoked_by="U0SECADMIN" if revoked else None,
                revoke_reason="lost laptop" if revoked else None,
                reminder_sent_at=valid_before - REMIND_WITHIN if reminded else None,
            )
        )

    # Pending: due now (expires_at in the last two hours), and not yet due.
    for _ in range(due):
        request(
            "pending", past(REQUEST_TTL, REQUEST_TTL + timedelta(hours=2)), rng.choice(_DURATIONS)
        )
    for _ in range(pending_live):
        request(
            "pending",
            past(timedelta(0), REQUEST_TTL - timedelta(seconds=1)),
            rng.choice(_DURATIONS),
        )
    for _ in range(approved):
        request("approved", past(timedelta(hours=1), HISTORY), rng.choice(_DURATIONS))
    # Decided long ago; issued/revoked ones get their certificate.
    states = [s for s, _ in _STATES_DECIDED]
    weights = [w for _, w in _STATES_DECIDED]
    with_certs: list[dict] = []
    while len(requests) < rows:
        state = rng.choices(states, weights)[0]
        row = request(state, past(timedelta(hours=5), HISTORY), rng.choice(_DURATIONS))
        if state in ("issued", "revoked"):
            with_certs.append(row)
    rng.shuffle(with_certs)
    window = lambda: now + REMIND_WITHIN * (0.001 + 0.998 * rng.random())  # noqa: E731
    special = (
        [("due", False, False)] * due
        + [("reminded", True, False)] * in_window_reminded
        + [("revoked", False, True)] * in_window_revoked
        + [("later", False, False)] * live_later
    )
    for req, (kind, reminded, revoked) in zip(with_certs, special):
        if kind == "later":
            valid_before = (
                now + REMIND_WITHIN + timedelta(hours=4) * rng.random() + timedelta(seconds=1)
            )
        else:
            valid_before = window()
        req["state"] = "revoked" if revoked else "issued"
        certificate(req, valid_before, rng.choice(_DURATIONS), reminded=reminded, revoked=revoked)
    for req in with_certs[len(special) :]:
        duration = rng.choice(_DURATIONS)
        valid_before = now - timedelta(minutes=1) - (HISTORY - timedelta(hours=6)) * rng.random()
        certificate(
            req,
            valid_before,
            duration,
            reminded=duration > REMIND_WITHIN,
            revoked=req["state"] == "revoked",
        )
    # Operator-signed certificates without a holder, some inside the window (the query skips them).
    for i in range(max(0, rows - len(certificates))):
        valid_before = (
            window()
            if i < max(1, rows // 5000)
            else now - timedelta(minutes=1) - (HISTORY - timedelta(hours=6)) * rng.random()
        )
        certificate(None, valid_before, rng.choice(_DURATIONS), reminded=False, revoked=False)
    certificates = certificates[:rows]
    return requests, certificates, Planted(len(certificates), len(requests), due, due)


# --- audit chain ----------------------------------------------------------------------------


def _details_text(details: dict) -> str:
    """What audit.append stores in `details`."""
    return json.dumps(details, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def make_chain(n: int, now: datetime, seed: int = 11) -> tuple[list[tuple], str]:
    """n chained events (seq, at, actor, action, subject, details, prev_hash, hash), hashed with
    storage.audit's own canonical() and link() over format_time(at), the way append() does.

    The details JSON comes from templates filled with ASCII digits and ids (json.dumps per event
    would double the set-up time); the first events of each kind are checked against json.dumps."""
    rng = random.Random(seed)
    users = [f"U0USER{i:04d}" for i in range(500)]
    step = timedelta(seconds=3)
    start = now - step * (n + 10)
    rows: list[tuple] = []
    prev = audit.GENESIS
    canonical, link, format_time = audit.canonical, audit.link, audit.format_time
    cycle = (
        "request.created",
        "request.voted",
        "request.approved",
        "certificate.reserved",
        "certificate.issued",
    )
    created = _details_text(
        {
            "kind": "request",
            "target": "prod-db",
            "duration_seconds": 3600,
            "reason": "deploy hotfix — OPS-4821",
            "key_fingerprint": "SHA256:" + "x" * 43,
        }
    )
    voted = _details_text({"approve": True})
    key_added = _details_text({"fingerprint": "SHA256:" + "z" * 43, "type": "ssh-ed25519"})
    approved = {u: _details_text({"approvers": [u]}) for u in users}

    def issued_details(serial: str, rid: str, after: str, before: str) -> dict:
        return {
            "serial": serial,
            "key_id": f"vouch:request:{rid}:U0USER0001",
            "principals": ["postgres"],
            "subject_fingerprint": "SHA256:" + "y" * 43,
            "valid_after": after,
            "valid_before": before,
            "critical_options": {},
            "extensions": ["permit-pty"],
        }

    issued = _details_text(issued_details("@S@", "@R@", "@A@", "@B@"))
    checked: set[str] = set()
    for seq in range(1, n + 1):
        at = start + step * seq + timedelta(microseconds=rng.randrange(1_000_000))
        rid = f"req-{seq // 5:012d}"
        action = cycle[seq % 5] if seq % 50 else "key.added"
        actor = "vouch" if action.startswith("certificate") else users[rng.randrange(500)]
        subject = f"user:{actor}" if action == "key.added" else f"request:{rid}"
        if action == "request.created":
            details = created
        elif action == "request.voted":
            details = voted
        elif action == "request.approved":
            details = approved[actor]
        elif action == "certificate.reserved":
            serial = str(rng.getrandbits(64))
            details = f'{{"serial":"{serial}"}}'
            if action not in checked:
                assert details == _details_text({"serial": serial})
        elif action == "certificate.issued":
            serial = str(rng.getrandbits(64))
            after, before = (
                format_time(at - timedelta(minutes=5)),
                format_time(at + timedelta(hours=1)),
            )
            details = (
                issued.replace("@S@", serial)
                .replace("@R@", rid)
                .replace("@A@", after)
                .replace("@B@", before)
            )
            if action not in checked:
                assert details == _details_text(issued_details(serial, rid, after, before))
        else:
            details = key_added
        checked.add(action)
        new = link(prev, canonical(seq, format_time(at), actor, action, subject, details), AUDIT_KEY)
        rows.append((seq, at, actor, action, subject, details, prev, new))
        prev = new
    return rows, prev


# --- backends -------------------------------------------------------------------------------


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """What UTCDateTime binds on SQLite, for values already in UTC (checked in _binders)."""
    if value is None:
        return None
    if value.utcoffset():
        value = value.astimezone(timezone.utc)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond:06d}"
    )


class Backend:
    """One database under test, with bulk loading through the raw driver connection."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.db = Database(url)
        self.db.prepare()
        self.engine = self.db.engine
        self.dialect = self.engine.dialect

    def _binders(self, table, columns: list[str]) -> list[Callable | None]:
        """Each column's bind processor (UTCDateTime, UInt64, ...) as the ORM would apply it.

        On SQLite, UTCDateTime's processor (astimezone, then SQLAlchemy's %-format of a dict) costs
        ~10 µs a value; it is replaced by an f-string of the same UTC fields, checked against the
        real processor on a sample first."""
        binders = [
            table.c[c].type.dialect_impl(self.dialect).bind_processor(self.dialect) for c in columns
        ]
        if self.dialect.name != "sqlite":
            return binders
        for i, c in enumerate(columns):
            if isinstance(table.c[c].type, UTCDateTime) and binders[i] is not None:
                real = binders[i]
                for sample in (
                    datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc),
                    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
                    datetime(2026, 6, 1, tzinfo=timezone.utc),
                    None,
                ):
                    if _sqlite_utc_text(sample) != real(sample):
                        raise RuntimeError(f"fast SQLite datetime text differs: {real(sample)!r}")
                binders[i] = _sqlite_utc_text
        return binders

    def _bound(self, table, columns: list[str], rows: Iterator[tuple]) -> Iterator[tuple]:
        binders = self._binders(table, columns)
        active = [(i, b) for i, b in enumerate(binders) if b is not None]
        for row in rows:
            row = list(row)
            for i, b in active:
                row[i] = b(row[i])
            yield tuple(row)

    def bulk_insert(self, table, columns: list[str], rows: Iterator[tuple]) -> None:
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            bound = self._bound(table, columns, rows)
            if self.dialect.name == "sqlite":
                # storage.db puts pysqlite in autocommit mode: one explicit transaction, or a
                # commit (and a WAL frame) per row.
                cursor.execute("BEGIN")
                cursor.executemany(
                    f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
                    f"({', '.join('?' * len(columns))})",
                    bound,
                )
                cursor.execute("COMMIT")
            else:
                with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in bound:
                        copy.write_row(row)
                raw.commit()
            cursor.close()
        finally:
            raw.close()

    def execute_raw(self, sql: str, params=None) -> list[tuple]:
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(sql, params) if params is not None else cursor.execute(sql)
            rows = cursor.fetchall() if cursor.description else []
            if self.dialect.name != "sqlite":
                raw.commit()
            cursor.close()
            return rows
        finally:
            raw.close()

    def analyze(self) -> None:
        self.execute_raw("ANALYZE")

    def close(self) -> None:
        self.db.close()


@contextmanager
def backends(names: list[str], root: Path) -> Iterator[list[Backend]]:
    made: list[Backend] = []
    with ExitStack() as stack:  # closes the databases, then stops the cluster
        for name in names:
            if name == "sqlite":
                url = f"sqlite:///{root / 'bench.db'}"
            else:
                cluster = stack.enter_context(postgres_cluster(durable=True))
                if cluster is None:
                    continue
                url = cluster.create_database("bench")
            made.append(Backend(name, url))
            stack.callback(made[-1].close)
        yield made


# --- the scans ------------------------------------------------------------------------------


def past_ttl(connection, now: datetime) -> list[Request]:
    """The SELECT of access.sweeps.expire_due, without its UPDATEs."""
    return SqlRequests(connection).past_ttl(now, SWEEP_LIMIT)


def due_reminder(connection, now: datetime) -> list[StoredCertificate]:
    """The SELECT of access.sweeps.reminders_due, without its UPDATEs."""
    return SqlCertificates(connection).due_reminder(now, REMIND_WITHIN, SWEEP_LIMIT)


QUERIES = {
    "certificates due a reminder": (due_reminder, "ix_certificates_valid_before"),
    "requests past their TTL": (past_ttl, "ix_requests_pending_expires_at"),
}


def load_scan_data(backend: Backend, requests: list[dict], certificates: list[dict]) -> float:
    started = time.perf_counter()
    for table, rows in (
        (RequestRecord.__table__, requests),
        (CertificateRecord.__table__, certificates),
    ):
        columns = [c.name for c in table.columns if c.name in rows[0]]
        backend.bulk_insert(table, columns, (tuple(r[c] for c in columns) for r in rows))
    backend.analyze()
    return time.perf_counter() - started


@contextmanager
def capture_sql(backend: Backend) -> Iterator[list[tuple[str, object]]]:
    seen: list[tuple[str, object]] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    event.listen(backend.engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(backend.engine, "before_cursor_execute", listener)


def explain(backend: Backend, statement: str, parameters) -> list[str]:
    if backend.dialect.name == "sqlite":
        rows = backend.execute_raw("EXPLAIN QUERY PLAN " + statement, parameters)
        return [f"{'  ' * (parent > 0)}{detail}" for _id, parent, _notused, detail in rows]
    rows = backend.execute_raw("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
    return [row[0] for row in rows]


@dataclass
class QueryResult:
    backend: str
    query: str
    returned: int
    expected: int
    median_ms: float
    p90_ms: float
    index: str
    index_used: bool

    @property
    def ok(self) -> bool:
        return self.median_ms < TARGET_QUERY_MS and self.returned == self.expected


def time_query(
    backend: Backend, name: str, fn, index: str, expected: int, now: datetime, runs: int
) -> QueryResult:
    with backend.db.transaction() as connection, capture_sql(backend) as seen:
        returned = len(fn(connection, now))
    statement, parameters = seen[-1]
    plan = explain(backend, statement, parameters)
    for _ in range(3):  # warm the statement cache and the page cache
        with backend.db.transaction() as connection:
            fn(connection, now)
    times = []
    for _ in range(runs):
        with backend.db.transaction() as connection:
            t0 = time.perf_counter()
            fn(connection, now)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    used = any(index in line for line in plan)
    print(
        f"\n[{backend.name}] {name}: {returned} rows (planted {expected}); plan "
        f"({'uses ' + index if used else 'does NOT use ' + index}):"
    )
    print("  SQL: " + " ".join(statement.split()))
    for line in plan:
        print("    " + line)
    return QueryResult(
        backend.name,
        name,
        returned,
        expected,
        statistics.median(times),
        times[min(len(times) - 1, int(len(times) * 0.9))],
        index,
        used,
    )


# --- audit verification ---------------------------------------------------------------------


def load_chain(backend: Backend, chain: list[tuple], head: str) -> float:
    started = time.perf_counter()
    table = AuditEvent.__table__
    columns = ["seq", "at", "actor", "action", "subject", "details", "prev_hash", "hash"]
    backend.bulk_insert(table, columns, iter(chain))
    backend.execute_raw(
        "UPDATE audit_head SET seq = ?, hash = ?, keyed_from = 1 WHERE id = 1"
        if backend.dialect.name == "sqlite"
        else "UPDATE audit_head SET seq = %s, hash = %s, keyed_from = 1 WHERE id = 1",
        (len(chain), head),
    )
    backend.analyze()
    return time.perf_counter() - started


def default_workers(events: int) -> int:
    """How many processes audit.verify uses by default for a chain of `events`."""
    if events < audit.PARALLEL_FROM:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), audit.MAX_WORKERS, events))


def time_verify(
    backend: Backend, events: int, runs: int, *, workers: int | None = None
) -> tuple[float, list[float]]:
    """Seconds of each audit.verify(session, key) run (a Database.session() each), end to end: worker
    start-up included."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with backend.db.session() as session:
            result = audit.verify(session, AUDIT_KEY, workers=workers)
        times.append(time.perf_counter() - t0)
        if not (result.ok and result.events == events):
            raise RuntimeError(f"[{backend.name}] verify failed: {result}")
    return statistics.median(times), times


# Profile attribution. A Python function counts in the group its file/name says; a C function
# (file "~") counts in its own group when it is one of the steps below, else in its caller's group
# (so datetime.astimezone in format_time and in UTCDateTime land where they were called from).
FETCH = "driver: fetch rows (C)"
PSYCOPG = "psycopg (Python side: server-side cursor, loaders)"
SQLA = "SQLAlchemy: result/row machinery"
TYPES = "UTCDateTime.process_result_value (tz on each `at`)"
PARSE = "TEXT -> datetime parsing (SQLite)"
FORMAT = "format_time: astimezone + strftime"
CANON = "canonical: json.dumps (a new JSONEncoder per call)"
LINK = "link: bytes.fromhex + hmac-sha256 + hex"
LOOP = "verify loop itself (unpack, compare)"


def _group_python(file: str, fn: str) -> str:
    if file.endswith("storage/types.py"):
        return TYPES
    if "psycopg" in file:
        return PSYCOPG
    if "sqlalchemy" in file:
        return SQLA
    if file.endswith("storage/chain.py") and fn == "check_run":
        return LOOP
    if file.endswith("storage/audit.py"):
        return {"format_time": FORMAT, "canonical": CANON, "link": LINK, "verify": LOOP}.get(
            fn, f"audit.{fn}"
        )
    if file.endswith("json/__init__.py") or file.endswith("json/encoder.py"):
        return CANON
    return f"other: {Path(file).name}:{fn}"[:70]


def _group_builtin(fn: str) -> str | None:
    if "fetch" in fn or "sqlite3.Cursor" in fn or "psycopg" in fn or "pq" in fn.split("'")[0]:
        return FETCH
    if "sha256" in fn or "hexdigest" in fn or "fromhex" in fn:
        return LINK
    if "strftime" in fn:
        return FORMAT
    if "str_to_datetime" in fn or "fromisoformat" in fn:
        return PARSE
    return None


def attribute(stats: pstats.Stats) -> dict[str, float]:
    groups: dict[str, float] = {}

    def add(name: str, seconds: float) -> None:
        groups[name] = groups.get(name, 0.0) + seconds

    for (file, _line, fn), (_cc, _nc, tottime, _ct, callers) in stats.stats.items():
        file = file.replace("\\", "/")
        if file != "~":
            add(_group_python(file, fn), tottime)
            continue
        own = _group_builtin(fn)
        if own is not None:
            add(own, tottime)
            continue
        for (cfile, _cline, cfn), edge in callers.items():
            caller = (
                _group_builtin(cfn)
                if cfile == "~"
                else _group_python(cfile.replace("\\", "/"), cfn)
            )
            add(caller or f"other: {fn}"[:70], edge[2])
    return groups


def profile_verify(backend: Backend, events: int, top: int) -> None:
    profiler = cProfile.Profile()
    with backend.db.session() as session:
        result = profiler.runcall(audit.verify, session, AUDIT_KEY, workers=1)
    assert result.ok and result.events == events, result
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())
    groups = attribute(stats)
    print(
        f"\n[{backend.name}] cProfile of one verify over {events:,} events: {total:.2f} s under the "
        "profiler (it inflates Python calls; the shares are what matters)"
    )
    for name, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        if seconds < total * 0.005:
            continue
        print(f"  {seconds / total:6.1%}  {seconds:6.2f} s  {name}")
    print_top_functions(profiler, top)


def step_costs(backend: Backend, chain: list[tuple], sample: int) -> dict[str, float]:
    """Per-event µs of each step of one process's check (storage.chain.check_run), measured
    alone without a profiler, over the first `sample` events (the per-event cost does not depend
    on the table size)."""
    costs: dict[str, float] = {}
    sample_rows = chain[:sample]

    def per_event(seconds: float) -> float:
        return seconds / sample * 1e6

    sql = (
        "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_events "
        f"WHERE seq <= {int(sample)} ORDER BY seq"
    )
    raw = backend.engine.raw_connection()
    try:
        driver = raw.driver_connection
        t0 = time.perf_counter()
        if backend.dialect.name == "sqlite":
            cursor = driver.cursor()
            cursor.execute(sql)
            while cursor.fetchmany(10_000):
                pass
        else:
            cursor = driver.cursor(name="bench_fetch")  # a server-side cursor, in a transaction
            cursor.execute(sql)
            while cursor.fetchmany(10_000):
                pass
            cursor.close()
            driver.rollback()
        costs["fetch via raw DBAPI cursor (10k per fetch)"] = per_event(time.perf_counter() - t0)
    finally:
        raw.close()
    strings = [audit.format_time(row[1]) for row in sample_rows]  # the database does this part
    canonical, link = audit.canonical, audit.link
    t0 = time.perf_counter()
    bodies = [canonical(r[0], s, r[2], r[3], r[4], r[5]) for r, s in zip(sample_rows, strings)]
    costs["canonical (encode_basestring per field, joined)"] = per_event(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for r, body in zip(sample_rows, bodies):
        link(r[6], body, AUDIT_KEY)
    costs["link (fromhex + hmac-sha256 + hex)"] = per_event(time.perf_counter() - t0)
    return costs


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=100_000,
        help="certificates and requests each (default %(default)s)",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="audit events to verify (default %(default)s; 0 skips the audit part)",
    )
    parser.add_argument("--runs", type=int, default=50, help="runs per query (default %(default)s)")
    parser.add_argument(
        "--verify-runs",
        type=int,
        default=1,
        help="timed audit.verify runs per backend (default %(default)s)",
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="take verify apart when it misses the target: cProfile on the first "
        "backend that misses, and step costs on each (auto); "
        "all of it on every backend (always); never",
    )
    parser.add_argument(
        "--top", type=int, default=15, help="cProfile lines to print (default %(default)s)"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    print(
        f"load average at start: {loadavg()} on "
        f"{os.cpu_count()} CPUs (other work on the machine inflates every number below)"
    )

    t0 = time.perf_counter()
    requests, certificates, planted = make_rows(args.rows, now)
    print(
        f"generated {planted.requests:,} requests and {planted.certificates:,} certificates in "
        f"{time.perf_counter() - t0:.1f} s ({planted.certs_due} certificates and "
        f"{planted.requests_due} requests due now)",
        flush=True,
    )
    chain, head = [], audit.GENESIS
    if args.events:
        t0 = time.perf_counter()
        chain, head = make_chain(args.events, now)
        print(
            f"precomputed {len(chain):,} chained audit events in {time.perf_counter() - t0:.1f} s "
            "(storage.audit.canonical/link/format_time)",
            flush=True,
        )

    query_results: list[QueryResult] = []
    profiled = False
    verify_results: list[tuple[str, float, list[float], float | None]] = []
    with (
        tempfile.TemporaryDirectory(prefix="vouch-bench-storage-") as tmp,
        backends(names, Path(tmp)) as made,
    ):
        for backend in made:
            print(f"\n=== {backend.name} ===", flush=True)
            seconds = load_scan_data(backend, requests, certificates)
            print(
                f"[{backend.name}] loaded and analyzed {args.rows:,} + {args.rows:,} rows in "
                f"{seconds:.1f} s",
                flush=True,
            )
            for name, (fn, index) in QUERIES.items():
                planted_due = planted.certs_due if fn is due_reminder else planted.requests_due
                expected = min(planted_due, SWEEP_LIMIT)
                query_results.append(time_query(backend, name, fn, index, expected, now, args.runs))
            if not chain:
                continue
            seconds = load_chain(backend, chain, head)
            print(
                f"\n[{backend.name}] loaded {len(chain):,} audit events in {seconds:.1f} s",
                flush=True,
            )
            median, times = time_verify(backend, len(chain), args.verify_runs)
            rate = len(chain) / median
            print(
                f"[{backend.name}] audit.verify: {', '.join(f'{t:.2f} s' for t in times)} -> "
                f"{rate:,.0f} events/s (median)",
                flush=True,
            )
            one_median, _ = time_verify(backend, len(chain), 1, workers=1)
            single = len(chain) / one_median
            print(
                f"[{backend.name}] audit.verify(workers=1), for reference: {one_median:.2f} s -> "
                f"{single:,.0f} events/s",
                flush=True,
            )
            if args.profile == "always" or (args.profile == "auto" and rate < TARGET_VERIFY_PER_S):
                if args.profile == "always" or not profiled:
                    profile_verify(backend, len(chain), args.top)
                    profiled = True
                costs = step_costs(backend, chain, min(len(chain), 200_000))
                print(f"\n[{backend.name}] per-event cost of each step, measured alone (µs/event):")
                for step, us in costs.items():
                    print(f"  {us:7.2f}  {step}")
            verify_results.append((backend.name, median, times, single))

    print(
        f"\n{'backend':<11} {'query':<36} {'rows':>5} {'median ms':>10} {'p90 ms':>8}  index used"
    )
    for r in query_results:
        print(
            f"{r.backend:<11} {r.query:<36} {r.returned:>5} {r.median_ms:>10.2f} {r.p90_ms:>8.2f}  "
            f"{r.index if r.index_used else 'NO (' + r.index + ')'}"
        )
    if verify_results:
        print(
            f"\n{'backend':<11} {'audit events':>12} {'workers':>7} {'verify s':>9} {'events/s':>10} "
            f"{'1 process/s':>12}"
        )
        workers = default_workers(len(chain))
        for name, median, _times, single in verify_results:
            print(
                f"{name:<11} {len(chain):>12,} {workers:>7} {median:>9.2f} "
                f"{len(chain) / median:>10,.0f} {single:>12,.0f}"
            )
    print(
        f"\nTargets at {args.rows:,} rows: each query median < {TARGET_QUERY_MS:g} ms and returning "
        f"the planted rows; audit.verify > {TARGET_VERIFY_PER_S:,} events/s:"
    )
    for r in query_results:
        print(f"  {r.backend:<11} {r.query:<36} {r.median_ms:8.2f} ms  {verdict(r.ok)}")
    for name, median, _times, _proto in verify_results:
        rate = len(chain) / median
        print(
            f"  {name:<11} {'audit.verify':<36} {rate:8,.0f} events/s  {verdict(rate > TARGET_VERIFY_PER_S)}"
        )
    print(f"\n{machine(started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
