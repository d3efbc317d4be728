"""A software stand-in for a FIDO authenticator, for the sk-* keys of conftest's user_keys (whose
points are those of plain keys we hold): it makes the SSHSIG a YubiKey would, per PROTOCOL.u2f,
so verification can be checked against `ssh-keygen -Y check-novalidate` without hardware."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ca.keys import PublicKey
from ca.sshsig import MAGIC
from ca.wire import put_mpint, put_string, put_u32

USER_PRESENT = 0x01


def sign(private_path: Path, sk_key: PublicKey, message: bytes, namespace: str, *,
         flags: int = USER_PRESENT, counter: int = 7, application: bytes = b"ssh:") -> str:
    """An armored SSHSIG by the security key `sk_key`, whose point is the key at `private_path`."""
    private = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    digest = hashlib.sha512(message).digest()
    data = (MAGIC + put_string(namespace) + put_string(b"") + put_string("sha512")
            + put_string(digest))
    signed = (hashlib.sha256(application).digest() + bytes([flags]) + counter.to_bytes(4, "big")
              + hashlib.sha256(data).digest())
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.sign(signed)
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(private.sign(signed, ec.ECDSA(hashes.SHA256())))
        raw = put_mpint(r) + put_mpint(s)
    signature = put_string(sk_key.type) + put_string(raw) + bytes([flags]) + put_u32(counter)
    blob = (MAGIC + put_u32(1) + put_string(sk_key.blob) + put_string(namespace) + put_string(b"")
            + put_string("sha512") + put_string(signature))
    text = base64.b64encode(blob).decode()
    lines = [text[i:i + 76] for i in range(0, len(text), 76)]
    return "\n".join(["-----BEGIN SSH SIGNATURE-----", *lines, "-----END SSH SIGNATURE-----"]) + "\n"
