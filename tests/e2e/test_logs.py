"""What `vouch serve` writes to its log (stderr), read as an operator reads it: one line for each
refusal, nothing a person typed can forge a line, no request bodies, response_urls or secrets,
and with VOUCH_LOG_FORMAT=json every line is one JSON object, bolt's own lines included."""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Callable

import pytest

from e2e_support import (BOT_TOKEN, SIGNING_SECRET, TEAM, BOB, DAN, REQUESTER, Server, make_fake,
                         policy_yaml, settle)

PLAIN = "application/x-www-form-urlencoded"


def start(tmp_path_factory, name: str, **env: str):
    fake = make_fake()
    srv = Server(tmp_path_factory.mktemp(name), fake, policy_yaml(), extra_env=env)
    srv.start()
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start(tmp_path_factory, "vouch-logs")
    yield srv
    srv.stop()
    srv.fake.stop()


def lines(server: Server) -> list[str]:
    """The whole log so far, split the way any line-oriented tool (or person) would."""
    return (server.workdir / "serve.log").read_text(errors="replace").splitlines()


def new_lines(server: Server, action: Callable[[], object], until: Callable[[list[str]], bool],
              timeout: float = 6.0) -> list[str]:
    """The lines logged after `action`, once `until` holds for them and the bot went quiet."""
    before = len(lines(server))
    action()
    deadline = time.monotonic() + timeout
    while not until(lines(server)[before:]):
        assert time.monotonic() < deadline, f"not logged: {lines(server)[before:]}"
        time.sleep(0.05)
    settle(server.fake)
    time.sleep(0.3)  # a second line for the same thing would come now
    return lines(server)[before:]


def mentioning(found: list[str], *words: str) -> list[str]:
    return [line for line in found if all(word in line for word in words)]


# --- one line per refusal ------------------------------------------------------------------

def test_each_refusal_is_one_log_line(server, user_keys):
    from test_bot import REQUESTS, ask, ok, register_key

    driver = server.driver
    register_key(server, REQUESTER, user_keys["ed25519"])
    request_id, message = ask(server, REQUESTER, "payments", "1h", "refusals are logged once")

    def once(action, *words):
        found = new_lines(server, action, lambda new: mentioning(new, *words))
        assert len(mentioning(found, *words)) == 1, found
        assert not [line for line in found if "Traceback" in line or "slack_bolt" in line], found
        return mentioning(found, *words)[0]

    own = once(lambda: ok(driver.click_button(REQUESTER, channel=REQUESTS, ts=message.ts,
                                              label="Approve")), REQUESTER, request_id)
    assert "own request" in own and "INFO" in own, own
    stranger = once(lambda: ok(driver.click_button(DAN, channel=REQUESTS, ts=message.ts,
                                                   label="Approve")), DAN, request_id)
    assert "not an approver" in stranger, stranger
    too_long = once(lambda: ok(driver.command(REQUESTER, "/ssh-request", "prod-db 9h a long job")),
                    REQUESTER, "/ssh-request", "maximum")
    assert "4h" in too_long, too_long
    once(lambda: ok(driver.command(BOB, "/ssh-request", "prod-db 5x what is x")),
         BOB, "/ssh-request", "not a duration")


# --- what people type cannot forge a line ------------------------------------------------

RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                    r"[\w.:-]+: ")
FORGED = "\nFAKE vouch: approved"


def test_what_people_type_cannot_forge_a_log_line(server, user_keys):
    from test_bot import REQUESTS, ok, register_key

    driver = server.driver
    register_key(server, REQUESTER, user_keys["ed25519"])
    ok(driver.command(REQUESTER, "/ssh-request", f"prod-db 1h a reason{FORGED}"))
    # A user ID is text from the request too: every line break Python knows, and a terminal escape.
    odd = f"U0ODD{FORGED}\r\nFAKE 2\u2028FAKE 3\x85FAKE 4\x1b[2J"
    found = new_lines(server, lambda: ok(driver.command(odd, "/ssh-status")),
                      lambda new: mentioning(new, "U0ODD"))
    escaped = r"U0ODD\nFAKE vouch: approved\r\nFAKE 2\u2028FAKE 3\x85FAKE 4\x1b[2J"
    assert mentioning(found, escaped), found
    new_lines(server, lambda: driver.click(BOB, channel=REQUESTS, ts=next(iter(
        server.fake.messages(REQUESTS))).ts, action_id="no_such_button", value="x"),
        lambda new: mentioning(new, "no_such_button"))
    logged = lines(server)
    assert not [line for line in logged if line.lstrip().startswith("FAKE")], logged
    assert [line for line in logged if not RECORD.match(line)] == [], "a record over several lines"


# --- no bodies, response_urls or secrets ---------------------------------------------------

def post_twice_signed(server: Server, body: bytes) -> int:
    """A signed request carrying a second, wrong X-Slack-Signature before the right one: the edge
    reads one header, bolt the other, and bolt refused it logging the whole body at INFO."""
    headers = server.driver.sign(body)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("POST", "/slack/events")
        for name, value in (("Content-Type", PLAIN), ("Content-Length", str(len(body))),
                            ("X-Slack-Request-Timestamp", headers["X-Slack-Request-Timestamp"]),
                            ("X-Slack-Signature", "v0=" + "0" * 64),
                            ("X-Slack-Signature", headers["X-Slack-Signature"])):
            connection.putheader(name, value)
        connection.endheaders(body)
        return connection.getresponse().status
    finally:
        connection.close()


