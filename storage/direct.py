"""Transactions on the bare DB-API connection, for the issuing path.

Every certificate runs the same eight statements, in one transaction or two (see
access.service). Through SQLAlchemy each statement costs about 30 µs of execution machinery on
top of 5-20 µs of work, and each transaction another 50 µs: together more than the fsync that
makes the certificate durable (bench/issue.py). Here a Core statement is compiled once per dialect and run on the driver's
cursor. Parameters and rows go through the type processors SQLAlchemy itself would apply, and
driver errors come out as SQLAlchemy's exception classes, so callers (storage.db.unique, the
repositories) cannot tell the difference: the same repository function runs on an ORM session,
a Core connection or a Transaction.
"""

from __future__ import annotations

import operator
import os
from collections import namedtuple
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, OperationalError

# The synchronous level a pooled SQLite connection is at, kept in the pool record's info.
SYNCHRONOUS = "vouch_synchronous"
# The WAL file of a pooled connection to a file-backed SQLite database in WAL mode, kept in
# the pool record's info (storage.db sets it on connect); absent otherwise.
WAL_FILE = "vouch_wal_file"
# Under this key a Transaction's (and a Database session's) `info` holds a dict shared by every
# transaction on one Database: what one transaction learnt that the next may rely on, such as
# the audit chain's head, checked again by the statement that relies on it.
MEMO = "vouch_memo"

_datasync = getattr(os, "fdatasync", os.fsync)  # fdatasync is Linux's; elsewhere fsync


def sqlite_begin(execute, info: dict, level: str) -> None:
    """Start a SQLite write transaction whose commit runs at `level` (synchronous FULL or
    NORMAL). SQLite refuses to change `synchronous` inside a transaction, so it is set before
    BEGIN, and only when the connection is at another level."""
    if info.get(SYNCHRONOUS) != level:
        execute(f"PRAGMA synchronous={level}")
        info[SYNCHRONOUS] = level
    # A deferred transaction that reads and then writes fails with SQLITE_BUSY when another
    # writer committed in between; taking the write lock up front makes writers queue instead.
    execute("BEGIN IMMEDIATE")


def sync_wal(path: str) -> None:
    """Make every commit in a SQLite WAL durable: what synchronous=FULL does after each commit
    ("the WAL file is synchronized after each transaction commit", sqlite.org/pragma.html),
    done here instead. Called while the committing connection is still open, so `path` is the
    file it wrote: SQLite deletes or replaces a WAL only when its last connection closes."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        _datasync(descriptor)
    finally:
        os.close(descriptor)


class _Compiled:
    """One statement for one dialect: its SQL, how to turn a parameter dict into what the driver
    takes, and how to turn the driver's rows into typed rows."""

    __slots__ = ("sql", "positional", "names", "defaults", "binders", "pick", "row", "readers")

    def __init__(self, statement, dialect: Dialect, column_keys: tuple[str, ...] | None) -> None:
        # An INSERT names only the columns given, as SQLAlchemy compiles it for each execution.
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self.positional = compiled.positional
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        self.names = list(compiled.positiontup) if self.positional else list(by_name)
        # Values written into the statement itself (state == 'approved', version + 1).
        self.defaults = {name: bind.value for name, bind in by_name.items() if not bind.required}
        binders = ((name, by_name[name].type.dialect_impl(dialect).bind_processor(dialect))
                   for name in dict.fromkeys(self.names))
        self.binders = [(name, process) for name, process in binders if process is not None]
        # The driver's positional tuple, in one C call (itemgetter of one name gives a scalar).
        names = self.names
        self.pick = (operator.itemgetter(*names) if len(names) > 1
                     else (lambda values: (values[names[0]],)) if names else (lambda values: ()))
        columns = list(getattr(statement, "exported_columns", ()))
        self.row = namedtuple("Row", [c.key for c in columns]) if columns else None
        readers = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
        # Only the columns that need converting, by position.
        self.readers = [(i, read) for i, read in enumerate(readers) if read is not None]

    def parameters(self, params: dict[str, Any]) -> tuple | dict:
        values = {**self.defaults, **params} if self.defaults else dict(params)
        for name, process in self.binders:
            values[name] = process(values[name])
        return self.pick(values) if self.positional else values

    def rows(self, raw: list) -> list:
        make, readers = self.row._make, self.readers
        if not readers:
            return [make(row) for row in raw]
        typed = []
        for row in raw:
            row = list(row)
            for i, read in readers:
                row[i] = read(row[i])
            typed.append(make(row))
        return typed


_COMPILED: dict[tuple, tuple[Any, _Compiled]] = {}
_CACHE_SIZE = 256  # the hot statements are module constants; anything else is compiled anew


def _compiled(statement, dialect: Dialect, params: dict[str, Any]) -> _Compiled:
    # An INSERT is compiled per set of columns given; anything else once.
    column_keys = tuple(sorted(params)) if statement.is_insert else None
    key = (id(statement), dialect.name, column_keys)
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is statement:
        return hit[1]
    if len(_COMPILED) >= _CACHE_SIZE:
        _COMPILED.clear()
    compiled = _Compiled(statement, dialect, column_keys)
    _COMPILED[key] = (statement, compiled)  # holds the statement, so its id is not reused
    return compiled


