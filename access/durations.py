"""Durations as the contract writes them: one or more <integer><unit>, units d, h, m, s."""

from __future__ import annotations

import re
from datetime import timedelta

from ca.errors import BadInput

# [0-9], not \d: \d matches any script's digits, and int() reads them ('٣h' was three hours).
# At most 7 digits a part: more is always past _LIMIT, and int() of thousands of digits is slow.
_PART = re.compile(r"([0-9]{1,7})([dhms])")
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_ORDER = "dhms"
# Far beyond any sane grant; keeps arithmetic on datetimes from overflowing on hostile input.
_LIMIT = timedelta(days=3650)

USAGE = "use one or more <number><unit> with units d, h, m, s, e.g. 45s, 90m, 2h, 1h30m, 1d"


def parse_duration(text: str) -> timedelta:
    """Parse '2h', '1h30m', '45s'; refuse '2 hours', '-1h', '0s', '1.5h', '30m1h', '1h1h'."""
    raw = text.strip()
    if not raw:
        raise BadInput(f"no duration given: {USAGE}")
    position, last_unit, total = 0, -1, 0
    for match in _PART.finditer(raw):
        if match.start() != position:
            break
        unit = _ORDER.index(match.group(2))
        if unit <= last_unit:
            raise BadInput(f"duration {raw!r} repeats or reorders units: write them largest first "
                           f"({USAGE})")
        last_unit, position = unit, match.end()
        total += int(match.group(1)) * _SECONDS[match.group(2)]
    if position != len(raw) or position == 0:
        raise BadInput(f"{raw[:40]!r} is not a duration: {USAGE}")
    if total == 0:
        raise BadInput(f"duration {raw!r} is zero: durations must be positive")
    if total > _LIMIT.total_seconds():  # before timedelta(), which overflows on huge values
        raise BadInput(f"duration {raw[:40]!r} is longer than {_LIMIT.days} days")
    return timedelta(seconds=total)


def format_duration(duration: timedelta) -> str:
    """The inverse of parse_duration, largest units first: 5400 s -> '1h30m'."""
    seconds = int(duration.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit in _ORDER:
        amount, seconds = divmod(seconds, _SECONDS[unit])
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
