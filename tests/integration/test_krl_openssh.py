"""ca/krl.py against the real OpenSSH: every KRL we write must load in ssh-keygen, and revoke
exactly the certificates it should."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from ca import krl
from ca.krl import Revocations, decode_krl, encode_krl, write_atomic
from ca.wire import put_mpint, put_string, put_u8, put_u64

SSH_KEYGEN = shutil.which("ssh-keygen")
pytestmark = pytest.mark.skipif(
    SSH_KEYGEN is None, reason="ssh-keygen is not installed (apt-get install openssh-client)"
)

MAX = 2**64 - 1


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [SSH_KEYGEN, *map(str, args)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)


def wire_blob(pub: Path) -> bytes:
    return base64.b64decode(pub.read_text().split()[1])


class Pki:
    """Two CAs, two user keys, and certificates signed on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("ca", "other_ca"):
            self._keygen(name, "-t", "ecdsa", "-b", "256")
        for name in ("user", "user2"):
            self._keygen(name, "-t", "ed25519")
        self.ca_key = wire_blob(root / "ca.pub")
        self._made = 0

    def _keygen(self, name: str, *args: str) -> None:
        made = run("-q", *args, "-f", name, "-N", "", "-C", name, cwd=self.root)
        assert made.returncode == 0, made.stderr

    def cert(self, serial: int, key_id: str = "keyid", ca: str = "ca", user: str = "user") -> Path:
        self._made += 1
        base = self.root / f"{self._made}-{ca}-{serial}-{user}"
        shutil.copy(self.root / f"{user}.pub", base.with_suffix(".pub"))
        sign = ["-q", "-s", ca, "-I", key_id, "-n", "user", "-z", str(serial), "-V", "+1h"]
        signed = run(*sign, base.with_suffix(".pub"), cwd=self.root)
        assert signed.returncode == 0, signed.stderr
        return Path(f"{base}-cert.pub")

    def statuses(self, data: bytes, keys: list[Path]) -> list[str]:
        """ssh-keygen -Q's verdict on each key: "REVOKED" or "ok"."""
        path = self.root / "revoked.krl"
        write_atomic(path, data)
        checked = run("-Q", "-f", path, *keys, cwd=self.root)
        assert checked.returncode in (0, 1), checked.stderr
        lines = checked.stdout.splitlines()
        assert len(lines) == len(keys), checked.stdout + checked.stderr
        for key, line in zip(keys, lines, strict=True):
            assert line.startswith(str(key))
        return [line.rsplit(": ", 1)[1] for line in lines]

    def encode(self, revocations: Revocations) -> bytes:
        return encode_krl(revocations, ca_key=self.ca_key, version=1, generated_at=1_700_000_000)

    def check_serials(self, revocations: Revocations, expected: dict[int, str]) -> bytes:
        data = self.encode(revocations)
        certs = [self.cert(serial) for serial in expected]
        assert dict(zip(expected, self.statuses(data, certs), strict=True)) == expected
        return data


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def subsection_types(data: bytes) -> tuple[int, ...]:
    (certs,) = decode_krl(data).certificates
    return certs.subsection_types


R, OK = "REVOKED", "ok"


def test_serials_in_a_list(pki):
    revocations = Revocations(serials=frozenset({42, 1_000_000, MAX}))
    data = pki.check_serials(
        revocations, {41: OK, 42: R, 43: OK, 1_000_000: R, 1_000_001: OK, MAX - 1: OK, MAX: R}
    )
    assert subsection_types(data) == (krl.CERT_SERIAL_LIST,)


def test_serials_in_a_range(pki):
    revocations = Revocations(serial_ranges=((5000, 6000),))
    data = pki.check_serials(revocations, {4999: OK, 5000: R, 5500: R, 6000: R, 6001: OK})
    assert subsection_types(data) == (krl.CERT_SERIAL_RANGE,)


def test_serials_in_a_bitmap(pki):
    revocations = Revocations(serials=frozenset(range(1000, 1100, 2)))
    data = pki.check_serials(
        revocations, {998: OK, 999: OK, 1000: R, 1001: OK, 1050: R, 1098: R, 1099: OK, 1100: OK}
    )
    assert subsection_types(data) == (krl.CERT_SERIAL_BITMAP,)


def test_large_dense_set_splits_into_loadable_bitmaps(pki):
    # 40,000 serials, every other one: far too wide for one bitmap OpenSSH can read.
    revoked = range(100_001, 180_000, 2)
    data = pki.encode(Revocations(serials=frozenset(revoked)))
    types = subsection_types(data)
    assert len(types) >= 5 and set(types) == {krl.CERT_SERIAL_BITMAP}
    # The first bitmap starts at 100,001 and can reach 116,384; probe both sides of that seam.
    probes = [100_000, 100_001, 100_002, 116_383, 116_384, 116_385, 150_001, 179_999, 180_001]
    certs = [pki.cert(serial) for serial in probes]
    expected = [R if serial in revoked else OK for serial in probes]
    assert pki.statuses(data, certs) == expected


