"""access.ports.Store on a Database: one SQLAlchemy session per unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from storage.audit import SqlAuditLog
from storage.certificates import SqlCertificates
from storage.db import Database
from storage.keys import SqlKeys, SqlUsers
from storage.requests import SqlRequests


class SqlUnit:
    def __init__(self, session) -> None:
        self.session = session
        self.requests = SqlRequests(session)
        self.certificates = SqlCertificates(session)
        self.keys = SqlKeys(session)
        self.users = SqlUsers(session)
        self.audit = SqlAuditLog()


class SqlStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def unit(self, *, read_only: bool = False) -> Iterator[SqlUnit]:
        with self.db.session(read_only=read_only) as session:
            unit = SqlUnit(session)
            yield unit
            if unit.audit.pending:
                if read_only:
                    raise RuntimeError("a read-only unit recorded audit events")
                unit.audit.flush(session)
