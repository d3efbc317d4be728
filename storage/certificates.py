"""Issued certificates and their revocation (access.ports.Certificates). Statements are built
once, as in storage.requests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from access.ports import StoredCertificate
from ca.cert import Certificate
from storage.db import unique
from storage.models import CertificateRecord
from storage.types import UInt64, UTCDateTime

_CERTIFICATES = CertificateRecord.__table__
_C = _CERTIFICATES.c
_COLUMNS = [_C[name] for name in (
    "serial", "key_id", "principals", "valid_before", "holder", "request_id", "revoked_at",
    "revoked_by", "revoke_reason", "issued_at", "certificate")]
_SERIAL = bindparam("serial", type_=UInt64())

_INSERT = _CERTIFICATES.insert()
_BY_SERIAL = select(*_COLUMNS).where(_C.serial == _SERIAL)
_OF_REQUEST = select(*_COLUMNS).where(_C.request_id == bindparam("request_id"))
_LIVE_OF = (select(*_COLUMNS)
            .where(_C.holder == bindparam("holder"),
                   _C.valid_before > bindparam("now", type_=UTCDateTime()),
                   _C.revoked_at.is_(None))
            .order_by(_C.valid_before))
# ix_certificates_valid_before: the live certificates only
_LIVE_HOLDERS = (select(_C.holder).where(_C.valid_before > bindparam("now", type_=UTCDateTime()),
                                         _C.revoked_at.is_(None), _C.holder.is_not(None))
                 .distinct())
# A narrow range scan of ix_certificates_valid_before.
_DUE_REMINDER = (select(*_COLUMNS)
                 .where(_C.valid_before > bindparam("now", type_=UTCDateTime()),
                        _C.valid_before <= bindparam("until", type_=UTCDateTime()),
                        _C.revoked_at.is_(None), _C.reminder_sent_at.is_(None),
                        _C.holder.is_not(None))
                 .order_by(_C.valid_before).limit(bindparam("limit")))
# Set once: a second replica's attempt finds the column set and changes nothing. (An UPDATE's
# parameters may not be named like the table's columns.)
_THE_SERIAL = bindparam("the_serial", type_=UInt64())
_MARK_REMINDED = (update(_CERTIFICATES).where(_C.serial == _THE_SERIAL, _C.reminder_sent_at.is_(None))
                  .values(reminder_sent_at=bindparam("at", type_=UTCDateTime())))
_MARK_REVOKED = (update(_CERTIFICATES).where(_C.serial == _THE_SERIAL, _C.revoked_at.is_(None))
                 .values(revoked_at=bindparam("at", type_=UTCDateTime()),
                         revoked_by=bindparam("by"), revoke_reason=bindparam("reason")))
_REVOKED_SERIALS = select(_C.serial, _C.ca_fingerprint).where(
    _C.revoked_at.is_not(None), _C.valid_before > bindparam("valid_after", type_=UTCDateTime()))
_REVOCATIONS = select(func.count()).select_from(_CERTIFICATES).where(_C.revoked_at.is_not(None))


def _stored(row) -> StoredCertificate:
    return StoredCertificate(serial=row.serial, key_id=row.key_id,
                             principals=tuple(json.loads(row.principals)),
                             valid_before=row.valid_before, holder=row.holder,
                             request_id=row.request_id, revoked_at=row.revoked_at,
                             revoked_by=row.revoked_by, revoke_reason=row.revoke_reason,
                             issued_at=row.issued_at, line=row.certificate)


class SqlCertificates:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def _rows(self, statement, **params) -> list[StoredCertificate]:
        return [_stored(row) for row in self.connection.execute(statement, params)]

    def add(self, certificate: Certificate, *, ca_fingerprint: str, issued_at: datetime,
            issued_by: str, request_id: str | None, holder: str | None) -> None:
        spec = certificate.spec
        with unique("certificate"):  # serial and request_id are unique: one certificate per request
            self.connection.execute(_INSERT, {
                "serial": spec.serial, "key_id": spec.key_id,
                "principals": json.dumps(list(spec.principals)),
                "subject_key": spec.public_key.line(),
                "subject_fingerprint": spec.public_key.fingerprint,
                "ca_fingerprint": ca_fingerprint, "valid_after": spec.valid_after,
                "valid_before": spec.valid_before, "issued_at": issued_at, "issued_by": issued_by,
                "request_id": request_id, "holder": holder, "certificate": certificate.line()})

    def by_serial(self, serial: int) -> StoredCertificate | None:
        found = self._rows(_BY_SERIAL, serial=serial)
        return found[0] if found else None

    def of_request(self, request_id: str) -> list[StoredCertificate]:
        return self._rows(_OF_REQUEST, request_id=request_id)

    def live_of(self, holder: str, now: datetime) -> list[StoredCertificate]:
        return self._rows(_LIVE_OF, holder=holder, now=now)

    def live_holders(self, now: datetime) -> list[str]:
        return list(self.connection.execute(_LIVE_HOLDERS, {"now": now}).scalars())

    def due_reminder(self, now: datetime, within: timedelta, limit: int) -> list[StoredCertificate]:
        return self._rows(_DUE_REMINDER, now=now, until=now + within, limit=limit)

    def mark_reminded(self, serial: int, at: datetime) -> bool:
        return self.connection.execute(_MARK_REMINDED,
                                       {"the_serial": serial, "at": at}).rowcount == 1

    def mark_revoked(self, serial: int, *, at: datetime, by: str, reason: str | None) -> bool:
        return self.connection.execute(_MARK_REVOKED, {"the_serial": serial, "at": at, "by": by,
                                                       "reason": reason}).rowcount == 1

    def revoked_serials(self, valid_after: datetime, *, ca_fingerprint: str
                        ) -> tuple[set[int], set[int], int]:
        ours: set[int] = set()
        others: set[int] = set()
        for serial, signed_by in self.connection.execute(_REVOKED_SERIALS,
                                                         {"valid_after": valid_after}):
            (ours if signed_by == ca_fingerprint else others).add(serial)
        return ours, others, self.connection.execute(_REVOCATIONS).scalar() or 0
