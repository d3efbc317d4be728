"""storage.types: what reaches the database is what SQLAlchemy's own types would write."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime
from sqlalchemy.dialects import postgresql, sqlite

from storage.types import UInt64, UTCDateTime

MOMENTS = [
    datetime(2026, 11, 22, 17, 31, 26, 36231, tzinfo=timezone.utc),
    datetime(2026, 11, 22, 17, 31, 26, tzinfo=timezone.utc),  # no microseconds: still written
    datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_sqlite_text_is_sqlalchemys_and_reads_back(moment):
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect)
    theirs = DateTime().dialect_impl(dialect)
    text = ours.bind_processor(dialect)(moment)
    assert text == theirs.bind_processor(dialect)(moment.astimezone(timezone.utc).replace(tzinfo=None))
    back = ours.result_processor(dialect, None)(text)
    assert back == moment and back.tzinfo is timezone.utc


def test_postgresql_gets_the_aware_utc_datetime():
    dialect = postgresql.dialect()
    moment = MOMENTS[2]
    bound = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    value = bound(moment) if bound else UTCDateTime().process_bind_param(moment, dialect)
    assert value == moment and value.tzinfo is timezone.utc


def test_naive_datetimes_are_refused():
    dialect = sqlite.dialect()
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().dialect_impl(dialect).bind_processor(dialect)(datetime(2026, 1, 1))


@pytest.mark.parametrize("serial", [0, 1, 2**63 - 1, 2**63, 2**64 - 1])
def test_serials_round_trip_through_a_signed_bigint(serial):
    dialect = sqlite.dialect()
    column = UInt64()
    stored = column.process_bind_param(serial, dialect)
    assert -(2**63) <= stored < 2**63
    assert column.process_result_value(stored, dialect) == serial


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_audit_times_are_iso_utc_to_the_microsecond(moment):
    from storage.audit import format_time

    assert format_time(moment) == moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")\
        .rjust(27, "0")
