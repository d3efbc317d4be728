"""The user's SSH key on the client side of `vouch request` / `vouch ssh`: which key, how to
sign a call with it, where its certificate goes, and handing both to the agent.

Signing goes through OpenSSH's own `ssh-keygen -Y sign`, not a Python key loader: it signs
through ssh-agent when the agent holds the key, asks for a FIDO touch for `sk-*` keys and for
the passphrase of an encrypted key, all on the user's terminal, with keys Python never reads.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ca.errors import BadInput, VouchError
from ca.keys import PublicKey, parse_public_key

# The keys `ssh` itself tries first, in its order.
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_ed25519_sk", "id_ecdsa_sk", "id_rsa")


class SigningFailed(VouchError):
    pass


@dataclass(frozen=True)
class UserKey:
    private: Path  # may be absent when the agent holds the key (a hardware token, say)
    public: PublicKey

    @property
    def certificate_path(self) -> Path:
        """Where `ssh` looks for the key's certificate by itself."""
        return self.private.with_name(self.private.name + "-cert.pub")


def find_key(path: str | None) -> UserKey:
    """`--key PATH` (the private key or its .pub), else the first of ~/.ssh's usual keys."""
    if path:
        private = Path(path).expanduser()
        if private.suffix == ".pub":
            private = private.with_suffix("")
        candidates = [private]
    else:
        ssh_dir = Path.home() / ".ssh"
        candidates = [ssh_dir / name for name in DEFAULT_KEYS]
    for private in candidates:
        public_path = private.with_name(private.name + ".pub")
        if public_path.is_file():
            try:
                return UserKey(private, parse_public_key(public_path.read_text()))
            except BadInput as exc:
                raise BadInput(f"{public_path}: {exc.message}") from None
    if path:
        raise BadInput(f"no public key at {candidates[0]}.pub (give --key the path of a key "
                       "whose .pub file sits next to it)")
    raise BadInput("no SSH key found in ~/.ssh (id_ed25519, id_ecdsa, …): give one with --key")


def agent_holds(key: UserKey) -> bool:
    if not os.environ.get("SSH_AUTH_SOCK"):
        return False
    listed = subprocess.run(["ssh-add", "-L"], capture_output=True, text=True, timeout=10)
    wanted = key.public.line().split()[:2]
    return any(line.split()[:2] == wanted for line in listed.stdout.splitlines())


def sign(key: UserKey, message: bytes, namespace: str) -> str:
    """An armored SSHSIG over `message`: through the agent when it holds the key, else with the
    key file (ssh-keygen prompts on the terminal for a passphrase or a touch)."""
    signing_key = (key.private.with_name(key.private.name + ".pub") if agent_holds(key)
                   else key.private)
    if signing_key == key.private and not key.private.exists():
        raise BadInput(f"{key.private} does not exist and no ssh-agent holds the key: add it "
                       "to the agent (ssh-add) or give --key the private key's path")
    with tempfile.TemporaryDirectory(prefix="vouch-sign-") as scratch:
        data = Path(scratch) / "call"
        data.write_bytes(message)
        # stderr stays the user's: a FIDO key's "Confirm user presence" is said there.
        done = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f",
                               str(signing_key), str(data)],
                              stdout=subprocess.DEVNULL, timeout=120)
        signature = data.with_name("call.sig")
        if done.returncode != 0 or not signature.exists():
            raise SigningFailed(f"ssh-keygen could not sign with {signing_key} (see above)")
        return signature.read_text()


def save_certificate(key: UserKey, line: str) -> Path:
    """`<key>-cert.pub`, 0644, replaced atomically (a running ssh never reads half a file)."""
    path = key.certificate_path
    # A fresh name (O_EXCL), not a fixed one a symlink could be waiting at.
    handle, partial = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(line.strip() + "\n")
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def add_to_agent(key: UserKey, seconds: int) -> str | None:
    """Key and certificate into a running agent for the certificate's remaining life; why not,
    if they could not be (no agent, or the private key is held elsewhere)."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return "no ssh-agent running (SSH_AUTH_SOCK is unset)"
    if not key.private.exists():
        return f"{key.private} is not here to add (the agent holds the key itself)"
    done = subprocess.run(["ssh-add", "-t", str(max(1, seconds)), str(key.private)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    if done.returncode != 0:
        return done.stderr.strip() or "ssh-add failed"
    return None
