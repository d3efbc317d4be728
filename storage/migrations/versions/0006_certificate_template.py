"""The certificate template fixed on each request, and backed-off signing retries

Requests opened before this have no template (NULL): they are signed as their target is at
signing time, as before. Approved requests not yet issued now expire request_ttl after their
approval; those already waiting get that much time from their approval.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:40:00
"""

from alembic import op
import sqlalchemy as sa
import storage.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_REQUESTS = sa.table("requests", sa.column("id", sa.String), sa.column("state", sa.String),
                     sa.column("created_at", storage.types.UTCDateTime()),
                     sa.column("expires_at", storage.types.UTCDateTime()),
                     sa.column("decided_at", storage.types.UTCDateTime()))


def upgrade() -> None:
    with op.batch_alter_table('requests') as batch:
        batch.add_column(sa.Column('template', sa.Text(), nullable=True))
        batch.add_column(sa.Column('issue_retry_at', storage.types.UTCDateTime(), nullable=True))
    connection = op.get_bind()
    waiting = connection.execute(sa.select(_REQUESTS).where(_REQUESTS.c.state == "approved")).all()
    for row in waiting:
        ttl = row.expires_at - row.created_at
        connection.execute(_REQUESTS.update().where(_REQUESTS.c.id == row.id)
                           .values(expires_at=(row.decided_at or row.created_at) + ttl))


def downgrade() -> None:
    with op.batch_alter_table('requests') as batch:
        batch.drop_column('issue_retry_at')
        batch.drop_column('template')
