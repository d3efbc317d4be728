"""OpenSSH key revocation lists (PROTOCOL.krl): encoding, a validating decoder, atomic publishing.

sshd reads the file named by RevokedKeys on every authentication and refuses *every* key if
it cannot parse it, so the encoder only emits what OpenSSH's parser (krl.c) accepts, and
files are only ever replaced atomically.
"""

from __future__ import annotations

import bisect
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from ca.krl_serials import (
    CERT_SERIAL_BITMAP,
    CERT_SERIAL_LIST,
    CERT_SERIAL_RANGE,
    MAX_BITMAP_BITS,
    MAX_SERIAL,
    Intervals,
    coalesce,
    put_serial_subsection,
    serial_intervals,
    serial_subsections,
)
from ca.wire import Reader, WireError, put_string, put_u8, put_u32, put_u64

KRL_MAGIC = b"SSHKRL\n\x00"
KRL_FORMAT_VERSION = 1

SECTION_CERTIFICATES = 1
SECTION_EXPLICIT_KEY = 2
SECTION_FINGERPRINT_SHA1 = 3
SECTION_SIGNATURE = 4
SECTION_FINGERPRINT_SHA256 = 5
SECTION_EXTENSION = 255

# The serial subsection types (0x20-0x22) live in ca.krl_serials, with the code choosing them.
CERT_KEY_ID = 0x23
CERT_EXTENSION = 0x39


@dataclass(frozen=True)
class Revocations:
    """What a KRL revokes. Validated by encode_krl, not here."""

    serials: frozenset[int] = frozenset()  # certificate serials, 1..2**64-1
    serial_ranges: tuple[tuple[int, int], ...] = ()  # inclusive (lo, hi) ranges
    key_ids: frozenset[str] = frozenset()  # certificate key IDs
    # SSH wire blobs of plain public keys; revoking a key revokes every certificate of it
    public_keys: frozenset[bytes] = frozenset()


@dataclass(frozen=True)
class DecodedCertSection:
    """One KRL_SECTION_CERTIFICATES section as OpenSSH would load it."""

    ca_key: bytes  # empty: the section applies to certificates of any CA
    serial_ranges: tuple[tuple[int, int], ...]  # every revoked serial, coalesced and sorted
    key_ids: frozenset[str]
    subsection_types: tuple[int, ...]  # in file order, to see how serials were encoded

    def revokes_serial(self, serial: int) -> bool:
        """Whether this section revokes a certificate with this serial (from its CA)."""
        i = bisect.bisect_right(self.serial_ranges, (serial, MAX_SERIAL)) - 1
        return i >= 0 and self.serial_ranges[i][0] <= serial <= self.serial_ranges[i][1]


@dataclass(frozen=True)
class DecodedKrl:
    """A parsed KRL: its header fields and everything it revokes."""

    version: int
    generated_at: int
    flags: int
    comment: str
    certificates: tuple[DecodedCertSection, ...]
    public_keys: frozenset[bytes]
    sha1_fingerprints: frozenset[bytes]
    sha256_fingerprints: frozenset[bytes]
    section_types: tuple[int, ...]  # in file order


# --- encoding ---------------------------------------------------------------------------


def encode_krl(
    revocations: Revocations, *, ca_key: bytes, version: int, generated_at: int, comment: str = "",
    other_cas: Mapping[bytes, frozenset[int]] | None = None,
    any_ca: frozenset[int] = frozenset(),
) -> bytes:
    """PROTOCOL.krl sections 1-3. ca_key is the CA public key's SSH wire blob; serials and key
    IDs are scoped to that CA. `other_cas` adds revoked serials of other CAs (the host CA), each
    in a certificates section of its own, as serials are per CA. `any_ca` are serials revoked
    whatever CA signed them (PROTOCOL.krl's empty ca_key): those of a CA Vouch no longer signs
    with, whose key it did not keep (a rotation; hosts may trust both CAs for a while).

    The output is canonical: equal revocations give identical bytes, whatever order the
    sets and ranges were built in.
    """
    _check_u64("version", version)
    _check_u64("generated_at", generated_at)
    _check_cstring("comment", comment)
    _check_ca_key(ca_key)
    intervals = serial_intervals(revocations.serials, revocations.serial_ranges)
    key_ids = _sorted_key_ids(revocations.key_ids)
    public_keys = _sorted_public_keys(revocations.public_keys)
    others = []
    for other_key, serials in sorted((other_cas or {}).items()):
        _check_ca_key(other_key)
        if other_key == ca_key:
            raise ValueError("other_cas repeats the KRL's own CA key: give its serials once")
        others.append((bytes(other_key), serial_intervals(serials, ())))

    out = [_put_header(version, generated_at, comment)]
    if intervals or key_ids:
        certificates = _certificates_section(ca_key, intervals, key_ids)
        out.append(_put_section(SECTION_CERTIFICATES, certificates))
    for other_key, other_intervals in others:
        if other_intervals:
            out.append(_put_section(SECTION_CERTIFICATES,
                                    _certificates_section(other_key, other_intervals, [])))
    wildcard = serial_intervals(any_ca, ())
    if wildcard:
        out.append(_put_section(SECTION_CERTIFICATES, _certificates_section(b"", wildcard, [])))
    if public_keys:
        out.append(_put_section(SECTION_EXPLICIT_KEY, _explicit_key_section(public_keys)))
    return b"".join(out)