class Rows:
    """What a statement returned: typed rows (attribute access by column name) and rowcount."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list, rowcount: int) -> None:
        self._rows, self.rowcount = rows, rowcount

    def __iter__(self) -> Iterator:
        return iter(self._rows)

    def first(self):
        return self._rows[0] if self._rows else None

    def one(self):
        if not self._rows:
            raise NoResultFound("no row was found when one was required")
        if len(self._rows) > 1:
            raise MultipleResultsFound("multiple rows were found when exactly one was required")
        return self._rows[0]


class Connection:
    """One pooled DB-API connection for transactions one after another (Database.connection):
    AccessService.issue runs its claim and its record on one of these.

    One connection, not one per `synchronous` level: SQLite drops a connection's whole page
    cache when it begins a transaction after another connection wrote, so two connections
    taking turns would each read every page again (some 40 reads per issuance, measured),
    which costs far more than the PRAGMA that switches the level."""

    def __init__(self, connect: Callable[[], Any], dialect: Dialect, memo: dict) -> None:
        self._connect, self.dialect, self._memo = connect, dialect, memo
        self._pooled = None  # made on first use

    def close(self) -> None:
        """Back to the pool."""
        if self._pooled is not None:
            self._pooled.close()
            self._pooled = None

    def transaction(self, *, durable: bool = True) -> Transaction:
        """A transaction, to use as `with connection.transaction() as t:`: begun on entering,
        committed when the block ends, rolled back if it raises. durable=False: see
        Database.transaction."""
        if self._pooled is None:
            self._pooled = self._connect()
        return Transaction(self._pooled.driver_connection, self.dialect, self._memo,
                           durable=durable, pool_info=self._pooled.info)


class Transaction:
    """A transaction on one pooled DB-API connection (see Connection.transaction). A context
    manager of its own rather than a generator's: two of these run for every certificate."""

    def __init__(self, driver, dialect: Dialect, memo: dict, *, durable: bool,
                 pool_info: dict) -> None:
        self._driver, self.dialect = driver, dialect
        self._cursor = driver.cursor()
        self._error = dialect.loaded_dbapi.Error
        self.info = {MEMO: memo}
        self._durable, self._pool_info = durable, pool_info
        # A durable SQLite commit: the connection stays at synchronous=NORMAL and the WAL is
        # synced after COMMIT (sync_wal), as FULL would, which saves switching the level (two
        # PRAGMAs) between the issuing path's light and durable transactions. Without a WAL
        # file (an in-memory database) a durable transaction runs at FULL.
        self._wal = pool_info.get(WAL_FILE) if durable else None

    def __enter__(self) -> Transaction:
        try:
            if self.dialect.name == "sqlite":
                level = "FULL" if self._durable and self._wal is None else "NORMAL"
                sqlite_begin(self.driver_sql, self._pool_info, level)
            elif not self._durable:
                self.driver_sql("SET LOCAL synchronous_commit TO OFF")
        except BaseException:
            self.rollback()
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        try:
            if exc_type is None:
                self.commit()
            else:
                self.rollback()
        except BaseException:
            self.rollback()
            raise
        finally:
            self.close()
        return False

    def execute(self, statement, params: dict[str, Any] | None = None) -> Rows:
        params = params or {}
        compiled = _compiled(statement, self.dialect, params)
        parameters = compiled.parameters(params)
        cursor = self._cursor
        try:
            cursor.execute(compiled.sql, parameters)
            rows = compiled.rows(cursor.fetchall()) if compiled.row is not None else []
        except self._error as exc:
            raise self._wrap(exc, compiled.sql, parameters) from exc
        return Rows(rows, cursor.rowcount)

    def driver_sql(self, sql: str) -> list[tuple]:
        """Plain SQL without parameters (PRAGMA, SET, BEGIN); its rows, if any."""
        try:
            self._cursor.execute(sql)
            return self._cursor.fetchall() if self._cursor.description else []
        except self._error as exc:
            raise self._wrap(exc, sql, None) from exc

    def commit(self) -> None:
        try:
            self._driver.commit()
        except self._error as exc:
            raise self._wrap(exc, "COMMIT", None) from exc
        if self._wal is not None:
            try:
                sync_wal(self._wal)
            except OSError as exc:  # committed, but not known to be on disk: fail closed
                raise OperationalError("fdatasync(WAL)", None, exc) from exc

    def rollback(self) -> None:
        try:
            self._driver.rollback()
        except self._error:
            pass  # the connection is gone; the pool discards it

    def close(self) -> None:
        self._cursor.close()

    def _wrap(self, exc: Exception, sql: str, parameters) -> DBAPIError:
        return DBAPIError.instance(sql, parameters, exc, self._error, dialect=self.dialect)
