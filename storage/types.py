"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

_TWO_63 = 2**63
_TWO_64 = 2**64


def iso_utc(moment: datetime, separator: str) -> str:
    """An aware UTC datetime as 'YYYY-MM-DD<separator>HH:MM:SS.ffffff'. isoformat without its
    timespec argument (which costs as much again) drops a zero fraction, so it is put back."""
    text = moment.isoformat(separator)[:-6]  # less '+00:00'
    return text if moment.microsecond else text + ".000000"


class _SQLiteText(sqlite.DATETIME):
    """SQLite's DATETIME column, given its text ready-made by UTCDateTime."""

    def bind_processor(self, dialect):
        return None


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC timestamps; SQLite stores them naive, so tz is restored on load."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SQLiteText())
        return super().load_dialect_impl(dialect)

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            # The text SQLAlchemy's SQLite DATETIME stores, 'YYYY-MM-DD HH:MM:SS.ffffff', made
            # by isoformat at a fraction of the cost (every issuance writes eight timestamps).
            return iso_utc(value, " ")
        return value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None \
            else value.astimezone(timezone.utc)


class UInt64(TypeDecorator):
    """An unsigned 64-bit integer (certificate serials) in a signed BIGINT, by two's complement.

    Equality and uniqueness hold; ordering does not, and nothing needs it.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect):
        if value is None:
            return None
        if not 0 <= value < _TWO_64:
            raise ValueError("not an unsigned 64-bit integer")
        return value - _TWO_64 if value >= _TWO_63 else value

    def process_result_value(self, value: int | None, dialect):
        if value is None:
            return None
        return value + _TWO_64 if value < 0 else value
