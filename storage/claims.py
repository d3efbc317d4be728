"""Job claims (vouch.scheduler): with several replicas on one database, each run of a job
happens in one of them. A claim is a row per job name: taken when free or lapsed, renewed by its
holder, so a dead holder's job is taken over once its lease lapses."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, update

from access.ports import Duplicate
from storage.db import Database, unique
from storage.models import JobClaim

_CLAIMS = JobClaim.__table__


class SqlClaims:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, name: str, *, holder: str, now: datetime, until: datetime) -> bool:
        """True when `holder` holds `name` until `until`: it was free, lapsed, or already
        theirs. One statement each way, so two replicas never both win."""
        with self.db.transaction() as connection:
            taken = connection.execute(
                update(_CLAIMS)
                .where(_CLAIMS.c.name == name,
                       or_(_CLAIMS.c.holder == holder, _CLAIMS.c.until <= now))
                .values(holder=holder, until=until)).rowcount
            if taken:
                return True
        try:
            with self.db.transaction() as connection, unique("job claim"):
                connection.execute(_CLAIMS.insert().values(name=name, holder=holder, until=until))
        except Duplicate:
            return False  # someone else's, and not lapsed
        return True
