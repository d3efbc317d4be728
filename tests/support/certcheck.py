"""Independent checks of a certificate: parse it field by field and verify its signature with
cryptography, without going through the encoder under test."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ca.wire import Reader

_KEY_FIELDS = {  # number of string/mpint fields after the nonce, per subject key type
    "ssh-ed25519-cert-v01@openssh.com": 1,
    "ssh-rsa-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": 2,
    "sk-ssh-ed25519-cert-v01@openssh.com": 2,
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": 3,
}


@dataclass
class ParsedCert:
    type: str
    serial: int
    cert_type: int
    key_id: str
    principals: list[str]
    valid_after: int
    valid_before: int
    critical_options: dict[str, str]
    extensions: list[str]
    signature_key: bytes
    signature: bytes
    signed_part: bytes


def _pairs(data: bytes) -> list[tuple[str, bytes]]:
    reader, out = Reader(data), []
    while reader.remaining():
        out.append((reader.text(), reader.string()))
    return out


def parse_certificate_line(line: str) -> ParsedCert:
    blob = base64.b64decode(line.split()[1])
    reader = Reader(blob)
    cert_type_name = reader.text()
    reader.string()  # nonce
    for _ in range(_KEY_FIELDS[cert_type_name]):
        reader.string()
    serial, cert_type, key_id = reader.u64(), reader.u32(), reader.text()
    principals_reader, principals = Reader(reader.string()), []
    while principals_reader.remaining():
        principals.append(principals_reader.text())
    valid_after, valid_before = reader.u64(), reader.u64()
    critical = {name: Reader(value).text() for name, value in _pairs(reader.string())}
    extensions = [name for name, _ in _pairs(reader.string())]
    reader.string()  # reserved
    signature_key = reader.string()
    signed_len = len(blob) - reader.remaining()
    signature = reader.string()
    reader.end()
    return ParsedCert(cert_type_name, serial, cert_type, key_id, principals, valid_after,
                      valid_before, critical, extensions, signature_key, signature, blob[:signed_len])


def verify_signature(parsed: ParsedCert, ca_line: str) -> None:
    """Raise cryptography's InvalidSignature unless the CA key signed the certificate."""
    ca_key = serialization.load_ssh_public_key(ca_line.encode())
    reader = Reader(parsed.signature)
    algorithm, raw = reader.text(), reader.string()
    reader.end()
    if isinstance(ca_key, ed25519.Ed25519PublicKey):
        assert algorithm == "ssh-ed25519"
        ca_key.verify(raw, parsed.signed_part)
    elif isinstance(ca_key, rsa.RSAPublicKey):
        assert algorithm == "rsa-sha2-512"
        ca_key.verify(raw, parsed.signed_part, padding.PKCS1v15(), hashes.SHA512())
    else:
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        bits = ca_key.curve.key_size
        assert algorithm == f"ecdsa-sha2-nistp{bits}"
        inner = Reader(raw)
        r, s = inner.mpint(), inner.mpint()
        inner.end()
        hash_alg = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[bits]
        ca_key.verify(encode_dss_signature(r, s), parsed.signed_part, ec.ECDSA(hash_alg))


def ssh_keygen_show(path) -> dict:
    """`ssh-keygen -L` output as a dict; it checks the CA signature and exits non-zero if bad."""
    import os
    import subprocess

    result = subprocess.run(["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True,
                            env={**os.environ, "TZ": "UTC"})
    if result.returncode != 0:
        raise AssertionError(f"ssh-keygen -L refused the certificate: {result.stderr.strip()}")
    shown: dict = {"principals": [], "critical_options": [], "extensions": []}
    section = None
    for raw in result.stdout.splitlines()[1:]:
        line = raw.strip()
        if raw.startswith("                ") and section:
            shown[section].append(line)
            continue
        name, _, value = line.partition(": ")
        name = name.rstrip(":")
        section = {"Principals": "principals", "Critical Options": "critical_options",
                   "Extensions": "extensions"}.get(name)
        if section is None:
            shown[name] = value
    return shown
