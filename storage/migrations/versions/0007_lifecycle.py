"""The life of an access: a deny's reason (or an approval's comment), who cancelled a request,
the request an extension extends, a break-glass review's note, and which revocations the bot
has announced in Slack

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 18:50:00
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import storage.types

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('slack_revocation_notices',
                    sa.Column('serial', storage.types.UInt64(), nullable=False),
                    sa.Column('at', storage.types.UTCDateTime(), nullable=False),
                    sa.PrimaryKeyConstraint('serial'))
    with op.batch_alter_table('approvals') as batch:
        batch.add_column(sa.Column('comment', sa.Text(), nullable=True))
    with op.batch_alter_table('requests') as batch:
        batch.add_column(sa.Column('cancelled_by', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column('extends', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column('review_note', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_table('slack_revocation_notices')
    with op.batch_alter_table('requests') as batch:
        batch.drop_column('review_note')
        batch.drop_column('extends')
        batch.drop_column('cancelled_by')
    with op.batch_alter_table('approvals') as batch:
        batch.drop_column('comment')
