"""storage.messages: the Slack bot's bookkeeping of where each request's message is, on SQLite and
PostgreSQL. One worker posts each message; a stored request whose message was never recorded is
still found by the repost sweep."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from access.requests import Kind, Request, State
from bot.messages import POST_LEASE
from storage.messages import SqlMessages
from storage.requests import SqlRequests

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def store_request(database, request_id: str, *, state=State.PENDING, kind=Kind.REQUEST) -> None:
    with database.transaction() as connection:
        SqlRequests(connection).add(Request(
            id=request_id, kind=kind, requester="U0REQ", target="web",
            duration=timedelta(hours=1), reason="why", key_fingerprint="SHA256:x",
            public_key="ssh-ed25519 AAAA", state=state, created_at=NOW,
            expires_at=NOW + timedelta(minutes=30)))


def test_one_worker_posts_each_message_until_it_is_posted(database):
    messages = SqlMessages(database)
    store_request(database, "req-a")
    messages.expect("req-a", "C0REQ")
    messages.expect("req-a", "C0OTHER")  # idempotent: the first channel stands
    assert messages.get("req-a") is None  # not posted yet
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda _: messages.claim("req-a", now=NOW, lease=POST_LEASE),
                               range(8)))
    assert sorted(claims, key=str) == ["C0REQ"] + [None] * 7
    later = NOW + POST_LEASE - timedelta(seconds=1)
    assert messages.claim("req-a", now=later, lease=POST_LEASE) is None
    messages.release("req-a")  # posting failed: the next sweep tries at once
    assert messages.claim("req-a", now=NOW, lease=POST_LEASE) == "C0REQ"
    messages.posted("req-a", "C0REQ", "1.000100")
    assert messages.get("req-a") == ("C0REQ", "1.000100")
    assert messages.claim("req-a", now=NOW + timedelta(days=1), lease=POST_LEASE) is None


def test_a_lapsed_claim_is_taken_over(database):
    messages = SqlMessages(database)
    store_request(database, "req-a")
    messages.expect("req-a", "C0REQ")
    assert messages.claim("req-a", now=NOW, lease=POST_LEASE) == "C0REQ"  # then the worker died
    lapsed = NOW + POST_LEASE + timedelta(seconds=1)
    assert messages.unposted(now=lapsed, lease=POST_LEASE) == [("req-a", "C0REQ")]
    assert messages.claim("req-a", now=lapsed, lease=POST_LEASE) == "C0REQ"


def test_the_repost_sweep_finds_what_nobody_posted(database):
    messages = SqlMessages(database)
    for request_id in ("req-posted", "req-queued", "req-lost"):
        store_request(database, request_id)
    store_request(database, "req-denied", state=State.DENIED)
    store_request(database, "req-glass", state=State.APPROVED, kind=Kind.BREAKGLASS)
    messages.expect("req-posted", "C0REQ")
    messages.posted("req-posted", "C0REQ", "1.000100")
    messages.expect("req-queued", "C0REQ")
    messages.posted("req-glass", "C0SEC", "2.000200")  # an alert: recorded without expect
    assert messages.get("req-glass") == ("C0SEC", "2.000200")
    # req-lost was stored but the process died before its channel was recorded: None.
    assert sorted(messages.unposted(now=NOW, lease=POST_LEASE), key=str) == [
        ("req-lost", None), ("req-queued", "C0REQ")]


def test_an_escalated_use_whose_alert_was_never_posted_still_gets_its_alert(database):
    """Slack comes back and the escalation goes out before the alert's retry: the alert (with
    its Mark reviewed and Revoke now) must still be posted."""
    store_request(database, "req-bg", state=State.ISSUED, kind=Kind.BREAKGLASS)
    messages = SqlMessages(database)
    messages.expect("req-bg", "C0SEC")
    with database.transaction() as connection:
        [escalated] = SqlRequests(connection).escalate_unreviewed(
            due_before=NOW + timedelta(hours=5), now=NOW + timedelta(hours=5))
    assert escalated.id == "req-bg"
    assert messages.unposted_alerts(now=NOW + timedelta(hours=5), lease=POST_LEASE) == ["req-bg"]
    messages.posted("req-bg", "C0SEC", "1.0")
    assert messages.unposted_alerts(now=NOW + timedelta(hours=5), lease=POST_LEASE) == []