def _put_header(version: int, generated_at: int, comment: str) -> bytes:
    """PROTOCOL.krl section 1: magic, format, krl_version, date, flags, reserved, comment."""
    return b"".join(
        (
            KRL_MAGIC,
            put_u32(KRL_FORMAT_VERSION),
            put_u64(version),
            put_u64(generated_at),
            put_u64(0),
            put_string(b""),
            put_string(comment),
        )
    )


def _put_section(section_type: int, body: bytes) -> bytes:
    return put_u8(section_type) + put_string(body)


def _certificates_section(ca_key: bytes, intervals: Intervals, key_ids: list[bytes]) -> bytes:
    """PROTOCOL.krl section 2: CA key, reserved, serial subsections (2.1-2.3), key IDs (2.4)."""
    parts = [put_string(ca_key), put_string(b"")]
    parts += (put_serial_subsection(*sub) for sub in serial_subsections(intervals))
    # 2.4 requires at least one key ID, so an empty subsection is never written.
    if key_ids:
        parts.append(_put_section(CERT_KEY_ID, b"".join(map(put_string, key_ids))))
    return b"".join(parts)


def _explicit_key_section(public_keys: list[bytes]) -> bytes:
    """PROTOCOL.krl section 3: plain public key blobs, which must be at least one."""
    return b"".join(map(put_string, public_keys))


# --- input validation -------------------------------------------------------------------


def _sorted_key_ids(key_ids: frozenset[str]) -> list[bytes]:
    for key_id in key_ids:
        _check_cstring("key ID", key_id)
    # OpenSSH orders key IDs with strcmp, i.e. by UTF-8 bytes.
    return sorted(key_id.encode() for key_id in key_ids)


def _sorted_public_keys(public_keys: frozenset[bytes]) -> list[bytes]:
    for blob in public_keys:
        key_type = _key_type(blob, "revoked public key")
        # OpenSSH strips the certificate before looking a key up, so a certificate blob
        # here would match nothing and silently revoke nothing.
        if key_type.endswith(b"-cert-v01@openssh.com"):
            raise ValueError("a revoked public key must be a plain key, not a certificate")
    return sorted(bytes(blob) for blob in public_keys)


def _check_ca_key(ca_key: bytes) -> None:
    # An empty ca_key would scope the serials to every CA (PROTOCOL.krl section 2).
    key_type = _key_type(ca_key, "CA key")
    if key_type.endswith(b"-cert-v01@openssh.com"):
        raise ValueError("the CA key must be a plain public key, not a certificate")


def _key_type(blob: bytes, what: str) -> bytes:
    if not isinstance(blob, (bytes, bytearray)) or not blob:
        raise ValueError(f"{what} must be a non-empty SSH wire public key blob")
    reader = Reader(bytes(blob))
    key_type = reader.string()
    if not key_type or not reader.remaining():
        raise WireError(f"{what} is not an SSH wire public key blob")
    return key_type


