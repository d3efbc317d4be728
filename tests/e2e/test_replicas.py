"""Two `vouch serve` replicas on one PostgreSQL database and one Slack (issue 14). Both run every
scheduled job every second; each expiry reminder, break-glass escalation and daily digest is
still posted once. When the replica holding the jobs dies (SIGKILL: no shutdown, its claims are
simply no longer renewed) the other takes them over within about two intervals."""

from __future__ import annotations

import re
import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from e2e_support import (ADMIN, BOB, CAROL, CROWD, DAN, GLASS, REQUESTER, Server, make_fake,
                         policy_yaml, settle)
from test_bot import (APPROVE, REQUESTS, SECURITY, ask, certificates_of, ok, register_key,
                      reminders, wait_dm, wait_state)

INTERVAL = 1  # VOUCH_SCHEDULER_INTERVAL, seconds
REMIND_LEAD = 6  # seconds from issue to reminder: certificates last reminder_before + this
REVIEW_WITHIN = 5
DIGEST_IN = 20  # seconds from the start of the test to VOUCH_DIGEST_AT: both replicas are up
AUDIT_KEY = "e2e-replicas-share-one-audit-key-0123456789abcdef"


@pytest.fixture
def replicas(tmp_path, postgres_cluster):
    digest_at = datetime.now(timezone.utc) + timedelta(seconds=DIGEST_IN)
    env = {"VOUCH_DATABASE_URL": postgres_cluster.create_database(),
           "VOUCH_AUDIT_KEY": AUDIT_KEY,  # one audit chain: both must key it alike
           "VOUCH_SCHEDULER_INTERVAL": f"{INTERVAL}s", "VOUCH_DIGEST_AT": f"{digest_at:%H:%M:%S}"}
    fake = make_fake()
    policy = policy_yaml(reminder_before="30m", review_within=f"{REVIEW_WITHIN}s")
    first = Server(tmp_path / "a", fake, policy, extra_env=env)
    second = Server(tmp_path / "b", fake, policy, ca_key=str(first.workdir / "ca_key"),
                    extra_env=env)  # one CA: the key `vouch ca init` made for the first
    try:
        first.start()
        second.start(init=False)
        yield first, second, digest_at
    finally:
        for server in (first, second):
            server.stop()
        fake.stop()


def issue(server: Server, reason: str) -> tuple[str, int]:
    """(request id, serial) of a prod-db certificate for REQUESTER whose reminder falls due
    REMIND_LEAD s from now."""
    request_id, message = ask(server, REQUESTER, "prod-db", f"30m{REMIND_LEAD}s", reason)
    ok(server.driver.click(BOB, channel=REQUESTS, ts=message.ts, action_id=APPROVE,
                           value=request_id, text="Approve"))
    wait_dm(server.fake, REQUESTER, request_id)
    wait_state(server, request_id, "issued")
    [(serial, _, _)] = certificates_of(server, request_id)
    return request_id, serial


def break_glass(server: Server, reason: str) -> tuple[str, str]:
    """(request id, alert ts) of a break-glass use."""
    ok(server.driver.command(GLASS, "/ssh-breakglass", f"prod-db 30m {reason}"))
    fake = server.fake
    [alert] = fake.wait_for(lambda: [m for m in fake.messages(SECURITY) if reason in m.text])
    request_id = server.scalar("SELECT id FROM requests WHERE reason = ?", reason)
    wait_dm(fake, GLASS, request_id)
    return request_id, alert.ts


def review(server: Server, request_id: str, alert_ts: str) -> None:
    fake = server.fake
    opened = len(fake.views(ADMIN))
    ok(server.driver.click(ADMIN, channel=SECURITY, ts=alert_ts, action_id="vouch_review",
                           value=request_id, text="Mark reviewed"))
    view = fake.wait_for(lambda: fake.views(ADMIN)[opened:])[-1]
    ok(server.driver.submit_view(ADMIN, view, {
        "note": {"value": {"type": "plain_text_input", "value": "seen, fine"}}}))
    fake.wait_for(lambda: server.scalar("SELECT reviewed_at FROM requests WHERE id = ?",
                                        request_id))


def posts(fake, channel: str, *containing: str) -> list:
    return [m for m in fake.messages(channel) if all(text in m.text for text in containing)]


