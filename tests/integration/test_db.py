"""storage.db: transactions, and which of them wait for the disk."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, text

from storage import audit
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


def test_a_transaction_flushes_to_disk_unless_told_otherwise(database: Database):
    dialect = database.engine.dialect.name
    with database.transaction() as connection:
        assert _flush_setting(connection) == _durable_level(dialect)
    with database.transaction(durable=False) as connection:
        assert _flush_setting(connection) == _light_level(dialect)
    # The setting does not leak to the next user of the pooled connection, ORM or Core.
    with database.transaction() as connection:
        assert _flush_setting(connection) == _durable_level(dialect)
    with database.session() as session:
        assert _flush_setting(session) == _durable_level(dialect)


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


def test_one_connection_runs_light_and_durable_transactions_in_turn(database: Database):
    """What AccessService.issue does: a light claim, then the durable record, on one
    Database.connection(); each commits at its own level, and the chain links across them."""
    dialect = database.engine.dialect.name
    with database.connection() as connection:
        for round_ in range(3):
            for durable in (False, True):
                with connection.transaction(durable=durable) as transaction:
                    level = _durable_level(dialect) if durable else _light_level(dialect)
                    assert _flush_setting(transaction) == level
                    audit.append(transaction, actor="t", action=f"test.{round_}.{durable}",
                                 subject="x")
    with database.session() as session:
        assert _flush_setting(session) == _durable_level(dialect)
        assert audit.verify(session) == audit.Verification(True, 6)


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
