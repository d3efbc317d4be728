"""Scheduled jobs (issue 14) through `vouch serve`, with short durations so they happen in
seconds: offboarding by Slack's user_change event (a real sshd then refuses the certificate once
the KRL is fetched) and by the users.info sweep, and the daily digest, posted once even across a
restart."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone

import pytest

from e2e_support import BOB, DAN, REQUESTER, Server, make_fake, policy_yaml, settle
from support.sshd import Sshd, ensure_test_user, require_sshd
from test_bot import (DB_PRINCIPAL, REQUESTS, SECURITY, ask, certificate_line, certificates_of,
                      ok, register_key, state, wait_dm, wait_state)


def start(tmp_path, user_keys, **env) -> Server:
    fake = make_fake()
    server = Server(tmp_path, fake, policy_yaml(), extra_env=env)
    server.start()
    for user, name in ((REQUESTER, "ed25519"), (DAN, "ecdsa-p256")):
        register_key(server, user, user_keys[name])
    settle(fake)
    return server


@pytest.fixture
def server(tmp_path, user_keys):
    srv = start(tmp_path / "vouch", user_keys)
    yield srv
    srv.stop()
    srv.fake.stop()
    assert srv.proc.returncode in (0, -signal.SIGTERM)


def issue(server: Server, user: str, reason: str) -> tuple[str, int, str]:
    request_id, message = ask(server, user, "prod-db", "1h", reason)
    ok(server.driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
    line = certificate_line(wait_dm(server.fake, user, request_id).text)
    wait_state(server, request_id, "issued")
    [(serial, _, _)] = certificates_of(server, request_id)
    return request_id, serial, line


def offboarded_post(server: Server, user: str):
    return server.fake.wait_for(lambda: [m for m in server.fake.messages(SECURITY)
                                         if "Offboarded" in m.text and f"<@{user}>" in m.text],
                                timeout=8)


def test_a_user_deactivated_in_slack_loses_everything_at_once(server, user_keys, tmp_path):
    require_sshd()
    fake = server.fake
    request_id, serial, line = issue(server, DAN, "before they leave")
    pending, _ = ask(server, DAN, "payments", "1h", "still pending when they leave")
    fake.add_user(DAN, "dan", deleted=True)
    ok(server.driver.event({"type": "user_change",
                            "user": {"id": DAN, "deleted": True, "name": "dan"}}))
    [post] = offboarded_post(server, DAN)
    assert str(serial) in post.text and pending in post.text and "key" in post.text
    wait_state(server, request_id, "revoked")
    assert state(server, pending) == "cancelled"
    assert server.scalar("SELECT count(*) FROM user_keys WHERE user_id = ? AND removed_at IS NULL",
                         DAN) == 0
    # hosts refuse the certificate as soon as they fetch the KRL
    login_user = ensure_test_user()
    cert, private = tmp_path / "id-cert.pub", tmp_path / "id"
    cert.write_text(line + "\n")
    private.write_bytes(user_keys["ecdsa-p256"].private.read_bytes())
    private.chmod(0o600)
    krl = server.get("/krl").body
    with Sshd(tmp_path / "sshd", trusted_ca_keys=[server.get("/ca.pub").text.strip()],
              principals={login_user: [DB_PRINCIPAL]}, revoked_keys=krl) as sshd:
        result = sshd.login(private, cert)
    assert not result.ok, "a deactivated user's certificate still logs in"
    # the sweep that follows finds nothing more to do, and says nothing
    settle(fake)
    assert len(offboarded_post(server, DAN)) == 1


def test_the_sweep_offboards_a_user_slack_made_a_guest_without_an_event(tmp_path, user_keys):
    server = start(tmp_path / "vouch", user_keys, VOUCH_OFFBOARDING_INTERVAL="1s")
    try:
        _, serial, _ = issue(server, REQUESTER, "a guest soon")
        server.fake.add_user(REQUESTER, "alice", is_restricted=True)
        [post] = offboarded_post(server, REQUESTER)
        assert str(serial) in post.text and "guest" in post.text
        assert server.scalar("SELECT revoked_by FROM certificates") == "vouch"
        settle(server.fake, quiet=2.5)  # more sweeps: nothing more to say
        assert len(offboarded_post(server, REQUESTER)) == 1
    finally:
        server.stop()
        server.fake.stop()


def test_the_daily_digest_is_posted_once_at_its_time_even_across_a_restart(tmp_path, user_keys):
    due = datetime.now(timezone.utc) + timedelta(seconds=12)
    env = {"VOUCH_DIGEST_AT": f"{due:%H:%M:%S}"}
    server = start(tmp_path / "vouch", user_keys, **env)
    try:
        issue(server, REQUESTER, "counted in the digest")
        fake = server.fake

        def digests():
            return [m for m in fake.messages(SECURITY) if "daily digest" in m.text]

        [digest] = fake.wait_for(digests, timeout=25)
        assert "Certificates issued:* 1 (prod-db 1)" in digest.text, digest.text
        assert "Break-glass uses:* 0" in digest.text
        server.stop()
        restarted = Server(server.workdir, fake, server.policy, extra_env=env)
        restarted.start(init=False)
        try:
            settle(fake, quiet=2.5)
            assert len(digests()) == 1
        finally:
            restarted.stop()
    finally:
        server.stop()
        server.fake.stop()
