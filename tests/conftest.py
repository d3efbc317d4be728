"""Shared fixtures: a private SoftHSM2 token, user keys of every accepted type, CA signers."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ca.keys import PublicKey, parse_public_key
from ca.wire import Reader, put_string

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "vouch-test"
TOKEN_PIN = "4242"
SO_PIN = "87654321"


def run(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kwargs)


# --- SoftHSM2 ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    module: str
    label: str
    pin: str
    conf: Path

    def uri(self, label: str, **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"pkcs11:token={self.label};object={label}?module-path={self.module}{extra}"


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory) -> Token:
    """One token for the whole run, created before python-pkcs11 loads the module: SoftHSM2 does
    not see tokens created after C_Initialize, and a process may initialise a module only once."""
    if not (os.path.exists(SOFTHSM_MODULE) and shutil.which("softhsm2-util")):
        pytest.skip("softhsm2 is not installed (make test installs it)")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    run("softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL,
        "--so-pin", SO_PIN, "--pin", TOKEN_PIN)
    return Token(module=SOFTHSM_MODULE, label=TOKEN_LABEL, pin=TOKEN_PIN, conf=conf)


# --- user keys ---------------------------------------------------------------------------

@dataclass(frozen=True)
class UserKey:
    name: str
    private: Path | None  # None for security-key types (no hardware here to hold them)
    public: PublicKey
    public_path: Path


_SSH_KEYGEN_TYPES = {
    "ed25519": ("-t", "ed25519"),
    "ecdsa-p256": ("-t", "ecdsa", "-b", "256"),
    "ecdsa-p384": ("-t", "ecdsa", "-b", "384"),
    "ecdsa-p521": ("-t", "ecdsa", "-b", "521"),
    "rsa-2048": ("-t", "rsa", "-b", "2048"),
}
USER_KEY_TYPES = (*_SSH_KEYGEN_TYPES, "sk-ed25519", "sk-ecdsa-p256")


def make_sk_key(plain: PublicKey) -> PublicKey:
    """A security-key public key (PROTOCOL.u2f) around a plain key's point: the same wire layout
    a YubiKey-made id_ed25519_sk.pub has. No hardware is needed to certify one."""
    reader = Reader(plain.blob)
    reader.string()
    fields = reader.rest()
    sk_type = {"ssh-ed25519": "sk-ssh-ed25519@openssh.com",
               "ecdsa-sha2-nistp256": "sk-ecdsa-sha2-nistp256@openssh.com"}[plain.type]
    blob = put_string(sk_type) + fields + put_string("ssh:")
    return parse_public_key(f"{sk_type} {base64.b64encode(blob).decode()} sk-user")


@pytest.fixture(scope="session")
def user_keys(tmp_path_factory) -> dict[str, UserKey]:
    """One user key of every accepted type (RSA 2048 is the smallest the CA accepts)."""
    root = tmp_path_factory.mktemp("userkeys")
    keys: dict[str, UserKey] = {}
    for name, args in _SSH_KEYGEN_TYPES.items():
        path = root / f"id_{name}"
        run("ssh-keygen", "-q", *args, "-N", "", "-C", f"user-{name}", "-f", str(path))
        keys[name] = UserKey(name, path, parse_public_key(Path(f"{path}.pub").read_text()),
                             Path(f"{path}.pub"))
    for name, base in (("sk-ed25519", "ed25519"), ("sk-ecdsa-p256", "ecdsa-p256")):
        public = make_sk_key(keys[base].public)
        path = root / f"id_{name}.pub"
        path.write_text(public.line() + "\n")
        keys[name] = UserKey(name, None, public, path)
    return keys


# --- databases ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_cluster():
    from support.postgres import PostgresCluster, available

    reason = available()
    if reason:
        pytest.skip(reason)
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vouch.db'}"
    return request.getfixturevalue("postgres_cluster").create_database()


@pytest.fixture
def database(database_url):
    from storage.db import Database

    db = Database(database_url)
    db.prepare()
    yield db
    db.close()
