"""Tables. Every timestamp is timezone-aware UTC; serials are unsigned 64-bit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from storage.types import UInt64, UTCDateTime


def _utc(*, nullable: bool = False, index: bool = False) -> Column:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class User(SQLModel, table=True):
    """A Slack user as last seen (name and time zone come from users.info)."""

    __tablename__ = "users"

    id: str = Field(primary_key=True)  # Slack user ID
    name: str = ""
    tz: str | None = None
    updated_at: datetime = Field(sa_column=_utc())
    home_opened_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class UserKey(SQLModel, table=True):
    """A public key a user registered; certificates are issued for these only."""

    __tablename__ = "user_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "fingerprint", name="uq_user_keys_user_fingerprint"),
        # One Slack user per key: whoever holds it is who a signature by it speaks for.
        Index("ix_user_keys_active_fingerprint", "fingerprint", unique=True,
              sqlite_where=text("removed_at IS NULL"), postgresql_where=text("removed_at IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(index=True)
    key_type: str
    public_key: str = Field(sa_column=Column(Text, nullable=False))  # OpenSSH line, no comment
    fingerprint: str
    comment: str = ""
    added_at: datetime = Field(sa_column=_utc())
    removed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


# (name, columns, WHERE) of the partial indexes over live requests, which is where every lookup
# by state goes; decided requests (the bulk of the table, and only growing) are in none of them.
# A query uses one only when its WHERE implies the index's: storage.requests writes the state
# as a literal (in_state) so that holds for prepared statements too.
LIVE_REQUEST_INDEXES = (
    # The TTL sweep (past_ttl) and the repost of unposted requests.
    ("ix_requests_pending_expires_at", ("expires_at",), "state = 'pending'"),
    # At most a few pending requests per user and target; a user's pending requests.
    ("ix_requests_pending_requester", ("requester", "target"), "state = 'pending'"),
    # The retry sweep over approved requests that have no certificate yet.
    ("ix_requests_approved", ("created_at",), "state = 'approved'"),
    # Break-glass uses awaiting review: the escalation sweep, the admins' App Home.
    ("ix_requests_breakglass_unreviewed", ("created_at",),
     "kind = 'breakglass' AND reviewed_at IS NULL"),
)


# (name, columns, WHERE) of the indexes the daily digest (storage.reports) counts a day's rows
# through, instead of scanning every request ever made. Each is partial on something no lookup
# of live requests says, so none of those can take one of these instead of its own.
REPORT_REQUEST_INDEXES = (
    ("ix_requests_issued", ("issued_at", "target"), "kind = 'request' AND issued_at IS NOT NULL"),
    ("ix_requests_denied", ("decided_at", "target"), "state = 'denied'"),
    ("ix_requests_expired", ("decided_at", "target"), "state = 'expired'"),
    ("ix_requests_breakglass_reviewed", ("created_at",),
     "kind = 'breakglass' AND reviewed_at IS NOT NULL"),
)


def _index(name: str, columns: tuple[str, ...], where: str) -> Index:
    return Index(name, *columns, sqlite_where=text(where), postgresql_where=text(where))


class RequestRecord(SQLModel, table=True):
    """An access request (or break-glass use) and where it stands."""

    __tablename__ = "requests"
    __table_args__ = tuple(_index(*index)
                           for index in (*LIVE_REQUEST_INDEXES, *REPORT_REQUEST_INDEXES))

    id: str = Field(primary_key=True)
    kind: str
    requester: str
    target: str
    duration_seconds: int
    reason: str = Field(sa_column=Column(Text, nullable=False))
    key_fingerprint: str
    public_key: str = Field(sa_column=Column(Text, nullable=False))
    state: str
    version: int = 0
    created_at: datetime = Field(sa_column=_utc())
    expires_at: datetime = Field(sa_column=_utc())
    decided_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # The certificate template (access.template, JSON); NULL for requests older than 0006.
    template: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Issuing: the serial reserved before signing, when, and the last failure, if any.
    issue_serial: int | None = Field(default=None, sa_column=Column(UInt64(), nullable=True))
    issue_claimed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    issue_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    issue_attempts: int = 0
    issue_retry_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    issued_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    cancelled_by: str | None = None
    extends: str | None = None  # the id of the request this one extends
    # Opened through the client API, signed by the very key to certify.
    key_proven: bool = Field(default=False, sa_column=Column(Boolean, nullable=False,
                                                            server_default=text("false")))
    # Break-glass review.
    reviewed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    reviewed_by: str | None = None
    review_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    review_escalated_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class SlackMessage(SQLModel, table=True):
    """The bot's own bookkeeping (bot.messages): where a request's message was posted in Slack,
    so every later render updates the same message, and who is posting it now."""

    __tablename__ = "slack_messages"

    request_id: str = Field(sa_column=Column(String, ForeignKey("requests.id"), primary_key=True))
    channel: str
    ts: str | None = None
    post_claimed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


class JobClaim(SQLModel, table=True):
    """A scheduled job's claim: a lease on a periodic job (renewed by the replica running it,
    taken over when it lapses) or, until far in the future, a once-only run (a day's digest)."""

    __tablename__ = "job_claims"

    name: str = Field(primary_key=True)
    holder: str
    until: datetime = Field(sa_column=_utc())


class SlackRevocationNotice(SQLModel, table=True):
    """The bot's bookkeeping: a revocation announced in Slack (or being announced), once."""

    __tablename__ = "slack_revocation_notices"

    serial: int = Field(sa_column=Column(UInt64(), primary_key=True))
    at: datetime = Field(sa_column=_utc())


class ApprovalRecord(SQLModel, table=True):
    """One approver's vote; the unique constraint makes a second click a no-op."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("request_id", "approver", name="uq_approvals_request_approver"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(sa_column=Column(String, ForeignKey("requests.id"), nullable=False,
                                             index=True))
    approver: str
    approve: bool
    at: datetime = Field(sa_column=_utc())
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class CertificateRecord(SQLModel, table=True):
    """A certificate Vouch signed: what it says, who got it, and whether it was revoked."""

    __tablename__ = "certificates"
    __table_args__ = (
        Index("ix_certificates_valid_before", "valid_before"),
        # Revoked certificates only (a few percent): the live ones not yet announced in Slack
        # (by valid_before), and the digest's revocations of the day (revoked_at, from the index).
        _index("ix_certificates_revoked", ("valid_before", "revoked_at"), "revoked_at IS NOT NULL"),
    )

    id: int | None = Field(default=None, primary_key=True)
    serial: int = Field(sa_column=Column(UInt64(), nullable=False, unique=True))
    key_id: str
    principals: str = Field(sa_column=Column(Text, nullable=False))  # JSON list
    subject_fingerprint: str
    subject_key: str = Field(sa_column=Column(Text, nullable=False))  # OpenSSH public key line
    ca_fingerprint: str
    valid_after: datetime = Field(sa_column=_utc())
    valid_before: datetime = Field(sa_column=_utc())
    issued_at: datetime = Field(sa_column=_utc())
    issued_by: str
    # At most one certificate per request: the database, not the code, guarantees it.
    request_id: str | None = Field(default=None, sa_column=Column(
        String, ForeignKey("requests.id"), nullable=True, unique=True))
    holder: str | None = Field(default=None, index=True)  # Slack user ID for request certificates
    revoked_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    revoked_by: str | None = None
    revoke_reason: str | None = None
    reminder_sent_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # The certificate itself (public), for the client API to hand over; NULL before 0011.
    certificate: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class HostTokenRecord(SQLModel, table=True):
    """A one-time host enrolment token: only its sha256 is kept, never the token."""

    __tablename__ = "host_tokens"

    token_hash: str = Field(primary_key=True)
    hostnames: str = Field(sa_column=Column(Text, nullable=False))  # JSON list
    created_at: datetime = Field(sa_column=_utc())
    created_by: str
    expires_at: datetime = Field(sa_column=_utc())
    used_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    used_by: str | None = None  # the fingerprint of the first host key it certified


class HostCertificateRecord(SQLModel, table=True):
    """A host certificate the host CA signed: for which names and key, how it was obtained, and
    whether it was revoked."""

    __tablename__ = "host_certificates"
    __table_args__ = (
        Index("ix_host_certificates_subject_fingerprint", "subject_fingerprint"),
        # The KRL and known_hosts read revoked ones only.
        _index("ix_host_certificates_revoked", ("valid_before",), "revoked_at IS NOT NULL"),
    )

    id: int | None = Field(default=None, primary_key=True)
    serial: int = Field(sa_column=Column(UInt64(), nullable=False, unique=True))
    key_id: str
    hostnames: str = Field(sa_column=Column(Text, nullable=False))  # JSON list
    subject_fingerprint: str
    subject_key: str = Field(sa_column=Column(Text, nullable=False))  # OpenSSH line, no comment
    ca_fingerprint: str
    ca_key: str = Field(sa_column=Column(Text, nullable=False))  # the host CA's public key line
    valid_after: datetime = Field(sa_column=_utc())
    valid_before: datetime = Field(sa_column=_utc())
    issued_at: datetime = Field(sa_column=_utc())
    issued_by: str
    enrolled_via: str  # token, renewal or operator
    revoked_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    revoked_by: str | None = None
    revoke_reason: str | None = None


class UsedSignature(SQLModel, table=True):
    """Signed API calls seen in the last few minutes (access.signed_calls): a replay through any
    replica finds its first use here."""

    __tablename__ = "used_signatures"

    replay_key: str = Field(primary_key=True)  # sha256 hex of the key and the signed message
    seen_at: datetime = Field(sa_column=_utc(index=True))


class AuditEvent(SQLModel, table=True):
    """One link of the audit chain: hash = HMAC-SHA256(key, prev_hash || canonical event)."""

    __tablename__ = "audit_events"

    seq: int = Field(primary_key=True)
    at: datetime = Field(sa_column=_utc(index=True))
    actor: str
    action: str
    subject: str
    details: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON
    prev_hash: str
    hash: str


class AuditHead(SQLModel, table=True):
    """The single row every append locks first: it serialises appenders on both databases."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str
    # The first event linked with the audit key (storage.chain); None: a chain written before
    # the key existed, anchored by its next append.
    keyed_from: int | None = None
