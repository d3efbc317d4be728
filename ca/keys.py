"""OpenSSH public keys: parsing with specific refusals, and fingerprints as `ssh-keygen -l` prints them.

Key blob layouts: RFC 4253 section 6.6 (ssh-rsa), RFC 5656 section 3.1 (ecdsa-sha2-*),
RFC 8709 section 4 (ssh-ed25519), OpenSSH PROTOCOL.u2f (sk-* keys carry an application string).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric import ec

from ca.errors import BadInput
from ca.wire import Reader, WireError, put_string

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384

_CURVES = {
    "nistp256": ec.SECP256R1(),
    "nistp384": ec.SECP384R1(),
    "nistp521": ec.SECP521R1(),
}

ACCEPTED_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)

_CERT_SUFFIX = "-cert-v01@openssh.com"
_DSA_TYPES = ("ssh-dss", "ssh-dss" + _CERT_SUFFIX)


@dataclass(frozen=True)
class PublicKey:
    """A validated OpenSSH public key. `blob` is its SSH wire encoding, type name included."""

    type: str
    blob: bytes
    bits: int
    comment: str = field(default="", compare=False)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    @property
    def fields(self) -> bytes:
        """The blob after its type name: what PROTOCOL.certkeys embeds in a certificate."""
        return self.blob[4 + len(self.type) :]

    @property
    def is_security_key(self) -> bool:
        return self.type.startswith("sk-")

    def line(self) -> str:
        text = f"{self.type} {base64.b64encode(self.blob).decode()}"
        return f"{text} {self.comment}" if self.comment else text

    def describe(self) -> str:
        """`ssh-keygen -l` style: bits, fingerprint, comment, (KIND)."""
        comment = self.comment or "no comment"
        return f"{self.bits} {self.fingerprint} {comment} ({_kind(self.type)})"


def fingerprint(blob: bytes) -> str:
    """SHA256 fingerprint exactly as `ssh-keygen -l` prints it (unpadded base64)."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _kind(key_type: str) -> str:
    return {
        "ssh-ed25519": "ED25519",
        "ssh-rsa": "RSA",
        "sk-ssh-ed25519@openssh.com": "ED25519-SK",
        "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
    }.get(key_type, "ECDSA")


def parse_public_key(text: str) -> PublicKey:
    """Parse one OpenSSH public key line (`TYPE BASE64 [COMMENT]`), refusing anything else by name."""
    text = text.strip()
    if not text:
        raise BadInput("no public key given: paste one line such as 'ssh-ed25519 AAAA… you@laptop' "
                       "(the contents of ~/.ssh/id_ed25519.pub)")
    if text.startswith("-----BEGIN"):
        if "PRIVATE KEY" in text:
            raise BadInput("that is a PRIVATE key: never share it. Send the public key instead "
                           "(the .pub file, one line starting with ssh-ed25519, ecdsa-sha2-… or ssh-rsa)")
        raise BadInput("that is a PEM file, not an OpenSSH public key line: "
                       "convert it with `ssh-keygen -i -m PKCS8 -f FILE`")
    if text.startswith("---- BEGIN SSH2 PUBLIC KEY"):
        raise BadInput("that is an RFC 4716 (SSH2) public key: convert it with `ssh-keygen -i -f FILE`")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) > 1:
        raise BadInput(f"that is {len(lines)} lines: give exactly one public key line")
    text = lines[0].strip() if lines else text
    parts = text.split(None, 2)
    key_type = parts[0]
    _check_type_name(key_type)
    if len(parts) < 2:
        raise BadInput(f"the line has no key data after '{key_type}'")
    comment = parts[2].strip() if len(parts) > 2 else ""
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("the key data is not valid base64 (was the line cut or wrapped?)") from None
    key = parse_public_key_blob(blob, comment=comment)
    if key.type != key_type:
        raise BadInput(f"the line says '{key_type}' but its key data is a '{key.type}' key")
    return key


def _check_type_name(key_type: str) -> None:
    if key_type in _DSA_TYPES:
        raise BadInput("DSA keys (ssh-dss) are not accepted: they are limited to 1024 bits and "
                       "OpenSSH no longer allows them; create one with `ssh-keygen -t ed25519`")
    if key_type.endswith(_CERT_SUFFIX):
        raise BadInput("that is a certificate, not a public key: send the key itself "
                       "(the .pub file without -cert in its name)")
    if key_type not in ACCEPTED_TYPES:
        raise BadInput(f"unknown key type '{key_type[:40]}': accepted are " + ", ".join(ACCEPTED_TYPES))


def parse_public_key_blob(blob: bytes, *, comment: str = "") -> PublicKey:
    """Validate an SSH wire public key blob; every field is checked and nothing may trail it."""
    reader = Reader(blob)
    try:
        key_type = reader.text()
        _check_type_name(key_type)
        bits = read_key_fields(key_type, reader)
        reader.end()
    except WireError as exc:
        raise BadInput(f"the key data is truncated or malformed ({exc})") from None
    return PublicKey(type=key_type, blob=bytes(blob), bits=bits, comment=comment)


def read_key_fields(key_type: str, reader: Reader) -> int:
    """Read and check the fields after the type name; returns the key size in bits."""
    if key_type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        if len(reader.string()) != 32:
            raise BadInput("the ed25519 key is not 32 bytes long")
        bits = 256
    elif key_type == "ssh-rsa":
        exponent, modulus = reader.mpint(), reader.mpint()
        bits = modulus.bit_length()
        # e below 65537 invites the small-exponent attacks; OpenSSH's keys all use 65537.
        if exponent < 65537 or exponent % 2 == 0:
            raise BadInput(f"the RSA key's public exponent {str(exponent)[:20]} is refused: it "
                           "must be odd and at least 65537 (as ssh-keygen makes them)")
        if modulus % 2 == 0:
            raise BadInput("the RSA key's modulus is even: it is not a real RSA key")
        if bits < MIN_RSA_BITS:
            raise BadInput(f"the RSA key has {bits} bits: at least {MIN_RSA_BITS} are required "
                           "(or use `ssh-keygen -t ed25519`)")
        if bits > MAX_RSA_BITS:  # OpenSSH refuses these too; they only cost CPU to check
            raise BadInput(f"the RSA key has {bits} bits: at most {MAX_RSA_BITS} are allowed")
    else:
        expected = key_type.removeprefix("sk-").removesuffix("@openssh.com").rsplit("-", 1)[1]
        curve_name = reader.text()
        if curve_name != expected:
            raise BadInput(f"the key says curve '{curve_name[:20]}' but its type is '{key_type}'")
        point = reader.string()
        curve = _CURVES[curve_name]
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
        except ValueError:
            raise BadInput(f"the ECDSA key's point is not on curve {curve_name}") from None
        bits = curve.key_size
    if key_type.startswith("sk-"):
        application = reader.text()
        if not application.startswith("ssh:"):
            raise BadInput("the security key's application must start with 'ssh:'")
    return bits


def public_key_from_parts(key_type: str, *fields: bytes) -> PublicKey:
    """Assemble a key from already-encoded wire fields (used by signers that read a token)."""
    return parse_public_key_blob(put_string(key_type) + b"".join(fields))
