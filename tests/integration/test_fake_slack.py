"""The fake Slack Web API (driven by the real slack-sdk WebClient) and the driver that sends the
bot signed requests the way Slack does (checked with slack-sdk's own SignatureVerifier and by a
real Bolt app)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from bot.sandbox import FakeSlack, SlackDriver

pytestmark = pytest.mark.timeout(60)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
def slack():
    fake = FakeSlack()
    fake.start()
    fake.add_user("U0ALICE", "alice", real_name="Alice Liddell")
    fake.add_user("U0BOB", "bob", real_name="Bob Builder", tz="America/New_York", is_admin=True)
    fake.add_user("U0GUEST", "guest", is_restricted=True, is_ultra_restricted=True)
    fake.add_user("U0GONE", "gone", deleted=True)
    fake.add_user("U0EXT", "ext", team_id="T0OTHER")
    fake.add_group("db-owners", "S0DBOWNERS", ["U0ALICE", "U0BOB"])
    fake.add_group("oncall", "S0ONCALL", ["U0BOB"], name="On-call")
    fake.add_channel("C0ACCESS", "access-requests")
    yield fake
    fake.stop()


@pytest.fixture
def client(slack):
    return WebClient("xoxb-fake", base_url=slack.base_url, timeout=5)


def approve_blocks(request_id: str = "r1") -> list:
    return [
        {"type": "section", "block_id": "summary",
         "text": {"type": "mrkdwn", "text": "*alice* asks for `db-prod` for 1h"}},
        {"type": "actions", "block_id": "decide", "elements": [
            {"type": "button", "action_id": "approve", "value": request_id, "style": "primary",
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "deny", "value": request_id,
             "text": {"type": "plain_text", "text": "Deny"}},
        ]},
    ]


# --- Web API -------------------------------------------------------------------------------

def test_post_reply_and_update(slack, client):
    first = client.chat_postMessage(channel="C0ACCESS", text="request", blocks=approve_blocks())
    assert first["channel"] == "C0ACCESS"
    assert first["message"]["user"] == slack.bot_user_id
    assert first["message"]["blocks"][1]["elements"][0]["action_id"] == "approve"
    second = client.chat_postMessage(channel="#access-requests", text="another")
    assert float(second["ts"]) > float(first["ts"])
    reply = client.chat_postMessage(channel="C0ACCESS", text="in thread", thread_ts=first["ts"])
    assert reply["message"]["thread_ts"] == first["ts"]

    assert [m.text for m in slack.messages("C0ACCESS")] == ["request", "another"]
    assert [m.text for m in slack.replies("C0ACCESS", first["ts"])] == ["in thread"]

    updated = client.chat_update(channel="C0ACCESS", ts=first["ts"], text="approved by bob",
                                 blocks=[{"type": "section", "text": {"type": "mrkdwn",
                                                                      "text": "approved"}}])
    assert updated["ts"] == first["ts"]
    msg = slack.message("C0ACCESS", first["ts"])
    assert msg.text == "approved by bob"
    assert msg.blocks[0]["text"]["text"] == "approved"
    assert len(msg.edited) == 1 and msg.edited[0]["text"] == "approved by bob"

    # what the sandbox page renders: top-level messages with their thread replies
    [top, _] = json.loads(json.dumps(slack.snapshot()))["channels"]["C0ACCESS"]["messages"]
    assert top["text"] == "approved by bob" and top["replies"][0]["text"] == "in thread"


def test_message_errors(client):
    with pytest.raises(SlackApiError) as e:
        client.chat_postMessage(channel="C0NOWHERE", text="x")
    assert e.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as e, pytest.warns(UserWarning, match="text"):
        client.chat_postMessage(channel="C0ACCESS")
    assert e.value.response["error"] == "no_text"
    with pytest.raises(SlackApiError) as e:
        client.chat_update(channel="C0ACCESS", ts="1.000001", text="x")
    assert e.value.response["error"] == "message_not_found"
    # only what the bot calls: anything else fails loudly until the fake learns it
    for method in ("chat.unknownThing", "chat.getPermalink", "views.update",
                   "files.getUploadURLExternal"):
        with pytest.raises(SlackApiError) as e:
            client.api_call(method, json={"x": 1})
        assert e.value.response["error"] == "unknown_method"


def test_ephemeral_and_direct_messages(slack, client):
    r = client.chat_postEphemeral(channel="C0ACCESS", user="U0ALICE", text="only you")
    assert r["message_ts"]
    [eph] = slack.ephemerals("U0ALICE")
    assert (eph["channel"], eph["text"], eph["source"]) == ("C0ACCESS", "only you",
                                                           "chat.postEphemeral")
    assert slack.ephemerals("U0BOB") == []
    assert slack.messages("C0ACCESS") == []

    opened = client.conversations_open(users="U0BOB")
    dm = opened["channel"]["id"]
    assert dm.startswith("D") and dm == slack.dm_channel("U0BOB")
    assert client.conversations_open(users="U0BOB")["channel"]["id"] == dm  # stable
    client.chat_postMessage(channel=dm, text="please approve")
    by_user = client.chat_postMessage(channel="U0BOB", text="second")  # user id → their DM
    assert by_user["channel"] == dm
    assert [m.text for m in slack.messages(dm)] == ["please approve", "second"]

    for users, error in (("U0NOBODY", "user_not_found"), ("U0GONE", "user_disabled")):
        with pytest.raises(SlackApiError) as e:
            client.conversations_open(users=users)
        assert e.value.response["error"] == error


def test_users_info(client):
    alice = client.users_info(user="U0ALICE")["user"]
    offset = int(datetime.now(ZoneInfo("Europe/Berlin")).utcoffset().total_seconds())
    assert alice["id"] == "U0ALICE" and alice["team_id"] == "T0VOUCH"
    assert (alice["name"], alice["tz"], alice["tz_offset"]) == ("alice", "Europe/Berlin", offset)
    assert alice["tz_label"].startswith("Central European")
    assert alice["profile"]["real_name"] == "Alice Liddell"
    assert alice["profile"]["display_name"] == "alice"
    assert not any(alice[k] for k in ("deleted", "is_bot", "is_restricted",
                                      "is_ultra_restricted", "is_admin"))
    bob = client.users_info(user="U0BOB")["user"]
    assert bob["is_admin"] and bob["tz_offset"] in (-5 * 3600, -4 * 3600)
    guest = client.users_info(user="U0GUEST")["user"]
    assert guest["is_restricted"] and guest["is_ultra_restricted"]
    assert client.users_info(user="U0GONE")["user"]["deleted"] is True
    assert client.users_info(user="U0EXT")["user"]["team_id"] == "T0OTHER"
    assert client.users_info(user="U0VOUCHBOT")["user"]["is_bot"] is True
    with pytest.raises(SlackApiError) as e:
        client.users_info(user="U0NOBODY")
    assert e.value.response["error"] == "user_not_found"


def test_usergroups(client):
    groups = client.usergroups_list(include_users=True)["usergroups"]
    by_handle = {g["handle"]: g for g in groups}
    assert by_handle["db-owners"]["id"] == "S0DBOWNERS"
    assert by_handle["db-owners"]["users"] == ["U0ALICE", "U0BOB"]
    assert by_handle["oncall"]["name"] == "On-call"
    assert "users" not in client.usergroups_list()["usergroups"][0]
    assert client.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U0BOB"]
    with pytest.raises(SlackApiError) as e:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert e.value.response["error"] == "no_such_subteam"


def test_views(slack, client):
    modal = {"type": "modal", "callback_id": "request", "private_metadata": "m1",
             "title": {"type": "plain_text", "text": "Request access"},
             "submit": {"type": "plain_text", "text": "Send"},
             "blocks": [{"type": "input", "block_id": "reason",
                         "element": {"type": "plain_text_input", "action_id": "text"},
                         "label": {"type": "plain_text", "text": "Why?"}}]}
    trigger = slack.new_trigger_id("U0ALICE")
    opened = client.views_open(trigger_id=trigger, view=modal)["view"]
    assert opened["id"].startswith("V") and opened["callback_id"] == "request"
    with pytest.raises(SlackApiError) as e:
        client.views_open(trigger_id=trigger, view=modal)
    assert e.value.response["error"] == "exchanged_trigger_id"
    with pytest.raises(SlackApiError) as e:
        client.views_open(trigger_id="123.456.abc", view=modal)
    assert e.value.response["error"] == "invalid_trigger_id"

    log = slack.views("U0ALICE")
    assert [(v["method"], v["id"], v["user_id"]) for v in log] == [
        ("views.open", opened["id"], "U0ALICE")]
    assert slack.views("U0BOB") == []
    assert slack.view(opened["id"])["private_metadata"] == "m1"
    assert slack.view(opened["id"])["blocks"][0]["block_id"] == "reason"

    slack.trigger_ttl = 0.0
    stale = slack.new_trigger_id("U0ALICE")
    time.sleep(0.01)
    with pytest.raises(SlackApiError) as e:
        client.views_open(trigger_id=stale, view=modal)
    assert e.value.response["error"] == "expired_trigger_id"


def test_tokens(slack):
    with pytest.raises(SlackApiError) as e:
        WebClient("xoxb-wrong", base_url=slack.base_url).auth_test()
    assert e.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as e:
        WebClient(base_url=slack.base_url).auth_test()
    assert e.value.response["error"] == "not_authed"
    assert [c.error for c in slack.calls_to("auth.test")] == ["invalid_auth", "not_authed"]

    app = WebClient("xapp-fake", base_url=slack.base_url)
    assert app.apps_connections_open(app_token="xapp-fake")["url"].startswith("ws://127.0.0.1:")
    with pytest.raises(SlackApiError) as e:
        WebClient("xoxb-fake", base_url=slack.base_url).apps_connections_open(app_token="xoxb-fake")
    assert e.value.response["error"] == "not_allowed_token_type"
    me = WebClient("xoxb-fake", base_url=slack.base_url).auth_test()
    assert (me["user_id"], me["bot_id"], me["team_id"]) == ("U0VOUCHBOT", "B0VOUCHBOT", "T0VOUCH")


def test_rate_limit_is_retried_after_retry_after(slack):
    client = WebClient("xoxb-fake", base_url=slack.base_url,
                       retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    slack.inject_error("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    r = client.chat_postMessage(channel="C0ACCESS", text="eventually")
    assert r["ok"] and time.monotonic() - started >= 1.0
    first, second = slack.calls_to("chat.postMessage")
    assert (first.status, first.error) == (429, "ratelimited")
    assert (second.status, second.ok) == (200, True)
    assert second.at - first.at >= 1.0
    assert [m.text for m in slack.messages("C0ACCESS")] == ["eventually"]

    # without a retry handler the 429 reaches the caller, with its Retry-After
    slack.inject_error("chat.update", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as e:
        WebClient("xoxb-fake", base_url=slack.base_url).chat_update(
            channel="C0ACCESS", ts=r["ts"], text="x")
    assert e.value.response.status_code == 429
    assert e.value.response.headers["Retry-After"] == "7"


def test_other_injected_errors(slack, client):
    slack.inject_error("users.info", status=500, count=2)
    slack.inject_error("users.info", status=200, error="fatal_error")
    for expected in ("internal_error", "internal_error", "fatal_error"):
        with pytest.raises(SlackApiError) as e:
            client.users_info(user="U0ALICE")
        assert e.value.response["error"] == expected
    assert client.users_info(user="U0ALICE")["ok"]
    assert [c.status for c in slack.calls_to("users.info")] == [500, 500, 200, 200]


def test_latency_does_not_serialise_calls(slack, client):
    slack.latency = 0.2
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: client.chat_postMessage(channel="C0ACCESS", text=str(i)),
                                range(10)))
    elapsed = time.monotonic() - started
    assert all(r["ok"] for r in results)
    assert 0.2 <= elapsed < 1.0
    assert len({r["ts"] for r in results}) == 10


def test_response_url(slack, client):
    posted = client.chat_postMessage(channel="C0ACCESS", text="request", blocks=approve_blocks())
    url = slack.response_url("U0ALICE", "C0ACCESS")
    assert url.startswith(slack.url + "response/")
    assert WebhookClient(url).send(text="working on it").status_code == 200
    WebhookClient(url).send(text="bob approved", response_type="in_channel")
    [eph, public] = slack.ephemerals("U0ALICE")
    assert (eph["text"], eph["response_type"]) == ("working on it", "ephemeral")
    assert public["response_type"] == "in_channel"
    assert [m.text for m in slack.messages("C0ACCESS")] == ["request", "bob approved"]

    on_message = slack.response_url("U0BOB", "C0ACCESS", posted["ts"])
    WebhookClient(on_message).send(text="approved", replace_original=True,
                                   blocks=[{"type": "section",
                                            "text": {"type": "mrkdwn", "text": "done"}}])
    msg = slack.message("C0ACCESS", posted["ts"])
    assert msg.text == "approved" and msg.edited[-1]["source"] == "response_url"
    WebhookClient(on_message).send(text="", delete_original=True)
    assert slack.message("C0ACCESS", posted["ts"]).deleted
    assert [m.text for m in slack.messages("C0ACCESS")] == ["bob approved"]

    assert WebhookClient(slack.url + "response/nope").send(text="x").status_code == 404
    assert len(slack.calls_to("response_url")) == 5


def test_wait_for(slack, client):
    threading.Timer(0.1, lambda: client.chat_postMessage(channel="C0ACCESS", text="late")).start()
    [msg] = slack.wait_for(lambda: slack.messages("C0ACCESS"), timeout=3)
    assert msg.text == "late"
    with pytest.raises(AssertionError, match="chat.postMessage"):
        slack.wait_for(lambda: slack.messages("C0GENERAL"), timeout=0.2)


# --- the driver ----------------------------------------------------------------------------

class Capture:
    """A tiny HTTP server standing in for the bot: records each request, answers 200 (or
    ``status``)."""

    def __init__(self, status: int = 200, handler=None):
        self.requests: list[dict] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                outer.requests.append(req)
                status, out = (handler(req) if handler else (outer.status, b""))
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/events"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def capture():
    cap = Capture()
    yield cap
    cap.close()


def verified(req: dict) -> bool:
    h = {k.lower(): v for k, v in req["headers"].items()}
    return SignatureVerifier(SECRET).is_valid(req["body"], h["x-slack-request-timestamp"],
                                              h["x-slack-signature"])


def form(req: dict) -> dict:
    return {k: v[0] for k, v in parse_qs(req["body"].decode(), keep_blank_values=True).items()}


def payload(req: dict) -> dict:
    return json.loads(form(req)["payload"])


def test_sign_matches_slack_sdk(slack):
    driver = SlackDriver("http://127.0.0.1:9/", SECRET, slack)
    body = b"token=x&text=hello%20world&command=%2Fvouch"
    headers = driver.sign(body)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"],
                             headers["X-Slack-Signature"])
    assert headers["X-Slack-Signature"] == verifier.generate_signature(
        timestamp=headers["X-Slack-Request-Timestamp"], body=body)
    old = driver.sign(body, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid(body, old["X-Slack-Request-Timestamp"], old["X-Slack-Signature"])
    assert not verifier.is_valid(body + b"x", headers["X-Slack-Request-Timestamp"],
                                 headers["X-Slack-Signature"])


def test_command_is_sent_like_slack(slack, capture):
    driver = SlackDriver(capture.url, SECRET, slack)
    r = driver.command("U0ALICE", "/vouch", "request db-prod 1h because=INC-42",
                       channel_id="C0ACCESS")
    assert r.status == 200 and r.elapsed > 0
    [req] = capture.requests
    assert req["path"] == "/slack/events"
    assert req["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert verified(req)
    f = form(req)
    assert set(f) == {"token", "team_id", "team_domain", "channel_id", "channel_name", "user_id",
                      "user_name", "command", "text", "api_app_id", "is_enterprise_install",
                      "response_url", "trigger_id"}
    assert (f["team_id"], f["team_domain"]) == ("T0VOUCH", "vouch-demo")
    assert (f["channel_id"], f["channel_name"]) == ("C0ACCESS", "access-requests")
    assert (f["user_id"], f["user_name"], f["command"]) == ("U0ALICE", "alice", "/vouch")
    assert f["text"] == "request db-prod 1h because=INC-42"
    assert f["is_enterprise_install"] == "false"
    assert f["response_url"].startswith(slack.url + "response/")

    driver.command("U0BOB", "/vouch", channel_id=slack.dm_channel("U0BOB"), team_id="T0OTHER",
                   timestamp=int(time.time()) - 3600)
    stale = capture.requests[-1]
    assert form(stale)["channel_name"] == "directmessage" and form(stale)["team_id"] == "T0OTHER"
    assert form(stale)["text"] == ""
    assert not verified(stale)  # five-minute window
    driver.command("U0BOB", "/vouch", "x", signature="v0=" + "0" * 64)
    assert not verified(capture.requests[-1])


def test_non_2xx_is_returned_not_raised(slack):
    cap = Capture(status=401)
    try:
        r = SlackDriver(cap.url, SECRET, slack).command("U0ALICE", "/vouch", "x")
        assert r.status == 401
        r = SlackDriver(cap.url, SECRET, slack).raw(b"{}", {}, "application/json")
        assert r.status == 401 and cap.requests[-1]["headers"]["Content-Type"] == "application/json"
    finally:
        cap.close()


def test_click_is_sent_like_slack(slack, client, capture):
    posted = client.chat_postMessage(channel="C0ACCESS", text="request", blocks=approve_blocks("r7"))
    driver = SlackDriver(capture.url, SECRET, slack)
    r = driver.click_button("U0BOB", channel="C0ACCESS", ts=posted["ts"], label="Deny")
    assert r.status == 200
    [req] = capture.requests
    assert verified(req)
    assert set(form(req)) == {"payload"}
    p = payload(req)
    assert p["type"] == "block_actions"
    assert p["user"] == {"id": "U0BOB", "username": "bob", "name": "bob", "team_id": "T0VOUCH"}
    assert p["container"] == {"type": "message", "message_ts": posted["ts"],
                              "channel_id": "C0ACCESS", "is_ephemeral": False}
    assert p["team"] == {"id": "T0VOUCH", "domain": "vouch-demo"}
    assert p["channel"] == {"id": "C0ACCESS", "name": "access-requests"}
    assert p["enterprise"] is None and p["is_enterprise_install"] is False
    assert p["message"]["ts"] == posted["ts"] and p["message"]["text"] == "request"
    assert p["message"]["blocks"] == slack.message("C0ACCESS", posted["ts"]).blocks
    assert p["state"] == {"values": {}}
    assert p["trigger_id"] and p["api_app_id"] == slack.app_id and p["token"]
    assert p["response_url"].startswith(slack.url + "response/")
    [action] = p["actions"]
    assert {k: action[k] for k in ("action_id", "block_id", "value", "type")} == {
        "action_id": "deny", "block_id": "decide", "value": "r7", "type": "button"}
    assert action["text"]["type"] == "plain_text" and action["text"]["text"] == "Deny"
    assert float(action["action_ts"]) > 0

    driver.click("U0ALICE", channel="C0ACCESS", ts=posted["ts"], action_id="approve", value="r7")
    assert payload(capture.requests[-1])["actions"][0]["text"]["text"] == "Approve"

    # what a person sees: after the buttons are gone there is nothing to click
    client.chat_update(channel="C0ACCESS", ts=posted["ts"], text="denied",
                       blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "denied"}}])
    with pytest.raises(LookupError, match="Approve"):
        driver.click_button("U0BOB", channel="C0ACCESS", ts=posted["ts"], label="Approve")


def test_submit_view_is_sent_like_slack(slack, client, capture):
    view = client.views_open(trigger_id=slack.new_trigger_id("U0ALICE"), view={
        "type": "modal", "callback_id": "request", "private_metadata": "C0ACCESS",
        "title": {"type": "plain_text", "text": "Request"},
        "submit": {"type": "plain_text", "text": "Send"},
        "blocks": [{"type": "input", "block_id": "reason", "label": {"type": "plain_text",
                    "text": "Why"}, "element": {"type": "plain_text_input", "action_id": "t"}}],
    })["view"]
    driver = SlackDriver(capture.url, SECRET, slack)
    values = {"reason": {"t": {"type": "plain_text_input", "value": "INC-42"}},
              "ttl": {"pick": {"type": "static_select", "selected_option": {"value": "1h"}}}}
    driver.submit_view("U0ALICE", slack.views("U0ALICE")[-1], values)
    [req] = capture.requests
    assert verified(req)
    p = payload(req)
    assert p["type"] == "view_submission"
    assert p["user"]["id"] == "U0ALICE" and p["team"]["id"] == "T0VOUCH"
    assert p["view"]["id"] == view["id"] and p["view"]["callback_id"] == "request"
    assert p["view"]["private_metadata"] == "C0ACCESS"
    assert p["view"]["state"] == {"values": values}
    assert "method" not in p["view"] and p["trigger_id"] and p["api_app_id"] == slack.app_id


def test_driver_against_a_real_bolt_app(slack):
    """The whole loop with slack_bolt: a command posts buttons, a click updates the message, a
    command opens a modal whose submission is accepted. Bolt checks the signatures."""
    from slack_bolt import App, BoltRequest

    app = App(token="xoxb-fake", signing_secret=SECRET,
              client=WebClient("xoxb-fake", base_url=slack.base_url))

    @app.command("/vouch")
    def on_command(ack, command, client, respond):
        if command["text"] == "form":
            ack()
            client.views_open(trigger_id=command["trigger_id"], view={
                "type": "modal", "callback_id": "why", "title": {"type": "plain_text", "text": "Why"},
                "submit": {"type": "plain_text", "text": "Send"},
                "blocks": [{"type": "input", "block_id": "b", "label": {"type": "plain_text",
                            "text": "Why"}, "element": {"type": "plain_text_input",
                                                        "action_id": "a"}}]})
            return
        ack(f"asking for {command['text']}")
        client.chat_postMessage(channel="C0ACCESS", text=f"<@{command['user_id']}> asks",
                                blocks=approve_blocks("r9"))
        respond("posted")

    @app.action("approve")
    def on_approve(ack, body, client):
        ack()
        client.chat_update(channel=body["channel"]["id"], ts=body["message"]["ts"],
                           text=f"approved by <@{body['user']['id']}> ({body['actions'][0]['value']})",
                           blocks=[])

    @app.view("why")
    def on_submit(ack, view, body):
        if view["state"]["values"]["b"]["a"]["value"] == "":
            ack(response_action="errors", errors={"b": "say why"})
        else:
            ack()

    def handle(req):
        resp = app.dispatch(BoltRequest(body=req["body"].decode(), headers=req["headers"]))
        return resp.status, resp.body.encode()

    bot = Capture(handler=handle)
    try:
        driver = SlackDriver(bot.url, SECRET, slack)
        r = driver.command("U0ALICE", "/vouch", "db-prod")
        assert r.status == 200 and r.body == "asking for db-prod"
        [msg] = slack.wait_for(lambda: slack.messages("C0ACCESS"))
        slack.wait_for(lambda: slack.ephemerals("U0ALICE"))
        assert driver.click_button("U0BOB", channel="C0ACCESS", ts=msg.ts, label="Approve").status == 200
        slack.wait_for(lambda: slack.message("C0ACCESS", msg.ts).edited)
        assert slack.message("C0ACCESS", msg.ts).text == "approved by <@U0BOB> (r9)"

        assert driver.command("U0ALICE", "/vouch", "form").status == 200
        [view] = slack.wait_for(lambda: slack.views("U0ALICE"))
        bad = driver.submit_view("U0ALICE", view, {"b": {"a": {"type": "plain_text_input",
                                                              "value": ""}}})
        assert bad.status == 200 and bad.json() == {"response_action": "errors",
                                                    "errors": {"b": "say why"}}
        good = driver.submit_view("U0ALICE", view, {"b": {"a": {"type": "plain_text_input",
                                                               "value": "INC-1"}}})
        assert good.status == 200 and good.body == ""

        forged = driver.command("U0ALICE", "/vouch", "db-prod", signature="v0=" + "1" * 64)
        assert forged.status == 401
    finally:
        bot.close()
