"""certificates and audit chain

Revision ID: 0001
Revises:
Create Date: 2026-11-22 13:25:03.177272
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import storage.types


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('prev_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)

    op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('serial', storage.types.UInt64(), nullable=False),
    sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('principals', sa.Text(), nullable=False),
    sa.Column('subject_fingerprint', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('subject_key', sa.Text(), nullable=False),
    sa.Column('ca_fingerprint', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('valid_after', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('valid_before', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('issued_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('issued_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('revoked_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('revoke_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('serial')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_request_id'), ['request_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_certificates_subject_fingerprint'), ['subject_fingerprint'], unique=False)
        batch_op.create_index('ix_certificates_valid_before', ['valid_before'], unique=False)

    # The chain starts from a fixed genesis hash; every append updates this one row first.
    audit_head = sa.table('audit_head', sa.column('id', sa.Integer), sa.column('seq', sa.Integer),
                          sa.column('hash', sa.String))
    op.bulk_insert(audit_head, [{'id': 1, 'seq': 0, 'hash': '0' * 64}])



def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index('ix_certificates_valid_before')
        batch_op.drop_index(batch_op.f('ix_certificates_subject_fingerprint'))
        batch_op.drop_index(batch_op.f('ix_certificates_request_id'))

    op.drop_table('certificates')
    op.drop_table('audit_head')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_action'))

    op.drop_table('audit_events')
