"""partial indexes over live requests; no index on audit_events.action or
certificates.subject_fingerprint

Requests are looked up by state only while they are live (pending or approved); once decided
they stay in the table for good. Indexes limited to the live rows stay small, and the
transitions that end a request (issued, denied, expired) leave them at once instead of moving
within them: issuing a certificate writes 4 fewer index pages. Nothing queries audit events by
action, or certificates by subject key, so those indexes only cost a page per write.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 18:05:00
"""

from alembic import op
import sqlalchemy as sa

# As storage.models declares them at this revision (a migration does not follow later models).
LIVE_REQUEST_INDEXES = (
    ("ix_requests_pending_expires_at", ("expires_at",), "state = 'pending'"),
    ("ix_requests_pending_requester", ("requester", "target"), "state = 'pending'"),
    ("ix_requests_approved", ("created_at",), "state = 'approved'"),
    ("ix_requests_breakglass_unreviewed", ("created_at",),
     "kind = 'breakglass' AND reviewed_at IS NULL AND review_escalated_at IS NULL"),
)

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_action')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index('ix_certificates_subject_fingerprint')
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_index('ix_requests_state_expires_at')
        batch_op.drop_index('ix_requests_requester_target_state')
    for name, columns, where in LIVE_REQUEST_INDEXES:
        op.create_index(name, 'requests', list(columns), unique=False,
                        sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def downgrade() -> None:
    for name, _columns, _where in LIVE_REQUEST_INDEXES:
        op.drop_index(name, table_name='requests')
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.create_index('ix_requests_requester_target_state', ['requester', 'target', 'state'],
                              unique=False)
        batch_op.create_index('ix_requests_state_expires_at', ['state', 'expires_at'], unique=False)
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index('ix_certificates_subject_fingerprint', ['subject_fingerprint'],
                              unique=False)
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_action', ['action'], unique=False)
