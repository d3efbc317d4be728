"""Scheduled jobs at scale: one run of each sweep over 100k live certificates and 10k pending
requests, with 300 items due for each, on SQLite and PostgreSQL.

Run from the repository root:  .venv/bin/python bench/jobs.py [--live N] [--pending N] [--due N]

For each database (SQLite in a WAL file as storage.db opens it; a private durable PostgreSQL
cluster, which needs root) a child process plants the rows (bench/jobs_seed.py: live and due
certificates, pending requests past their TTL or never posted, approved requests whose signing
is due again, unreviewed break-glass uses, unannounced revocations, 180 days of history) and
ANALYZEs. This process then runs each sweep once, as the scheduled job calls it but without
Slack, with the clock at the moment the rows were planted:

  expire_due                 access.sweeps.expire_due (SELECT, then a compare-and-set and an
                             audit event per request)
  retry_issuing: issuable    the query access.issuing.retry_issuing starts from (no signing)
  reminders_due              access.sweeps.reminders_due (SELECT, then a claim per certificate)
  escalate_unreviewed        access.breakglass.escalate_unreviewed (SELECT, claim, audit)
  unposted, unposted_alerts  storage.messages.SqlMessages, the queries of the posting sweep
  unannounced_revocations    storage.messages.SqlMessages (at most 100 a run)
  offboarding_candidates     access.offboarding.offboarding_candidates
  digest: reports.activity   access.digest.activity, the 24 hours up to now

then each once more, with nothing left due (what every later run costs). Per run: wall time,
SQL statements (SQLAlchemy's before_cursor_execute event), and the growth of the process's peak
RSS over its RSS before the run (VmHWM, reset through /proc/self/clear_refs before each run).
Targets: under 1 s, and under 10 MB of growth (rows streamed or batched, never all loaded). Two
rows without a target, for comparison: every live certificate row loaded at once (what "all
loaded" costs), and the App Home's list of pending requests (lookup.overview).
--explain prints each sweep's query plans. Exit status 0 either way: this is a benchmark.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if sys.path[0] != str(REPO):  # ahead of bench/, whose storage.py would shadow the package
    sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from access import breakglass, digest, offboarding, sweeps  # noqa: E402
from access.context import Access  # noqa: E402
from access.issuing import ISSUE_LEASE, MAX_ATTEMPTS  # noqa: E402
from access.lookup import OVERVIEW_LIMIT  # noqa: E402
from access.policy_file import parse_policy  # noqa: E402
from bench.common import AUDIT_KEY, loadavg, machine, verdict  # noqa: E402
from bench.jobs_seed import Planter, Shape, digest_total  # noqa: E402
from bench.storage import Backend, backends, capture_sql, explain  # noqa: E402
from bot.messages import POST_LEASE  # noqa: E402
from storage import audit  # noqa: E402
from storage.messages import SqlMessages  # noqa: E402
from storage.models import CertificateRecord  # noqa: E402
from storage.store import SqlStore  # noqa: E402

TARGET_SECONDS = 1.0
TARGET_GROWTH_MB = 10.0
POLICY = parse_policy("""
requests_channel: C0REQUESTS
security_channel: C0SECURITY
request_ttl: 30m
reminder_before: 15m
admins: [U0SECADMIN]
targets:
  target-00:
    principals: [postgres]
    max_duration: 8h
    approvers: [U0APPROVER]
breakglass:
  users: [U0GLASS]
  max_duration: 1h
  targets: ["*"]
  review_within: 4h
""")


# --- planting, in a child process (so this one's memory holds none of the rows) --------------

def _plant(url: str, shape: Shape, now: datetime, answer) -> None:
    tables = Planter(shape, now).plant()
    backend = Backend("seed", url)
    started = time.perf_counter()
    for name, rows in tables.items():
        table = SQLModel.metadata.tables[name]
        columns = list(rows[0])
        backend.bulk_insert(table, columns, (tuple(r[c] for c in columns) for r in rows))
    backend.analyze()
    with backend.db.transaction() as connection:
        audit.anchor(connection, AUDIT_KEY, now)  # as `vouch serve` does at start
    answer.send(({name: len(rows) for name, rows in tables.items()}, digest_total(tables, now),
                 time.perf_counter() - started))
    backend.close()


def plant(backend: Backend, shape: Shape, now: datetime) -> tuple[dict[str, int], int, float]:
    backend.db.engine.dispose()  # no pooled connection is shared with the child
    url = backend.db.url
    ours, theirs = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_plant,
                                                        args=(url, shape, now, theirs))
    child.start()
    got = ours.recv()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"planting the rows failed (exit {child.exitcode})")
    return got


# --- memory ----------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    # Linux 4.0+: "5" resets VmHWM to the current RSS, so each run's peak is its own.
    Path("/proc/self/clear_refs").write_text("5")


# --- the sweeps ------------------------------------------------------------------------------

@dataclass
class Run:
    backend: str
    sweep: str
    items: int
    expected: int | None
    seconds: float
    statements: int
    growth_mb: float
    again_seconds: float | None = None  # a second run, with nothing left due
    again_statements: int | None = None

    @property
    def ok(self) -> bool:
        return (self.seconds < TARGET_SECONDS and self.growth_mb < TARGET_GROWTH_MB
                and (self.expected is None or self.items == self.expected))


def the_sweeps(access: Access, messages: SqlMessages, now: datetime
               ) -> dict[str, Callable[[], int]]:
    """Each sweep as its job runs it (Slack left out), answering how many items it found."""

    def issuable() -> int:
        with access.unit(read_only=True) as unit:
            return len(unit.requests.issuable(now, ISSUE_LEASE, MAX_ATTEMPTS))

    def activity() -> int:
        done = digest.activity(access, until=now)
        return (sum(done.issued.values()) + sum(done.denied.values())
                + sum(done.expired.values()) + sum(done.revoked.values()) + len(done.breakglass))

    return {
        "expire_due": lambda: len(sweeps.expire_due(access)),
        "retry_issuing: issuable": issuable,
        "reminders_due": lambda: len(sweeps.reminders_due(access)),
        "escalate_unreviewed": lambda: len(breakglass.escalate_unreviewed(access)),
        "unposted": lambda: len(messages.unposted(now=now, lease=POST_LEASE)),
        "unposted_alerts": lambda: len(messages.unposted_alerts(now=now, lease=POST_LEASE)),
        "unannounced_revocations": lambda: len(messages.unannounced_revocations(now=now)),
        "offboarding_candidates": lambda: len(offboarding.offboarding_candidates(access)),
        "digest: reports.activity": activity,
    }


def expected_items(shape: Shape, digest_items: int) -> dict[str, int]:
    due = shape.due
    return {"expire_due": due, "retry_issuing: issuable": due, "reminders_due": due,
            "escalate_unreviewed": due, "unposted": due, "unposted_alerts": due,
            "unannounced_revocations": min(due, 100), "offboarding_candidates": shape.users,
            "digest: reports.activity": digest_items}


def measure(backend: Backend, fn: Callable[[], int]) -> tuple[int, float, int, float, list]:
    """One run: (items, seconds, statements, peak RSS growth in MB, statements seen)."""
    gc.collect()
    before = _status_kb("VmRSS")
    reset_peak()
    with capture_sql(backend) as seen:
        started = time.perf_counter()
        items = fn()
        seconds = time.perf_counter() - started
    growth = (_status_kb("VmHWM") - before) / 1024
    return items, seconds, len(seen), growth, seen


def references(backend: Backend, access: Access, now: datetime) -> dict[str, Callable[[], int]]:
    """Not sweeps, for comparison: what loading every live certificate row at once costs, and
    the App Home's list of pending requests (refreshed for every open Home after each change)."""

    def everything() -> int:
        c = CertificateRecord.__table__.c
        with backend.db.transaction(read_only=True) as connection:
            return len(connection.execute(select(CertificateRecord.__table__)
                                          .where(c.valid_before > now)).all())

    def app_home() -> int:
        with access.unit(read_only=True) as unit:
            return len(unit.requests.pending(now, OVERVIEW_LIMIT * 4))

    return {"(all live certificate rows)": everything,
            "(App Home: requests.pending)": app_home}


