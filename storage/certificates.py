"""Issued certificates and their revocation (access.ports.Certificates)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlmodel import Session

from access.ports import StoredCertificate
from ca.cert import Certificate
from storage.db import unique
from storage.models import CertificateRecord

_CERTIFICATES = CertificateRecord.__table__
_COLUMNS = [_CERTIFICATES.c[name] for name in (
    "serial", "key_id", "principals", "valid_before", "holder", "request_id", "revoked_at")]


def _stored(row) -> StoredCertificate:
    return StoredCertificate(serial=row.serial, key_id=row.key_id,
                             principals=tuple(json.loads(row.principals)),
                             valid_before=row.valid_before, holder=row.holder,
                             request_id=row.request_id, revoked_at=row.revoked_at)


class SqlCertificates:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, certificate: Certificate, *, ca_fingerprint: str, issued_at: datetime,
            issued_by: str, request_id: str | None, holder: str | None) -> None:
        spec = certificate.spec
        with unique("certificate"):  # serial and request_id are unique: one certificate per request
            self.session.execute(_CERTIFICATES.insert().values(
                serial=spec.serial, key_id=spec.key_id, principals=json.dumps(list(spec.principals)),
                subject_key=spec.public_key.line(), subject_fingerprint=spec.public_key.fingerprint,
                ca_fingerprint=ca_fingerprint, valid_after=spec.valid_after,
                valid_before=spec.valid_before, issued_at=issued_at, issued_by=issued_by,
                request_id=request_id, holder=holder))

    def _select(self, *where, order=None, limit: int | None = None) -> list[StoredCertificate]:
        query = select(*_COLUMNS).where(*where)
        if order is not None:
            query = query.order_by(order)
        if limit is not None:
            query = query.limit(limit)
        return [_stored(row) for row in self.session.execute(query)]

    def by_serial(self, serial: int) -> StoredCertificate | None:
        found = self._select(_CERTIFICATES.c.serial == serial)
        return found[0] if found else None

    def of_request(self, request_id: str) -> list[StoredCertificate]:
        return self._select(_CERTIFICATES.c.request_id == request_id)

    def live_of(self, holder: str, now: datetime) -> list[StoredCertificate]:
        return self._select(_CERTIFICATES.c.holder == holder, _CERTIFICATES.c.valid_before > now,
                            _CERTIFICATES.c.revoked_at.is_(None),
                            order=_CERTIFICATES.c.valid_before)

    def due_reminder(self, now: datetime, within: timedelta, limit: int) -> list[StoredCertificate]:
        # A narrow range scan of ix_certificates_valid_before.
        return self._select(_CERTIFICATES.c.valid_before > now,
                            _CERTIFICATES.c.valid_before <= now + within,
                            _CERTIFICATES.c.revoked_at.is_(None),
                            _CERTIFICATES.c.reminder_sent_at.is_(None),
                            _CERTIFICATES.c.holder.is_not(None),
                            order=_CERTIFICATES.c.valid_before, limit=limit)

    def mark_reminded(self, serial: int, at: datetime) -> bool:
        return self._set_once(serial, "reminder_sent_at", reminder_sent_at=at)

    def mark_revoked(self, serial: int, *, at: datetime, by: str, reason: str | None) -> bool:
        return self._set_once(serial, "revoked_at", revoked_at=at, revoked_by=by,
                              revoke_reason=reason)

    def _set_once(self, serial: int, column: str, **values) -> bool:
        """Set `values` if `column` is still empty: a second replica's attempt changes nothing."""
        result = self.session.execute(
            update(_CERTIFICATES)
            .where(_CERTIFICATES.c.serial == serial, _CERTIFICATES.c[column].is_(None))
            .values(**values))
        return result.rowcount == 1

    def revoked_serials(self, valid_after: datetime) -> tuple[set[int], int]:
        revoked = _CERTIFICATES.c.revoked_at.is_not(None)
        serials = set(self.session.scalars(
            select(_CERTIFICATES.c.serial).where(revoked, _CERTIFICATES.c.valid_before > valid_after)))
        version = self.session.scalar(select(func.count()).select_from(_CERTIFICATES).where(revoked))
        return serials, version or 0
