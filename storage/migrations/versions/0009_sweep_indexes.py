"""indexes for the daily digest and the revocation announcements: requests issued, denied,
expired and reviewed break-glass uses by time, and revoked certificates

The digest counted a day's activity by scanning every request and certificate ever stored (and
joined each certificate to its request): bench/jobs.py measured 0.45 s on SQLite with 200k
requests stored and 2.95 s with 1.1M (bench/README.md, "Scheduled jobs"). The revocation sweep
walked every live certificate to find the few revoked ones. All five indexes are partial, on
conditions no lookup of live requests states, so none can displace a live request index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 20:30:00
"""

from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# As storage.models declares them at this revision (a migration does not follow later models).
INDEXES = (
    ("ix_requests_issued", "requests", ("issued_at", "target"),
     "kind = 'request' AND issued_at IS NOT NULL"),
    ("ix_requests_denied", "requests", ("decided_at", "target"), "state = 'denied'"),
    ("ix_requests_expired", "requests", ("decided_at", "target"), "state = 'expired'"),
    ("ix_requests_breakglass_reviewed", "requests", ("created_at",),
     "kind = 'breakglass' AND reviewed_at IS NOT NULL"),
    ("ix_certificates_revoked", "certificates", ("valid_before", "revoked_at"),
     "revoked_at IS NOT NULL"),
)


def upgrade() -> None:
    for name, table, columns, where in INDEXES:
        op.create_index(name, table, list(columns), unique=False, sqlite_where=sa.text(where),
                        postgresql_where=sa.text(where))


def downgrade() -> None:
    for name, table, _columns, _where in INDEXES:
        op.drop_index(name, table_name=table)
