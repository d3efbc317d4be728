"""Vouch end to end: `vouch serve` as a subprocess, Slack as a recorded fake, a real sshd.

Each test acts as Slack and people would (signed slash commands, button clicks, modal
submissions) and asserts what Slack was asked to show (the fake records every Web API call and
response_url post), what the database holds, and, for the main flow, that a real sshd accepts
the certificate. Every Slack request must be answered within 1 s (TimedDriver checks each one).
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest

from ca.krl import decode_krl
from e2e_support import (ACK_LIMIT, ADMIN, BOB, CAROL, CROWD, DAN, DB_PRINCIPAL, GLASS, GONE,
                         GUEST, NOKEY, OTHER_TEAM, REQUESTER, SOMEBOT, STRANGER, ULTRA, Server,
                         make_fake, make_token, policy_yaml, settle)
from support.sshd import Sshd, ensure_test_user, require_sshd

REQUESTS = "C0REQUESTS"
SECURITY = "C0SECURITY"
APPROVE, DENY = "vouch_approve", "vouch_deny"
CERT_RE = re.compile(r"\b(?:ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa|sk-[\w-]+@openssh\.com)"
                     r"-cert-v01@openssh\.com [A-Za-z0-9+/=]+")
POLITE_FAILURE = "Something went wrong"


# --- helpers ------------------------------------------------------------------------------

def ok(response):
    assert response.status == 200, f"HTTP {response.status}: {response.body[:300]}"
    assert response.elapsed < ACK_LIMIT, f"acknowledged after {response.elapsed:.3f}s"
    return response


def answer_text(response) -> str:
    """The text of a slash command's immediate (ephemeral) HTTP answer."""
    if not response.body.strip():
        return ""
    try:
        data = json.loads(response.body)
    except ValueError:
        return response.body
    return data.get("text", "") if isinstance(data, dict) else response.body


