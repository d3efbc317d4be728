"""SSH signatures: checking a signature blob against a public key, and SSHSIG (PROTOCOL.sshsig),
the format of `ssh-keygen -Y sign`, made by a CA signer and checked for any key.

Hand-written on cryptography and ca.wire because no maintained library covers the key types
Vouch uses: PyPI's sshsig (0.3) knows Ed25519 and RSA only, not ECDSA (the default CA key) nor
FIDO `sk-*` keys (PROTOCOL.u2f), which users sign client API calls with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ca.cert import Signer
from ca.errors import VouchError
from ca.keys import PublicKey, parse_public_key_blob
from ca.wire import Reader, WireError, put_string, put_u32

MAGIC = b"SSHSIG"
_VERSION = 1
_ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOR_END = "-----END SSH SIGNATURE-----"
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_ECDSA = {"ecdsa-sha2-nistp256": hashes.SHA256, "ecdsa-sha2-nistp384": hashes.SHA384,
          "ecdsa-sha2-nistp521": hashes.SHA512}
_RSA = {"rsa-sha2-256": hashes.SHA256, "rsa-sha2-512": hashes.SHA512}
_USER_PRESENT = 0x01  # the FIDO flag set when someone touched the key


class BadSignature(VouchError):
    """The signature is malformed, by another key, over other data, or of another namespace."""


def verify_blob(public_key: PublicKey, data: bytes, signature: bytes) -> None:
    """Check an SSH signature blob (string algorithm, string signature; RFC 5656 3.1.2, RFC 8709
    6, RFC 8332 3) over `data` by `public_key`; BadSignature if it is not one."""
    if public_key.is_security_key:
        _verify_security_key(public_key, data, signature)
        return
    try:
        reader = Reader(signature)
        algorithm, raw = reader.text(), reader.string()
        reader.end()
        key = serialization.load_ssh_public_key(public_key.line().encode())
        if isinstance(key, ed25519.Ed25519PublicKey) and algorithm == "ssh-ed25519":
            key.verify(raw, data)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm == public_key.type \
                and algorithm in _ECDSA:
            numbers = Reader(raw)
            r, s = numbers.mpint(), numbers.mpint()
            numbers.end()
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_ECDSA[algorithm]()))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm in _RSA:
            key.verify(raw, data, padding.PKCS1v15(), _RSA[algorithm]())
        else:
            raise BadSignature(f"a {algorithm!r} signature cannot come from a {public_key.type} key")
    except (WireError, ValueError, InvalidSignature, TypeError) as exc:
        raise BadSignature("the signature does not verify", detail=repr(exc)) from None


def _verify_security_key(public_key: PublicKey, data: bytes, signature: bytes) -> None:
    """PROTOCOL.u2f: the authenticator signed sha256(application) || flags || counter ||
    sha256(data); a signature made without a touch (user-presence flag clear) is refused, as
    `ssh-keygen -Y verify` does by default."""
    try:
        reader = Reader(signature)
        algorithm, raw = reader.text(), reader.string()
        flags, counter = reader.u8(), reader.u32()
        reader.end()
        if algorithm != public_key.type:
            raise BadSignature(f"a {algorithm!r} signature cannot come from a {public_key.type} key")
        if not flags & _USER_PRESENT:
            raise BadSignature("the security key was not touched for this signature")
        fields = Reader(public_key.blob)
        fields.text()
        if public_key.type.startswith("sk-ecdsa"):
            fields.string()
        fields.string()
        application = fields.string()
        signed = (hashlib.sha256(application).digest() + bytes([flags])
                  + counter.to_bytes(4, "big") + hashlib.sha256(data).digest())
        key = serialization.load_ssh_public_key(public_key.line().encode())
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, signed)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            numbers = Reader(raw)
            r, s = numbers.mpint(), numbers.mpint()
            numbers.end()
            key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
        else:
            raise BadSignature(f"unsupported security key type {public_key.type}")
    except (WireError, ValueError, InvalidSignature, TypeError) as exc:
        raise BadSignature("the signature does not verify", detail=repr(exc)) from None


def _signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    digest = _HASHES[hash_algorithm](message).digest()
    return (MAGIC + put_string(namespace) + put_string(b"") + put_string(hash_algorithm)
            + put_string(digest))


def sign(signer: Signer, message: bytes, namespace: str) -> str:
    """An armored SSHSIG over `message` by `signer`, as `ssh-keygen -Y sign -n NAMESPACE` makes
    (sha512): `ssh-keygen -Y check-novalidate` accepts it."""
    signature = signer.sign(_signed_data(namespace, "sha512", message))
    blob = (MAGIC + put_u32(_VERSION) + put_string(signer.public_key.blob) + put_string(namespace)
            + put_string(b"") + put_string("sha512") + put_string(signature))
    text = base64.b64encode(blob).decode()
    lines = [text[i:i + 76] for i in range(0, len(text), 76)]
    return "\n".join([_ARMOR_BEGIN, *lines, _ARMOR_END]) + "\n"


def verify(armored: str, message: bytes, namespace: str) -> PublicKey:
    """Check an armored SSHSIG over `message` in `namespace`; the key that made it (the caller
    decides whether it trusts that key). BadSignature when it does not hold."""
    try:
        body = armored.strip()
        if not (body.startswith(_ARMOR_BEGIN) and body.endswith(_ARMOR_END)):
            raise BadSignature("not an SSH signature (-----BEGIN SSH SIGNATURE-----)")
        text = "".join(body[len(_ARMOR_BEGIN):-len(_ARMOR_END)].split())
        reader = Reader(base64.b64decode(text, validate=True))
        if reader.fixed(len(MAGIC)) != MAGIC or reader.u32() != _VERSION:
            raise BadSignature("not an SSHSIG version 1 signature")
        public_key = parse_public_key_blob(reader.string())
        signed_namespace, _reserved = reader.text(), reader.string()
        hash_algorithm, signature = reader.text(), reader.string()
        reader.end()
    except (WireError, binascii.Error, ValueError) as exc:
        raise BadSignature("the signature is malformed", detail=repr(exc)) from None
    if signed_namespace != namespace:
        raise BadSignature(f"the signature is for {signed_namespace!r}, not {namespace!r}")
    if hash_algorithm not in _HASHES:
        raise BadSignature(f"unknown hash algorithm {hash_algorithm!r}")
    verify_blob(public_key, _signed_data(namespace, hash_algorithm, message), signature)
    return public_key
