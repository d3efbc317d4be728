"""Host certificates: the host CA's certificates (serial, names, key, how obtained, revocation)
and one-time enrolment tokens, kept as hashes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 12:00:00
"""

from alembic import op
import sqlalchemy as sa

from storage.types import UInt64, UTCDateTime

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_tokens",
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("hostnames", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("used_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_table(
        "host_certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", UInt64(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("hostnames", sa.Text(), nullable=False),
        sa.Column("subject_fingerprint", sa.String(), nullable=False),
        sa.Column("subject_key", sa.Text(), nullable=False),
        sa.Column("ca_fingerprint", sa.String(), nullable=False),
        sa.Column("ca_key", sa.Text(), nullable=False),
        sa.Column("valid_after", UTCDateTime(), nullable=False),
        sa.Column("valid_before", UTCDateTime(), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("issued_by", sa.String(), nullable=False),
        sa.Column("enrolled_via", sa.String(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(), nullable=True),
        sa.Column("revoke_reason", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("serial"),
    )
    op.create_index("ix_host_certificates_subject_fingerprint", "host_certificates",
                    ["subject_fingerprint"])
    where = sa.text("revoked_at IS NOT NULL")
    op.create_index("ix_host_certificates_revoked", "host_certificates", ["valid_before"],
                    sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_host_certificates_revoked", table_name="host_certificates")
    op.drop_index("ix_host_certificates_subject_fingerprint", table_name="host_certificates")
    op.drop_table("host_certificates")
    op.drop_table("host_tokens")