def job_runs(server: Server, job: str, outcome: str) -> float:
    """vouch_job_runs_total{job, outcome} from the replica's /metrics."""
    found = re.search(rf'^vouch_job_runs_total\{{job="{job}",outcome="{outcome}"\}} (\S+)$',
                      server.get("/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_two_replicas_post_everything_once_and_the_survivor_takes_over(replicas, user_keys):
    first, second, digest_at = replicas
    fake = first.fake
    register_key(first, REQUESTER, user_keys["ed25519"])
    register_key(second, GLASS, user_keys["ecdsa-p256"])

    # A reminder, an escalation (reviewed after its first, so no second comes) and the digest.
    request_id, serial = issue(first, "remind me once")
    used, alert_ts = break_glass(second, "fire, alerted once")
    [reminder] = fake.wait_for(lambda: reminders(fake, REQUESTER), timeout=REMIND_LEAD + 6)
    assert f"serial {serial}" in reminder.text
    fake.wait_for(lambda: posts(fake, SECURITY, "still unreviewed", used),
                  timeout=REVIEW_WITHIN + 6)
    review(first, used, alert_ts)
    wait = (digest_at - datetime.now(timezone.utc)).total_seconds() + 6
    fake.wait_for(lambda: posts(fake, SECURITY, "daily digest"), timeout=max(wait, 1))
    settle(fake, quiet=2.5 * INTERVAL)  # a few more runs of every job in both replicas
    assert len(reminders(fake, REQUESTER)) == 1
    assert len(posts(fake, SECURITY, "still unreviewed", used)) == 1
    assert len(posts(fake, SECURITY, "daily digest")) == 1
    assert len(posts(fake, SECURITY, "fire, alerted once")) == 1
    assert len(posts(fake, REQUESTS, request_id)) == 1

    # One replica holds the reminder job and runs it; the other only skips it.
    before = [job_runs(server, "remind", "ok") for server in (first, second)]
    time.sleep(2 * INTERVAL)
    after = [job_runs(server, "remind", "ok") for server in (first, second)]
    assert (after[0] > before[0]) != (after[1] > before[1]), (before, after)
    holder, survivor = (first, second) if after[0] > before[0] else (second, first)
    assert job_runs(survivor, "remind", "skipped") > 0

    _, serial = issue(survivor, "remind me after the kill")
    ran = job_runs(survivor, "remind", "ok")
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait(5)
    killed = time.monotonic()
    fake.wait_for(lambda: job_runs(survivor, "remind", "ok") > ran, timeout=4 * INTERVAL)
    # The dead holder's claim lapses 1.5 intervals after its last run; the next run takes it.
    took = time.monotonic() - killed
    assert took <= 2.5 * INTERVAL + 0.5, f"taken over {took:.1f} s after the kill"

    def reminded_again() -> list:
        return [m for m in reminders(fake, REQUESTER) if f"serial {serial}" in m.text]

    fake.wait_for(reminded_again, timeout=REMIND_LEAD + 6)
    settle(fake, quiet=2.5 * INTERVAL)
    assert len(reminded_again()) == 1 and len(reminders(fake, REQUESTER)) == 2


def test_an_app_home_opened_through_one_replica_follows_changes_made_through_the_other(
        replicas, user_keys):
    first, second, _ = replicas
    fake = first.fake
    register_key(second, DAN, user_keys["ed25519"])
    for user in (CAROL, DAN):  # CAROL approves prod-db through @db-owners
        ok(first.driver.open_home(user))
        fake.wait_for(lambda user=user: fake.home(user))

    request_id, message = ask(second, DAN, "prod-db", "1h", "followed across replicas")
    fake.wait_for(lambda: request_id in str(fake.home(CAROL)["blocks"]))
    fake.wait_for(lambda: request_id in str(fake.home(DAN)["blocks"]))
    ok(second.driver.click(BOB, channel=REQUESTS, ts=message.ts, action_id=APPROVE,
                           value=request_id, text="Approve"))
    wait_state(second, request_id, "issued")
    fake.wait_for(lambda: request_id not in str(fake.home(CAROL)["blocks"]))
    fake.wait_for(lambda: "Revoke" in str(fake.home(DAN)["blocks"]))


def test_requests_through_one_replica_approved_through_the_other_and_clicked_on_both_at_once(
        replicas, user_keys):
    """Each request opened through one replica and decided through the other; a crowd's
    approvals split over both at the same instant: one certificate, one post, one DM per
    request, and the shared audit chain verifies afterwards."""
    first, second, _ = replicas
    fake = first.fake
    register_key(first, REQUESTER, user_keys["ed25519"])
    register_key(second, DAN, user_keys["ecdsa-p256"])
    asked = []
    for n, (via, other, user) in enumerate([(first, second, REQUESTER), (second, first, DAN)] * 2):
        request_id, message = ask(via, user, "prod-db", "1h", f"across replicas {n}")
        ok(other.driver.click(BOB, channel=REQUESTS, ts=message.ts, action_id=APPROVE,
                              value=request_id, text="Approve"))
        asked.append((request_id, message, user))

    crowd_id, crowd_message = ask(first, DAN, "crowd", "1h", "the crowd on both replicas")
    voters = CROWD[:10]
    barrier = threading.Barrier(len(voters))

    def click(i: int, user: str) -> None:
        barrier.wait()
        ok((first, second)[i % 2].driver.click(user, channel=REQUESTS, ts=crowd_message.ts,
                                               action_id=APPROVE, value=crowd_id))

    threads = [threading.Thread(target=click, args=(i, u)) for i, u in enumerate(voters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    asked.append((crowd_id, crowd_message, DAN))

    for request_id, message, user in asked:
        wait_dm(fake, user, request_id)
        wait_state(first, request_id, "issued")
    settle(fake, quiet=1.0)
    for request_id, message, user in asked:
        assert len(certificates_of(first, request_id)) == 1
        assert len(posts(fake, REQUESTS, f"Access request {request_id}:")) == 1
        issued = [m for m in fake.replies(REQUESTS, message.ts)
                  if m.text.startswith("Certificate issued")]
        assert len(issued) == 1, request_id
        assert len([m for m in fake.messages(fake.dm_channel(user))
                    if request_id in m.text and "Your certificate" in m.text]) == 1

    for server in (first, second):  # each replica's checkpoints hold for the one chain
        checked = server.vouch("audit", "verify", check=False)
        assert checked.returncode == 0, checked.stderr