def strings(value) -> list[str]:
    """Every string inside a block structure."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def shown(message) -> str:
    """What a message shows: its text and every string in its blocks."""
    return "\n".join([message.text, *strings(message.blocks)])


def buttons(message) -> list[str]:
    return [b["text"]["text"] for block in message.blocks if block.get("type") == "actions"
            for b in block.get("elements", []) if b.get("type") == "button"]


class Since:
    """What the fake recorded after this point."""

    def __init__(self, fake):
        self.fake = fake
        self.n_calls = len(fake.calls)
        self.n_ephemerals = len(fake.ephemerals())

    def calls(self, method: str | None = None):
        return [c for c in self.fake.calls[self.n_calls:] if method is None or c.method == method]

    def ephemerals(self, user: str) -> list[str]:
        return [e["text"] for e in self.fake.ephemerals()[self.n_ephemerals:] if e["user"] == user]

    def ephemeral(self, user: str, *, containing: str | None = None, timeout: float = 6.0) -> str:
        """The first new ephemeral for `user` (containing `containing`), waiting for it."""
        def find():
            for text in self.ephemerals(user):
                if containing is None or containing in text:
                    return text
            return None
        return self.fake.wait_for(find, timeout=timeout)

    def updates(self, ts: str):
        return [c for c in self.calls("chat.update") if c.params.get("ts") == ts]


def request_message(server: Server, reason: str, timeout: float = 6.0):
    """The request message Vouch keeps up to date: the one the database points at.

    Waits until the request is posted and the bot has gone quiet, then takes the message the
    database remembers: should a request ever be posted twice (the posting sweep racing the
    command's own post; see test_request_posted_once_while_its_first_post_is_retried), the
    others' assertions still follow the message Vouch keeps updating.
    """
    fake = server.fake
    fake.wait_for(lambda: server.scalar("SELECT m.ts FROM slack_messages AS m JOIN requests AS r ON r.id = m.request_id WHERE r.reason = ?", reason),
                  timeout=timeout)
    settle(fake)
    ts = server.scalar("SELECT m.ts FROM slack_messages AS m JOIN requests AS r ON r.id = m.request_id WHERE r.reason = ?", reason)
    return fake.message(REQUESTS, ts)


def request_id_of(message) -> str:
    match = re.search(r"Access request (\S+):", message.text)
    assert match, message.text
    return match.group(1)


def ask(server: Server, user: str, target: str, duration: str, reason: str):
    """`/ssh-request` and wait for the request message and its approvers note."""
    ok(server.driver.command(user, "/ssh-request", f"{target} {duration} {reason}"))
    message = request_message(server, reason)
    server.fake.wait_for(lambda: server.fake.replies(REQUESTS, message.ts))
    return request_id_of(message), message


def u64(value: int) -> int:
    """A serial as the database stores it (two's complement in a signed BIGINT) -> unsigned."""
    return value + 2**64 if value < 0 else value


def s64(serial: int) -> int:
    return serial - 2**64 if serial >= 2**63 else serial


def state(server: Server, request_id: str) -> str:
    return server.scalar("SELECT state FROM requests WHERE id = ?", request_id)


def wait_state(server: Server, request_id: str, expected: str, timeout: float = 6.0) -> None:
    server.fake.wait_for(lambda: state(server, request_id) == expected, timeout=timeout)


def dm_messages(fake, user: str):
    return fake.messages(fake.dm_channel(user))


def wait_dm(fake, user: str, containing: str, timeout: float = 6.0):
    return fake.wait_for(lambda: [m for m in dm_messages(fake, user) if containing in m.text],
                         timeout=timeout)[-1]


def certificate_line(text: str) -> str:
    match = CERT_RE.search(text)
    assert match, f"no certificate line in: {text[:500]}"
    return match.group(0)


def certificates_of(server: Server, request_id: str) -> list[tuple]:
    rows = server.query("SELECT serial, principals, holder FROM certificates WHERE request_id = ?",
                        request_id)
    return [(u64(serial), principals, holder) for serial, principals, holder in rows]


def finish(server: Server, request_id: str) -> None:
    """Deny a request left pending, so the requester stays under the pending-per-target limit."""
    if state(server, request_id) != "pending":
        return
    target = server.scalar("SELECT target FROM requests WHERE id = ?", request_id)
    message_ts = server.scalar("SELECT ts FROM slack_messages WHERE request_id = ?", request_id)
    approver = CROWD[0] if target == "crowd" else BOB
    deny(server, approver, message_ts, "tidying up after the test")
    wait_state(server, request_id, "denied")
    settle(server.fake)


def deny(server: Server, approver: str, message_ts: str, reason: str) -> None:
    """Deny as an approver does: the Deny button opens a modal; submit it with the reason."""
    fake = server.fake
    opened = len(fake.views(approver))
    ok(server.driver.click_button(approver, channel=REQUESTS, ts=message_ts, label="Deny"))
    view = fake.wait_for(lambda: fake.views(approver)[opened:])[-1]
    assert view["callback_id"] == "vouch_deny_form", view
    ok(server.driver.submit_view(approver, view, {
        "note": {"value": {"type": "plain_text_input", "value": reason}}}))


def fingerprint(public_path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(public_path)], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


def register_key(server: Server, user: str, key) -> str:
    since = Since(server.fake)
    ok(server.driver.command(user, "/ssh-key", "add " + key.public_path.read_text().strip()))
    return since.ephemeral(user)


# --- the servers: one for most tests; the HSM and TTL tests start their own -----------------

@pytest.fixture(scope="module")
def fake():
    slack = make_fake()
    yield slack
    slack.stop()


@pytest.fixture(scope="module")
def server(fake, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("vouch-main"), fake, policy_yaml())
    srv.start()
    yield srv
    srv.stop()
    assert srv.proc.returncode in (0, -signal.SIGTERM), f"vouch serve exit {srv.proc.returncode}"


@pytest.fixture(scope="module")
def keys(server, user_keys):
    """Registered keys for the requesters (idempotent: test 1 registers REQUESTER's itself)."""
    for user, name in ((REQUESTER, "ed25519"), (DAN, "ecdsa-p256"), (GLASS, "ecdsa-p384")):
        text = register_key(server, user, user_keys[name])
        assert fingerprint(user_keys[name].public_path) in text
    settle(server.fake)
    return user_keys


# --- 1. the whole flow ----------------------------------------------------------------------

def test_request_approve_certificate_and_real_sshd_login(server, user_keys, tmp_path):
    require_sshd()
    fake, driver = server.fake, server.driver
    key = user_keys["ed25519"]
    fp = fingerprint(key.public_path)

    text = register_key(server, REQUESTER, key)
    assert fp in text, text

    reason = "investigating slow queries"
    since = Since(fake)
    ok(driver.command(REQUESTER, "/ssh-request", f"prod-db 2h {reason}"))
    message = request_message(server, reason)
    request_id = request_id_of(message)
    posts = [c for c in since.calls("chat.postMessage") if c.params.get("channel") == REQUESTS
             and not c.params.get("thread_ts")]
    assert len(posts) == 1 and posts[0].ok and posts[0].response["ts"] == message.ts
    seen = shown(message)
    for fact in (f"<@{REQUESTER}>", "prod-db", DB_PRINCIPAL, "2h", reason, fp):
        assert fact in seen, f"{fact!r} not shown in the request message:\n{seen}"
    assert buttons(message) == ["Approve", "Deny", "Cancel"]

    note = fake.wait_for(lambda: fake.replies(REQUESTS, message.ts))[0]
    assert f"<@{BOB}>" in note.text and "S0DBOWNERS" in note.text, note.text
    assert state(server, request_id) == "pending"

    since = Since(fake)
    ok(driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
    dm = wait_dm(fake, REQUESTER, request_id)
    line = certificate_line(dm.text)
    assert line in "\n".join(strings(dm.blocks)), "the DM's blocks must carry the certificate too"
    assert any(c.params.get("users") in (REQUESTER, [REQUESTER]) and c.ok
               for c in fake.calls_to("conversations.open"))
    assert dm.channel == fake.dm_channel(REQUESTER)

    wait_state(server, request_id, "issued")
    [(serial, principals, holder)] = certificates_of(server, request_id)
    assert json.loads(principals) == [DB_PRINCIPAL] and holder == REQUESTER

    issued_note = fake.wait_for(lambda: [m for m in fake.replies(REQUESTS, message.ts)
                                         if m.text.startswith("Certificate issued")])[0]
    assert re.match(rf"Certificate issued, serial {serial}, valid until .+", issued_note.text), \
        issued_note.text
    fake.wait_for(lambda: since.updates(message.ts))
    settle(fake)
    assert all(c.ok for c in since.updates(message.ts))
    final = fake.message(REQUESTS, message.ts)
    assert "certificate issued" in shown(final) and str(serial) in shown(final), shown(final)
    assert buttons(final) == ["Revoke"]
    assert f"<@{BOB}> approved" in "\n".join(m.text for m in fake.replies(REQUESTS, message.ts))

    # The certificate works on a real sshd that trusts Vouch's CA for this principal.
    cert_path = tmp_path / "id_ed25519-cert.pub"
    cert_path.write_text(line + "\n")
    private = tmp_path / "id_ed25519"
    private.write_bytes(key.private.read_bytes())
    login_user = ensure_test_user()
    ca_line = server.get("/ca.pub").text.strip()
    with Sshd(tmp_path / "sshd", trusted_ca_keys=[ca_line],
              principals={login_user: [DB_PRINCIPAL]}) as sshd:
        result = sshd.login(private, cert_path)
    assert result.ok, f"sshd refused the certificate:\n{result.stderr}\n{result.sshd_log}"
    assert f"serial {serial}" in result.sshd_log


# --- 2. forged, stale and future requests -------------------------------------------------------

def test_forged_stale_and_future_requests_are_refused_without_effect(server, keys):
    fake, driver = server.fake, server.driver
    settle(fake)
    calls_before = len(fake.calls)
    requests_before = server.scalar("SELECT count(*) FROM requests")
    now = int(time.time())
    text = "prod-db 1h this must never be stored"
    for kwargs in ({"signature": "v0=" + "ab" * 32}, {"timestamp": now - 360},
                   {"timestamp": now + 360}):
        response = driver.command(REQUESTER, "/ssh-request", text, **kwargs)
        assert response.status == 401, (kwargs, response.status, response.body)
    view = {"id": "VFORGED", "type": "modal", "callback_id": "vouch_request_form",
            "private_metadata": REQUESTS}
    values = {"target": {"value": {"type": "static_select", "selected_option": {"value": "prod-db"}}},
              "duration": {"value": {"type": "plain_text_input", "value": "1h"}},
              "reason": {"value": {"type": "plain_text_input", "value": "forged modal"}}}
    response = driver.submit_view(REQUESTER, view, values, signature="v0=" + "cd" * 32)
    assert response.status == 401
    body = b"command=%2Fssh-request&text=prod-db+1h+unsigned&user_id=U0REQ&team_id=T0VOUCH"
    assert driver.raw(body, {}, "application/x-www-form-urlencoded").status == 401
    time.sleep(1.2)  # a lazy listener, had one started, would have called Slack by now
    settle(fake)
    assert len(fake.calls) == calls_before, [c.method for c in fake.calls[calls_before:]]
    assert server.scalar("SELECT count(*) FROM requests") == requests_before


# --- 3. self-approval ------------------------------------------------------------------------------

def test_requester_listed_as_approver_cannot_approve_own_request(server, keys):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, REQUESTER, "payments", "1h", "self approval attempt")
    settle(fake)
    replies_before = len(fake.replies(REQUESTS, message.ts))
    since = Since(fake)
    ok(driver.click_button(REQUESTER, channel=REQUESTS, ts=message.ts, label="Approve"))
    refusal = since.ephemeral(REQUESTER)
    assert "own request" in refusal, refusal
    settle(fake)
    assert state(server, request_id) == "pending"
    assert server.scalar("SELECT count(*) FROM approvals WHERE request_id = ?", request_id) == 0
    assert len(fake.replies(REQUESTS, message.ts)) == replies_before
    assert since.calls("chat.postMessage") == [] and since.updates(message.ts) == []
    finish(server, request_id)


# --- 4. non-approver ------------------------------------------------------------------------------

def test_non_approver_is_refused_and_told_who_can_approve(server, keys):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, REQUESTER, "prod-db", "1h", "non approver clicks")
    settle(fake)
    since = Since(fake)
    ok(driver.click_button(DAN, channel=REQUESTS, ts=message.ts, label="Approve"))
    refusal = since.ephemeral(DAN)
    assert "not an approver" in refusal and BOB in refusal and "db-owners" in refusal, refusal
    settle(fake)
    assert state(server, request_id) == "pending"
    assert since.calls("chat.postMessage") == [] and since.updates(message.ts) == []
    finish(server, request_id)


def test_non_approver_refusal_mentions_approvers_as_slack_mentions(server, keys):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, REQUESTER, "prod-db", "1h", "who may approve this")
    since = Since(fake)
    ok(driver.click_button(DAN, channel=REQUESTS, ts=message.ts, label="Approve"))
    refusal = since.ephemeral(DAN)
    try:
        assert f"<@{BOB}>" in refusal, refusal
    finally:
        finish(server, request_id)


