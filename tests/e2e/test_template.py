"""The certificate is what the approver saw (issue 12), through `vouch serve` and the fake Slack:
the template is fixed when a request is opened, shown on its card and signed exactly; a policy
reloaded (SIGHUP) to forbid it signs nothing; revoking an approved request before its
certificate exists cancels it."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import textwrap

import pytest

from e2e_support import ADMIN, BOB, REQUESTER, Server, make_fake, settle

REQUESTS = "C0REQUESTS"


def policy(*, principals: str = "[deploy]", force_command: str = "/usr/local/bin/deploy",
           source_address: str = "[10.0.0.0/8]") -> str:
    return textwrap.dedent(f"""\
        requests_channel: C0REQUESTS
        security_channel: C0SECURITY
        admins: [{ADMIN}]
        targets:
          web:
            principals: {principals}
            max_duration: 4h
            approvers: [{BOB}]
            force_command: {force_command}
            source_address: {source_address}
            extensions: [permit-pty, permit-agent-forwarding]
        """)


@pytest.fixture(scope="module")
def server(tmp_path_factory, user_keys):
    fake = make_fake()
    srv = Server(tmp_path_factory.mktemp("vouch-template"), fake, policy())
    srv.start()
    srv.driver.command(REQUESTER, "/ssh-key",
                       "add " + user_keys["ed25519"].public_path.read_text().strip())
    settle(fake)
    yield srv
    srv.stop()
    fake.stop()


def reload(server: Server, text: str) -> None:
    (server.workdir / "policy.yaml").write_text(text)
    def reloads() -> int:  # the audit log, not the log file (Server.log() is only its tail)
        return server.scalar("SELECT count(*) FROM audit_events WHERE action = 'policy.reloaded'")

    before = reloads()
    server.proc.send_signal(signal.SIGHUP)
    server.fake.wait_for(lambda: reloads() > before)


def ask(server: Server, reason: str):
    server.driver.command(REQUESTER, "/ssh-request", f"web 1h {reason}")
    fake = server.fake
    ts = fake.wait_for(lambda: server.scalar(
        "SELECT m.ts FROM slack_messages AS m JOIN requests AS r ON r.id = m.request_id "
        "WHERE r.reason = ?", reason))
    settle(fake)
    message = fake.message(REQUESTS, ts)
    return re.search(r"Access request (\S+):", message.text).group(1), message


def shown(message) -> str:
    return message.text + " " + str(message.blocks)


def dms(server: Server, user: str) -> list[str]:
    return [m.text for m in server.fake.messages(server.fake.dm_channel(user))]


def test_the_card_shows_the_template_and_the_certificate_is_exactly_it(server, tmp_path):
    request_id, message = ask(server, "ship the release")
    card = shown(message)
    for fact in ("deploy", "force-command /usr/local/bin/deploy", "source-address 10.0.0.0/8",
                 "permit-agent-forwarding, permit-pty"):
        assert fact in card, card
    # the policy widens after the approver saw the card: the certificate stays as shown
    reload(server, policy(principals="[deploy, root]", force_command="null",
                          source_address="null"))
    server.driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve")
    line = server.fake.wait_for(lambda: [t for t in dms(server, REQUESTER)
                                         if "-cert-v01@openssh.com" in t])[-1]
    cert = re.search(r"\S+-cert-v01@openssh\.com \S+", line).group(0)
    (tmp_path / "id-cert.pub").write_text(cert + "\n")
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(tmp_path / "id-cert.pub")],
                             capture_output=True, text=True, check=True).stdout
    principals = listing.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == ["deploy"]
    assert "force-command /usr/local/bin/deploy" in listing
    assert "source-address 10.0.0.0/8" in listing
    extensions = listing.split("Extensions:")[1].split()
    assert sorted(extensions) == ["permit-agent-forwarding", "permit-pty"]
    reload(server, policy())


@pytest.mark.parametrize("change, why", [
    ({"principals": "[deploy-ro]"}, "no longer allows the principals deploy"),
    ({"force_command": "/usr/local/bin/deploy-safely"},
     "now requires force-command /usr/local/bin/deploy-safely"),
])
def test_what_the_policy_no_longer_allows_is_not_signed_and_the_requester_is_told(
        server, change, why):
    request_id, message = ask(server, f"deploy while the policy changes {len(why)}")
    reload(server, policy(**change))
    try:
        server.driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve")
        told = server.fake.wait_for(lambda: [t for t in dms(server, REQUESTER)
                                             if request_id in t and "nothing was signed" in t])
        assert why in told[-1]
        server.fake.wait_for(lambda: "not signed" in shown(server.fake.message(REQUESTS, message.ts)))
        assert server.scalar("SELECT state FROM requests WHERE id = ?", request_id) == "cancelled"
        assert server.scalar("SELECT count(*) FROM certificates WHERE request_id = ?",
                             request_id) == 0
    finally:
        reload(server, policy())


def signer_outage(server: Server, request_id: str) -> None:
    """The state a long signer outage leaves behind, every retry used: approved, no certificate."""
    with sqlite3.connect(server.db_path, timeout=10) as db:
        db.execute("UPDATE requests SET state = 'approved', issue_attempts = 12, "
                   "issue_error = 'PKCS#11 token not present' WHERE id = ?", (request_id,))


def test_revoking_an_approved_request_with_no_certificate_cancels_it(server):
    request_id, message = ask(server, "approved while the CA is down")
    signer_outage(server, request_id)
    server.driver.command(BOB, "/ssh-revoke", request_id)
    settle(server.fake)
    assert server.scalar("SELECT state FROM requests WHERE id = ?", request_id) == "approved"
    server.driver.command(REQUESTER, "/ssh-revoke", f"{request_id} not needed any more")
    server.fake.wait_for(lambda: server.scalar("SELECT state FROM requests WHERE id = ?",
                                               request_id) == "cancelled")
    server.fake.wait_for(lambda: "cancelled" in shown(server.fake.message(REQUESTS, message.ts)))
    replies = server.fake.wait_for(lambda: [m.text for m in server.fake.replies(REQUESTS, message.ts)
                                            if "before its certificate" in m.text])
    assert "not needed any more" in replies[-1]
    assert server.scalar("SELECT count(*) FROM certificates WHERE request_id = ?", request_id) == 0
    cli = server.vouch("revoke", request_id, check=False)
    assert cli.returncode != 0 and "no certificate" in cli.stderr


def test_vouch_revoke_cancels_an_approved_request_with_no_certificate(server):
    request_id, message = ask(server, "approved while the CA is down, revoked by an operator")
    signer_outage(server, request_id)
    cli = server.vouch("revoke", request_id, "--reason", "incident closed")
    assert f"cancelled: request {request_id}" in cli.stdout
    assert server.scalar("SELECT state FROM requests WHERE id = ?", request_id) == "cancelled"
