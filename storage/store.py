"""access.ports.Store on a Database: one transaction on a Core connection per unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection

from storage.audit import SqlAuditLog
from storage.certificates import SqlCertificates
from storage.db import Database
from storage.keys import SqlKeys, SqlUsers
from storage.requests import SqlRequests


class SqlUnit:
    def __init__(self, connection: Connection) -> None:
        self.requests = SqlRequests(connection)
        self.certificates = SqlCertificates(connection)
        self.keys = SqlKeys(connection)
        self.users = SqlUsers(connection)
        self.audit = SqlAuditLog()


class SqlStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def unit(self, *, read_only: bool = False) -> Iterator[SqlUnit]:
        with self.db.transaction(read_only=read_only) as connection:
            unit = SqlUnit(connection)
            yield unit
            if unit.audit.pending:
                if read_only:
                    raise RuntimeError("a read-only unit recorded audit events")
                unit.audit.flush(connection)