# --- 5. guests, bots, deleted users, other workspaces ------------------------------------------

OUTSIDERS = [  # (user, team in the payload, what the refusal says)
    (GUEST, None, "Guests"),
    (ULTRA, None, "Guests"),
    (SOMEBOT, None, "Bots"),
    (GONE, None, "Deactivated"),
    (STRANGER, None, "own workspace"),  # users.info says another team
    (BOB, OTHER_TEAM, "own workspace"),  # the request itself comes from another workspace
]


def test_outsiders_can_neither_request_nor_approve(server, keys):
    fake, driver = server.fake, server.driver
    settle(fake)
    for user, team, why in OUTSIDERS:
        since = Since(fake)
        reason = f"outsider {user} {team} wants in"
        response = ok(driver.command(user, "/ssh-request", f"prod-db 1h {reason}", team_id=team))
        refusal = answer_text(response) or since.ephemeral(user)
        assert why in refusal, (user, team, refusal)
        settle(fake, quiet=0.3)
        assert [m for m in fake.messages(REQUESTS) if reason in m.text] == []
        assert since.calls("chat.postMessage") == [], (user, team)
    assert server.scalar("SELECT count(*) FROM requests WHERE requester IN (?, ?, ?, ?, ?)",
                         GUEST, ULTRA, SOMEBOT, GONE, STRANGER) == 0

    request_id, message = ask(server, REQUESTER, "prod-db", "1h", "outsiders try to approve")
    settle(fake)
    replies_before = len(fake.replies(REQUESTS, message.ts))
    for user, team, why in OUTSIDERS:
        since = Since(fake)
        ok(driver.click_button(user, channel=REQUESTS, ts=message.ts, label="Approve", team_id=team))
        refusal = since.ephemeral(user)
        assert why in refusal, (user, team, refusal)
    settle(fake)
    assert state(server, request_id) == "pending"
    assert server.scalar("SELECT count(*) FROM approvals WHERE request_id = ?", request_id) == 0
    assert len(fake.replies(REQUESTS, message.ts)) == replies_before
    assert buttons(fake.message(REQUESTS, message.ts)) == ["Approve", "Deny", "Cancel"]
    finish(server, request_id)


# --- 6. two approvals ---------------------------------------------------------------------------

