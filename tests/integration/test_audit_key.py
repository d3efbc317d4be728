"""Where the audit key comes from (VOUCH_AUDIT_KEY, VOUCH_SECRETS_DIR/audit_key, ./audit_key made
by the first command that writes), that it is never shown, and that `vouch audit verify` with
another key fails."""

from __future__ import annotations

import stat
from pathlib import Path

from test_cli import Vouch, assert_bad_input, assert_no_traceback


def sign(vouch: Vouch, user_keys):
    return vouch.run("ca", "sign", user_keys["ed25519"].public_path, "--principal", "root",
                     "--duration", "1h", "--reason", "testing")


def test_ca_init_creates_a_private_random_key_and_never_shows_it(tmp_path: Path) -> None:
    vouch = Vouch(tmp_path)
    result = vouch.ok("ca", "init")
    key_file = tmp_path / "audit_key"
    key = key_file.read_text().strip()
    assert len(key) == 64 and int(key, 16) >= 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key not in result.out.decode() + result.err
    vouch.ok("ca", "init", "--force")
    assert key_file.read_text().strip() == key  # kept: a new key would break the chain


def test_the_key_in_the_working_directory_verifies_what_was_written_with_it(tmp_path, user_keys):
    vouch = Vouch(tmp_path)
    vouch.ok("ca", "init")
    assert sign(vouch, user_keys).returncode == 0
    assert vouch.ok("audit", "verify").stdout.startswith("audit chain intact: 1 events")
    other = vouch.with_env(VOUCH_AUDIT_KEY="another-key-" * 4).run("audit", "verify")
    assert_no_traceback(other)
    assert other.returncode == 1 and "not the one the chain was written with" in other.err


def test_the_environment_and_the_secrets_directory_come_first(tmp_path, user_keys):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "audit_key").write_text("from-the-secrets-dir-" * 2 + "\n")
    vouch = Vouch(tmp_path, VOUCH_SECRETS_DIR=str(secrets))
    vouch.ok("ca", "init")
    assert not (tmp_path / "audit_key").exists()
    assert sign(vouch, user_keys).returncode == 0
    assert vouch.ok("audit", "verify").returncode == 0
    same = vouch.with_env(VOUCH_SECRETS_DIR=None, VOUCH_AUDIT_KEY="from-the-secrets-dir-" * 2)
    assert same.ok("audit", "verify").returncode == 0


def test_a_short_key_and_a_missing_one_are_refused_saying_why(tmp_path, user_keys):
    vouch = Vouch(tmp_path)
    vouch.ok("ca", "init")
    short = vouch.with_env(VOUCH_AUDIT_KEY="too-short")
    assert_bad_input(sign(short, user_keys), "VOUCH_AUDIT_KEY", "at least 32")
    assert sign(vouch, user_keys).returncode == 0
    (tmp_path / "audit_key").unlink()
    assert_bad_input(vouch.run("audit", "verify"), "no audit key", "VOUCH_AUDIT_KEY")