def _check_u64(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= MAX_SERIAL:
        raise ValueError(f"{name} must fit in a uint64, got {value!r}")


def _check_cstring(name: str, value: str) -> None:
    # OpenSSH reads these fields as C strings and rejects the KRL if one holds a NUL.
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError(f"{name} must be a str without NUL characters")


# --- decoding ---------------------------------------------------------------------------


def decode_krl(data: bytes) -> DecodedKrl:
    """Parse a KRL (PROTOCOL.krl sections 1-5), refusing what OpenSSH 9.x would refuse.

    Signature sections (section 6) are refused: OpenSSH 9.4 and later reject them too.
    Raises ValueError (WireError) on malformed input.
    """
    if bytes(data[: len(KRL_MAGIC)]) != KRL_MAGIC:
        raise WireError("not a KRL: bad magic")
    reader = Reader(bytes(data[len(KRL_MAGIC) :]))
    if (format_version := reader.u32()) != KRL_FORMAT_VERSION:
        raise WireError(f"unsupported KRL format version {format_version}")
    version, generated_at, flags = reader.u64(), reader.u64(), reader.u64()
    reader.string()  # reserved
    comment = _read_cstring(reader)

    certificates: list[DecodedCertSection] = []
    blobs: dict[int, set[bytes]] = {
        SECTION_EXPLICIT_KEY: set(),
        SECTION_FINGERPRINT_SHA1: set(),
        SECTION_FINGERPRINT_SHA256: set(),
    }
    section_types: list[int] = []
    while reader.remaining():
        section_type = reader.u8()
        body = Reader(reader.string())
        section_types.append(section_type)
        if section_type == SECTION_CERTIFICATES:
            certificates.append(_decode_certificates(body))
        elif section_type in blobs:
            _decode_blobs(body, section_type, blobs[section_type])
        elif section_type == SECTION_EXTENSION:
            _decode_extension(body)
        elif section_type == SECTION_SIGNATURE:
            raise WireError("KRL signature sections are not supported")
        else:
            raise WireError(f"unknown KRL section type {section_type}")
        body.end()
    return DecodedKrl(
        version=version,
        generated_at=generated_at,
        flags=flags,
        comment=comment,
        certificates=tuple(certificates),
        public_keys=frozenset(blobs[SECTION_EXPLICIT_KEY]),
        sha1_fingerprints=frozenset(blobs[SECTION_FINGERPRINT_SHA1]),
        sha256_fingerprints=frozenset(blobs[SECTION_FINGERPRINT_SHA256]),
        section_types=tuple(section_types),
    )


def _decode_certificates(reader: Reader) -> DecodedCertSection:
    """PROTOCOL.krl section 2. OpenSSH accepts serials in any order and overlapping; so do we."""
    ca_key = reader.string()
    reader.string()  # reserved
    intervals: Intervals = []
    key_ids: set[str] = set()
    types: list[int] = []
    while reader.remaining():
        sub_type = reader.u8()
        sub = Reader(reader.string())
        types.append(sub_type)
        if sub_type == CERT_SERIAL_LIST:
            while sub.remaining():
                serial = _read_serial(sub)
                intervals.append((serial, serial))
        elif sub_type == CERT_SERIAL_RANGE:
            lo, hi = _read_serial(sub), _read_serial(sub)
            if lo > hi:
                raise WireError(f"serial range {lo}..{hi} is empty")
            intervals.append((lo, hi))
        elif sub_type == CERT_SERIAL_BITMAP:
            intervals += _decode_bitmap(sub)
        elif sub_type == CERT_KEY_ID:
            while sub.remaining():
                key_ids.add(_read_cstring(sub))
        elif sub_type == CERT_EXTENSION:
            _decode_extension(sub)
        else:
            raise WireError(f"unknown KRL certificate subsection type {sub_type:#x}")
        sub.end()
    return DecodedCertSection(
        ca_key=ca_key,
        serial_ranges=tuple(coalesce(intervals)),
        key_ids=frozenset(key_ids),
        subsection_types=tuple(types),
    )


def _decode_bitmap(reader: Reader) -> Intervals:
    """PROTOCOL.krl 2.3: bit N set revokes serial offset + N."""
    offset = reader.u64()
    raw = reader.string()
    # Same bounds as OpenSSH's sshbuf_get_bignum2_bytes_direct: sign bit clear, and at most
    # MAX_BITMAP_BITS bits after an optional leading zero byte.
    if raw and raw[0] & 0x80:
        raise WireError("negative bitmap")
    bitmap = int.from_bytes(raw, "big")
    if bitmap.bit_length() > MAX_BITMAP_BITS or len(raw) > MAX_BITMAP_BITS // 8 + 1:
        raise WireError(f"bitmap wider than {MAX_BITMAP_BITS} bits")
    if bitmap and offset + bitmap.bit_length() - 1 > MAX_SERIAL:
        raise WireError("bitmap runs past serial 2**64-1")
    if bitmap & 1 and offset == 0:
        raise WireError("serial 0 cannot be revoked")
    intervals = []
    bits = bin(bitmap)[:1:-1]  # least significant bit first
    index = bits.find("1")
    while index != -1:
        end = bits.find("0", index)
        end = len(bits) if end == -1 else end
        intervals.append((offset + index, offset + end - 1))
        index = bits.find("1", end)
    return intervals


def _decode_blobs(reader: Reader, section_type: int, into: set[bytes]) -> None:
    """PROTOCOL.krl sections 3 and 4: a sequence of strings (hashes have a fixed length)."""
    expected = {SECTION_FINGERPRINT_SHA1: 20, SECTION_FINGERPRINT_SHA256: 32}.get(section_type)
    while reader.remaining():
        blob = reader.string()
        if expected is not None and len(blob) != expected:
            raise WireError(f"fingerprint of {len(blob)} bytes in a {expected}-byte section")
        into.add(blob)


def _decode_extension(reader: Reader) -> None:
    """PROTOCOL.krl sections 2.5 and 5: none are understood, so a critical one is fatal."""
    name = _read_cstring(reader)
    critical = reader.u8()
    reader.string()
    if critical:
        raise WireError(f"unsupported critical KRL extension {name!r}")


def _read_serial(reader: Reader) -> int:
    serial = reader.u64()
    if serial == 0:
        raise WireError("serial 0 cannot be revoked")
    return serial


def _read_cstring(reader: Reader) -> str:
    raw = reader.string()
    if b"\x00" in raw:
        raise WireError("a KRL string holds a NUL character")
    # OpenSSH does not insist on UTF-8 here, so neither do we; odd bytes survive as escapes.
    return raw.decode("utf-8", "surrogateescape")


# --- publishing -------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, os.replace, fsync the directory;
    mode 0644.

    sshd re-reads RevokedKeys on every connection and fails closed on a truncated file, so
    readers must only ever see the old or the new file, never a partial one.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # mkstemp creates 0600; sshd may run the check as a different user.
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
