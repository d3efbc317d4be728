"""Scheduled jobs across replicas: job_claims (leases and once-only runs), and unreviewed
break-glass uses indexed whether or not they were escalated (escalations now repeat)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 19:10:00
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import storage.types

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_OLD = "kind = 'breakglass' AND reviewed_at IS NULL AND review_escalated_at IS NULL"
_NEW = "kind = 'breakglass' AND reviewed_at IS NULL"


def _index(where: str) -> None:
    op.create_index('ix_requests_breakglass_unreviewed', 'requests', ['created_at'],
                    sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def upgrade() -> None:
    op.create_table('job_claims',
                    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
                    sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
                    sa.Column('until', storage.types.UTCDateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('name'))
    op.drop_index('ix_requests_breakglass_unreviewed', table_name='requests')
    _index(_NEW)


def downgrade() -> None:
    op.drop_index('ix_requests_breakglass_unreviewed', table_name='requests')
    _index(_OLD)
    op.drop_table('job_claims')
