"""`vouch serve` refuses to start with one clear line (exit 2) when something it needs is missing,
a placeholder, or broken — before it listens."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from e2e_support import (BOT_TOKEN, SIGNING_SECRET, VOUCH, base_env, free_port, make_fake,
                         policy_yaml, rss_mb)


@pytest.fixture(scope="module")
def slack():
    fake = make_fake()
    yield fake
    fake.stop()


@pytest.fixture
def env(tmp_path, slack):
    (tmp_path / "policy.yaml").write_text(policy_yaml())
    values = {**base_env(), "VOUCH_SLACK_BOT_TOKEN": BOT_TOKEN,
              "VOUCH_SLACK_SIGNING_SECRET": SIGNING_SECRET, "VOUCH_SLACK_API_URL": slack.base_url,
              "VOUCH_DATABASE_URL": f"sqlite:///{tmp_path / 'vouch.db'}",
              "VOUCH_POLICY_FILE": str(tmp_path / "policy.yaml"),
              "VOUCH_CA_KEY": str(tmp_path / "ca_key")}
    subprocess.run([VOUCH, "ca", "init"], env=values, check=True, capture_output=True, cwd=tmp_path)
    return values


def serve(env: dict, port: int | None = None) -> subprocess.CompletedProcess:
    cwd = Path(env["VOUCH_CA_KEY"]).parent  # where its audit key is (created by `ca init`)
    return subprocess.run([VOUCH, "serve", "--port", str(port or free_port())], env=env,
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def refused(result: subprocess.CompletedProcess, *phrases: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.startswith("vouch:")]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.parametrize("variable, value, phrases", [
    ("VOUCH_SLACK_BOT_TOKEN", None, ("VOUCH_SLACK_BOT_TOKEN is not set",)),
    ("VOUCH_SLACK_BOT_TOKEN", "xoxb-your-token-here", ("VOUCH_SLACK_BOT_TOKEN", "placeholder")),
    ("VOUCH_SLACK_BOT_TOKEN", "not-a-bot-token", ("should start with xoxb-",)),
    ("VOUCH_SLACK_SIGNING_SECRET", None, ("VOUCH_SLACK_SIGNING_SECRET is not set",)),
    ("VOUCH_SLACK_SIGNING_SECRET", "changeme", ("placeholder",)),
    ("VOUCH_SLACK_BOT_TOKEN", "xoxb-wrong-token", ("Slack did not accept VOUCH_SLACK_BOT_TOKEN",)),
    ("VOUCH_SCHEDULER_INTERVAL", "soon", ("not a duration",)),
])
def test_missing_or_placeholder_settings(env, variable, value, phrases):
    if value is None:
        env.pop(variable)
    else:
        env[variable] = value
    refused(serve(env), *phrases)


def test_secret_from_a_file_in_the_secrets_dir(env, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "VOUCH_SLACK_BOT_TOKEN").write_text("xoxb-your-token-here\n")
    env.pop("VOUCH_SLACK_BOT_TOKEN")
    env["VOUCH_SECRETS_DIR"] = str(secrets)
    refused(serve(env), "VOUCH_SLACK_BOT_TOKEN", "placeholder")  # read from the file


def test_bad_policy_and_missing_ca(env, tmp_path):
    (tmp_path / "policy.yaml").write_text("targets:\n  web:\n    principals: [www]\n")
    result = serve(env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    problems = result.stderr.splitlines()
    assert len(problems) == 2 and all(line.startswith(env["VOUCH_POLICY_FILE"] + ":2: ")
                                      for line in problems), problems
    assert "needs max_duration" in result.stderr and "needs approvers" in result.stderr
    (tmp_path / "policy.yaml").write_text(policy_yaml())
    env["VOUCH_CA_KEY"] = str(tmp_path / "absent_key")
    result = serve(env)
    assert result.returncode == 1 and "does not exist: create it with `vouch ca init`" in result.stderr


def test_database_behind_migrations_says_to_upgrade(env, tmp_path):
    import sqlite3

    subprocess.run([VOUCH, "db", "upgrade"], env=env, check=True, capture_output=True,
                   cwd=tmp_path)
    with sqlite3.connect(tmp_path / "vouch.db") as db:
        db.execute("UPDATE alembic_version SET version_num='0000'")
    result = serve(env)
    assert result.returncode == 1 and "migration 0000" in result.stderr


def test_port_in_use(env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        refused(serve(env, taken.getsockname()[1]), "cannot listen on 127.0.0.1")


def test_sighup_reloads_the_policy_and_keeps_the_old_one_if_the_new_is_bad(tmp_path, slack, user_keys):
    import json
    import os
    import signal
    import time

    from e2e_support import Server

    server = Server(tmp_path / "srv", slack, policy_yaml()).start()
    try:
        def actions() -> list[str]:
            out = server.vouch("audit", "export").stdout
            return [json.loads(line)["action"] for line in out.splitlines()]

        def wait_for(action: str) -> None:
            deadline = time.monotonic() + 10
            while action not in actions():
                assert time.monotonic() < deadline, actions()
                time.sleep(0.1)

        good = policy_yaml().replace("targets:\n", "targets:\n  extra-target:\n    principals: [extra]\n"
                                     "    max_duration: 1h\n    approvers: [U0BOB]\n", 1)
        (server.workdir / "policy.yaml").write_text(good)
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_for("policy.reloaded")
        (server.workdir / "policy.yaml").write_text("targets: [not, a, mapping\n")
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_for("policy.reload_refused")
        assert "policy reload refused, keeping the previous policy" in server.log()
        # An alias bomb is refused at once, and memory does not grow.
        before = rss_mb(server.proc.pid)
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
        (server.workdir / "policy.yaml").write_text(bomb + "targets: *i\n")
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while actions().count("policy.reload_refused") < 2:
            assert time.monotonic() < deadline, actions()
            time.sleep(0.1)
        assert "aliases (*name) are not allowed" in server.log()
        assert rss_mb(server.proc.pid) - before < 20
        # The process still runs on the good policy: the target added by the reload is known.
        server.vouch("ca", "pubkey")
        register = server.driver.command("U0REQ", "/ssh-key", "add " + user_keys["ed25519"].public.line())
        assert register.status == 200
        slack.wait_for(lambda: any("Registered" in e["text"] or "Already" in e["text"]
                                   for e in slack.ephemerals("U0REQ")))
        asked = server.driver.command("U0REQ", "/ssh-request", "extra-target 30m after the reload")
        assert asked.status == 200
        slack.wait_for(lambda: any("extra-target" in m.text for m in slack.messages("C0REQUESTS")))
        assert server.proc.poll() is None
    finally:
        server.stop()



def test_serve_starts_on_a_policy_that_policy_check_only_warns_of(tmp_path, slack):
    from e2e_support import Server

    warned = policy_yaml().replace("targets:\n", "targets:\n  solo:\n    principals: [solo]\n"
                                   "    max_duration: 8d\n    approvers: [U0BOB]\n"
                                   "    requesters: [U0BOB]\n", 1)
    server = Server(tmp_path / "srv", slack, warned)
    server.start()  # raises unless /healthz answers
    try:
        checked = server.vouch("policy", "check", check=False)
        assert checked.returncode == 0, checked.stderr
        assert "max_duration 8d is longer than 7 days" in checked.stderr
        assert "target 'solo' can never be approved" in checked.stderr
        assert server.get("/readyz").status == 200
    finally:
        server.stop()
