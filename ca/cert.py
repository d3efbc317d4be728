"""OpenSSH certificates (PROTOCOL.certkeys), encoded for any accepted subject key type.

cryptography's `SSHCertificateBuilder` cannot certify the security-key types (sk-*: their
`application` field has no place in it), so the encoding is done here, once, for every type;
cryptography does the signing inside the signers, and the tests check every certificate with
both `ssh-keygen -L` and cryptography's own certificate parser.
"""

from __future__ import annotations

import base64
import enum
import functools
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol

from ca.errors import BadInput, SignerError
from ca.keys import PublicKey
from ca.wire import put_string, put_u32, put_u64

# Clocks drift; OpenSSH's own `ssh-keygen -V` users backdate too. PROTOCOL.certkeys leaves it to the CA.
BACKDATE = timedelta(seconds=60)

CRITICAL_OPTIONS = ("force-command", "source-address")
EXTENSIONS = (
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
)
_MAX_U64 = 2**64 - 1


class CertType(enum.IntEnum):
    USER = 1
    HOST = 2


class Signer(Protocol):
    """What a certificate needs from a CA key: its public half and an SSH signature over bytes."""

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes) -> bytes:
        """Return an SSH signature blob: string(algorithm) || string(signature)."""
        ...


@dataclass(frozen=True)
class CertificateSpec:
    """Everything a certificate states. Times are timezone-aware; validity is [valid_after, valid_before)."""

    public_key: PublicKey
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    critical_options: Mapping[str, str] = field(default_factory=dict)
    extensions: frozenset[str] = frozenset({"permit-pty"})
    cert_type: CertType = CertType.USER

    def __post_init__(self) -> None:
        _check_spec(self)


@dataclass(frozen=True)
class Certificate:
    spec: CertificateSpec
    blob: bytes

    @property
    def type(self) -> str:
        return self.spec.public_key.type.replace("@openssh.com", "") + "-cert-v01@openssh.com"

    def line(self, comment: str | None = None) -> str:
        """The certificate as one OpenSSH line, ready for `id_ed25519-cert.pub`."""
        text = f"{self.type} {base64.b64encode(self.blob).decode()}"
        comment = self.spec.key_id if comment is None else comment
        return f"{text} {comment}" if comment else text


def validity(now: datetime, duration: timedelta) -> tuple[datetime, datetime]:
    """The validity window for a certificate issued at `now`: backdated for clock skew."""
    return now - BACKDATE, now + duration


def new_serial() -> int:
    """A random non-zero 64-bit serial: unguessable, and revocable (a KRL cannot list serial 0)."""
    while True:
        serial = int.from_bytes(os.urandom(8), "big")
        if serial:
            return serial


class HostCa:
    """The host CA: a signer that certifies host keys, and nothing else. Every other signer is a
    user CA and certifies user keys only, so a host CA compromise cannot log anyone in, and a
    user CA cannot vouch for a host (sign_certificate refuses the other type)."""

    certifies = CertType.HOST

    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    @property
    def public_key(self) -> PublicKey:
        return self._signer.public_key

    def sign(self, data: bytes) -> bytes:
        return self._signer.sign(data)

    def close(self) -> None:
        close = getattr(self._signer, "close", None)
        if close is not None:
            close()


def sign_certificate(spec: CertificateSpec, signer: Signer, *, nonce: bytes | None = None) -> Certificate:
    """PROTOCOL.certkeys section 2: encode the to-be-signed body, sign it, append the signature."""
    certifies = getattr(signer, "certifies", CertType.USER)
    if spec.cert_type is not certifies:
        raise SignerError(f"the {certifies.name.lower()} CA does not sign "
                          f"{spec.cert_type.name.lower()} certificates: user and host "
                          "certificates come from separate CA keys")
    body = encode_tbs(spec, signer.public_key.blob, nonce=nonce)
    return Certificate(spec=spec, blob=body + put_string(signer.sign(body)))


def encode_tbs(spec: CertificateSpec, ca_key_blob: bytes, *, nonce: bytes | None = None) -> bytes:
    """The certificate up to (not including) its signature field."""
    return b"".join((
        _type_name(spec.public_key.type),
        put_string(nonce if nonce is not None else os.urandom(32)),
        spec.public_key.fields,
        put_u64(spec.serial),
        put_u32(spec.cert_type),
        put_string(spec.key_id),
        put_string(b"".join(put_string(p) for p in spec.principals)),
        put_u64(int(spec.valid_after.timestamp())),
        put_u64(int(spec.valid_before.timestamp())),
        _critical_options(tuple(sorted(spec.critical_options.items()))),
        _extensions(spec.extensions),
        _trailer(ca_key_blob),
    ))