def test_two_of_n_first_approval_updates_tally_second_by_group_member_issues(server, keys):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, REQUESTER, "payments", "2h", "two approvals needed")
    ok(driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
    fake.wait_for(lambda: "1 of 2 — <@U0BOB>" in shown(fake.message(REQUESTS, message.ts)))
    current = fake.message(REQUESTS, message.ts)
    assert "*Approvals*\n1 of 2 — <@U0BOB>" in strings(current.blocks)
    assert "Approvals 1 of 2" in current.text
    assert buttons(current) == ["Approve", "Deny", "Cancel"]
    fake.wait_for(lambda: any(m.text == f"<@{BOB}> approved (1 of 2)."
                              for m in fake.replies(REQUESTS, message.ts)))
    settle(fake)
    assert state(server, request_id) == "pending" and certificates_of(server, request_id) == []
    assert not [m for m in dm_messages(fake, REQUESTER) if request_id in m.text]

    ok(driver.click_button(CAROL, channel=REQUESTS, ts=message.ts, label="Approve"))
    dm = wait_dm(fake, REQUESTER, request_id)
    assert "payments-admin" in certificate_line(dm.text) or "payments-admin" in dm.text
    wait_state(server, request_id, "issued")
    [(serial, principals, _)] = certificates_of(server, request_id)
    assert json.loads(principals) == ["payments-admin", "payments-ro"]
    try:
        fake.wait_for(lambda: "2 of 2" in shown(fake.message(REQUESTS, message.ts))
                      and str(serial) in shown(fake.message(REQUESTS, message.ts)))
    except AssertionError:
        raise AssertionError(shown(fake.message(REQUESTS, message.ts)) + "\n" +
                             json.dumps([c.params.get("text") for c in fake.calls_to("chat.update")
                                         if c.params.get("ts") == message.ts], indent=1)) from None
    assert "<@U0CAROL>" in shown(fake.message(REQUESTS, message.ts))


# --- 7. deny ------------------------------------------------------------------------------------------

def test_deny_tells_requester_who_denied_and_issues_nothing(server, keys):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, DAN, "prod-db", "1h", "please deny me")
    deny(server, BOB, message.ts, "not during the release freeze")
    dm = wait_dm(fake, DAN, request_id)
    assert "denied" in dm.text and f"<@{BOB}>" in dm.text, dm.text
    assert "not during the release freeze" in dm.text, dm.text
    fake.wait_for(lambda: "not during the release freeze" in shown(fake.message(REQUESTS,
                                                                                message.ts)))
    assert any("not during the release freeze" in m.text
               for m in fake.replies(REQUESTS, message.ts))
    assert "not during the release freeze" in server.scalar(
        "SELECT details FROM audit_events WHERE action = 'request.voted' AND subject = ?",
        f"request:{request_id}")
    assert not CERT_RE.search(dm.text)
    fake.wait_for(lambda: "Denied by <@U0BOB>" in shown(fake.message(REQUESTS, message.ts)))
    assert buttons(fake.message(REQUESTS, message.ts)) == []
    settle(fake)
    assert state(server, request_id) == "denied"
    assert certificates_of(server, request_id) == []
    assert not any(CERT_RE.search(m.text) and request_id in m.text for m in dm_messages(fake, DAN))


# --- 8. double clicks and clicks on finished requests ------------------------------------------