def unhandled(server: Server) -> list[tuple[object, str]]:
    """Signed requests bolt has no listener for, each with what its log line should name."""
    fake, driver = server.fake, server.driver
    hook = fake.response_url(REQUESTER, "C0GENERAL")
    dialog = {"type": "dialog_submission", "callback_id": "old_dialog", "team": {"id": TEAM},
              "user": {"id": REQUESTER}, "submission": {"note": "TYPED-IN-A-DIALOG"},
              "response_url": hook, "token": BOT_TOKEN}
    message = next(iter(fake.messages("C0REQUESTS")))
    return [
        (lambda: driver._post_payload(dialog), "old_dialog"),
        (lambda: driver.click(BOB, channel="C0REQUESTS", ts=message.ts, action_id="old_button",
                              value="TYPED-IN-A-BUTTON"), "old_button"),
        (lambda: driver.event({"type": "app_mention", "user": REQUESTER,
                               "text": "TYPED-IN-AN-EVENT"}), "app_mention"),
    ]


def test_no_request_body_response_url_or_secret_is_logged(server, user_keys):
    from test_bot import REQUESTS, ask, ok, register_key

    fake, driver = server.fake, server.driver
    register_key(server, REQUESTER, user_keys["ed25519"])
    request_id, message = ask(server, REQUESTER, "crowd", "1h", "TYPED-IN-A-COMMAND")
    ok(driver.click_button(DAN, channel=REQUESTS, ts=message.ts, label="Approve"))  # refused
    ok(driver.command(REQUESTER, "/ssh-status", "TYPED-AS-AN-ARGUMENT"))  # refused
    for action, name in unhandled(server):
        found = new_lines(server, action, lambda new, name=name: mentioning(new, name))
        assert len(mentioning(found, name)) == 1, found
    forged = urllib.parse.urlencode({
        "team_id": TEAM, "user_id": REQUESTER, "command": "/ssh-status", "token": BOT_TOKEN,
        "text": "TYPED-IN-A-FORGERY", "response_url": fake.response_url(REQUESTER, "C0G")})
    assert post_twice_signed(server, forged.encode()) == 401
    settle(fake)
    logged = "\n".join(lines(server))
    assert "refused approve " + request_id in logged  # the clicks were logged, their bodies not
    for leak in ("TYPED-", "/response/", "response%2F", "hooks.slack", "xoxb-", "xapp-",
                 BOT_TOKEN, SIGNING_SECRET):
        assert leak not in logged, (leak, [line for line in lines(server) if leak in line])


# --- VOUCH_LOG_FORMAT=json: bolt's lines too ----------------------------------------------

@pytest.fixture(scope="module")
def json_server(tmp_path_factory):
    srv = start(tmp_path_factory, "vouch-json-logs", VOUCH_LOG_FORMAT="json")
    yield srv
    srv.stop()
    srv.fake.stop()


def test_json_logs_are_one_object_a_line_and_bolt_keeps_our_levels(json_server, user_keys):
    from test_bot import REQUESTS, ask, ok, register_key

    server, driver = json_server, json_server.driver
    register_key(server, REQUESTER, user_keys["ed25519"])
    _, message = ask(server, REQUESTER, "prod-db", "1h", "json logs")
    ok(driver.click_button(DAN, channel=REQUESTS, ts=message.ts, label="Approve"))  # refused
    ok(driver.command(f"U0ODD{FORGED}\u2028FAKE\x85FAKE", "/ssh-status"))
    # bolt has no listener for it; bolt's own warning quoted the action_id, line breaks and all
    odd = "old\u2028button\x85"
    new_lines(server, lambda: driver.click(BOB, channel=REQUESTS, ts=message.ts, action_id=odd,
                                           value="x"),
              lambda new: [line for line in new if "unhandled" in line.lower()])
    forged = urllib.parse.urlencode({"team_id": TEAM, "user_id": REQUESTER,
                                     "command": "/ssh-status", "text": ""}).encode()
    assert post_twice_signed(server, forged) == 401  # bolt refuses it (and logged it at INFO)
    settle(server.fake)
    time.sleep(0.3)
    # Collectors differ in where they end a line; Python's splitlines() ends it at the most places.
    entries = [json.loads(line) for line in lines(server)]
    assert all(set(entry) >= {"time", "level", "logger", "message"} for entry in entries)
    assert [e for e in entries if e["message"].startswith("refused approve")
            and DAN in e["message"]], "the refusal is there"
    assert [e["message"] for e in entries if "unhandled" in e["message"]] \
        == [f"unhandled Slack request: block_actions {odd}"]
    quiet = [e for e in entries if e["logger"].split(".")[0] in ("slack_bolt", "slack_sdk", "app")
             and e["level"] in ("debug", "info")]
    assert quiet == [], quiet