# The parts below repeat from one certificate to the next: encoding them once keeps the
# per-certificate cost close to the signature itself (bench/sign.py measures it).

@functools.lru_cache(maxsize=16)
def _type_name(key_type: str) -> bytes:
    return put_string(key_type.replace("@openssh.com", "") + "-cert-v01@openssh.com")


@functools.lru_cache(maxsize=256)
def _critical_options(options: tuple[tuple[str, str], ...]) -> bytes:
    # PROTOCOL.certkeys: options "MUST" be in lexical order by name, and a critical option's
    # value is itself a string inside its data string.
    return put_string(b"".join(put_string(name) + put_string(put_string(value))
                               for name, value in options))


@functools.lru_cache(maxsize=256)
def _extensions(extensions: frozenset[str]) -> bytes:
    # Lexical (strcmp) order, like critical options; an extension's data is empty.
    return put_string(b"".join(put_string(name) + put_string(b"") for name in sorted(extensions)))


@functools.lru_cache(maxsize=16)
def _trailer(ca_key_blob: bytes) -> bytes:
    return put_string(b"") + put_string(ca_key_blob)  # reserved, then the signature key


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_KNOWN_OPTIONS = frozenset(CRITICAL_OPTIONS)
_KNOWN_EXTENSIONS = frozenset(EXTENSIONS)
_BAD_PRINCIPAL_CHARS = frozenset(", \t\r\n\0")


def _check_spec(spec: CertificateSpec) -> None:
    if not 0 < spec.serial <= _MAX_U64:
        raise BadInput("certificate serial must be between 1 and 2^64-1")
    if spec.valid_after.tzinfo is None or spec.valid_before.tzinfo is None:
        raise ValueError("certificate validity times must be timezone-aware")
    if spec.valid_before <= spec.valid_after:
        raise BadInput("certificate validity must end after it starts")
    if spec.valid_after < _EPOCH:
        raise BadInput("certificate validity cannot start before 1970")
    if not spec.principals:
        # A certificate with no principals is valid for ANY user on OpenSSH hosts: never issue one.
        raise BadInput("a certificate needs at least one principal")
    for principal in spec.principals:
        if not principal or not _BAD_PRINCIPAL_CHARS.isdisjoint(principal) or not principal.isprintable():
            raise BadInput(f"principal {principal!r} is not a valid name "
                           "(no spaces, commas or control characters)")
    if not spec.key_id or not spec.key_id.isprintable():
        raise BadInput("key ID must be non-empty printable text")
    if not _KNOWN_EXTENSIONS.issuperset(spec.extensions):
        unknown = sorted(set(spec.extensions) - _KNOWN_EXTENSIONS)[0]
        raise BadInput(f"unknown extension {unknown!r}: allowed are " + ", ".join(EXTENSIONS))
    if spec.cert_type is CertType.HOST and (spec.critical_options or spec.extensions):
        # PROTOCOL.certkeys defines no options or extensions for host certificates.
        raise BadInput("a host certificate has no critical options or extensions")
    if spec.critical_options:
        _check_critical_options(spec.critical_options)


def _check_critical_options(options: Mapping[str, str]) -> None:
    if not _KNOWN_OPTIONS.issuperset(options):
        unknown = sorted(set(options) - _KNOWN_OPTIONS)[0]
        raise BadInput(f"unknown critical option {unknown!r}: allowed are " + ", ".join(CRITICAL_OPTIONS))
    if "source-address" in options:
        parse_source_addresses(options["source-address"])
    if "force-command" in options and not options["force-command"].strip():
        raise BadInput("force-command must not be empty")


def parse_source_addresses(text: str) -> str:
    """Validate a comma-separated CIDR list as sshd reads source-address; returns it normalised."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise BadInput("source-address needs one or more CIDR blocks separated by commas, "
                       "e.g. 10.0.0.0/8,192.0.2.7")
    for item in items:
        try:
            ipaddress.ip_network(item, strict=True)
        except ValueError:
            raise BadInput(f"source-address {item!r} is not an IP address or CIDR block "
                           "(host bits must be zero, e.g. 10.0.0.0/8)") from None
    return ",".join(items)
