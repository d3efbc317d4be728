"""storage.db: transactions, and which of them wait for the disk."""

import os
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from storage import audit, direct
from storage import requests as requests_repo
from storage.db import Database


def _flush_setting(transaction) -> str:
    """What a transaction's commit does: SQLite's synchronous level, PostgreSQL's
    synchronous_commit. Takes a storage.direct Transaction or an ORM session."""
    if hasattr(transaction, "driver_sql"):
        run = lambda sql: transaction.driver_sql(sql)[0][0]  # noqa: E731
        dialect = transaction.dialect.name
    else:
        connection = transaction.connection()
        run = lambda sql: connection.exec_driver_sql(sql).scalar_one()  # noqa: E731
        dialect = connection.dialect.name
    if dialect == "sqlite":
        return {0: "off", 1: "normal", 2: "full", 3: "extra"}[run("PRAGMA synchronous")]
    return run("SHOW synchronous_commit")


def _durable_level(dialect: str) -> str:
    return "full" if dialect == "sqlite" else "on"


def _light_level(dialect: str) -> str:
    return "normal" if dialect == "sqlite" else "off"


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """The files storage.direct syncs to disk itself, in order (it syncs a SQLite WAL after a
    durable commit instead of committing at synchronous=FULL)."""
    files: list[str] = []
    real = direct._datasync

    def datasync(descriptor: int) -> None:
        files.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real(descriptor)

    monkeypatch.setattr(direct, "_datasync", datasync)
    return files


@pytest.fixture
def database(database: Database) -> Database:
    """The test cluster runs with synchronous_commit=off for speed; this database flushes every
    commit, as a production server does."""
    if database.engine.dialect.name == "postgresql":
        with database.engine.connect() as connection:
            name = connection.exec_driver_sql("SELECT current_database()").scalar_one()
            connection.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit TO on')
            connection.commit()
        database.engine.dispose()
    return database


def _wal(database: Database) -> str:
    return database.engine.url.database + "-wal"


def _commits(database: Database) -> dict[str, str]:
    """What each kind of storage.direct transaction's commit does. On SQLite a durable one
    commits at NORMAL and then syncs the WAL, which is what FULL does after each commit."""
    dialect = database.engine.dialect.name
    return {"durable": "normal + wal synced" if dialect == "sqlite" else _durable_level(dialect),
            "light": _light_level(dialect)}


def test_a_transaction_flushes_to_disk_unless_told_otherwise(database: Database, synced):
    dialect = database.engine.dialect.name
    expect = _commits(database)
    with database.transaction() as connection:
        level = _flush_setting(connection)
    assert (level + " + wal synced" if synced else level) == expect["durable"]
    if dialect == "sqlite":
        assert synced == [_wal(database)]  # the WAL this database writes, once, after COMMIT
    synced.clear()
    with database.transaction(durable=False) as connection:
        assert _flush_setting(connection) == expect["light"]
    assert synced == []
    # The setting does not leak to the next user of the pooled connection, ORM or Core.
    with database.transaction() as connection:
        level = _flush_setting(connection)
    assert (level + " + wal synced" if synced else level) == expect["durable"]
    synced.clear()
    with database.session() as session:
        assert _flush_setting(session) == _durable_level(dialect)  # FULL: SQLite syncs itself
    assert synced == []


@pytest.fixture
def sqlite_database(tmp_path):
    """SQLite only, for what storage.direct does about SQLite's WAL (PostgreSQL flushes its own
    WAL at synchronous_commit=on, tested above)."""
    database = Database(f"sqlite:///{tmp_path / 'vouch.db'}")
    database.prepare()
    yield database
    database.close()


def test_the_wal_is_synced_only_after_the_commit(sqlite_database: Database, monkeypatch):
    """Synced after COMMIT: a sync before it would leave the commit record itself unsynced."""
    database = sqlite_database
    seen = []
    real = direct._datasync

    def datasync(descriptor: int) -> None:
        # Another connection sees the event when the sync starts: the commit came first.
        with database.engine.connect() as other:
            seen.append(other.exec_driver_sql(
                "SELECT count(*) FROM audit_events WHERE action = 'test.synced'").scalar_one())
        real(descriptor)

    monkeypatch.setattr(direct, "_datasync", datasync)
    with database.transaction() as connection:
        audit.append(connection, actor="t", action="test.synced", subject="x")
    assert seen == [1]


