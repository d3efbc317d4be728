"""Vouch over Socket Mode: `vouch serve` with VOUCH_SLACK_APP_TOKEN as a subprocess.

The app opens its connection through VOUCH_SLACK_API_URL (apps.connections.open on the fake),
connects to the fake's websocket and gets its commands and clicks as envelopes there; every
envelope must be acknowledged within 1 s. The HTTP port keeps serving /healthz, /krl, …, but not
/slack/events.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from e2e_support import (ACK_LIMIT, BOB, DB_PRINCIPAL, REQUESTER, TEAM, Server, make_fake,
                         policy_yaml, settle)

REQUESTS = "C0REQUESTS"
APPROVE = "vouch_approve"
CERT_RE = re.compile(r"\b(?:ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa|sk-[\w-]+@openssh\.com)"
                     r"-cert-v01@openssh\.com [A-Za-z0-9+/=]+")


class SocketModeServer(Server):
    """`vouch serve` with an app-level token and no signing secret."""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env.pop("VOUCH_SLACK_SIGNING_SECRET", None)
        env["VOUCH_SLACK_APP_TOKEN"] = self.fake.app_token
        return env


@pytest.fixture(scope="module")
def fake():
    slack = make_fake()  # FakeSlack's app token: "xapp-fake"
    yield slack
    slack.stop()


@pytest.fixture(scope="module")
def server(fake, tmp_path_factory):
    srv = SocketModeServer(tmp_path_factory.mktemp("vouch-socket"), fake, policy_yaml())
    srv.start()
    assert fake.socket_connected(10), f"vouch did not connect over Socket Mode:\n{srv.log()}"
    yield srv
    srv.stop()
    assert srv.proc.returncode in (0, -signal.SIGTERM), f"vouch serve exit {srv.proc.returncode}"


# --- envelopes as Slack sends them --------------------------------------------------------

def deliver(fake, kind: str, payload: dict) -> dict:
    """Send one envelope; the app's ack, which must arrive within ACK_LIMIT."""
    started = time.monotonic()
    ack = fake.socket_send(kind, payload, timeout=5)
    elapsed = time.monotonic() - started
    assert elapsed < ACK_LIMIT, f"{kind} envelope acknowledged after {elapsed:.3f}s: {ack}"
    return ack


def command(fake, user: str, name: str, text: str, channel: str = "C0GENERAL") -> dict:
    ack = deliver(fake, "slash_commands", {
        "token": "unused-in-socket-mode", "team_id": TEAM, "team_domain": fake.team_domain,
        "channel_id": channel, "channel_name": fake.channel_name(channel), "user_id": user,
        "user_name": fake.user(user)["name"], "command": name, "text": text,
        "api_app_id": fake.app_id, "is_enterprise_install": "false",
        "response_url": fake.response_url(user, channel),
        "trigger_id": fake.new_trigger_id(user)})
    return ack


def click(fake, user: str, channel: str, message, action_id: str) -> dict:
    block_id, button = next((b["block_id"], el) for b in message.blocks
                            if b.get("type") == "actions" for el in b.get("elements", [])
                            if el.get("action_id") == action_id)
    who = {"id": user, "username": fake.user(user)["name"], "name": fake.user(user)["name"],
           "team_id": TEAM}
    return deliver(fake, "interactive", {
        "type": "block_actions", "user": who, "api_app_id": fake.app_id,
        "token": "unused-in-socket-mode",
        "container": {"type": "message", "message_ts": message.ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": fake.new_trigger_id(user),
        "team": {"id": TEAM, "domain": fake.team_domain}, "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": fake.channel_name(channel)},
        "message": {"type": "message", "user": message.user, "bot_id": fake.bot_id,
                    "app_id": fake.app_id, "text": message.text, "blocks": message.blocks,
                    "team": TEAM, "ts": message.ts},
        "state": {"values": {}},
        "response_url": fake.response_url(user, channel, message.ts),
        "actions": [{"action_id": action_id, "block_id": block_id, "text": button["text"],
                     "value": button.get("value", ""), "type": "button",
                     "action_ts": f"{time.time():.6f}"}]})


def buttons(message) -> list[str]:
    return [b["text"]["text"] for block in message.blocks if block.get("type") == "actions"
            for b in block.get("elements", []) if b.get("type") == "button"]


# --- tests ------------------------------------------------------------------------------------

def test_connects_through_the_configured_api_url(server, fake):
    opened = fake.calls_to("apps.connections.open")
    assert opened and all(c.ok for c in opened), [(c.status, c.error) for c in opened]
    assert "Socket Mode" in server.log()


def test_command_request_and_approval_over_socket_mode(server, fake, user_keys):
    key = user_keys["ed25519"]
    ack = command(fake, REQUESTER, "/ssh-key", "add " + key.public_path.read_text().strip())
    assert ack.get("envelope_id")
    fake.wait_for(lambda: [e for e in fake.ephemerals(REQUESTER) if "SHA256:" in e["text"]],
                  timeout=6)
    settle(fake)

    reason = "socket mode request"
    command(fake, REQUESTER, "/ssh-request", f"prod-db 1h {reason}")
    ts = fake.wait_for(lambda: server.scalar(
        "SELECT m.ts FROM slack_messages AS m JOIN requests AS r ON r.id = m.request_id WHERE r.reason = ?", reason), timeout=6)
    settle(fake)
    message = fake.message(REQUESTS, ts)
    assert any(c.ok and c.params.get("channel") == REQUESTS and c.response["ts"] == ts
               for c in fake.calls_to("chat.postMessage"))
    assert buttons(message) == ["Approve", "Deny", "Cancel"]
    request_id = re.search(r"Access request (\S+):", message.text).group(1)

    click(fake, BOB, REQUESTS, message, APPROVE)
    dm = fake.wait_for(lambda: [m for m in fake.messages(fake.dm_channel(REQUESTER))
                                if request_id in m.text], timeout=6)[-1]
    assert CERT_RE.search(dm.text), dm.text
    fake.wait_for(lambda: server.scalar("SELECT state FROM requests WHERE id = ?",
                                        request_id) == "issued")
    principals = server.scalar("SELECT principals FROM certificates WHERE request_id = ?",
                               request_id)
    assert DB_PRINCIPAL in principals


def test_http_endpoints_still_served_but_not_slack_events(server, fake):
    assert server.get("/healthz").status == 200
    assert server.get("/krl").status == 200
    before = len(fake.socket_received())
    response = server.driver.command(REQUESTER, "/ssh-request", "prod-db 1h over http")
    assert response.status == 404, (response.status, response.body)
    assert server.scalar("SELECT count(*) FROM requests WHERE reason = 'over http'") == 0
    assert len(fake.socket_received()) == before
