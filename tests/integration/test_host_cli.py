"""The host-certificate commands, run as `vouch …` in a clean environment: `ca init --host`,
`ca pubkey --host`, `ca sign-host` (checked with ssh-keygen -L), `host token`, and `revoke`/`krl`
for host certificates."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

VOUCH = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "vouch")


def vouch(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOUCH_")}
    base.update(VOUCH_CA_KEY=str(tmp_path / "ca_key"),
                VOUCH_DATABASE_URL=f"sqlite:///{tmp_path}/v.db")
    base.update({f"VOUCH_{k.upper()}": v for k, v in env.items()})
    return subprocess.run([VOUCH, *args], env=base, capture_output=True, text=True, cwd=tmp_path)


def keygen(path: Path, *args: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", *args, "-N", "", "-C", "host", "-f", str(path)],
                   check=True)
    return Path(f"{path}.pub")


def events(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in vouch(tmp_path, "audit", "export").stdout.splitlines()]


@pytest.fixture
def host_ca(tmp_path) -> str:
    made = vouch(tmp_path, "ca", "init", "--host")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_ca_init_host_makes_a_separate_key_that_ca_pubkey_host_prints(tmp_path, host_ca):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    key = tmp_path / "host_ca_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Path(f"{key}.pub").read_text().strip() == host_ca
    assert host_ca.startswith("ecdsa-sha2-nistp256 ") and host_ca.endswith(" vouch-host-ca")
    assert vouch(tmp_path, "ca", "pubkey", "--host").stdout.strip() == host_ca
    assert vouch(tmp_path, "ca", "pubkey").stdout.split()[1] != host_ca.split()[1]
    again = vouch(tmp_path, "ca", "init", "--host", "--type", "ed25519")
    assert again.returncode == 2 and "already exists" in again.stderr
    other = vouch(tmp_path, "ca", "init", "--host", "--type", "ed25519", "--key", "hk2")
    assert other.returncode == 0 and other.stdout.startswith("ssh-ed25519 ")


def test_the_host_ca_is_never_the_user_ca_key(tmp_path):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    refused = vouch(tmp_path, "ca", "init", "--host", "--force", "--key", str(tmp_path / "ca_key"))
    assert refused.returncode == 2 and "is the user CA key" in refused.stderr
    pub = keygen(tmp_path / "hk", "-t", "ed25519")
    shared = vouch(tmp_path, "ca", "sign-host", str(pub), "--hostname", "db1", "--reason", "x",
                   host_ca_key=str(tmp_path / "ca_key"))
    assert shared.returncode == 2 and "names the user CA key" in shared.stderr


def test_without_a_host_ca_the_commands_say_how_to_make_one(tmp_path):
    missing = vouch(tmp_path, "ca", "pubkey", "--host")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "vouch: no host CA configured: run vouch ca init --host"


@pytest.mark.parametrize("kind", [("-t", "ed25519"), ("-t", "ecdsa", "-b", "384"),
                                  ("-t", "rsa", "-b", "3072")])
def test_ca_sign_host_signs_a_host_certificate_for_the_names(tmp_path, host_ca, kind):
    pub = keygen(tmp_path / "ssh_host_key", *kind)
    out = tmp_path / "ssh_host_key-cert.pub"
    signed = vouch(tmp_path, "ca", "sign-host", str(pub), "--hostname", "DB1.example.com",
                   "--hostname", "db1", "--hostname", "10.1.2.3", "--reason", "new rack",
                   "--out", str(out))
    assert signed.returncode == 0, signed.stderr
    shown = subprocess.run(["ssh-keygen", "-L", "-f", str(out)], capture_output=True, text=True,
                           check=True).stdout
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", f"{tmp_path}/host_ca_key.pub"],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    assert re.search(r"Type: \S+-cert-v01@openssh.com host certificate", shown)
    assert re.search(r"Principals: \n\s+db1\.example\.com\n\s+db1\n\s+10\.1\.2\.3\n", shown)
    assert f"Signing CA: ECDSA {fingerprint}" in shown
    assert "Extensions: (none)" in shown and "Critical Options: (none)" in shown
    valid = re.search(r"Valid: from (\S+) to (\S+)", shown)
    days = (datetime.fromisoformat(valid[2]) - datetime.fromisoformat(valid[1])).days
    assert days == 30
    [event] = [e for e in events(tmp_path) if e["action"] == "host.signed_direct"]
    assert event["details"]["reason"] == "new rack" and event["actor"].startswith("cli:")


@pytest.mark.parametrize("args, why", [
    (("--duration", "400d"), "at most 366d"),
    (("--hostname", "*.example.com"), "no wildcards"),
    (("--reason", " "), "--reason is empty"),
])
def test_ca_sign_host_refuses_bad_input_with_exit_2(tmp_path, host_ca, args, why):
    pub = keygen(tmp_path / "hk", "-t", "ed25519")
    base = {"--hostname": "db1", "--reason": "r"}
    pairs = dict(zip(args[::2], args[1::2]))
    argv = [x for name, value in {**base, **pairs}.items() for x in (name, value)]
    refused = vouch(tmp_path, "ca", "sign-host", str(pub), *argv)
    assert refused.returncode == 2 and why in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and refused.stdout == ""


def test_ca_sign_host_refuses_a_dsa_key(tmp_path, host_ca):
    dsa = tmp_path / "dsa.pub"
    dsa.write_text("ssh-dss AAAAB3NzaC1kc3MAAACBAP== old\n")
    refused = vouch(tmp_path, "ca", "sign-host", str(dsa), "--hostname", "db1", "--reason", "r")
    assert refused.returncode == 2 and "DSA" in refused.stderr


def test_host_token_prints_a_one_time_token_stored_only_as_its_hash(tmp_path):
    made = vouch(tmp_path, "host", "token", "--hostname", "db1.example.com", "--hostname", "db1",
                 "--ttl", "2h")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"vht_[A-Za-z0-9_-]{43}", token)
    assert "one use" in made.stderr and token not in made.stderr
    with sqlite3.connect(tmp_path / "v.db") as db:
        rows = db.execute("SELECT token_hash, hostnames, used_at FROM host_tokens").fetchall()
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(), '["db1.example.com", "db1"]',
                     None)]
    [event] = [e for e in events(tmp_path) if e["action"] == "host.token_created"]
    assert event["details"]["hostnames"] == ["db1.example.com", "db1"]
    assert token not in json.dumps(events(tmp_path))


@pytest.mark.parametrize("args, why", [
    (("--hostname", "db1", "--ttl", "8d"), "at most 7d"),
    (("--hostname", "db 1"), "not a host name"),
    ((), "--hostname"),
])
def test_host_token_refuses_bad_input_with_exit_2(tmp_path, args, why):
    refused = vouch(tmp_path, "host", "token", *args)
    assert refused.returncode == 2 and why in refused.stderr and refused.stdout == ""


def test_revoke_finds_a_host_serial_and_the_krl_carries_it(tmp_path, host_ca):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    pub = keygen(tmp_path / "hk", "-t", "ed25519")
    cert = tmp_path / "hk-cert.pub"
    assert vouch(tmp_path, "ca", "sign-host", str(pub), "--hostname", "db1", "--reason", "r",
                 "--out", str(cert)).returncode == 0
    serial = re.search(r"Serial: (\d+)", subprocess.run(
        ["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True).stdout)[1]
    krl = tmp_path / "revoked.krl"
    assert vouch(tmp_path, "krl", "--out", str(krl)).returncode == 0
    assert subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(cert)],
                          capture_output=True, text=True).stdout.strip().endswith(": ok")
    done = vouch(tmp_path, "revoke", serial, "--reason", "decommissioned")
    assert done.returncode == 0 and done.stdout == f"revoked: serial {serial}\n"
    assert vouch(tmp_path, "revoke", serial).stdout == f"already revoked: serial {serial}\n"
    assert vouch(tmp_path, "krl", "--out", str(krl)).returncode == 0
    assert subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(cert)],
                          capture_output=True, text=True).stdout.strip().endswith(": REVOKED")
    again = vouch(tmp_path, "ca", "sign-host", str(pub), "--hostname", "db1", "--reason", "r")
    assert again.returncode == 1 and "was revoked" in again.stderr
