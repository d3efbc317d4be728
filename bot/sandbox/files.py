"""The sandbox directory's files: the demo policy, the CA key and a demo user key, made on first run
and checked on every later one, so that a file left from another run is one clear message naming
what to delete. The database is not here: `vouch serve` creates and checks it itself.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from access.policy_file import PolicyError, load_policy
from bot.sandbox import demo
from ca.errors import BadInput, VouchError
from ca.keys import PublicKey, parse_public_key
from ca.signer import CaKeyType, FileSigner, create_file_key

__all__ = ["DemoKey", "ensure_ca_key", "ensure_demo_key", "ensure_directory", "ensure_policy"]

log = logging.getLogger("vouch.sandbox")

_DEMO_COMMENT = "alice@vouch-sandbox"


@dataclass(frozen=True)
class DemoKey:
    private: Path
    public: Path
    line: str
    fingerprint: str

    @property
    def certificate(self) -> Path:
        return self.private.with_name(self.private.name + "-cert.pub")


def ensure_directory(where: Path) -> None:
    if where.exists() and not where.is_dir():
        raise BadInput(f"{where} is in the way: the sandbox keeps its files in a directory "
                       f"of that name; move or delete the file")
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create the sandbox directory {where}: {exc.strerror}") from None
    if not os.access(where, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write in the sandbox directory {where}: check its permissions")


def ensure_policy(path: Path) -> bool:
    """The demo policy unless a policy is there already, checked either way; True when written."""
    written = demo.write_policy(path)
    try:
        load_policy(str(path))
    except PolicyError as exc:
        raise BadInput(f"{exc.lines()[0]} — fix {path} (`vouch policy check {path}` lists every "
                       "problem) or delete it to get the demo policy back") from None
    except (BadInput, OSError) as exc:
        raise BadInput(f"{path} cannot be used ({getattr(exc, 'message', exc)}): "
                       "delete it to get the demo policy back") from None
    return written


def ensure_ca_key(path: Path) -> bool:
    """A file CA key (ECDSA P-256, as `vouch ca init` makes) unless one is there; True when made."""
    if path.exists() or path.is_symlink():
        try:
            FileSigner.load(path)
        except VouchError as exc:
            raise BadInput(f"{path} is not a usable CA key ({exc.message}): delete {path} and "
                           f"{path}.pub, and the sandbox creates a new one (certificates from the "
                           "old one stop being trusted)") from None
        return False
    create_file_key(path, CaKeyType.ECDSA_P256)
    return True


def ensure_demo_key(workdir: Path) -> tuple[DemoKey, bool]:
    """A user key for alice to register and ssh with, made once per sandbox directory; the key
    and whether it was made now."""
    private = workdir / "demo_key"
    public = workdir / "demo_key.pub"
    key = _read_public(public) if private.is_file() else None
    made = key is None
    if made:
        for path in (private, public):
            if path.is_dir():
                raise BadInput(f"{path} is in the way (a directory): delete it")
            path.unlink(missing_ok=True)
        _generate_user_key(private)
        key = _read_public(public)
        if key is None:
            raise VouchError(f"could not create the demo key {private}")
    line = f"{key.type} {base64.b64encode(key.blob).decode()}"
    if key.comment:
        line += f" {key.comment}"
    return DemoKey(private=private, public=public, line=line, fingerprint=key.fingerprint), made


def _read_public(path: Path) -> PublicKey | None:
    try:
        return parse_public_key(path.read_text())
    except (OSError, UnicodeDecodeError, BadInput):
        return None


def _generate_user_key(private: Path) -> None:
    keygen = shutil.which("ssh-keygen")
    if keygen:
        done = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", _DEMO_COMMENT,
                               "-f", str(private)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=30)
        if done.returncode == 0:
            return
        log.warning("ssh-keygen failed (%s); creating the demo key in Python",
                    done.stderr.strip()[:200])
    # Without ssh-keygen (no openssh-client): the same key file format, written directly.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    private.with_name(private.name + ".pub").write_text(f"{public} {_DEMO_COMMENT}\n")
