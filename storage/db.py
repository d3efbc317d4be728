"""Engines, sessions and migrations for SQLite (one process) and PostgreSQL (several replicas)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Session

from ca.errors import BadInput, VouchError
from storage.direct import MEMO, SYNCHRONOUS, WAL_FILE, Transaction, sqlite_begin
from storage.direct import Connection as DirectConnection

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same for every replica running migrations.
_MIGRATION_LOCK_ID = 0x766F756368
# Kept between issuances instead of a checkout from the pool and its reset on return each time,
# which cost about a tenth of an issuance (bench/issue.py). One per thread issuing at once.
_KEEP_IDLE = 4


class StorageUnavailable(VouchError):
    """The database cannot be reached or used."""


class Duplicate(Exception):
    """A unique constraint refused the write: someone else already did this (a lost race)."""


@contextmanager
def unique(what: str) -> Iterator[None]:
    """Turn a unique-constraint violation inside the block into Duplicate."""
    try:
        yield
    except IntegrityError as exc:
        raise Duplicate(what) from exc


class DatabaseBehind(VouchError):
    """The database is behind (or ahead of) the migrations this code expects."""


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    except (ArgumentError, ValueError) as exc:
        raise BadInput(f"VOUCH_DATABASE_URL is not a usable SQLAlchemy URL: {exc}") from None
    except ImportError as exc:
        raise BadInput(f"VOUCH_DATABASE_URL needs a database driver that is not installed: {exc.name}") \
            from None
    return engine


def _sqlite_connect(dbapi_connection, record) -> None:
    # Take over transaction control from pysqlite so that _sqlite_begin can BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    cursor.execute("PRAGMA foreign_keys=ON")
    # FULL: a certificate handed out is on disk with its audit event, even after a power cut
    # (NORMAL in WAL mode may lose the last commits; bench/issue.py measured the cost at ~9%).
    cursor.execute("PRAGMA synchronous=FULL")
    record.info[SYNCHRONOUS] = "FULL"
    # The issuing path's transactions (storage.direct) sync this file themselves.
    path = next((file for _, name, file in cursor.execute("PRAGMA database_list")
                 if name == "main"), "")
    if mode == "wal" and path:
        record.info[WAL_FILE] = path + "-wal"
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # Every ORM session and Core connection: durable. (Through SQLAlchemy, not the bare driver:
    # a locked database must surface as SQLAlchemy's OperationalError.)
    sqlite_begin(connection.exec_driver_sql, connection.connection.info, "FULL")


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return ScriptDirectory(str(_MIGRATIONS)).get_current_head()


class Database:
    """The engine and how to get a transaction from it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.memo: dict = {}  # see storage.direct.MEMO
        # Connections the issuing path keeps between uses (connection()), most recent last.
        # SQLite only: a file does not restart under a kept connection, while a PostgreSQL
        # connection goes back to the pool, whose pre-ping notices a restarted server.
        self._idle: deque[DirectConnection] = deque()
        self._keep = _KEEP_IDLE if self.engine.dialect.name == "sqlite" else 0
        self._closed = False

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with Session(self.engine, expire_on_commit=False, info={MEMO: self.memo}) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def connection(self) -> Iterator[DirectConnection]:
        """One pooled connection on the bare DB-API (storage.direct), for the issuing path, where
        SQLAlchemy's execution machinery costs more than the statements; its transaction()
        gives one transaction after another on it."""
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = DirectConnection(self.engine.raw_connection, self.engine.dialect, self.memo)
        clean = False
        try:
            yield connection
            clean = True
        finally:
            if clean and len(self._idle) < self._keep and not self._closed:
                self._idle.append(connection)
            else:  # back to the pool, which resets it (or drops it if it broke)
                connection.close()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Transaction]:
        """A transaction on a connection of its own (see connection()): committed when the
        block ends, rolled back if it raises.

        durable=False commits without waiting for the disk. Use it only for a write whose loss
        in a power cut is harmless because nothing it guards leaves the process before a later
        durable commit: both databases write their log in order, so that later commit's flush
        makes this one durable too (SQLite's WAL is one file; PostgreSQL flushes WAL up to the
        later commit's position).
        """
        with self.connection() as connection, connection.transaction(durable=durable) as tx:
            yield tx

    def revision(self) -> str | None:
        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except OperationalError as exc:
            raise StorageUnavailable(f"database unreachable: {_describe(exc)}") from None

    def upgrade(self) -> tuple[str | None, str]:
        """Apply every pending migration; concurrent replicas wait for each other. Returns (from, to)."""
        return self._locked_upgrade(only_if_empty=False)

    def prepare(self, *, allow_init: bool = True) -> None:
        """Initialise an empty database; refuse one that is behind or ahead of the code.

        Several processes may start on one new database at once: the check and the
        initialisation happen under one lock, so exactly one of them creates the tables.
        """
        current = self.revision()
        head = head_revision()
        if current == head:
            return
        if current is None and allow_init:
            before, after = self._locked_upgrade(only_if_empty=True)
            if after == head:
                return
            current = before
        if current is None:
            raise DatabaseBehind("the database has tables but no Vouch migration record: "
                                 "point VOUCH_DATABASE_URL at a database of its own")
        known = {rev.revision for rev in ScriptDirectory(str(_MIGRATIONS)).walk_revisions()}
        if current not in known:
            raise DatabaseBehind(f"the database is at migration {current}, newer than this Vouch "
                                 f"({head}): upgrade Vouch")
        raise DatabaseBehind(f"the database is at migration {current}, behind this Vouch ({head}): "
                             "run `vouch db upgrade`")

    def _locked_upgrade(self, *, only_if_empty: bool) -> tuple[str | None, str]:
        """Under the migration lock (PostgreSQL's advisory lock, SQLite's write lock) read the
        revision and migrate; returns (revision before, revision after). With only_if_empty, a
        database that already has tables is left alone: someone else initialised it (after is
        then their revision), or it is not ours."""
        try:
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"),
                                       {"id": _MIGRATION_LOCK_ID})
                before = MigrationContext.configure(connection).get_current_revision()
                if only_if_empty and (before is not None or inspect(connection).get_table_names()):
                    return before, before
                command.upgrade(_alembic_config(connection), "head")
            return before, head_revision()
        except OperationalError as exc:
            raise StorageUnavailable(f"database unreachable: {_describe(exc)}") from None

    def ping(self) -> None:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StorageUnavailable(f"database unreachable: {_describe(exc)}") from None

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        self.engine.dispose()


def _describe(exc: SQLAlchemyError) -> str:
    # The driver's first line names the cause; the URL (which may hold a password) is not echoed.
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0][:300]
