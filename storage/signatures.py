"""access.ports.Signatures: signed calls already seen, so a replay is refused on every replica."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from storage.models import UsedSignature
from storage.types import UTCDateTime

_USED = UsedSignature.__table__
_FORGET = delete(_USED).where(_USED.c.seen_at < bindparam("before", type_=UTCDateTime()))
# ON CONFLICT DO NOTHING, not a caught unique violation: on PostgreSQL that would abort the
# whole transaction.
# RETURNING tells whether the row went in (psycopg's rowcount for it is not reliable).
_INSERTS = {name: dialect.insert(_USED).on_conflict_do_nothing(index_elements=["replay_key"])
            .returning(_USED.c.replay_key)
            for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}


class SqlSignatures:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def first_use(self, replay_key: str, *, at: datetime, forget_before: datetime) -> bool:
        self.connection.execute(_FORGET, {"before": forget_before})
        inserted = self.connection.execute(_INSERTS[self.connection.dialect.name],
                                           {"replay_key": replay_key, "seen_at": at})
        return inserted.first() is not None
