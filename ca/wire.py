"""SSH wire encoding (RFC 4251 section 5): the data types every other format here is built from."""

from __future__ import annotations

import struct

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class WireError(ValueError):
    """A buffer that does not hold what the format says it should (truncated, oversized, trailing)."""


def put_u8(value: int) -> bytes:
    return bytes((value,))


def put_u32(value: int) -> bytes:
    return _U32.pack(value)


def put_u64(value: int) -> bytes:
    return _U64.pack(value)


def put_string(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    return _U32.pack(len(value)) + value


def put_mpint(value: int) -> bytes:
    """RFC 4251 mpint: two's complement, big-endian, minimal; a set top bit needs a leading zero."""
    if value < 0:
        raise ValueError("negative mpint")
    if value == 0:
        return put_string(b"")
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")
    return put_string(raw)


def put_mpint_bytes(unsigned: bytes) -> bytes:
    """put_mpint for a big-endian unsigned integer already in bytes (e.g. ECDSA r or s)."""
    unsigned = unsigned.lstrip(b"\0")
    if unsigned and unsigned[0] & 0x80:
        unsigned = b"\0" + unsigned
    return put_string(unsigned)


class Reader:
    """Reads SSH wire types from a buffer, refusing to read past its end."""

    __slots__ = ("_buf", "_pos")

    def __init__(self, buf: bytes) -> None:
        self._buf = memoryview(buf)
        self._pos = 0

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._buf):
            raise WireError("truncated: ran out of data")
        chunk = bytes(self._buf[self._pos : end])
        self._pos = end
        return chunk

    def fixed(self, n: int) -> bytes:
        """`n` bytes as they are (a magic preamble)."""
        return self._take(n)

    def u8(self) -> int:
        return self._take(1)[0]

    def u32(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self._take(8))[0]

    def string(self) -> bytes:
        return self._take(self.u32())

    def text(self) -> str:
        raw = self.string()
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise WireError("a text field is not valid UTF-8") from exc

    def mpint(self) -> int:
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise WireError("negative mpint")
        if len(raw) > 1 and raw[0] == 0 and not raw[1] & 0x80:
            raise WireError("mpint has a superfluous leading zero")
        return int.from_bytes(raw, "big")

    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def rest(self) -> bytes:
        return self._take(self.remaining())

    def end(self) -> None:
        if self.remaining():
            raise WireError(f"{self.remaining()} unexpected trailing bytes")
