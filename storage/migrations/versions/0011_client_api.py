"""The client API: signed calls seen lately (replays are refused on every replica), which
requests were opened with a signature by the key they certify, and the certificates themselves
(the API hands them over)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 08:00:00
"""

from alembic import op
import sqlalchemy as sa

from storage.types import UTCDateTime

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "used_signatures",
        sa.Column("replay_key", sa.String(), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("replay_key"),
    )
    op.create_index("ix_used_signatures_seen_at", "used_signatures", ["seen_at"])
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("key_proven", sa.Boolean(), nullable=False,
                                   server_default=sa.text("false")))
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("certificate", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("certificate")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("key_proven")
    op.drop_index("ix_used_signatures_seen_at", table_name="used_signatures")
    op.drop_table("used_signatures")
