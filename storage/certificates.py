"""Repository for issued certificates and their revocation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlmodel import Session

from storage.db import unique
from storage.direct import Transaction
from storage.models import CertificateRecord


_CERTIFICATES = CertificateRecord.__table__
_INSERT_CERTIFICATE = insert(_CERTIFICATES)


def record_certificate(*, session: Session | Transaction, serial: int, key_id: str,
                       principals: list[str], subject_key: str, subject_fingerprint: str,
                       ca_fingerprint: str, valid_after: datetime, valid_before: datetime,
                       issued_at: datetime, issued_by: str, request_id: str | None = None,
                       holder: str | None = None) -> None:
    """Raises Duplicate when the serial or the request already has a certificate."""
    with unique("certificate"):  # serial and request_id are unique: one certificate per request
        session.execute(_INSERT_CERTIFICATE, {
            "serial": serial, "key_id": key_id, "principals": json.dumps(principals),
            "subject_key": subject_key, "subject_fingerprint": subject_fingerprint,
            "ca_fingerprint": ca_fingerprint, "valid_after": valid_after,
            "valid_before": valid_before, "issued_at": issued_at, "issued_by": issued_by,
            "request_id": request_id, "holder": holder})


def get_by_serial(*, session: Session, serial: int) -> CertificateRecord | None:
    return session.scalars(select(CertificateRecord).where(CertificateRecord.serial == serial)).first()


def get_by_request(*, session: Session, request_id: str) -> CertificateRecord | None:
    return session.scalars(select(CertificateRecord)
                           .where(CertificateRecord.request_id == request_id)).first()


def expiring_unreminded(*, session: Session, now: datetime, within: timedelta,
                        limit: int = 500) -> list[CertificateRecord]:
    """Live request certificates expiring within `within` whose holder was not yet reminded
    (served by the index on valid_before: a narrow range scan)."""
    return list(session.scalars(
        select(CertificateRecord)
        .where(CertificateRecord.valid_before > now,
               CertificateRecord.valid_before <= now + within,
               CertificateRecord.revoked_at.is_(None),
               CertificateRecord.reminder_sent_at.is_(None),
               CertificateRecord.holder.is_not(None))
        .order_by(CertificateRecord.valid_before).limit(limit)))


def live_of(*, session: Session, holder: str, now: datetime) -> list[CertificateRecord]:
    return list(session.scalars(
        select(CertificateRecord)
        .where(CertificateRecord.holder == holder, CertificateRecord.valid_before > now,
               CertificateRecord.revoked_at.is_(None))
        .order_by(CertificateRecord.valid_before)))


def mark_reminded(*, session: Session, certificate_id: int, at: datetime) -> bool:
    """Once only: a second replica's attempt finds it already set."""
    result = session.execute(
        update(CertificateRecord)
        .where(CertificateRecord.id == certificate_id, CertificateRecord.reminder_sent_at.is_(None))
        .values(reminder_sent_at=at))
    return result.rowcount == 1


def list_by_request(*, session: Session, request_id: str) -> list[CertificateRecord]:
    return list(session.scalars(select(CertificateRecord)
                                .where(CertificateRecord.request_id == request_id)))


def mark_revoked(*, session: Session, certificate_id: int, at: datetime, by: str,
                 reason: str | None) -> bool:
    """Revoke once: returns False when it was already revoked (the first revocation stands)."""
    result = session.execute(
        update(CertificateRecord)
        .where(CertificateRecord.id == certificate_id, CertificateRecord.revoked_at.is_(None))
        .values(revoked_at=at, revoked_by=by, revoke_reason=reason))
    return result.rowcount == 1


def revoked_serials(*, session: Session, valid_after: datetime) -> tuple[set[int], int]:
    """Serials of revoked certificates still valid after `valid_after` (an expired certificate
    needs no revocation), and a version that grows with each revocation."""
    revoked = CertificateRecord.revoked_at.is_not(None)
    serials = set(session.scalars(select(CertificateRecord.serial)
                                  .where(revoked, CertificateRecord.valid_before > valid_after)))
    version = session.scalar(select(func.count()).select_from(CertificateRecord).where(revoked))
    return serials, version or 0


def count(*, session: Session) -> int:
    return session.scalar(select(func.count()).select_from(CertificateRecord)) or 0