def test_double_click_counts_once_and_finished_requests_change_nothing(server, keys):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, REQUESTER, "payments", "1h", "double click test")
    since = Since(fake)
    ok(driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
    ok(driver.click(BOB, channel=REQUESTS, ts=message.ts, action_id=APPROVE, value=request_id))
    polite = since.ephemeral(BOB)
    assert "already voted" in polite, polite
    fake.wait_for(lambda: "1 of 2 — <@U0BOB>" in shown(fake.message(REQUESTS, message.ts)))
    settle(fake)
    assert server.scalar("SELECT count(*) FROM approvals WHERE request_id = ?", request_id) == 1
    assert state(server, request_id) == "pending"
    assert len([m for m in fake.replies(REQUESTS, message.ts) if "approved" in m.text]) == 1

    ok(driver.click_button(CAROL, channel=REQUESTS, ts=message.ts, label="Approve"))
    wait_dm(fake, REQUESTER, request_id)
    wait_state(server, request_id, "issued")
    settle(fake)

    since = Since(fake)
    shown_before = shown(fake.message(REQUESTS, message.ts))
    replies_before = len(fake.replies(REQUESTS, message.ts))
    dms_before = len(dm_messages(fake, REQUESTER))
    for who, action in ((BOB, APPROVE), (CAROL, DENY)):
        ok(driver.click(who, channel=REQUESTS, ts=message.ts, action_id=action, value=request_id))
        polite = since.ephemeral(who)
        assert "already issued" in polite and POLITE_FAILURE not in polite, polite
    settle(fake)
    assert since.updates(message.ts) == [] and since.calls("chat.postMessage") == []
    assert shown(fake.message(REQUESTS, message.ts)) == shown_before
    assert len(fake.replies(REQUESTS, message.ts)) == replies_before
    assert len(dm_messages(fake, REQUESTER)) == dms_before
    assert state(server, request_id) == "issued" and len(certificates_of(server, request_id)) == 1


# --- 9. twenty approvers at once -------------------------------------------------------------------

def test_twenty_concurrent_approvals_issue_exactly_one_certificate(server, keys):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, REQUESTER, "crowd", "1h", "everyone approves at once")
    since = Since(fake)
    barrier = threading.Barrier(len(CROWD))
    results: dict[str, object] = {}

    def click(user):
        barrier.wait()
        try:
            results[user] = driver.click(user, channel=REQUESTS, ts=message.ts,
                                         action_id=APPROVE, value=request_id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[user] = exc

    threads = [threading.Thread(target=click, args=(u,)) for u in CROWD]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for user in CROWD:
        assert not isinstance(results[user], BaseException), (user, results[user])
        ok(results[user])

    wait_dm(fake, REQUESTER, request_id)
    wait_state(server, request_id, "issued")
    # everyone hears back: one approved, the others are told politely it is decided
    fake.wait_for(lambda: len({u for u in CROWD if since.ephemerals(u)}) >= len(CROWD) - 1,
                  timeout=10)
    settle(fake, quiet=1.0)
    certificate_dms = [m for m in dm_messages(fake, REQUESTER)
                       if request_id in m.text and CERT_RE.search(m.text)]
    assert len(certificate_dms) == 1
    assert len(certificates_of(server, request_id)) == 1
    told = [t for u in CROWD for t in since.ephemerals(u)]
    assert not [t for t in told if POLITE_FAILURE in t], told
    assert len([m for m in fake.replies(REQUESTS, message.ts)
                if m.text.startswith("Certificate issued")]) == 1


# --- 10. rate limited ------------------------------------------------------------------------------

def test_rate_limited_post_is_retried_after_retry_after(server, keys):
    fake = server.fake
    settle(fake)
    since = Since(fake)
    fake.inject_error("chat.postMessage", status=429, retry_after=1)
    reason = "posted despite a rate limit"
    ok(server.driver.command(DAN, "/ssh-request", f"prod-db 1h {reason}"))
    message = request_message(server, reason, timeout=10)
    posts = since.calls("chat.postMessage")
    assert posts[0].status == 429 and posts[0].error == "ratelimited"
    success = next(c for c in posts if c.ok and c.params.get("channel") == REQUESTS
                   and not c.params.get("thread_ts"))
    assert success.at - posts[0].at >= 1.0, success.at - posts[0].at
    assert posts.index(success) > 0
    told = since.ephemeral(DAN, containing=request_id_of(message))
    assert "<#C0REQUESTS>" in told, told
    settle(fake, quiet=1.5)
    finish(server, request_id_of(message))


def test_request_posted_once_while_its_first_post_is_retried(server, keys):
    """While the first post waits out a 2 s Retry-After, the 1 s posting sweep runs at least
    twice: it must not post the request again (it did, before posts were claimed in the
    database)."""
    fake = server.fake
    settle(fake)
    fake.inject_error("chat.postMessage", status=429, retry_after=2)
    reason = "posted exactly once"
    ok(server.driver.command(DAN, "/ssh-request", f"prod-db 1h {reason}"))
    message = request_message(server, reason, timeout=10)
    settle(fake, quiet=2.5)
    try:
        assert len([m for m in fake.messages(REQUESTS) if reason in m.text]) == 1
    finally:
        ts = server.scalar("SELECT m.ts FROM slack_messages AS m JOIN requests AS r ON r.id = m.request_id WHERE r.reason = ?", reason)
        assert ts is not None
        finish(server, request_id_of(message))


# --- 11. Slack down while posting -----------------------------------------------------------------

def test_request_survives_slack_outage_and_is_posted_by_the_scheduler(server, keys):
    fake = server.fake
    settle(fake)
    since = Since(fake)
    # 1 try + 3 retries (ServerErrorRetryHandler) all fail; then Slack is healthy again.
    fake.inject_error("chat.postMessage", status=500, count=4)
    reason = "posted after slack came back"
    ok(server.driver.command(DAN, "/ssh-request", f"prod-db 1h {reason}"))
    told = since.ephemeral(DAN, containing="Request `req-", timeout=15)
    request_id = re.search(r"`([^`]+)`", told).group(1)
    # told it is stored and will be posted; never that it is posted when it is not
    assert "is posted in <#C0REQUESTS>" not in told, told
    assert state(server, request_id) == "pending"
    message = request_message(server, reason, timeout=10)
    assert request_id_of(message) == request_id
    failed = [c for c in since.calls("chat.postMessage") if c.status == 500]
    assert len(failed) == 4
    posted = next(c for c in since.calls("chat.postMessage") if c.ok and c.params.get("channel") == REQUESTS
                  and not c.params.get("thread_ts"))
    assert posted.at > failed[-1].at
    fake.wait_for(lambda: fake.replies(REQUESTS, message.ts))
    assert server.scalar("SELECT ts FROM slack_messages WHERE request_id = ?", request_id) == message.ts
    settle(fake)
    finish(server, request_id)


# --- 12. signer unavailable (SoftHSM2 token) ---------------------------------------------------------

@pytest.fixture(scope="module")
def hsm_server(tmp_path_factory, user_keys):
    root = tmp_path_factory.mktemp("hsm")
    token = make_token(root / "softhsm")
    fake = make_fake()
    server = Server(root / "vouch", fake, policy_yaml(), ca_key=token.uri,
                    extra_env={"SOFTHSM2_CONF": str(token.conf)})
    try:
        server.start()
        register_key(server, REQUESTER, user_keys["ed25519"])
        settle(fake)
        yield server, token
    finally:
        server.stop()
        fake.stop()
    assert server.proc.returncode in (0, -signal.SIGTERM), f"vouch serve exit {server.proc.returncode}"


def test_signer_unavailable_then_back_retries_and_issues(hsm_server):
    server, token = hsm_server
    fake, driver = server.fake, server.driver
    assert server.get("/readyz").status == 200
    request_id, message = ask(server, REQUESTER, "prod-db", "1h", "the token is flaky")
    token.break_key()
    try:
        # /readyz reuses its test signature for 5 s: the 503 may take that long to show
        readyz = fake.wait_for(lambda: (r := server.get("/readyz")).status == 503 and r, timeout=10)
        assert "no private key matches" in readyz.text, readyz.text
        ok(driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
        told = wait_dm(fake, REQUESTER, request_id)
        assert "could not sign" in told.text and not CERT_RE.search(told.text), told.text
        fake.wait_for(lambda: "signing failed" in shown(fake.message(REQUESTS, message.ts)))
        time.sleep(2.5)  # two scheduler rounds with the signer still gone
        assert state(server, request_id) == "approved"
        assert server.scalar("SELECT issue_error FROM requests WHERE id = ?", request_id)
        assert certificates_of(server, request_id) == []
        assert not [m for m in dm_messages(fake, REQUESTER) if CERT_RE.search(m.text)]
    finally:
        token.restore_key()
    dm = wait_dm(fake, REQUESTER, "Your certificate", timeout=10)
    assert request_id in dm.text
    certificate_line(dm.text)
    wait_state(server, request_id, "issued")
    assert len(certificates_of(server, request_id)) == 1
    fake.wait_for(lambda: "certificate issued" in shown(fake.message(REQUESTS, message.ts)))
    fake.wait_for(lambda: server.get("/readyz").status == 200, timeout=10)
    # the CA that signed is the token's key
    assert server.get("/ca.pub").text.split()[:2] == server.vouch("ca", "pubkey").stdout.split()[:2]


# --- 13. the request modal ---------------------------------------------------------------------------

def _modal_values(target: str, duration: str, reason: str) -> dict:
    return {"target": {"value": {"type": "static_select", "selected_option": {
                "text": {"type": "plain_text", "text": target}, "value": target}}},
            "duration": {"value": {"type": "plain_text_input", "value": duration}},
            "reason": {"value": {"type": "plain_text_input", "value": reason}}}


def test_empty_request_opens_modal_and_submitting_it_posts_the_request(server, keys):
    fake, driver = server.fake, server.driver
    since = Since(fake)
    views_before = len(fake.views(REQUESTER))
    ok(driver.command(REQUESTER, "/ssh-request", "", channel_id="C0GENERAL"))
    fake.wait_for(lambda: len(fake.views(REQUESTER)) > views_before)
    [opened] = since.calls("views.open")
    assert opened.ok and opened.params.get("trigger_id")
    view = fake.views(REQUESTER)[-1]
    assert view["method"] == "views.open" and view["callback_id"] == "vouch_request_form"
    assert "prod-db" in strings(view["blocks"])

    requests_before = server.scalar("SELECT count(*) FROM requests")
    bad = ok(driver.submit_view(REQUESTER, view, _modal_values("prod-db", "soon", "modal request")))
    answer = bad.json()
    assert answer["response_action"] == "errors" and "duration" in answer["errors"], answer
    time.sleep(0.3)
    assert server.scalar("SELECT count(*) FROM requests") == requests_before

    reason = "submitted from the modal"
    good = ok(driver.submit_view(REQUESTER, view, _modal_values("prod-db", "90m", reason)))
    assert "errors" not in good.body
    message = request_message(server, reason)
    assert "1h 30m" in shown(message) or "1h30m" in shown(message) or "90m" in shown(message)
    request_id = request_id_of(message)
    assert server.scalar("SELECT duration_seconds FROM requests WHERE id = ?", request_id) == 5400
    settle(fake)
    finish(server, request_id)


# --- 14. usage and refusals ---------------------------------------------------------------------------

HELP_CASES = [
    ("/ssh-request", "help"), ("/ssh-request", "prod-db"), ("/ssh-request", "prod-db soon because"),
    ("/ssh-breakglass", "help"), ("/ssh-breakglass", ""),
    ("/ssh-key", "help"), ("/ssh-key", "frobnicate the key"), ("/ssh-key", "remove not-a-fingerprint"),
    ("/ssh-revoke", "help"), ("/ssh-revoke", ""),
    ("/ssh-status", "help"), ("/ssh-status", "everything please"),
]


def test_help_and_bad_text_answer_with_usage_in_the_http_response(server, keys):
    fake, driver = server.fake, server.driver
    settle(fake)
    calls_before = len(fake.calls)
    for command, text in HELP_CASES:
        answer = answer_text(ok(driver.command(REQUESTER, command, text)))
        assert "Usage" in answer and command in answer, (command, text, answer)
        if text != "help":
            assert answer.split("\n")[0] != "*Usage:*", (command, text, "says what was wrong")
    time.sleep(0.5)
    settle(fake)
    assert len(fake.calls) == calls_before, [c.method for c in fake.calls[calls_before:]]


def test_refusals_say_what_is_wrong(server, keys):
    fake, driver = server.fake, server.driver
    requests_before = server.scalar("SELECT count(*) FROM requests")

    since = Since(fake)
    ok(driver.command(REQUESTER, "/ssh-request", "nosuch-db 1h look around"))
    refusal = since.ephemeral(REQUESTER)
    assert "unknown target" in refusal.lower() and all(t in refusal for t in ("prod-db", "payments", "crowd")), \
        refusal

    since = Since(fake)
    ok(driver.command(REQUESTER, "/ssh-request", "prod-db 9h long job"))
    refusal = since.ephemeral(REQUESTER)
    assert "4h" in refusal and "maximum" in refusal, refusal

    answer = answer_text(ok(driver.command(REQUESTER, "/ssh-request", "prod-db 1h")))
    assert "reason" in answer.lower(), answer

    since = Since(fake)
    ok(driver.command(NOKEY, "/ssh-request", "prod-db 1h i have no key"))
    refusal = since.ephemeral(NOKEY)
    assert "/ssh-key add" in refusal, refusal

    settle(fake)
    assert server.scalar("SELECT count(*) FROM requests") == requests_before
    assert since.calls("chat.postMessage") == []


# --- 15. break-glass, revoke, status --------------------------------------------------------------

def _breakglass(server: Server, reason: str):
    fake = server.fake
    since = Since(fake)
    ok(server.driver.command(GLASS, "/ssh-breakglass", f"prod-db 30m {reason}"))
    alert = fake.wait_for(lambda: [m for m in fake.messages(SECURITY) if reason in m.text])[-1]
    request_id = server.scalar("SELECT id FROM requests WHERE reason = ? AND kind = 'breakglass'",
                               reason)
    dm = wait_dm(fake, GLASS, request_id)
    line = certificate_line(dm.text)
    [(serial, _, holder)] = certificates_of(server, request_id)
    assert holder == GLASS
    return since, alert, serial, line


def _krl_revokes(server: Server, serial: int) -> bool:
    answer = server.get("/krl")
    assert answer.status == 200
    krl = decode_krl(answer.body)
    return any(section.revokes_serial(serial) for section in krl.certificates)


def test_breakglass_revoke_and_status(server, keys):
    fake, driver = server.fake, server.driver

    since, alert, serial, _ = _breakglass(server, "database on fire")
    assert f"<@{GLASS}>" in shown(alert), shown(alert)
    assert [c for c in since.calls("chat.postMessage") if c.params.get("channel") == SECURITY]

    since = Since(fake)
    ok(driver.command(REQUESTER, "/ssh-breakglass", "prod-db 30m i want in too"))
    refusal = since.ephemeral(REQUESTER)
    assert "not allowed to break glass" in refusal, refusal
    since2 = Since(fake)
    ok(driver.command(GLASS, "/ssh-breakglass", "payments 30m not covered"))
    assert "does not cover" in since2.ephemeral(GLASS)
    ok(driver.command(GLASS, "/ssh-breakglass", "prod-db 2h too long"))
    assert "1h" in since2.ephemeral(GLASS, containing="maximum")
    settle(fake)
    # each refused attempt is reported to the security channel: no alert, no certificate
    reported = [c.params["text"] for c in since.calls("chat.postMessage")
                if c.params.get("channel") == SECURITY]
    assert len(reported) == 3 and all("Refused break-glass attempt" in t for t in reported)
    assert f"<@{REQUESTER}>" in reported[0] and "not allowed to break glass" in reported[0]
    assert not any("BREAK-GLASS" in t for t in reported)
    assert server.scalar("SELECT count(*) FROM requests WHERE requester = ? AND kind = 'breakglass'",
                         REQUESTER) == 0

    since = Since(fake)
    ok(driver.command(GLASS, "/ssh-status"))
    status = since.ephemeral(GLASS)
    assert f"serial {serial}" in status and DB_PRINCIPAL in status, status

    since = Since(fake)
    ok(driver.command(BOB, "/ssh-revoke", f"{serial} not yours"))
    refusal = since.ephemeral(BOB)
    assert "only your own" in refusal, refusal
    assert server.scalar("SELECT revoked_at FROM certificates WHERE serial = ?", s64(serial)) is None
    assert not _krl_revokes(server, serial)

    since = Since(fake)
    ok(driver.command(GLASS, "/ssh-revoke", f"{serial} fire is out"))
    done = since.ephemeral(GLASS)
    assert f"Revoked certificate serial {serial}" in done, done
    assert server.scalar("SELECT revoked_by FROM certificates WHERE serial = ?", s64(serial)) == GLASS
    assert _krl_revokes(server, serial)

    _, _, serial2, _ = _breakglass(server, "second fire")
    since = Since(fake)
    ok(driver.command(ADMIN, "/ssh-revoke", f"{serial2} admin cleans up"))
    done = since.ephemeral(ADMIN)
    assert f"Revoked certificate serial {serial2}" in done, done
    assert _krl_revokes(server, serial2) and _krl_revokes(server, serial)

    since = Since(fake)
    ok(driver.command(GLASS, "/ssh-status"))
    status = since.ephemeral(GLASS)
    assert f"serial {serial}" not in status and f"serial {serial2}" not in status, status
    settle(fake)


# --- 16. HTTP endpoints -----------------------------------------------------------------------------

def test_http_endpoints(server, keys):
    assert server.get("/healthz").status == 200
    assert server.get("/readyz").status == 200
    metrics = server.get("/metrics")
    assert metrics.status == 200
    for name in ("vouch_requests_total", "vouch_certificates_issued_total", "vouch_approvals_total"):
        assert re.search(rf"^# TYPE {name} counter$", metrics.text, re.M), name
    # after the tests above, the counters have samples too
    if server.scalar("SELECT count(*) FROM certificates"):
        assert re.search(r'^vouch_certificates_issued_total\{kind="request"\} [1-9]', metrics.text, re.M)
        assert re.search(r'^vouch_approvals_total\{decision="approve"\} [1-9]', metrics.text, re.M)
        assert re.search(r'^vouch_requests_total\{outcome="created"\} [1-9]', metrics.text, re.M)
    ca_pub = server.get("/ca.pub")
    assert ca_pub.status == 200
    assert ca_pub.text.split()[:2] == server.vouch("ca", "pubkey").stdout.split()[:2]
    krl = server.get("/krl")
    assert krl.status == 200 and krl.headers.get("content-type") == "application/octet-stream"
    decoded = decode_krl(krl.body)
    ca_blob = ca_pub.text.split()[1]
    assert all(s.ca_key in (b"", base64.b64decode(ca_blob)) for s in decoded.certificates)


# --- 17. expiry ----------------------------------------------------------------------------------------

@contextmanager
def own_server(tmp_path_factory, name: str, policy: str, keys: dict):
    """A `vouch serve` and fake Slack of a test module's own, with keys registered
    ({user: key})."""
    fake = make_fake()
    server = Server(tmp_path_factory.mktemp(name), fake, policy)
    try:
        server.start()
        for user, key in keys.items():
            register_key(server, user, key)
        settle(fake)
        yield server
    finally:
        server.stop()
        fake.stop()
    assert server.proc.returncode in (0, -signal.SIGTERM), f"vouch serve exit {server.proc.returncode}"


@pytest.fixture(scope="module")
def ttl_server(tmp_path_factory, user_keys):
    with own_server(tmp_path_factory, "vouch-ttl", policy_yaml(request_ttl="5s"),
                    {REQUESTER: user_keys["ed25519"]}) as server:
        yield server


@pytest.fixture(scope="module")
def expired_request(ttl_server):
    server, fake = ttl_server, ttl_server.fake
    request_id, message = ask(server, REQUESTER, "prod-db", "1h", "nobody will answer")
    since = Since(fake)
    fake.wait_for(lambda: "xpired" in shown(fake.message(REQUESTS, message.ts)), timeout=12)
    return request_id, message, since


def test_expired_request_message_is_updated(ttl_server, expired_request):
    server, fake = ttl_server, ttl_server.fake
    request_id, message, since = expired_request
    final = fake.message(REQUESTS, message.ts)
    assert "expired" in shown(final).lower() and buttons(final) == []
    assert since.updates(message.ts)
    assert state(server, request_id) == "expired"
    wait_dm(fake, REQUESTER, "expired")
    since = Since(fake)
    ok(server.driver.click(BOB, channel=REQUESTS, ts=message.ts, action_id=APPROVE, value=request_id))
    assert "expired" in since.ephemeral(BOB)
    settle(fake)
    assert state(server, request_id) == "expired" and certificates_of(server, request_id) == []


def test_expired_request_message_says_expired_literally(ttl_server, expired_request):
    _, message, _ = expired_request
    final = ttl_server.fake.message(REQUESTS, message.ts)
    assert "expired" in final.text or any("expired" in s for s in strings(final.blocks))


# --- 18. reminders and break-glass escalation (the scheduler runs every second) ----------------------

REMIND_LEAD = 8  # seconds from issue to the reminder: the certificate lasts reminder_before + this
REVIEW_WITHIN = 8


@pytest.fixture(scope="module")
def sweep_server(tmp_path_factory, user_keys):
    with own_server(tmp_path_factory, "vouch-sweeps",
                    policy_yaml(reminder_before="30m", review_within=f"{REVIEW_WITHIN}s"),
                    {REQUESTER: user_keys["ed25519"], GLASS: user_keys["ecdsa-p256"]}) as server:
        yield server


def reminders(fake, user: str) -> list:
    return [m for m in dm_messages(fake, user) if "⏰" in m.text]


def posted_at(message) -> datetime:
    """When the fake posted a message: its ts is Slack's, seconds since the epoch."""
    return datetime.fromtimestamp(float(message.ts), timezone.utc)


def stored_time(server: Server, sql: str, *args) -> datetime:
    return datetime.fromisoformat(server.scalar(sql, *args)).replace(tzinfo=timezone.utc)


def test_expiry_reminder_is_sent_once_reminder_before_expiry(sweep_server):
    server, fake = sweep_server, sweep_server.fake
    request_id, message = ask(server, REQUESTER, "prod-db", f"30m{REMIND_LEAD}s", "remind me")
    ok(server.driver.click(BOB, channel=REQUESTS, ts=message.ts, action_id=APPROVE,
                           value=request_id, text="Approve"))
    wait_dm(fake, REQUESTER, request_id)
    [(serial, _, _)] = certificates_of(server, request_id)
    valid_before = stored_time(server, "SELECT valid_before FROM certificates WHERE request_id = ?",
                               request_id)
    due = valid_before - timedelta(minutes=30)

    [reminder] = fake.wait_for(lambda: reminders(fake, REQUESTER), timeout=REMIND_LEAD + 8)
    assert due <= posted_at(reminder) <= due + timedelta(seconds=4), \
        f"reminded at {posted_at(reminder)}, due at {due}"
    assert f"serial {serial}" in reminder.text and "prod-db" in reminder.text, reminder.text
    assert buttons(reminder) == ["Extend", "Request again"]
    sent_at = stored_time(server, "SELECT reminder_sent_at FROM certificates WHERE request_id = ?",
                          request_id)
    assert due <= sent_at < valid_before

    time.sleep(3)  # three more sweeps: still one reminder
    assert len(reminders(fake, REQUESTER)) == 1


def test_unreviewed_breakglass_is_escalated_once_and_reviewed_is_not(sweep_server):
    server, fake = sweep_server, sweep_server.fake
    _breakglass(server, "ignored fire")
    used_id = server.scalar("SELECT id FROM requests WHERE reason = 'ignored fire'")
    _, reviewed_alert, _, _ = _breakglass(server, "handled fire")
    reviewed_id = server.scalar("SELECT id FROM requests WHERE reason = 'handled fire'")
    since = Since(fake)
    opened = len(fake.views(ADMIN))
    ok(server.driver.click(ADMIN, channel=SECURITY, ts=reviewed_alert.ts, action_id="vouch_review",
                           value=reviewed_id, text="Mark reviewed"))
    view = fake.wait_for(lambda: fake.views(ADMIN)[opened:])[-1]
    assert view["callback_id"] == "vouch_review_form"
    ok(server.driver.submit_view(ADMIN, view, {
        "note": {"value": {"type": "plain_text_input", "value": "talked to glass, all fine"}}}))
    assert reviewed_id in since.ephemeral(ADMIN, containing="reviewed")

    def escalations(request_id: str) -> list:
        return [m for m in fake.messages(SECURITY) if "unreviewed" in m.text and request_id in m.text]

    [escalation] = fake.wait_for(lambda: escalations(used_id), timeout=REVIEW_WITHIN + 8)
    used_at = stored_time(server, "SELECT created_at FROM requests WHERE id = ?", used_id)
    due = used_at + timedelta(seconds=REVIEW_WITHIN)
    assert due <= posted_at(escalation) <= due + timedelta(seconds=4), \
        f"escalated at {posted_at(escalation)}, due at {due}"
    assert f"<@{GLASS}>" in escalation.text and f"<@{ADMIN}>" in escalation.text, escalation.text
    time.sleep(3)  # later sweeps neither repeat it nor escalate the reviewed use
    assert len(escalations(used_id)) == 1
    assert escalations(reviewed_id) == []
    actions = [row[0] for row in server.query(
        "SELECT action FROM audit_events WHERE subject = ? ORDER BY seq", f"request:{used_id}")]
    assert actions.count("breakglass.escalated") == 1, actions
    assert server.scalar("SELECT reviewed_by FROM requests WHERE id = ?", reviewed_id) == ADMIN
    assert "Reviewed by" in shown(fake.message(SECURITY, reviewed_alert.ts))
    assert "talked to glass, all fine" in shown(fake.message(SECURITY, reviewed_alert.ts))


# --- acknowledgements -------------------------------------------------------------------------------

def test_every_command_and_click_was_acknowledged_within_one_second(server):
    answered = [r for _, r in server.driver.responses if r.status == 200]
    assert len(answered) > 50
    slow = [(body, r.elapsed) for body, r in server.driver.responses if r.elapsed >= ACK_LIMIT]
    assert slow == []
    worst = max(r.elapsed for r in answered)
    print(f"{len(answered)} Slack requests acknowledged, slowest {worst * 1000:.0f} ms")


# --- /ssh-key list and remove through Slack ---------------------------------------------------

def test_key_list_and_remove(server, user_keys):
    user = "U0CAROL"
    first, second = user_keys["ecdsa-p521"], user_keys["rsa-2048"]
    register_key(server, user, first)
    register_key(server, user, second)
    since = Since(server.fake)
    ok(server.driver.command(user, "/ssh-key", "list"))
    listing = since.ephemeral(user)
    newest, older = fingerprint(second.public_path), fingerprint(first.public_path)
    assert listing.index(newest) < listing.index(older), listing  # newest first, used by default
    assert "used by default" in listing.split(newest, 1)[1].split("\n", 1)[0]
    since = Since(server.fake)
    ok(server.driver.command(user, "/ssh-key", f"remove {newest}"))
    assert newest in since.ephemeral(user, containing="Removed")
    since = Since(server.fake)
    ok(server.driver.command(user, "/ssh-key", "list"))
    listing = since.ephemeral(user)
    assert newest not in listing and older in listing
    since = Since(server.fake)
    ok(server.driver.command(user, "/ssh-key", f"remove {newest}"))
    assert "no registered key" in since.ephemeral(user)


def test_people_who_act_are_recorded_with_name_and_time_zone(server, keys):
    rows = dict((uid, (name, tz)) for uid, name, tz in server.query("SELECT id, name, tz FROM users"))
    assert REQUESTER in rows
    name, tz = rows[REQUESTER]
    assert name and tz  # from users.info: shown in certificate DMs and /ssh-status in the user's zone
