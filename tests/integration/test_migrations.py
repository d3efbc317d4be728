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
