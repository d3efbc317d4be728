"""`vouch host-setup [--target NAME]` prints what a host needs to trust the CA."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

VOUCH = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "vouch")
POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def vouch(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOUCH_")}
    env.update(VOUCH_CA_KEY=str(tmp_path / "ca_key"), VOUCH_POLICY_FILE=str(POLICY),
               VOUCH_PUBLIC_URL="https://vouch.internal", VOUCH_DATABASE_URL=f"sqlite:///{tmp_path}/v.db")
    return subprocess.run([VOUCH, *args], env=env, capture_output=True, text=True, cwd=tmp_path)


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
                 "curl -fsS https://vouch.internal/krl"):
        assert line in out, line


def test_host_setup_unknown_target_is_bad_input(tmp_path):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    result = vouch(tmp_path, "host-setup", "--target", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vouch: unknown target 'nope'; targets: prod-db"]