def show_plans(backend: Backend, name: str, seen: list) -> None:
    print(f"\n[{backend.name}] {name}: {len(seen)} statements; plans of its SELECTs:")
    shown = set()
    for statement, parameters in seen:
        if not statement.lstrip().upper().startswith("SELECT") or statement in shown:
            continue
        shown.add(statement)
        print("  SQL: " + " ".join(statement.split())[:400])
        for line in explain(backend, statement, parameters):
            print("    " + line)


def run_backend(backend: Backend, shape: Shape, now: datetime, plans: bool) -> list[Run]:
    counts, digest_items, seconds = plant(backend, shape, now)
    print(f"[{backend.name}] planted and analyzed in {seconds:.1f} s: "
          + ", ".join(f"{n:,} {name}" for name, n in counts.items()), flush=True)
    access = Access(SqlStore(backend.db, AUDIT_KEY), signer=None,  # no sweep here signs
                    policy=lambda: POLICY, clock=lambda: now)
    messages = SqlMessages(backend.db)
    expected = expected_items(shape, digest_items)
    runs = []
    for name, fn in the_sweeps(access, messages, now).items():
        items, seconds, statements, growth, seen = measure(backend, fn)
        if plans:
            show_plans(backend, name, seen)
        _, again, again_statements, _, _ = measure(backend, fn)
        runs.append(Run(backend.name, name, items, expected[name], seconds, statements, growth,
                        again, again_statements))
        print(f"[{backend.name}] {name}: {items} items in {seconds * 1000:.1f} ms, "
              f"{statements} statements, +{growth:.1f} MB", flush=True)
    for name, fn in references(backend, access, now).items():
        items, seconds, statements, growth, _ = measure(backend, fn)
        runs.append(Run(backend.name, name, items, None, seconds, statements, growth))
    return runs


def report(runs: list[Run]) -> None:
    print(f"\n{'backend':<11} {'sweep':<30} {'items':>6} {'ms':>8} {'SQL':>5} {'peak +MB':>9} "
          f"{'again ms':>8} {'SQL':>5}  verdict")
    for r in runs:
        again = f"{r.again_seconds * 1000:>8.1f} {r.again_statements:>5}" \
            if r.again_seconds is not None else f"{'':>8} {'':>5}"
        print(f"{r.backend:<11} {r.sweep:<30} {r.items:>6} {r.seconds * 1000:>8.1f} "
              f"{r.statements:>5} {r.growth_mb:>9.1f} {again}  "
              f"{verdict(r.ok) if r.expected is not None else ''}")
    wrong = [r for r in runs if r.expected is not None and r.items != r.expected]
    for r in wrong:
        print(f"  {r.backend} {r.sweep}: found {r.items} items, planted {r.expected}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Shape()
    parser.add_argument("--live", type=int, default=defaults.live, help="live certificates")
    parser.add_argument("--pending", type=int, default=defaults.pending, help="pending requests")
    parser.add_argument("--due", type=int, default=defaults.due, help="items due per sweep")
    parser.add_argument("--history", type=int, default=defaults.history,
                        help="requests decided over the past 180 days")
    parser.add_argument("--users", type=int, default=defaults.users, help="key holders")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default %(default)s)")
    parser.add_argument("--explain", action="store_true", help="print each sweep's query plans")
    args = parser.parse_args()
    shape = Shape(live=args.live, pending=args.pending, due=args.due, history=args.history,
                  users=args.users)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    print(f"load average at start: {loadavg()} on {os.cpu_count()} CPUs; {shape}", flush=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="vouch-bench-jobs-") as tmp, \
            backends(names, Path(tmp)) as made:
        for backend in made:
            runs += run_backend(backend, shape, now, args.explain)
    report(runs)
    print(f"\nTargets: each sweep under {TARGET_SECONDS:g} s with peak RSS growth under "
          f"{TARGET_GROWTH_MB:g} MB, finding exactly the items planted due.")
    print(f"\n{machine(started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
