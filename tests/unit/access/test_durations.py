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


@pytest.mark.parametrize("text", ["٣h", "１h", "3h٣m", "1" + "0" * 30 + "h", "9" * 5000 + "s",
                                  "99999999d"])
def test_other_scripts_digits_and_huge_numbers_are_refused_with_the_usage(text):
    """int() reads any script's digits, and timedelta() overflows (or int() gives up) on huge
    numbers: each would have been a three-hour grant or a crash."""
    with pytest.raises(BadInput) as refused:
        parse_duration(text)
    assert "is not a duration" in refused.value.message or "longer than" in refused.value.message


def test_the_bound_is_well_below_timedeltas():
    assert parse_duration("3650d").days == 3650
    with pytest.raises(BadInput, match="longer than 3650 days"):
        parse_duration("9999999d")
