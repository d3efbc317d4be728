"""Revoked certificate serials in a KRL (PROTOCOL.krl 2.1-2.3): checked, coalesced into intervals,
and planned into the list, range and bitmap subsections that encode them in the fewest bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from ca.wire import put_mpint, put_string, put_u8, put_u64

CERT_SERIAL_LIST = 0x20
CERT_SERIAL_RANGE = 0x21
CERT_SERIAL_BITMAP = 0x22

MAX_SERIAL = 2**64 - 1
# OpenSSH refuses an mpint longer than 16384 bits (SSHBUF_MAX_BIGNUM) and then rejects the
# whole KRL ("bignum is too large"), so no bitmap may span more serials than this.
MAX_BITMAP_BITS = 16384

# Byte sizes of the serial subsections: type byte + string length prefix, then the body.
_SUBSECTION_HEADER = 1 + 4
_RANGE_COST = _SUBSECTION_HEADER + 16
_BITMAP_FIXED_COST = _SUBSECTION_HEADER + 8 + 4

Intervals = list[tuple[int, int]]  # inclusive (lo, hi) serial intervals

# Inside a bitmap each unrevoked serial costs one bit, so a gap this wide costs as much as
# closing the bitmap and starting another.
_GAP_BREAK = 8 * _BITMAP_FIXED_COST
# A run this long is cheaper as a range of its own, even paying for a new bitmap after it.
_LONG_RUN = 8 * (_RANGE_COST + _BITMAP_FIXED_COST)


def serial_subsections(intervals: Intervals) -> list[tuple[int, Intervals]]:
    """Split sorted, disjoint intervals into (subsection type, intervals), in serial order.

    Neighbouring intervals are clustered while the gap between them is cheaper to carry as
    zero bits than a new subsection, and the cluster fits one bitmap; long runs stand alone.
    Each cluster then takes its cheapest form, and consecutive lists are joined into one.
    """
    clusters: list[Intervals] = []
    for lo, hi in intervals:
        if clusters:
            last = clusters[-1]
            if (
                hi - lo < _LONG_RUN
                and last[-1][1] - last[-1][0] < _LONG_RUN
                and lo - last[-1][1] - 1 < _GAP_BREAK
                and hi - last[0][0] < MAX_BITMAP_BITS
            ):
                last.append((lo, hi))
                continue
        clusters.append([(lo, hi)])

    subsections: list[tuple[int, Intervals]] = []
    for cluster in clusters:
        kind = _cheapest(cluster)
        if kind == CERT_SERIAL_LIST and subsections and subsections[-1][0] == CERT_SERIAL_LIST:
            subsections[-1][1].extend(cluster)
        else:
            subsections.append((kind, cluster))
    return subsections


def _cheapest(cluster: Intervals) -> int:
    """The subsection type that encodes a cluster in the fewest bytes (simplest on a tie)."""
    count = sum(hi - lo + 1 for lo, hi in cluster)
    width = cluster[-1][1] - cluster[0][0] + 1
    costs = {CERT_SERIAL_LIST: _SUBSECTION_HEADER + 8 * count}
    if len(cluster) == 1:
        costs[CERT_SERIAL_RANGE] = _RANGE_COST
    if width <= MAX_BITMAP_BITS:
        # The top bit is always set, so the mpint needs a leading zero when width % 8 == 0.
        costs[CERT_SERIAL_BITMAP] = _BITMAP_FIXED_COST + (width + 8) // 8
    order = (CERT_SERIAL_RANGE, CERT_SERIAL_LIST, CERT_SERIAL_BITMAP)
    return min(costs, key=lambda kind: (costs[kind], order.index(kind)))


def put_serial_subsection(kind: int, intervals: Intervals) -> bytes:
    """PROTOCOL.krl 2.1-2.3: one serial list, range or bitmap subsection."""
    if kind == CERT_SERIAL_RANGE:
        ((lo, hi),) = intervals
        body = put_u64(lo) + put_u64(hi)
    elif kind == CERT_SERIAL_LIST:
        serials = (s for lo, hi in intervals for s in range(lo, hi + 1))
        body = b"".join(map(put_u64, serials))
    else:
        offset = intervals[0][0]
        bitmap = 0
        for lo, hi in intervals:
            bitmap |= ((1 << (hi - lo + 1)) - 1) << (lo - offset)
        body = put_u64(offset) + put_mpint(bitmap)
    return put_u8(kind) + put_string(body)


def serial_intervals(serials: Iterable[int], serial_ranges: Iterable[tuple[int, int]]) -> Intervals:
    """All revoked serials as sorted, disjoint intervals, each checked to be in 1..2**64-1."""
    intervals = [(s, s) for s in serials]
    intervals += (tuple(r) for r in serial_ranges)
    # bool is an int subclass, and True would quietly revoke serial 1.
    if not all(len(r) == 2 and type(r[0]) is int and type(r[1]) is int for r in intervals):
        raise ValueError("certificate serials must be ints, and ranges (lo, hi) pairs of ints")
    for lo, hi in intervals:
        if lo > hi:
            raise ValueError(f"serial range ({lo}, {hi}) is empty: lo > hi")
    merged = coalesce(intervals)
    # Serial 0 means "no serial" to OpenSSH, and a KRL that lists it is rejected outright.
    if merged and (merged[0][0] < 1 or merged[-1][1] > MAX_SERIAL):
        raise ValueError("certificate serials must be in 1..2**64-1")
    return merged


def coalesce(intervals: Intervals) -> Intervals:
    """Sort and merge overlapping or adjacent inclusive intervals."""
    merged: Intervals = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged
