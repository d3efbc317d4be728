"""access.ports.Store on a Database: one transaction on a Core connection per unit of work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection

from storage.audit import SqlAuditLog
from storage.certificates import SqlCertificates
from storage.db import Database
from storage.hosts import SqlHosts
from storage.keys import SqlKeys, SqlUsers
from storage.reports import SqlReports
from storage.signatures import SqlSignatures
from storage.requests import SqlRequests


class SqlUnit:
    def __init__(self, connection: Connection, audit_key: bytes | None) -> None:
        self.requests = SqlRequests(connection)
        self.certificates = SqlCertificates(connection)
        self.keys = SqlKeys(connection)
        self.users = SqlUsers(connection)
        self.signatures = SqlSignatures(connection)
        self.hosts = SqlHosts(connection)
        self.audit = SqlAuditLog(audit_key)
        self.reports = SqlReports(connection)


class SqlStore:
    """`audit_key` keys the audit chain (storage.chain); it never goes into the database. Without
    one (a command that only reads), recording an audit event fails."""

    def __init__(self, db: Database, audit_key: bytes | None, *,
                 after_append: Callable[[int], None] | None = None) -> None:
        self.db = db
        self._audit_key = audit_key
        # Told the new head's seq after a unit that recorded events committed (checkpoints).
        self._after_append = after_append

    @contextmanager
    def unit(self, *, read_only: bool = False) -> Iterator[SqlUnit]:
        head = None
        with self.db.transaction(read_only=read_only) as connection:
            unit = SqlUnit(connection, self._audit_key)
            yield unit
            if unit.audit.pending:
                if read_only:
                    raise RuntimeError("a read-only unit recorded audit events")
                head = unit.audit.flush(connection)
        if head is not None and self._after_append is not None:
            self._after_append(head)
