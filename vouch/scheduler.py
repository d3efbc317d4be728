"""The scheduled jobs of `vouch serve` on APScheduler's BackgroundScheduler (bot.jobs says what
each does). Every run of a periodic job first claims the job in the database (storage.claims):
with several replicas one runs it and keeps it while alive; a dead holder's claim lapses after
half an interval more than one, and the next replica to run takes it over. Misfires coalesce;
a failing job is logged and counted, and the next run comes as scheduled."""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from access.errors import BadInput
from bot.jobs import Jobs
from bot.metrics import Metrics
from storage.claims import SqlClaims

log = logging.getLogger("vouch.scheduler")


def parse_digest_at(text: str) -> tuple[int, int, int]:
    """VOUCH_DIGEST_AT: `HH:MM` (or `HH:MM:SS`, which tests use), UTC."""
    parts = text.strip().split(":")
    limits = (24, 60, 60)
    if not (2 <= len(parts) <= 3 and all(
            p.isascii() and p.isdigit() and len(p) in ((1, 2) if i == 0 else (2,))
            and int(p) < limits[i] for i, p in enumerate(parts))):
        raise BadInput(f"VOUCH_DIGEST_AT={text[:20]!r} is not a time of day: write HH:MM "
                       "(UTC), e.g. 09:00")
    hour, minute, second = (int(p) for p in [*parts, "0"][:3])
    return hour, minute, second


class Scheduler:
    def __init__(self, jobs: Jobs, claims: SqlClaims, metrics: Metrics, *, interval: float,
                 digest_at: tuple[int, int, int], offboarding_every: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.jobs = jobs
        self.claims = claims
        self.metrics = metrics
        self.interval = interval
        self.digest_at = digest_at
        self.offboarding_every = offboarding_every
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{secrets.token_hex(4)}"  # this process
        self._scheduler = BackgroundScheduler(timezone=timezone.utc, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None})

    def start(self) -> Scheduler:
        every = IntervalTrigger(seconds=self.interval, timezone=timezone.utc)
        for name, job in self.jobs.periodic().items():
            self._add(name, job, every, lease=self.interval)
        self._add("offboard-sweep", self.jobs.offboard_sweep,
                  IntervalTrigger(seconds=self.offboarding_every, timezone=timezone.utc),
                  lease=self.offboarding_every)
        hour, minute, second = self.digest_at
        self._scheduler.add_job(self._run, CronTrigger(hour=hour, minute=minute, second=second,
                                                       timezone=timezone.utc),
                                args=("digest", self.digest_due, None), id="digest")
        # Every interval too: a digest missed while no replica ran (or Slack refused it) is
        # posted as soon as one runs; digest_due posts each day's once.
        self._add("digest-catch-up", self.digest_due, every, lease=None)
        self._scheduler.start()
        return self

    def stop(self) -> None:
        self._scheduler.shutdown(wait=True)

    def digest_due(self) -> None:
        """The digest of the last VOUCH_DIGEST_AT that passed, if nobody posted it."""
        now = self.clock()
        hour, minute, second = self.digest_at
        slot = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if slot > now:
            slot -= timedelta(days=1)
        if now - slot < timedelta(hours=12):  # a digest half a day late is not worth posting
            self.jobs.digest(slot)

    def _add(self, name: str, job: Callable[[], object], trigger, *, lease: float | None) -> None:
        self._scheduler.add_job(self._run, trigger, args=(name, job, lease), id=name,
                                next_run_time=datetime.now(timezone.utc))

    def _run(self, name: str, job: Callable[[], object], lease: float | None) -> None:
        """One run of `name`, if this replica holds it (`lease`: seconds between runs)."""
        if lease is not None:
            now = self.clock()
            try:
                held = self.claims.claim(f"job:{name}", holder=self.holder, now=now,
                                         until=now + timedelta(seconds=lease * 1.5))
            except Exception:  # noqa: BLE001 - the database is down: the job cannot run either
                log.exception("scheduled job %s: cannot claim it", name)
                self.metrics.job_runs.labels(job=name, outcome="failed").inc()
                return
            if not held:
                self.metrics.job_runs.labels(job=name, outcome="skipped").inc()
                return
        started = time.perf_counter()
        try:
            job()
        except Exception:  # noqa: BLE001 - one broken job must not stop the others
            log.exception("scheduled job %s failed", name)
            self.metrics.job_runs.labels(job=name, outcome="failed").inc()
            return
        finally:
            self.metrics.job_seconds.labels(job=name).observe(time.perf_counter() - started)
        self.metrics.job_runs.labels(job=name, outcome="ok").inc()
        self.metrics.job_last_success.labels(job=name).set(time.time())
