"""Tables. Every timestamp is timezone-aware UTC."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from storage.types import UInt64, UTCDateTime


def _utc(**kwargs) -> Column:
    return Column(UTCDateTime(), **kwargs)


class CertificateRecord(SQLModel, table=True):
    """A certificate Vouch signed: what it says, who got it, and whether it was revoked."""

    __tablename__ = "certificates"
    __table_args__ = (Index("ix_certificates_valid_before", "valid_before"),)

    id: int | None = Field(default=None, primary_key=True)
    serial: int = Field(sa_column=Column(UInt64(), nullable=False, unique=True))
    key_id: str
    principals: str = Field(sa_column=Column(Text, nullable=False))  # JSON list
    subject_fingerprint: str = Field(index=True)
    subject_key: str = Field(sa_column=Column(Text, nullable=False))  # OpenSSH public key line
    ca_fingerprint: str
    valid_after: datetime = Field(sa_column=_utc(nullable=False))
    valid_before: datetime = Field(sa_column=_utc(nullable=False))
    issued_at: datetime = Field(sa_column=_utc(nullable=False))
    issued_by: str
    request_id: str | None = Field(default=None, index=True)
    revoked_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    revoked_by: str | None = None
    revoke_reason: str | None = None


class AuditEvent(SQLModel, table=True):
    """One link of the audit chain: hash = SHA-256(prev_hash || canonical event)."""

    __tablename__ = "audit_events"

    seq: int = Field(primary_key=True)
    at: datetime = Field(sa_column=_utc(nullable=False, index=True))
    actor: str
    action: str = Field(index=True)
    subject: str
    details: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON
    prev_hash: str
    hash: str


class AuditHead(SQLModel, table=True):
    """The single row every append updates first: it serialises appenders on both databases."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str
