"""Engines, sessions and migrations for SQLite (one process) and PostgreSQL (several replicas)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import (ArgumentError, DatabaseError, IntegrityError, OperationalError,
                            SQLAlchemyError)
from sqlmodel import Session

from access.ports import Duplicate
from ca.errors import BadInput, VouchError

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same for every replica running migrations.
_MIGRATION_LOCK_ID = 0x766F756368
# The execution option that marks a session's transaction as read-only (see _sqlite_begin).
READ_ONLY = "vouch_read_only"


class StorageUnavailable(VouchError):
    """The database cannot be reached (a server down, a path that cannot be opened)."""


class DatabaseUnusable(VouchError):
    """The database answers, but cannot be used: not a database, no permission, corrupt."""


@contextmanager
def unique(what: str) -> Iterator[None]:
    """Turn a unique constraint's refusal inside the block into Duplicate (a lost race). Other
    integrity errors (a foreign key, a NOT NULL) are bugs, and stay what they are."""
    try:
        yield
    except IntegrityError as exc:
        if _unique_violation(exc):
            raise Duplicate(what) from exc
        raise


def _unique_violation(exc: IntegrityError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)  # psycopg
    if sqlstate is not None:
        return sqlstate == "23505"  # unique_violation
    return str(exc.orig).startswith("UNIQUE constraint failed")  # sqlite3


class DatabaseBehind(VouchError):
    """The database is behind (or ahead of) the migrations this code expects."""


def _private_file(url: str) -> None:
    """Create a new SQLite database file 0600 before SQLite does (with the umask's 0644): it
    holds who asked for what. SQLite gives its -wal and -shm files the same mode."""
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError:
            pass  # SQLite reports the same problem, in its words, on the first connect


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            _private_file(url)
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
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # FULL: a certificate handed out is on disk with its audit event, even after a power cut
    # (NORMAL in WAL mode may lose the last commits).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A deferred transaction that reads and then writes fails with SQLITE_BUSY when another
    # writer committed in between; taking the write lock up front makes writers queue instead.
    # Read-only sessions take no lock: WAL readers never wait for writers.
    read_only = connection.get_execution_options().get(READ_ONLY)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


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

    @contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session in a transaction (the audit commands): committed
        when the block ends, rolled back if it raises."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[Connection]:
        """A Core connection in a transaction: committed when the block ends, rolled back if it
        raises. What the repositories run on: without the ORM session's bookkeeping, a statement
        and a transaction cost less (measured in bench/README.md). A read_only one takes no write
        lock on SQLite."""
        with self.engine.connect() as connection:
            if read_only:
                connection.execution_options(**{READ_ONLY: True})
            with connection.begin():
                if read_only and connection.dialect.name == "postgresql":
                    connection.exec_driver_sql("SET TRANSACTION READ ONLY")  # a write is a bug
                yield connection

    def revision(self) -> str | None:
        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except DatabaseError as exc:
            raise _unavailable(exc) from None

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
            with self.migrating() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"),
                                       {"id": _MIGRATION_LOCK_ID})
                before = MigrationContext.configure(connection).get_current_revision()
                if only_if_empty and (before is not None or inspect(connection).get_table_names()):
                    return before, before
                command.upgrade(_alembic_config(connection), "head")
            return before, head_revision()
        except DatabaseError as exc:
            raise _unavailable(exc) from None

    @contextmanager
    def migrating(self) -> Iterator[Connection]:
        """A transaction for migrations. SQLite's batch mode rebuilds a table under the rows that
        refer to it, so there foreign keys are off while it runs, and checked before it commits."""
        with self.engine.connect() as connection:
            driver = connection.connection.driver_connection
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:  # outside any transaction, where SQLite honours it
                driver.execute("PRAGMA foreign_keys=OFF")
            try:
                with connection.begin():
                    yield connection
                    if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                        raise DatabaseBehind("a migration left rows referring to nothing")
            finally:
                if sqlite:
                    driver.execute("PRAGMA foreign_keys=ON")

    def ping(self) -> None:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StorageUnavailable(f"database unreachable: {_describe(exc)}") from None

    def close(self) -> None:
        self.engine.dispose()


def _unavailable(exc: DatabaseError) -> VouchError:
    """Unreachable (OperationalError: the server or file cannot be opened) is not the same as
    unusable: `vouch ca sign` signs without a record only in the first case."""
    if isinstance(exc, OperationalError):
        return StorageUnavailable(f"database unreachable: {_describe(exc)}")
    return DatabaseUnusable(f"the database cannot be used: {_describe(exc)}")


def _describe(exc: SQLAlchemyError) -> str:
    # The driver's first line names the cause; the URL (which may hold a password) is not echoed.
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0][:300]
