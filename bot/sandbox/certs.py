"""Certificates as the sandbox page sees them: found in the bot's DMs, with the facts the page
shows (serial, principals, expiry) and the file name `ssh` looks for next to the key.

The layout is OpenSSH's PROTOCOL.certkeys: type, nonce, the certified key's fields, serial, type,
key id, principals, validity; the key's fields are checked as `ca.keys` checks a public key.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ca.errors import BadInput
from ca.keys import ACCEPTED_TYPES, fingerprint, read_key_fields
from ca.wire import Reader, WireError, put_string

__all__ = ["CertInfo", "certificates_in", "default_filename", "parse_cert_line"]

_SUFFIX = "-cert-v01@openssh.com"
_CERT_LINE = re.compile(r"\b((?:ssh|ecdsa|sk)-[a-z0-9@.-]*-cert-v01@openssh\.com) ([A-Za-z0-9+/=]+)"
                        r"(?:[ \t]+([^\s`]+))?")
# Where `ssh` looks for a certificate by default, by the certified key's type.
_CERT_FILE = {
    "ssh-ed25519": "id_ed25519", "ssh-rsa": "id_rsa", "ecdsa-sha2-nistp256": "id_ecdsa",
    "ecdsa-sha2-nistp384": "id_ecdsa", "ecdsa-sha2-nistp521": "id_ecdsa",
    "sk-ssh-ed25519@openssh.com": "id_ed25519_sk",
    "sk-ecdsa-sha2-nistp256@openssh.com": "id_ecdsa_sk",
}


@dataclass(frozen=True)
class CertInfo:
    line: str
    key_type: str  # the certified key's type, e.g. ssh-ed25519
    key_fingerprint: str
    serial: int
    principals: tuple[str, ...]
    valid_before: int


def parse_cert_line(line: str) -> CertInfo | None:
    """The facts of an OpenSSH user certificate line, or None when it is not one."""
    parts = line.split()
    if len(parts) < 2 or not parts[0].endswith(_SUFFIX):
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
        reader = Reader(blob)
        cert_type = reader.text()
        if cert_type != parts[0]:
            return None
        reader.string()  # nonce
        key_type = cert_type.removesuffix(_SUFFIX)
        if key_type.startswith("sk-"):  # sk-X-cert-v01@openssh.com certifies sk-X@openssh.com
            key_type += "@openssh.com"
        if key_type not in ACCEPTED_TYPES:
            return None
        start = len(blob) - reader.remaining()
        read_key_fields(key_type, reader)
        key_blob = put_string(key_type) + blob[start:len(blob) - reader.remaining()]
        serial = reader.u64()
        reader.u32()  # type
        reader.string()  # key id
        principals_reader = Reader(reader.string())
        principals = []
        while principals_reader.remaining():
            principals.append(principals_reader.text())
        reader.u64()  # valid after
        valid_before = reader.u64()
    except (binascii.Error, WireError, BadInput, ValueError):
        return None
    return CertInfo(line=" ".join(parts[:3]), key_type=key_type,
                    key_fingerprint=fingerprint(key_blob),
                    serial=serial, principals=tuple(principals), valid_before=valid_before)


def certificates_in(text: str) -> list[CertInfo]:
    """Every certificate line in a message's text, once per serial, in order."""
    found: list[CertInfo] = []
    for match in _CERT_LINE.finditer(text or ""):
        info = parse_cert_line(" ".join(g for g in match.groups() if g))
        if info is not None and all(c.serial != info.serial for c in found):
            found.append(info)
    return found


def default_filename(cert: CertInfo) -> str:
    """The name `ssh` looks for next to a key of the certified type, e.g. id_ed25519-cert.pub."""
    return _CERT_FILE.get(cert.key_type, "id_ed25519") + "-cert.pub"
