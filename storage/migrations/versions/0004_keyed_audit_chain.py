"""The audit chain is keyed: audit_head.keyed_from, the first event linked with the audit key

An empty chain is keyed from its first event. A chain that already has events stays as it is
(plain SHA-256 links) until the first append with the audit key, which writes an `audit.keyed`
anchor event and keys everything from there (storage.audit).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 17:00:00
"""

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.add_column(sa.Column('keyed_from', sa.Integer(), nullable=True))
    op.execute("UPDATE audit_head SET keyed_from = 1 WHERE seq = 0")


def downgrade() -> None:
    # The events stay keyed: code from before this revision cannot verify them.
    with op.batch_alter_table('audit_head', schema=None) as batch_op:
        batch_op.drop_column('keyed_from')
