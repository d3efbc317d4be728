"""What `vouch serve` does with hostile HTTP before anything else sees it: a huge body (declared or
streamed) is refused with 413 on every path without the server's memory growing; a malformed body
never gives 500 (unsigned 401, signed but malformed 400); a signed request replayed inside
Slack's 5-minute window is ignored."""

from __future__ import annotations

import http.client
import time
import urllib.parse
from pathlib import Path

import pytest

from e2e_support import REQUESTER, TEAM, Server, make_fake, policy_yaml, rss_mb, settle

MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fake = make_fake()
    srv = Server(tmp_path_factory.mktemp("vouch-edge"), fake, policy_yaml())
    srv.start()
    yield srv
    srv.stop()
    fake.stop()


def post(server: Server, path: str, body, headers: dict) -> tuple[int, bytes]:
    """POST and read the answer; the server may close while a big body is still being sent."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        try:
            connection.request("POST", path, body=body, headers=headers,
                               encode_chunked="Content-Length" not in headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered (413) and stopped reading: the answer is still there to read
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def chunks(total: int, size: int = 64 * 1024):
    piece = b"x" * size
    for _ in range(total // size):
        yield piece


def test_a_declared_huge_body_is_refused_before_it_is_read(server):
    before = rss_mb(server.proc.pid)
    for path in ("/slack/events", "/healthz", "/krl", "/nowhere"):
        started = time.monotonic()
        status, _ = post(server, path, chunks(300 * MB),
                         {"Content-Length": str(300 * MB),
                          "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 413, path
        assert time.monotonic() - started < 5, path
    assert rss_mb(server.proc.pid) - before < 10


def test_a_streamed_huge_body_is_cut_off_at_one_megabyte(server):
    before = rss_mb(server.proc.pid)
    status, body = post(server, "/slack/events", chunks(300 * MB),
                        {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413 and b"1 MB" in body
    assert rss_mb(server.proc.pid) - before < 10
    status, _ = post(server, "/slack/events", b"x" * (MB + 1),
                     {"Content-Length": str(MB + 1)})
    assert status == 413


def test_malformed_bodies_get_401_or_400_never_500(server):
    driver = server.driver
    cases = [
        (b"payload=%7Bnot+json", "application/x-www-form-urlencoded"),
        (b"payload=%5B1%2C2%5D", "application/x-www-form-urlencoded"),  # JSON, not an object
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
        (b"[]", "application/json"),
    ]
    for body, content_type in cases:
        unsigned = driver.raw(body, {}, content_type)
        assert unsigned.status == 401, (body, unsigned)
        forged = driver.raw(body, {**driver.sign(body), "X-Slack-Signature": "v0=" + "0" * 64},
                            content_type)
        assert forged.status == 401, (body, forged)
        signed = driver.raw(body, driver.sign(body), content_type)
        assert signed.status == 400, (body, signed)
    stale = driver.raw(b"command=%2Fssh-status", driver.sign(b"command=%2Fssh-status",
                                                             int(time.time()) - 400),
                       "application/x-www-form-urlencoded")
    assert stale.status == 401


def test_a_replayed_request_is_ignored(server):
    fake, driver = server.fake, server.driver
    hook = fake.response_url(REQUESTER, "C0GENERAL")
    body = urllib.parse.urlencode({
        "team_id": TEAM, "user_id": REQUESTER, "user_name": "alice", "command": "/ssh-status",
        "text": "", "channel_id": "C0GENERAL", "channel_name": "general",
        "response_url": hook, "trigger_id": fake.new_trigger_id(REQUESTER)}).encode()
    headers = driver.sign(body)
    before = len(fake.calls_to("response_url"))
    first = driver.raw(body, headers, "application/x-www-form-urlencoded")
    assert first.status == 200
    fake.wait_for(lambda: len(fake.calls_to("response_url")) == before + 1)
    again = driver.raw(body, headers, "application/x-www-form-urlencoded")
    assert again.status == 200 and again.body == ""
    settle(fake)
    assert len(fake.calls_to("response_url")) == before + 1  # done once
    fresh = driver.raw(body, driver.sign(body), "application/x-www-form-urlencoded")
    assert fresh.status == 200  # the same command, signed anew, is a new request


def mrkdwn_strings(blocks) -> list[str]:
    """Every mrkdwn text in a message's blocks (where Slack would format, ping and link)."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            if value.get("type") == "mrkdwn":
                found.append(value.get("text", ""))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    walk(blocks)
    return found


