"""Slack's bookkeeping leaves the requests table for slack_messages

Where a request's message was posted (channel, ts) and who is posting it now (post_claimed_at)
belong to the Slack bot, not to the request: they move to a table of the bot's own, rows and all.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 16:00:00
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import storage.types

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# The partial indexes on requests, as 0002 made them: SQLite's batch mode rebuilds the table,
# so they are dropped around it and made again.
LIVE_REQUEST_INDEXES = (
    ("ix_requests_pending_expires_at", ("expires_at",), "state = 'pending'"),
    ("ix_requests_pending_requester", ("requester", "target"), "state = 'pending'"),
    ("ix_requests_approved", ("created_at",), "state = 'approved'"),
    ("ix_requests_breakglass_unreviewed", ("created_at",),
     "kind = 'breakglass' AND reviewed_at IS NULL AND review_escalated_at IS NULL"),
)


def _rebuild_requests(change) -> None:
    for name, _columns, _where in LIVE_REQUEST_INDEXES:
        op.drop_index(name, table_name='requests')
    with op.batch_alter_table('requests', schema=None) as batch_op:
        change(batch_op)
    for name, columns, where in LIVE_REQUEST_INDEXES:
        op.create_index(name, 'requests', list(columns), unique=False,
                        sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def upgrade() -> None:
    op.create_table('slack_messages',
    sa.Column('request_id', sa.String(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('ts', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('post_claimed_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['request_id'], ['requests.id'], ),
    sa.PrimaryKeyConstraint('request_id')
    )
    op.execute("INSERT INTO slack_messages (request_id, channel, ts, post_claimed_at) "
               "SELECT id, channel, message_ts, post_claimed_at FROM requests "
               "WHERE channel IS NOT NULL")

    def drop(batch_op) -> None:
        batch_op.drop_column('post_claimed_at')
        batch_op.drop_column('message_ts')
        batch_op.drop_column('channel')

    _rebuild_requests(drop)


def downgrade() -> None:
    def add(batch_op) -> None:
        batch_op.add_column(sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('message_ts', sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=True))
        batch_op.add_column(sa.Column('post_claimed_at', storage.types.UTCDateTime(timezone=True),
                                      nullable=True))

    _rebuild_requests(add)
    op.execute("UPDATE requests SET channel = (SELECT m.channel FROM slack_messages AS m "
               "WHERE m.request_id = requests.id), message_ts = (SELECT m.ts FROM slack_messages "
               "AS m WHERE m.request_id = requests.id), post_claimed_at = (SELECT "
               "m.post_claimed_at FROM slack_messages AS m WHERE m.request_id = requests.id)")
    op.drop_table('slack_messages')
