"""ca/krl.py: the KRL encoder, its decoder and atomic publishing, without OpenSSH."""

from __future__ import annotations

import os
import random
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca import krl
from ca.krl import Revocations, decode_krl, encode_krl, write_atomic
from ca.wire import Reader, put_mpint, put_string, put_u8, put_u32, put_u64

CA_KEY = put_string("ssh-ed25519") + put_string(bytes(range(32)))
OTHER_KEY = put_string("ssh-ed25519") + put_string(bytes(32))
CERT_BLOB = put_string("ssh-ed25519-cert-v01@openssh.com") + put_string(b"nonce") + b"rest"
MAX = 2**64 - 1


NOTHING = Revocations()


def encode(revocations: Revocations = NOTHING, **kw) -> bytes:
    kw = {"ca_key": CA_KEY, "version": 7, "generated_at": 1_700_000_000, **kw}
    return encode_krl(revocations, **kw)


def intervals_of(serials: set[int]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for s in sorted(serials):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return tuple((lo, hi) for lo, hi in out)


def serial_subsections(data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of every subsection in the KRL's one certificate section, read independently
    of decode_krl."""
    r = Reader(data)
    assert r.u64() == 0x5353484B524C0A00 and r.u32() == 1
    r.u64(), r.u64(), r.u64(), r.string(), r.string()
    assert r.u8() == krl.SECTION_CERTIFICATES
    sect = Reader(r.string())
    assert sect.string() == CA_KEY and sect.string() == b""
    subs = []
    while sect.remaining():
        subs.append((sect.u8(), sect.string()))
    return subs


def bitmap_widths(data: bytes) -> list[int]:
    widths = []
    for kind, body in serial_subsections(data):
        if kind == krl.CERT_SERIAL_BITMAP:
            r = Reader(body)
            r.u64()
            raw = r.string()
            assert len(raw) <= 16384 // 8 + 1
            widths.append(int.from_bytes(raw, "big").bit_length())
    return widths


# --- header and empty KRL ----------------------------------------------------------------


def test_header_fields():
    data = encode(version=42, generated_at=1_234_567_890, comment="vouch KRL ✓")
    r = Reader(data)
    assert r.u64() == 0x5353484B524C0A00  # "SSHKRL\n\0"
    assert r.u32() == 1
    assert (r.u64(), r.u64(), r.u64()) == (42, 1_234_567_890, 0)
    assert r.string() == b""
    assert r.text() == "vouch KRL ✓"
    r.end()

    decoded = decode_krl(data)
    assert (decoded.version, decoded.generated_at, decoded.flags) == (42, 1_234_567_890, 0)
    assert decoded.comment == "vouch KRL ✓"


def test_empty_krl_is_just_a_header():
    data = encode()
    assert data == (
        b"SSHKRL\n\x00"
        + put_u32(1)
        + put_u64(7)
        + put_u64(1_700_000_000)
        + put_u64(0)
        + put_string(b"")
        + put_string(b"")
    )
    decoded = decode_krl(data)
    assert decoded.section_types == ()
    assert decoded.certificates == () and decoded.public_keys == frozenset()


@pytest.mark.parametrize("field", ["version", "generated_at"])
@pytest.mark.parametrize("value", [-1, 2**64])
def test_header_integers_must_fit_u64(field, value):
    with pytest.raises(ValueError):
        encode(**{field: value})


def test_comment_with_nul_refused():
    with pytest.raises(ValueError):
        encode(comment="a\x00b")


# --- serial validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "revocations",
    [
        Revocations(serials=frozenset({0})),
        Revocations(serials=frozenset({-1})),
        Revocations(serials=frozenset({2**64})),
        Revocations(serials=frozenset({True})),
        Revocations(serials=frozenset({"5"})),
        Revocations(serial_ranges=((0, 5),)),
        Revocations(serial_ranges=((5, 2**64),)),
        Revocations(serial_ranges=((6, 5),)),
        Revocations(serial_ranges=((1, 2, 3),)),
    ],
    ids=repr,
)
def test_bad_serials_refused(revocations):
    with pytest.raises(ValueError):
        encode(revocations)


def test_extreme_serials_accepted():
    data = encode(Revocations(serials=frozenset({1, MAX}), serial_ranges=((MAX - 20_000, MAX),)))
    assert decode_krl(data).certificates[0].serial_ranges == ((1, 1), (MAX - 20_000, MAX))


def test_whole_serial_space_is_one_range():
    data = encode(Revocations(serial_ranges=((1, MAX),)))
    assert serial_subsections(data) == [(krl.CERT_SERIAL_RANGE, put_u64(1) + put_u64(MAX))]


# --- other inputs ------------------------------------------------------------------------


@pytest.mark.parametrize("ca_key", [b"", CERT_BLOB, b"\x00\x00\x00\x05ab"])
def test_bad_ca_key_refused(ca_key):
    with pytest.raises(ValueError):
        encode(Revocations(serials=frozenset({1})), ca_key=ca_key)


def test_certificate_blob_refused_as_public_key():
    with pytest.raises(ValueError):
        encode(Revocations(public_keys=frozenset({CERT_BLOB})))


def test_key_id_with_nul_refused():
    with pytest.raises(ValueError):
        encode(Revocations(key_ids=frozenset({"ok", "bad\x00id"})))


def test_key_ids_and_public_keys_sections():
    ids = frozenset({"bob", "alice", "ünï"})
    data = encode(Revocations(key_ids=ids, public_keys=frozenset({OTHER_KEY, CA_KEY})))
    decoded = decode_krl(data)
    assert decoded.section_types == (krl.SECTION_CERTIFICATES, krl.SECTION_EXPLICIT_KEY)
    (certs,) = decoded.certificates
    assert certs.ca_key == CA_KEY
    assert certs.key_ids == {"alice", "bob", "ünï"}
    assert certs.subsection_types == (krl.CERT_KEY_ID,)
    assert certs.serial_ranges == ()
    assert decoded.public_keys == {OTHER_KEY, CA_KEY}
    # OpenSSH sorts key IDs with strcmp and blobs with memcmp; so do we.
    ((_, body),) = serial_subsections(data)
    ids = Reader(body)
    assert [ids.string() for _ in range(3)] == sorted(k.encode() for k in ("bob", "alice", "ünï"))


def test_only_public_keys_needs_no_certificate_section():
    decoded = decode_krl(encode(Revocations(public_keys=frozenset({OTHER_KEY}))))
    assert decoded.section_types == (krl.SECTION_EXPLICIT_KEY,)
    assert decoded.certificates == ()


# --- serial section choices --------------------------------------------------------------


def kinds(revocations: Revocations) -> list[int]:
    return [kind for kind, _ in serial_subsections(encode(revocations))]


def test_sparse_serials_share_one_list():
    assert kinds(Revocations(serials=frozenset({5, 10_000, 2**40, MAX}))) == [krl.CERT_SERIAL_LIST]


def test_long_run_is_a_range():
    assert kinds(Revocations(serial_ranges=((100, 100_000),))) == [krl.CERT_SERIAL_RANGE]


def test_dense_serials_are_a_bitmap():
    assert kinds(Revocations(serials=frozenset(range(1000, 1400, 3)))) == [krl.CERT_SERIAL_BITMAP]


def test_mixed_runs_pick_each_kind_in_serial_order():
    revocations = Revocations(
        serials=frozenset({7} | set(range(50_000, 50_300, 2)) | {9_000_000}),
        serial_ranges=((1_000_000, 2_000_000),),
    )
    assert kinds(revocations) == [
        krl.CERT_SERIAL_LIST,
        krl.CERT_SERIAL_BITMAP,
        krl.CERT_SERIAL_RANGE,
        krl.CERT_SERIAL_LIST,
    ]


def test_ranges_and_serials_are_coalesced():
    revocations = Revocations(
        serials=frozenset({21, 30, 3}),
        serial_ranges=((1, 10), (11, 20), (5, 15), (1000, 5000), (4000, 4500), (5001, 6000)),
    )
    data = encode(revocations)
    assert decode_krl(data).certificates[0].serial_ranges == ((1, 21), (30, 30), (1000, 6000))
    # Nothing is listed twice: the subsections cover disjoint, increasing serials.
    subsections = serial_subsections(data)
    assert [body for kind, body in subsections if kind == krl.CERT_SERIAL_RANGE] == [
        put_u64(1000) + put_u64(6000)
    ]


@pytest.mark.parametrize("step", [1, 2, 3])
def test_bitmaps_never_exceed_16384_bits(step):
    rng = random.Random(step)
    # 100,000 serials with small holes, so a range cannot cover them and bitmaps must.
    serials = set()
    s = 1
    while len(serials) < 100_000:
        serials.add(s)
        s += rng.randint(1, step) if step > 1 else rng.choice((1, 1, 1, 2))
    data = encode(Revocations(serials=frozenset(serials)))
    widths = bitmap_widths(data)
    assert len(widths) >= 2
    assert max(widths) <= krl.MAX_BITMAP_BITS
    assert decode_krl(data).certificates[0].serial_ranges == intervals_of(serials)


def test_bitmap_exactly_at_the_limit_has_a_leading_zero():
    # 16384 serials, every other one missing: the cheapest cover is one bitmap as wide as allowed.
    serials = frozenset(range(1, 16385, 2)) | {16384}
    data = encode(Revocations(serials=serials))
    assert bitmap_widths(data) == [16384]
    assert decode_krl(data).certificates[0].serial_ranges == intervals_of(set(serials))


# --- round trip and canonical form -------------------------------------------------------

small_serials = st.integers(1, 5000) | st.integers(MAX - 5000, MAX)
ranges = st.tuples(small_serials, st.integers(0, 300)).map(lambda t: (t[0], min(t[0] + t[1], MAX)))
key_ids = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
blobs = st.binary(min_size=1, max_size=40).map(lambda b: put_string("ssh-ed25519") + put_string(b))


@settings(max_examples=150, deadline=None)
@given(
    serials=st.frozensets(small_serials, max_size=300),
    serial_ranges=st.lists(ranges, max_size=8),
    ids=st.frozensets(key_ids, max_size=5),
    keys=st.frozensets(blobs, max_size=4),
    version=st.integers(0, MAX),
    comment=key_ids,
)
def test_round_trip(serials, serial_ranges, ids, keys, version, comment):
    revocations = Revocations(serials, tuple(serial_ranges), ids, keys)
    data = encode(revocations, version=version, comment=comment)
    decoded = decode_krl(data)

    expected = set(serials)
    for lo, hi in serial_ranges:
        expected.update(range(lo, hi + 1))
    assert (decoded.version, decoded.comment) == (version, comment)
    assert decoded.public_keys == keys
    if expected or ids:
        (certs,) = decoded.certificates
        assert certs.ca_key == CA_KEY
        assert certs.serial_ranges == intervals_of(expected)
        assert certs.key_ids == ids
        assert all(certs.revokes_serial(s) for s in expected)
        assert not any(certs.revokes_serial(s) for s in {0, 5001, MAX - 5001} - expected)
        if expected:
            assert max(bitmap_widths(data), default=0) <= krl.MAX_BITMAP_BITS
    else:
        assert decoded.certificates == ()


@settings(max_examples=100, deadline=None)
@given(
    serials=st.frozensets(small_serials, max_size=200),
    serial_ranges=st.lists(ranges, max_size=6),
    ids=st.lists(key_ids, max_size=5),
    keys=st.lists(blobs, max_size=4),
    seed=st.integers(),
)
def test_same_revocations_in_any_order_give_the_same_bytes(serials, serial_ranges, ids, keys, seed):
    rng = random.Random(seed)

    def shuffled(items):
        items = list(items)
        rng.shuffle(items)
        return items

    first = Revocations(serials, tuple(serial_ranges), frozenset(ids), frozenset(keys))
    # The same revocations spelled differently: serials as one-serial ranges, ranges
    # reordered, sets built in another order.
    second = Revocations(
        frozenset(),
        tuple(shuffled([(s, s) for s in serials] + serial_ranges)),
        frozenset(shuffled(ids)),
        frozenset(shuffled(keys)),
    )
    assert encode(first) == encode(second)


# --- decoder refuses what OpenSSH refuses ------------------------------------------------


def krl_with(*sections: bytes) -> bytes:
    return encode() + b"".join(sections)


def certs_section(*subsections: bytes) -> bytes:
    return put_u8(1) + put_string(put_string(CA_KEY) + put_string(b"") + b"".join(subsections))


def sub(kind: int, body: bytes) -> bytes:
    return put_u8(kind) + put_string(body)


BITMAP = krl.CERT_SERIAL_BITMAP
CRITICAL_EXTENSION = put_string("x@example.com") + b"\x01" + put_string(b"")
MALFORMED = {
    "empty": b"",
    "bad magic": b"SSHKRL\n\x01" + encode()[8:],
    "truncated header": encode()[:-1],
    "format version 2": encode()[:8] + put_u32(2) + encode()[12:],
    "unknown section": krl_with(put_u8(9) + put_string(b"")),
    "signature": krl_with(put_u8(4) + put_string(CA_KEY) + put_string(b"sig")),
    "serial 0 listed": krl_with(certs_section(sub(krl.CERT_SERIAL_LIST, put_u64(0)))),
    "partial serial": krl_with(certs_section(sub(krl.CERT_SERIAL_LIST, put_u64(5) + b"\x00"))),
    "range lo > hi": krl_with(certs_section(sub(krl.CERT_SERIAL_RANGE, put_u64(9) + put_u64(8)))),
    "range trailing": krl_with(
        certs_section(sub(krl.CERT_SERIAL_RANGE, put_u64(1) + put_u64(8) + put_u64(9)))
    ),
    "bitmap 16385 bits": krl_with(certs_section(sub(BITMAP, put_u64(1) + put_mpint(2**16384)))),
    "bitmap serial 0": krl_with(certs_section(sub(BITMAP, put_u64(0) + put_mpint(1)))),
    "bitmap wraps": krl_with(certs_section(sub(BITMAP, put_u64(MAX) + put_mpint(2)))),
    "key ID with NUL": krl_with(certs_section(sub(krl.CERT_KEY_ID, put_string(b"a\x00b")))),
    "unknown subsection": krl_with(certs_section(sub(0x24, b""))),
    "critical cert extension": krl_with(certs_section(sub(krl.CERT_EXTENSION, CRITICAL_EXTENSION))),
    "critical extension": krl_with(put_u8(255) + put_string(CRITICAL_EXTENSION)),
    "short sha256": krl_with(put_u8(5) + put_string(put_string(bytes(20)))),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_decoder_refuses_malformed_krls(data):
    with pytest.raises(ValueError):
        decode_krl(data)


def test_decoder_accepts_what_openssh_accepts():
    data = krl_with(
        certs_section(
            sub(krl.CERT_SERIAL_LIST, put_u64(9) + put_u64(3) + put_u64(9)),  # unsorted, repeated
            sub(krl.CERT_SERIAL_BITMAP, put_u64(0) + put_mpint(0b1100)),  # offset 0, bit 0 clear
            sub(krl.CERT_SERIAL_BITMAP, put_u64(MAX) + put_mpint(1)),
            sub(krl.CERT_SERIAL_RANGE, put_u64(4) + put_u64(4)),
            sub(krl.CERT_EXTENSION, put_string("x@y") + b"\x00" + put_string(b"v")),
        ),
        put_u8(255) + put_string(put_string("x@y") + b"\x00" + put_string(b"")),
        put_u8(5) + put_string(put_string(bytes(32))),
    )
    decoded = decode_krl(data)
    assert decoded.certificates[0].serial_ranges == ((2, 4), (9, 9), (MAX, MAX))
    assert decoded.sha256_fingerprints == {bytes(32)}


# --- write_atomic ------------------------------------------------------------------------


def test_write_atomic_replaces_with_mode_0644(tmp_path):
    target = tmp_path / "revoked.krl"
    target.write_bytes(b"old")
    target.chmod(0o600)
    old_umask = os.umask(0o077)
    try:
        write_atomic(target, b"new contents")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new contents"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["revoked.krl"]


def test_write_atomic_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "revoked.krl"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(str(target), "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["revoked.krl"]
