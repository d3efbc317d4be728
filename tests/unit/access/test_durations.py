from datetime import timedelta

import pytest

from access.durations import format_duration, parse_duration
from ca.errors import BadInput


@pytest.mark.parametrize("text, seconds", [
    ("45s", 45), ("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("1d", 86400),
    ("1d2h3m4s", 93784), (" 5m ", 300),
])
def test_accepted(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text, phrase", [
    ("", "no duration"), ("2 hours", "not a duration"), ("-1h", "not a duration"),
    ("0s", "zero"), ("0h0m", "zero"), ("1.5h", "not a duration"), ("h", "not a duration"),
    ("2", "not a duration"), ("30m1h", "largest first"), ("1h1h", "largest first"),
    ("2w", "not a duration"), ("99999d", "longer than"),
])
def test_refused(text, phrase):
    with pytest.raises(BadInput) as err:
        parse_duration(text)
    assert phrase in err.value.message


@pytest.mark.parametrize("seconds", [1, 59, 60, 3600, 5400, 86400, 93784])
def test_format_round_trips(seconds):
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration
