"""What `vouch serve` writes to its log (stderr), read as an operator reads it: one line for each
refusal, nothing a person typed can forge a line, no request bodies, response_urls or secrets,
and with VOUCH_LOG_FORMAT=json every line is one JSON object, bolt's own lines included."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from e2e_support import BOB, DAN, REQUESTER, Server, make_fake, policy_yaml, settle

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
    assert mentioning(found, r"U0ODD\nFAKE vouch: approved\r\nFAKE 2\u2028FAKE 3\x85FAKE 4\x1b[2J"), \
        found
    new_lines(server, lambda: driver.click(BOB, channel=REQUESTS, ts=next(iter(
        server.fake.messages(REQUESTS))).ts, action_id="no_such_button", value="x"),
        lambda new: mentioning(new, "no_such_button"))
    logged = lines(server)
    assert not [line for line in logged if line.lstrip().startswith("FAKE")], logged
    assert [line for line in logged if not RECORD.match(line)] == [], "a record over several lines"
