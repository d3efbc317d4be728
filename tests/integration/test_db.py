"""storage.db: transactions, and which of them wait for the disk."""

import pytest
from sqlalchemy import text

from storage import audit
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
