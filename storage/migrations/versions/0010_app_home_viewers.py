"""users.home_opened_at: when each user last opened their App Home

Every replica refreshes the App Homes that a change concerns, not only those opened through it:
who has theirs open is now in the database, not in one process's memory.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 23:00:00
"""

from alembic import op
import sqlalchemy as sa

from storage.types import UTCDateTime

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("home_opened_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("home_opened_at")