def test_a_failed_wal_sync_fails_the_transaction(sqlite_database: Database, monkeypatch):
    """The commit is then not known to be on disk: the caller must not release anything."""
    database = sqlite_database

    def datasync(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(direct, "_datasync", datasync)
    with pytest.raises(OperationalError, match="Input/output error"):
        with database.transaction() as connection:
            audit.append(connection, actor="t", action="test.unsynced", subject="x")


def test_a_light_transaction_that_fails_leaves_the_next_one_durable(database: Database):
    dialect = database.engine.dialect.name
    with pytest.raises(RuntimeError):
        with database.transaction(durable=False) as connection:
            audit.append(connection, actor="t", action="test.light", subject="x")
            raise RuntimeError("boom")
    with database.session() as session:
        assert _flush_setting(session) == _durable_level(dialect)
        assert session.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 0


def test_a_light_commit_is_visible_at_once_and_chains_with_durable_ones(database: Database):
    with database.transaction(durable=False) as connection:
        audit.append(connection, actor="t", action="test.light", subject="x")
    with database.transaction() as connection:
        audit.append(connection, actor="t", action="test.durable", subject="x")
    with database.session() as session:
        actions = [row[0] for row in session.execute(
            text("SELECT action FROM audit_events ORDER BY seq"))]
        assert actions == ["test.light", "test.durable"]
        assert audit.verify(session).ok


def test_one_connection_runs_light_and_durable_transactions_in_turn(database: Database, synced):
    """What AccessService.issue does: a light claim, then the durable record, on one
    Database.connection(); each commits as it should, and the chain links across them."""
    dialect = database.engine.dialect.name
    expect = _commits(database)
    with database.connection() as connection:
        for round_ in range(3):
            for durable in (False, True):
                synced.clear()
                with connection.transaction(durable=durable) as transaction:
                    level = _flush_setting(transaction)
                    audit.append(transaction, actor="t", action=f"test.{round_}.{durable}",
                                 subject="x")
                done = level + " + wal synced" if synced else level
                assert done == expect["durable" if durable else "light"]
    with database.session() as session:
        assert _flush_setting(session) == _durable_level(dialect)
        assert audit.verify(session) == audit.Verification(True, 6)


def test_an_in_memory_database_commits_durable_transactions_at_full(synced):
    """No WAL file to sync: a durable transaction runs at synchronous=FULL instead."""
    database = Database("sqlite://")
    database.prepare()
    try:
        with database.transaction() as connection:
            assert _flush_setting(connection) == "full"
        with database.transaction(durable=False) as connection:
            assert _flush_setting(connection) == "normal"
        assert synced == []
    finally:
        database.close()


_NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
_LEASE = timedelta(minutes=2)
# Every lookup of requests by state, and the partial index (storage.models.LIVE_REQUEST_INDEXES)
# it must be able to use: a query whose WHERE does not imply the index's would quietly scan the
# whole table, decided requests and all.
_STATE_LOOKUPS = {
    "past_ttl": (lambda s: requests_repo.past_ttl(session=s, now=_NOW),
                 "ix_requests_pending_expires_at"),
    "pending_count": (lambda s: requests_repo.pending_count(session=s, requester="U1", target="t"),
                      "ix_requests_pending_requester"),
    "pending_of": (lambda s: requests_repo.pending_of(session=s, requester="U1"),
                   "ix_requests_pending_requester"),
    "unposted": (lambda s: requests_repo.unposted(session=s, now=_NOW, lease=_LEASE),
                 "ix_requests_pending_"),
    "approved_unissued": (
        lambda s: requests_repo.approved_unissued(session=s, now=_NOW, lease=_LEASE),
        "ix_requests_approved"),
    "escalate_unreviewed": (
        lambda s: requests_repo.escalate_unreviewed(session=s, before=_NOW, now=_NOW),
        "ix_requests_breakglass_unreviewed"),
}


@pytest.mark.parametrize("lookup", list(_STATE_LOOKUPS))
def test_state_lookups_use_the_live_request_indexes(database: Database, lookup: str):
    run, index = _STATE_LOOKUPS[lookup]
    seen: list[tuple[str, object]] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, parameters, *rest:
                 seen.append((statement, parameters)))
    with database.session() as session:
        run(session)
        statement, parameters = next((s, p) for s, p in seen if s.lstrip().startswith("SELECT"))
        connection = session.connection()
        if database.engine.dialect.name == "sqlite":
            plan = [row[-1] for row in connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters)]
        else:  # an empty table is cheaper to scan: ask whether the index can serve at all
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = [row[0] for row in
                    connection.exec_driver_sql("EXPLAIN " + statement, parameters)]
    assert any(index in line for line in plan), plan
