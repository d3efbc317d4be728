from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import storage.models  # noqa: F401
from storage.db import Database, head_revision


def test_migrations_build_exactly_the_models(database_url):
    db = Database(database_url)
    before, after = db.upgrade()
    assert before is None and after == head_revision()
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
    assert db.upgrade() == (head_revision(), head_revision())
    db.close()


def test_an_existing_database_moves_to_the_live_request_indexes_and_back(database_url):
    """0001 -> 0002 on a database in use: rows stay, the indexes change, and the downgrade
    restores the old ones (then the upgrade runs again)."""
    from alembic import command
    from sqlalchemy import inspect, text

    from storage.db import _alembic_config

    db = Database(database_url)

    def migrate(step, revision: str) -> None:
        with db.migrating() as connection:
            step(_alembic_config(connection), revision)

    def request_indexes() -> set[str]:
        with db.engine.connect() as connection:
            inspector = inspect(connection)
            return {ix["name"] for table in ("requests", "certificates", "audit_events")
                    for ix in inspector.get_indexes(table)}

    migrate(command.upgrade, "0001")
    with db.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO requests (id, kind, requester, target, duration_seconds, reason, "
            "key_fingerprint, public_key, state, version, created_at, expires_at, issue_attempts) "
            "VALUES ('req-1', 'request', 'U1', 'prod-db', 3600, 'why', 'SHA256:x', 'ssh-ed25519 A', "
            "'pending', 0, '2026-11-22 10:00:00.000000', '2026-11-22 10:30:00.000000', 0)"))
    assert "ix_requests_state_expires_at" in request_indexes()
    migrate(command.upgrade, "head")
    live = {"ix_requests_pending_expires_at", "ix_requests_pending_requester",
            "ix_requests_approved", "ix_requests_breakglass_unreviewed"}
    indexes = request_indexes()
    assert live <= indexes
    assert not indexes & {"ix_requests_state_expires_at", "ix_requests_requester_target_state",
                          "ix_audit_events_action", "ix_certificates_subject_fingerprint"}
    migrate(command.downgrade, "0001")
    indexes = request_indexes()
    assert not live & indexes and "ix_certificates_subject_fingerprint" in indexes
    migrate(command.upgrade, "head")
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT id, state FROM requests")).all() == \
            [("req-1", "pending")]
    db.close()


def test_slack_bookkeeping_moves_to_its_own_table_and_back(database_url):
    """0002 -> 0003: where each request was posted leaves the requests table for slack_messages,
    rows and all, and the downgrade brings it back."""
    from alembic import command
    from sqlalchemy import inspect, text

    from storage.db import _alembic_config

    db = Database(database_url)

    def migrate(step, revision: str) -> None:
        with db.migrating() as connection:
            step(_alembic_config(connection), revision)

    def rows(sql: str) -> list[tuple]:
        with db.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]

    migrate(command.upgrade, "0002")
    insert = ("INSERT INTO requests (id, kind, requester, target, duration_seconds, reason, "
              "key_fingerprint, public_key, state, version, created_at, expires_at, issue_attempts, "
              "channel, message_ts, post_claimed_at) VALUES (:id, 'request', 'U1', 'prod-db', 3600, "
              "'why', 'SHA256:x', 'ssh-ed25519 A', 'pending', 0, '2026-11-22 10:00:00.000000', "
              "'2026-11-22 10:30:00.000000', 0, :channel, :ts, :claimed)")
    claimed = "2026-11-22 10:01:00.000000"
    with db.engine.begin() as connection:
        connection.execute(text(insert), {"id": "req-posted", "channel": "C0REQ", "ts": "1.000100",
                                          "claimed": None})
        connection.execute(text(insert), {"id": "req-queued", "channel": "C0REQ", "ts": None,
                                          "claimed": claimed})
        connection.execute(text(insert), {"id": "req-nowhere", "channel": None, "ts": None,
                                          "claimed": None})
        # Rows that refer to the requests table while SQLite rebuilds it.
        connection.execute(text("INSERT INTO approvals (request_id, approver, approve, at) VALUES "
                                "('req-posted', 'U2', true, '2026-11-22 10:02:00.000000')"))
        connection.execute(text(
            "INSERT INTO certificates (serial, key_id, principals, subject_fingerprint, "
            "subject_key, ca_fingerprint, valid_after, valid_before, issued_at, issued_by, "
            "request_id, holder) VALUES (7, 'k', '[]', 'SHA256:x', 'ssh-ed25519 A', 'SHA256:ca', "
            "'2026-11-22 10:02:00.000000', '2026-11-22 11:02:00.000000', "
            "'2026-11-22 10:02:00.000000', 'vouch', 'req-posted', 'U1')"))
    migrate(command.upgrade, "head")
    assert rows("SELECT request_id, channel, ts FROM slack_messages ORDER BY request_id") == [
        ("req-posted", "C0REQ", "1.000100"), ("req-queued", "C0REQ", None)]
    [(moved,)] = rows("SELECT post_claimed_at FROM slack_messages WHERE request_id = 'req-queued'")
    assert str(moved).startswith("2026-11-22 10:01:00"), moved
    assert rows("SELECT request_id FROM approvals") == [("req-posted",)]
    assert rows("SELECT request_id FROM certificates") == [("req-posted",)]
    with db.engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("requests")}
    assert not columns & {"channel", "message_ts", "post_claimed_at"}
    migrate(command.downgrade, "0002")
    assert rows("SELECT id, channel, message_ts FROM requests ORDER BY id") == [
        ("req-nowhere", None, None), ("req-posted", "C0REQ", "1.000100"),
        ("req-queued", "C0REQ", None)]
    [(back,)] = rows("SELECT post_claimed_at FROM requests WHERE id = 'req-queued'")
    assert str(back).startswith("2026-11-22 10:01:00"), back
    migrate(command.upgrade, "head")
    db.close()


def test_approved_requests_waiting_for_a_certificate_get_request_ttl_from_their_approval(
        database_url):
    """0005 -> 0006: a request approved at 10:20 that could not be issued expires at 10:50 (its
    30 minute TTL counted from the approval), not at 10:30; pending ones keep their expiry, and
    requests opened before templates were kept have none (signed as their target says)."""
    from alembic import command
    from sqlalchemy import text

    from access.requests import State
    from storage.db import _alembic_config
    from storage.requests import SqlRequests

    db = Database(database_url)
    with db.migrating() as connection:
        command.upgrade(_alembic_config(connection), "0005")
    with db.engine.begin() as connection:
        for request_id, state, decided in (("req-a", "approved", "'2026-11-22 10:20:00.000000'"),
                                           ("req-p", "pending", "NULL")):
            connection.execute(text(
                "INSERT INTO requests (id, kind, requester, target, duration_seconds, reason, "
                "key_fingerprint, public_key, state, version, created_at, expires_at, decided_at, "
                f"issue_attempts) VALUES ('{request_id}', 'request', 'U1', 'prod-db', 3600, 'why', "
                f"'SHA256:x', 'ssh-ed25519 A', '{state}', 0, '2026-11-22 10:00:00.000000', "
                f"'2026-11-22 10:30:00.000000', {decided}, 0)"))
    with db.migrating() as connection:
        command.upgrade(_alembic_config(connection), "head")
    with db.transaction(read_only=True) as connection:
        approved, pending = (SqlRequests(connection).get(i) for i in ("req-a", "req-p"))
    assert approved.state is State.APPROVED and approved.template is None
    assert (approved.expires_at.hour, approved.expires_at.minute) == (10, 50)
    assert (pending.expires_at.hour, pending.expires_at.minute) == (10, 30)
    db.close()
