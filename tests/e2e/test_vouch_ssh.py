"""`vouch ssh` and `vouch request` as a user runs them: the client in a subprocess with a real
ssh-agent holding the user's key, `vouch serve` behind the fake Slack, an approver clicking
Approve through the signed driver, and a throwaway sshd the client logs into."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from ca.keys import parse_public_key
from conftest import UserKey
from e2e_support import (BOB, DAN, DB_PRINCIPAL, REQUESTER, VOUCH, Server, base_env, make_fake,
                         policy_yaml, settle)
from support.sshd import Sshd, ensure_test_user, require_sshd
from test_bot import REQUESTS, deny, ok, register_key, request_message, shown, state

MARKER = "landed-through-vouch"


@pytest.fixture(scope="module")
def server(tmp_path_factory, user_keys):
    fake = make_fake()
    srv = Server(tmp_path_factory.mktemp("vouch-ssh"), fake, policy_yaml())
    srv.workdir.mkdir(parents=True, exist_ok=True)
    made = srv.vouch("ca", "init", "--host", check=False)  # hosts present Vouch certificates
    assert made.returncode == 0, made.stderr
    srv.start()
    register_key(srv, REQUESTER, user_keys["ed25519"])
    settle(fake)
    yield srv
    srv.stop()
    fake.stop()


@pytest.fixture
def home(tmp_path, user_keys):
    """A user's home: their registered key as ~/.ssh/id_ed25519, and a running ssh-agent."""
    home = tmp_path / "home"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    key = user_keys["ed25519"]
    shutil.copy(key.private, ssh_dir / "id_ed25519")
    (ssh_dir / "id_ed25519").chmod(0o600)
    shutil.copy(key.public_path, ssh_dir / "id_ed25519.pub")
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    env = {**base_env(), "HOME": str(home), "SSH_AUTH_SOCK": str(socket)}
    subprocess.run(["ssh-add", str(ssh_dir / "id_ed25519")], env=env, check=True,
                   capture_output=True)
    yield home, env
    agent.terminate()
    agent.wait(5)


def client(env: dict, server: Server, *args: str) -> subprocess.Popen:
    env = {**env, "VOUCH_URL": server.url}
    return subprocess.Popen([VOUCH, *args], env=env, cwd=env["HOME"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def test_vouch_ssh_asks_waits_for_the_vouch_and_logs_in(server, home, tmp_path):
    require_sshd()
    home_dir, env = home
    login_user = ensure_test_user()
    # The host presents a certificate from Vouch's host CA; the user has never seen it before.
    host_dir = tmp_path / "sshd"
    host_dir.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(host_dir / "ssh_host_ed25519_key")], check=True)
    host_cert = host_dir / "ssh_host_ed25519_key-cert.pub"
    server.vouch("ca", "sign-host", str(host_dir / "ssh_host_ed25519_key.pub"), "--hostname",
                 "db1.test", "--reason", "vouch ssh test host", "--out", str(host_cert))
    known_hosts = home_dir / ".ssh" / "known_hosts"
    assert not known_hosts.exists()
    with Sshd(host_dir, trusted_ca_keys=[server.get("/ca.pub").text.strip()],
              principals={login_user: [DB_PRINCIPAL]}, host_certificate=host_cert) as sshd:
        # StrictHostKeyChecking yes: it connects only because vouch ssh added the host CA.
        ssh_args = ["--", "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o",
                    f"UserKnownHostsFile={known_hosts}", "-o", "HostKeyAlias=db1.test",
                    "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-p", str(sshd.port),
                    f"{login_user}@127.0.0.1", "echo", MARKER]
        before = server.scalar("SELECT count(*) FROM requests")
        running = client(env, server, "ssh", "prod-db", "--duration", "30m", "--reason",
                         "terminal: slow queries", *ssh_args)
        try:
            message = request_message(server, "terminal: slow queries", timeout=15)
        except AssertionError:
            running.kill()
            raise AssertionError(running.communicate()) from None
        assert "from the terminal, key proven" in shown(message)
        ok(server.driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
        out, err = running.communicate(timeout=60)
        assert running.returncode == 0, err
        assert MARKER in out.split()
        assert "waiting for approval in #access-requests: request req-" in err
        assert "0 of 1 approvals" in err and "approved by bob (1 of 1 approvals)" in err
        assert "Accepted certificate ID" in sshd.log
        assert "added Vouch's host CA to ~/.ssh/known_hosts" in err
        assert known_hosts.read_text() == server.get("/known_hosts").text

        cert = home_dir / ".ssh" / "id_ed25519-cert.pub"
        assert cert.stat().st_mode & 0o777 == 0o644
        shown_cert = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True,
                                    text=True, check=True).stdout
        assert DB_PRINCIPAL in shown_cert
        listed = subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, text=True).stdout
        assert "ED25519-CERT" in listed, listed  # the agent holds key and certificate

        # Again: the certificate is still good, so no new request; straight in.
        again = client(env, server, "ssh", "prod-db", "--reason", "once more", *ssh_args)
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0 and MARKER in out.split(), err
        assert "reusing the certificate" in err
        assert server.scalar("SELECT count(*) FROM requests") == before + 1


