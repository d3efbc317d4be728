"""storage.db: transactions, what they wait for, and which indexes the lookups use."""

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event

from storage.db import Database
from storage.messages import SqlMessages
from storage.reports import SqlReports
from storage.requests import SqlRequests


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


def test_every_commit_waits_for_the_disk(database: Database):
    """A certificate handed out is on disk with its audit event, even after a power cut."""
    with database.session() as session:
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        else:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"


def _can_write_now(database: Database) -> bool:
    other = sqlite3.connect(database.engine.url.database, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        other.close()


def test_sqlite_readers_take_no_write_lock_and_writers_do(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'vouch.db'}")
    database.prepare()
    try:
        with database.transaction(read_only=True) as connection:
            SqlRequests(connection).pending_of("U1")
            assert _can_write_now(database)
        with database.transaction() as connection:
            SqlRequests(connection).pending_of("U1")
            assert not _can_write_now(database)  # BEGIN IMMEDIATE: writers queue, never fail
        assert _can_write_now(database)
    finally:
        database.close()


_NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
_LEASE = timedelta(minutes=2)
# Every lookup of requests by state, and the partial index (storage.models.LIVE_REQUEST_INDEXES)
# it must be able to use: a query whose WHERE does not imply the index's would quietly scan the
# whole table, decided requests and all.
_STATE_LOOKUPS = {
    "past_ttl": (lambda s, db: SqlRequests(s).past_ttl(_NOW, 500, lease=_LEASE),
                 "ix_requests_pending_expires_at"),
    # past_ttl's second SELECT: approved requests never issued
    "past_ttl_unissued": (lambda s, db: SqlRequests(s).past_ttl(_NOW, 500, lease=_LEASE),
                          "ix_requests_approved", 1),
    "pending_count": (lambda s, db: SqlRequests(s).pending_count("U1", "t"),
                      "ix_requests_pending_requester"),
    "pending_of": (lambda s, db: SqlRequests(s).pending_of("U1"),
                   "ix_requests_pending_requester"),
    "unposted": (lambda s, db: SqlMessages(db).unposted(now=_NOW, lease=_LEASE),
                 "ix_requests_pending_"),
    "unposted_alerts": (lambda s, db: SqlMessages(db).unposted_alerts(now=_NOW, lease=_LEASE),
                        "ix_requests_breakglass_unreviewed"),
    "issuable": (lambda s, db: SqlRequests(s).issuable(_NOW, _LEASE, 6), "ix_requests_approved"),
    "escalate_unreviewed": (
        lambda s, db: SqlRequests(s).escalate_unreviewed(due_before=_NOW, now=_NOW),
        "ix_requests_breakglass_unreviewed"),
}


# The daily digest's counts (in the order SqlReports.activity runs them) and the revocation
# sweep: each through an index holding only the rows it counts, never a scan of all history.
_DAY = (_NOW - timedelta(hours=24), _NOW)
_WINDOW_LOOKUPS = {
    "digest_issued": (lambda s, db: SqlReports(s).activity(*_DAY), "ix_requests_issued", 0),
    "digest_denied": (lambda s, db: SqlReports(s).activity(*_DAY), "ix_requests_denied", 1),
    "digest_expired": (lambda s, db: SqlReports(s).activity(*_DAY), "ix_requests_expired", 2),
    "digest_revoked": (lambda s, db: SqlReports(s).activity(*_DAY), "ix_certificates_revoked", 3),
    "digest_unreviewed": (lambda s, db: SqlReports(s).activity(*_DAY),
                          "ix_requests_breakglass_unreviewed", 4),
    "digest_reviewed": (lambda s, db: SqlReports(s).activity(*_DAY),
                        "ix_requests_breakglass_reviewed", 5),
    "unannounced_revocations": (lambda s, db: SqlMessages(db).unannounced_revocations(now=_NOW),
                                "ix_certificates_revoked"),
}


@pytest.mark.parametrize("lookup", list(_STATE_LOOKUPS))
def test_state_lookups_use_the_live_request_indexes(database: Database, lookup: str):
    _assert_uses_index(database, *_STATE_LOOKUPS[lookup])


@pytest.mark.parametrize("lookup", list(_WINDOW_LOOKUPS))
def test_the_digest_and_the_revocation_sweep_use_their_indexes(database: Database, lookup: str):
    _assert_uses_index(database, *_WINDOW_LOOKUPS[lookup])


def _assert_uses_index(database: Database, run, index: str, *nth: int) -> None:
    seen: list[tuple[str, object]] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, parameters, *rest:
                 seen.append((statement, parameters)))
    with database.session() as session:
        run(session, database)
        selects = [(s, p) for s, p in seen if s.lstrip().startswith("SELECT")]
        statement, parameters = selects[nth[0] if nth else 0]
        connection = session.connection()
        if database.engine.dialect.name == "sqlite":
            plan = [row[-1] for row in connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters)]
        else:  # an empty table is cheaper to scan: ask whether the index can serve at all
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = [row[0] for row in
                    connection.exec_driver_sql("EXPLAIN " + statement, parameters)]
    assert any(index in line for line in plan), plan
