"""One Slack user per public key: a unique index over the fingerprints of active keys

Where two users had registered the same key, the first registration stands and the later ones
are removed (their holders see the key gone from /ssh-key list and must make keys of their own).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 17:40:00
"""

from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa
import storage.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_KEYS = sa.table("user_keys", sa.column("id", sa.Integer), sa.column("fingerprint", sa.String),
                 sa.column("removed_at", storage.types.UTCDateTime()))


def upgrade() -> None:
    active = _KEYS.c.removed_at.is_(None)
    first = sa.select(sa.func.min(_KEYS.c.id)).where(active).group_by(_KEYS.c.fingerprint)
    op.execute(_KEYS.update().where(active, _KEYS.c.id.not_in(first))
               .values(removed_at=datetime.now(timezone.utc)))
    op.create_index('ix_user_keys_active_fingerprint', 'user_keys', ['fingerprint'], unique=True,
                    sqlite_where=sa.text('removed_at IS NULL'),
                    postgresql_where=sa.text('removed_at IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_user_keys_active_fingerprint', table_name='user_keys')
