"""`vouch host-setup [--target NAME] [--public-url URL]` prints what a host needs to trust the CA."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

VOUCH = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "vouch")
POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def vouch(tmp_path, *args, **env: str | None):
    """`vouch ARGS` with a clean environment; keyword arguments change VOUCH_* (None: unset)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOUCH_")}
    base.update(VOUCH_CA_KEY=str(tmp_path / "ca_key"), VOUCH_POLICY_FILE=str(POLICY),
                VOUCH_PUBLIC_URL="https://vouch.internal",
                VOUCH_DATABASE_URL=f"sqlite:///{tmp_path}/v.db")
    base.update({f"VOUCH_{k.upper()}": v for k, v in env.items()})
    base = {k: v for k, v in base.items() if v is not None}
    return subprocess.run([VOUCH, *args], env=base, capture_output=True, text=True, cwd=tmp_path)


def test_host_setup_for_a_target(tmp_path):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    ca_line = vouch(tmp_path, "ca", "pubkey").stdout.strip()
    result = vouch(tmp_path, "host-setup", "--target", "prod-db")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ca_line in out
    for line in ("TrustedUserCAKeys /etc/ssh/vouch_ca.pub", "RevokedKeys /etc/ssh/vouch_revoked.krl",
                 "AuthorizedPrincipalsFile /etc/ssh/auth_principals/%u",
                 "echo postgres > /etc/ssh/auth_principals/postgres",
                 "https://vouch.internal/krl"):
        assert line in out, line


def test_host_setup_unknown_target_is_bad_input(tmp_path):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    result = vouch(tmp_path, "host-setup", "--target", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vouch: unknown target 'nope'; targets: prod-db"]


@pytest.mark.parametrize("empty", [None, ""])
def test_without_a_public_url_it_prints_no_script(tmp_path, empty):
    """No placeholder URL a host would fetch its KRL from: exit 2 naming both ways to give one."""
    result = vouch(tmp_path, "host-setup", public_url=empty)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "--public-url" in line and "VOUCH_PUBLIC_URL" in line


def test_the_option_wins_over_the_setting(tmp_path):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    result = vouch(tmp_path, "host-setup", "--public-url", "https://krl.example.net:8443/vouch/",
                   public_url=None)
    assert result.returncode == 0, result.stderr
    assert "https://krl.example.net:8443/vouch/krl" in result.stdout
    assert "vouch.internal" not in result.stdout


@pytest.mark.parametrize(("url", "source"), [
    ("ftp://vouch.internal", "--public-url"),
    ("vouch.internal", "--public-url"),
    ("https://", "--public-url"),
    ("https:///krl", "--public-url"),
    ("https://vouch.internal/?x=1", "--public-url"),
    ("https://vouch.internal/$(reboot)", "--public-url"),
    ("file:///etc/passwd", "VOUCH_PUBLIC_URL"),
])
def test_a_public_url_that_is_not_http_with_a_host_is_refused(tmp_path, url, source):
    args = ("--public-url", url) if source == "--public-url" else ()
    env = {"public_url": url} if source == "VOUCH_PUBLIC_URL" else {}
    result = vouch(tmp_path, "host-setup", *args, **env)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert source in line and repr(url) in line, line