def test_key_id(pki):
    data = pki.encode(Revocations(key_ids=frozenset({"revoked-id"})))
    certs = [pki.cert(777, key_id="revoked-id"), pki.cert(778, key_id="other-id")]
    assert pki.statuses(data, certs) == [R, OK]


def test_explicit_public_key(pki):
    data = pki.encode(Revocations(public_keys=frozenset({wire_blob(pki.root / "user2.pub")})))
    keys = [
        pki.cert(1, user="user2"),
        pki.root / "user2.pub",
        pki.cert(1, user="user"),
        pki.root / "user.pub",
    ]
    assert pki.statuses(data, keys) == [R, R, OK, OK]


def test_revocations_are_scoped_to_our_ca(pki):
    data = pki.encode(
        Revocations(serials=frozenset({42}), serial_ranges=((100, 200),), key_ids=frozenset({"x"}))
    )
    certs = [
        pki.cert(42, ca="other_ca"),
        pki.cert(150, ca="other_ca"),
        pki.cert(7, key_id="x", ca="other_ca"),
        pki.cert(42),
        pki.cert(7, key_id="x"),
    ]
    assert pki.statuses(data, certs) == [OK, OK, OK, R, R]


def test_empty_krl_revokes_nothing(pki):
    data = pki.encode(Revocations())
    keys = [pki.cert(1), pki.cert(2, ca="other_ca"), pki.root / "user.pub"]
    assert pki.statuses(data, keys) == [OK, OK, OK]
    listed = run("-Q", "-l", "-f", pki.root / "revoked.krl", cwd=pki.root)
    assert listed.returncode == 0, listed.stderr
    assert "KRL version 1" in listed.stdout


def test_everything_at_once_lists_cleanly(pki):
    revocations = Revocations(
        serials=frozenset({3, 9} | set(range(500, 600, 3))),
        serial_ranges=((10_000, 20_000),),
        key_ids=frozenset({"bob", "alice"}),
        public_keys=frozenset({wire_blob(pki.root / "user2.pub")}),
    )
    path = pki.root / "all.krl"
    data = encode_krl(revocations, ca_key=pki.ca_key, version=9, generated_at=1, comment="c")
    write_atomic(path, data)
    listed = run("-Q", "-l", "-f", path, cwd=pki.root)
    assert listed.returncode == 0, listed.stderr
    expected = ["# KRL version 9", "# Comment: c", "serial: 3", "serial: 10000-20000", "id: alice"]
    for line in expected:
        assert line in listed.stdout.splitlines()


@pytest.mark.parametrize(("bits", "loads"), [(16384, True), (16385, False)])
def test_bitmap_width_limit_is_openssh_s(pki, bits, loads):
    """Hand-built bitmaps either side of MAX_BITMAP_BITS: OpenSSH and decode_krl agree."""
    bitmap = put_u8(krl.CERT_SERIAL_BITMAP) + put_string(put_u64(5) + put_mpint(2**bits - 1))
    certs = put_string(pki.ca_key) + put_string(b"") + bitmap
    data = pki.encode(Revocations()) + put_u8(krl.SECTION_CERTIFICATES) + put_string(certs)
    path = pki.root / "handmade.krl"
    write_atomic(path, data)
    checked = run("-Q", "-f", path, pki.root / "user.pub", cwd=pki.root)
    assert (checked.returncode == 0) is loads, checked.stderr
    if loads:
        decode_krl(data)
    else:
        assert "bignum is too large" in checked.stderr
        with pytest.raises(ValueError):
            decode_krl(data)


def test_a_second_ca_section_revokes_that_cas_serials_only(pki):
    """Serials are per CA: the host CA's revoked serials go in a section keyed to the host CA,
    and the same serial from the user CA stays good (and the other way round)."""
    host_key = wire_blob(pki.root / "other_ca.pub")
    data = encode_krl(Revocations(serials=frozenset({7})), ca_key=pki.ca_key, version=1,
                      generated_at=1, other_cas={host_key: frozenset({8, 9})})
    host_certs = []
    for serial in (7, 8):
        base = pki.root / f"host-{serial}"
        shutil.copy(pki.root / "user2.pub", base.with_suffix(".pub"))
        signed = run("-q", "-s", "other_ca", "-h", "-I", "h", "-n", "db1", "-z", str(serial),
                     "-V", "+1h", base.with_suffix(".pub"), cwd=pki.root)
        assert signed.returncode == 0, signed.stderr
        host_certs.append(Path(f"{base}-cert.pub"))
    user_certs = [pki.cert(7), pki.cert(8)]
    assert pki.statuses(data, [*user_certs, *host_certs]) == [R, OK, OK, R]
    sections = {section.ca_key: section.serial_ranges for section in decode_krl(data).certificates}
    assert sections == {pki.ca_key: ((7, 7),), host_key: ((8, 9),)}


def test_other_cas_may_not_repeat_the_krls_own_ca(pki):
    with pytest.raises(ValueError, match="repeats the KRL's own CA key"):
        encode_krl(Revocations(), ca_key=pki.ca_key, version=1, generated_at=1,
                   other_cas={pki.ca_key: frozenset({1})})
