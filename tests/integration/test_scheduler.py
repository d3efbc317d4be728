"""vouch.scheduler against a real database (SQLite and PostgreSQL): with two replicas, each run
of a job happens in one of them, a dead holder's job is taken over once its claim lapses, a day's
digest is posted once; a failing job is counted and the next one runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bot.metrics import Metrics
from storage.claims import SqlClaims
from vouch.scheduler import Scheduler, parse_digest_at

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Jobs:
    """Records which replica ran what."""

    def __init__(self, runs: list, name: str) -> None:
        self.runs, self.name, self.fail = runs, name, False

    def periodic(self):
        return {"remind": self.remind}

    def remind(self) -> None:
        if self.fail:
            raise RuntimeError("Slack is down")
        self.runs.append(("remind", self.name))

    def offboard_sweep(self) -> None:
        self.runs.append(("offboard", self.name))

    def digest(self, slot: datetime) -> bool:
        self.runs.append(("digest", self.name, slot))
        return True


def replica(database, clock, runs, name):
    jobs = Jobs(runs, name)
    return Scheduler(jobs, SqlClaims(database), Metrics(), interval=30, digest_at=(9, 0, 0),
                     offboarding_every=3600, clock=clock), jobs


def test_each_run_happens_in_one_replica_and_a_dead_ones_jobs_are_taken_over(database):
    clock, runs = Clock(), []
    first, _ = replica(database, clock, runs, "a")
    second, _ = replica(database, clock, runs, "b")
    for _ in range(3):  # both run every interval; only the holder does the work
        first._run("remind", first.jobs.remind, 30)
        second._run("remind", second.jobs.remind, 30)
        clock.now += timedelta(seconds=30)
    assert runs == [("remind", "a")] * 3
    skipped = second.metrics.registry.get_sample_value(
        "vouch_job_runs_total", {"job": "remind", "outcome": "skipped"})
    assert skipped == 3
    # "a" dies: its claim lapses 45 s after its last run, and "b" takes the job over
    clock.now += timedelta(seconds=14)
    second._run("remind", second.jobs.remind, 30)
    assert runs[-1] == ("remind", "a")
    clock.now += timedelta(seconds=2)
    second._run("remind", second.jobs.remind, 30)
    assert runs[-1] == ("remind", "b")
    first._run("remind", first.jobs.remind, 30)  # "a" is back: "b" keeps it
    assert runs[-1] == ("remind", "b") and len(runs) == 4


def test_a_failing_job_is_counted_and_the_next_run_comes(database):
    clock, runs = Clock(), []
    scheduler, jobs = replica(database, clock, runs, "a")
    jobs.fail = True
    scheduler._run("remind", jobs.remind, 30)
    jobs.fail = False
    clock.now += timedelta(seconds=30)
    scheduler._run("remind", jobs.remind, 30)
    sample = scheduler.metrics.registry.get_sample_value
    assert sample("vouch_job_runs_total", {"job": "remind", "outcome": "failed"}) == 1
    assert sample("vouch_job_runs_total", {"job": "remind", "outcome": "ok"}) == 1
    assert sample("vouch_job_last_success_timestamp_seconds", {"job": "remind"}) > 0
    assert runs == [("remind", "a")]


@pytest.mark.parametrize("now, slot", [
    (datetime(2026, 12, 4, 8, 59, tzinfo=timezone.utc), datetime(2026, 12, 3, 9, 0, tzinfo=timezone.utc)),
    (datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc), datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc)),
    (datetime(2026, 12, 4, 20, 59, tzinfo=timezone.utc), datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc)),
])
def test_the_digest_due_is_the_last_slot_that_passed_within_half_a_day(database, now, slot):
    clock, runs = Clock(), []
    clock.now = now
    scheduler, _ = replica(database, clock, runs, "a")
    scheduler.digest_due()
    assert runs == ([("digest", "a", slot)] if now - slot < timedelta(hours=12) else [])


def test_once_claims_are_never_given_twice(database):
    from storage.messages import SqlMessages

    messages = SqlMessages(database)
    assert messages.claim_once("digest:2026-12-04", now=NOW)
    assert not messages.claim_once("digest:2026-12-04", now=NOW)
    assert not messages.claim_once("digest:2026-12-04", now=NOW + timedelta(days=400))
    messages.release_once("digest:2026-12-04")  # the post failed: try again
    assert messages.claim_once("digest:2026-12-04", now=NOW)


@pytest.mark.parametrize("text", ["9", "25:00", "09:60", "9:5", "09:00:60", "٠٩:٠٠", "", "1:2:3:4"])
def test_a_bad_digest_time_is_refused(text):
    from access.errors import BadInput

    with pytest.raises(BadInput, match="HH:MM"):
        parse_digest_at(text)


def test_the_digest_time_is_read():
    assert parse_digest_at("09:00") == (9, 0, 0) and parse_digest_at(" 23:59 ") == (23, 59, 0)
    assert parse_digest_at("7:05:30") == (7, 5, 30)