def test_what_people_type_cannot_ping_link_or_format(server, user_keys):
    from test_bot import BOB, REQUESTS, ask, certificate_line, ok, register_key, wait_dm

    fake, driver = server.fake, server.driver
    register_key(server, REQUESTER, user_keys["ed25519"])
    reason = "<!channel> *urgent* <https://evil.example|the runbook> & <@U0BOB> `x`"
    request_id, message = ask(server, REQUESTER, "prod-db", "1h", reason)
    # Blocks are what Slack shows: no user text in their mrkdwn. The text (notifications, screen
    # readers) carries it escaped, so it cannot ping or link.
    for text in mrkdwn_strings(message.blocks):
        assert "urgent" not in text and "evil" not in text, text
    for dangerous in ("<!channel>", "<https://evil", "<@U0BOB> &"):
        assert dangerous not in message.text, (dangerous, message.text)
    assert "&lt;!channel&gt;" in message.text
    plain = [b["text"]["text"] for b in message.blocks
             if b.get("type") == "section" and b.get("text", {}).get("type") == "plain_text"]
    assert reason in plain  # shown exactly as typed, as plain text
    ok(driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
    dm = wait_dm(fake, REQUESTER, request_id)
    assert certificate_line(dm.text)
    ok(driver.command(REQUESTER, "/ssh-revoke", f"{request_id} <!here> lost <http://x|y>"))
    note = fake.wait_for(lambda: [m for m in fake.replies(REQUESTS, message.ts)
                                  if "revoked" in m.text])[-1]
    for text in mrkdwn_strings(note.blocks) + [note.text]:
        assert "<!here>" not in text and "<http://x|y>" not in text, text
    assert "<!here> lost <http://x|y>" in [b["text"]["text"] for b in note.blocks
                                           if b["text"]["type"] == "plain_text"]


def serial_of(line: str, tmp_path: Path) -> int:
    """A certificate's serial as `ssh-keygen -L` reads it."""
    import subprocess

    (tmp_path / "cert.pub").write_text(line)
    shown = subprocess.run(["ssh-keygen", "-L", "-f", str(tmp_path / "cert.pub")],
                           capture_output=True, text=True, check=True).stdout
    return int(shown.split("Serial: ")[1].split()[0])


def test_the_krl_carries_an_etag_and_answers_304_until_a_revocation(server, user_keys, tmp_path):
    import urllib.error
    import urllib.request

    from ca.krl import decode_krl

    def get(etag: str | None = None):
        request = urllib.request.Request(server.url + "/krl",
                                         headers={"If-None-Match": etag} if etag else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read(), answer.headers.get("ETag")
        except urllib.error.HTTPError as answer:
            return answer.code, answer.read(), answer.headers.get("ETag")

    status, first, etag = get()
    assert status == 200 and etag and decode_krl(first)
    assert get(etag)[:2] == (304, b"")
    assert get('"something-else"')[0] == 200
    signed = server.vouch("ca", "sign", str(user_keys["ecdsa-p256"].public_path), "--principal",
                          "root", "--duration", "10m", "--reason", "KRL test")
    serial = serial_of(signed.stdout, tmp_path)
    server.vouch("revoke", str(serial), "--reason", "KRL test")
    status, body, new_etag = get(etag)
    assert status == 200 and new_etag != etag
    assert any(s.revokes_serial(serial) for s in decode_krl(body).certificates)
    assert get(new_etag)[0] == 304


def test_a_deactivated_user_is_refused_from_the_moment_slack_says_so(server):
    fake, driver = server.fake, server.driver
    leaver = "U0LEAVER"
    fake.add_user(leaver, "leaver")

    def status_reply() -> str:
        before = len(fake.calls_to("response_url"))
        assert driver.command(leaver, "/ssh-status").status == 200
        fake.wait_for(lambda: len(fake.calls_to("response_url")) > before)
        return fake.calls_to("response_url")[-1].params.get("text", "")

    assert "no pending requests" in status_reply()
    fake.add_user(leaver, "leaver", deleted=True)  # deactivated in Slack
    assert "no pending requests" in status_reply()  # what Vouch knew of them, for up to 60 s
    answer = driver.event({"type": "user_change", "user": {"id": leaver, "deleted": True}})
    assert answer.status == 200
    assert "Deactivated accounts cannot use Vouch" in status_reply()