def test_ctrl_c_while_waiting_cancels_the_request(server, home):
    _, env = home
    running = client(env, server, "request", "prod-db", "1h", "terminal:", "cancel", "me")
    message = request_message(server, "terminal: cancel me", timeout=15)
    request_id = server.scalar("SELECT id FROM requests WHERE reason = 'terminal: cancel me'")
    running.send_signal(signal.SIGINT)
    out, err = running.communicate(timeout=30)
    assert running.returncode == 1, err
    assert f"request {request_id} cancelled" in err
    assert state(server, request_id) == "cancelled"
    server.fake.wait_for(lambda: "cancelled" in shown(server.fake.message(REQUESTS, message.ts)))


def test_a_denied_request_ends_with_exit_1_and_the_reason(server, home):
    home_dir, env = home
    running = client(env, server, "request", "prod-db", "1h", "terminal: deny me")
    message = request_message(server, "terminal: deny me", timeout=15)
    deny(server, BOB, message.ts, "use the read replica")
    out, err = running.communicate(timeout=30)
    assert running.returncode == 1
    assert "denied by bob: use the read replica" in err
    assert not (home_dir / ".ssh" / "id_ed25519-cert.pub").exists()


@pytest.mark.parametrize("args, says", [
    (["request", "nope", "1h", "why"], "unknown target 'nope'"),
    (["request", "prod-db", "soon", "why"], "duration"),
    (["request", "prod-db", "9h", "why"], "4h"),
    (["ssh", "prod-db", "--reason", "why"], "say where to log in"),
    (["request", "prod-db", "1h", "why", "--key", "/nonexistent/id"], "no public key"),
])
def test_bad_input_exits_2_with_one_clear_line(server, home, args, says):
    _, env = home
    done = client(env, server, *args)
    out, err = done.communicate(timeout=30)
    assert done.returncode == 2, err
    assert says in err and "Traceback" not in err


def test_without_a_server_url_it_says_where_to_set_one(home):
    _, env = home
    done = subprocess.run([VOUCH, "request", "prod-db", "1h", "why"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "VOUCH_URL" in done.stderr


def test_without_an_agent_a_passphrase_protected_key_signs_after_asking(server, tmp_path):
    """No ssh-agent: ssh-keygen signs with the key file itself, asking for its passphrase
    (here through SSH_ASKPASS, as a desktop prompt would)."""
    home_dir = tmp_path / "plain-home"
    (home_dir / ".ssh").mkdir(parents=True, mode=0o700)
    key = home_dir / ".ssh" / "id_ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "correct horse", "-f", str(key)],
                   check=True)
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho 'correct horse'\n")
    askpass.chmod(0o700)
    public = parse_public_key((home_dir / ".ssh" / "id_ecdsa.pub").read_text())
    register_key(server, DAN, UserKey("dan-ecdsa", key, public, key.with_suffix(".pub")))
    env = {**base_env(), "HOME": str(home_dir), "SSH_ASKPASS": str(askpass),
           "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    env.pop("SSH_AUTH_SOCK", None)
    running = client(env, server, "request", "prod-db", "20m", "terminal: no agent")
    message = request_message(server, "terminal: no agent", timeout=15)
    ok(server.driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
    out, err = running.communicate(timeout=60)
    assert running.returncode == 0, err
    cert = home_dir / ".ssh" / "id_ecdsa-cert.pub"
    assert out.strip() == str(cert) and cert.exists()
    assert "not added to ssh-agent: no ssh-agent running" in err
