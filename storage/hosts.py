"""Host certificates and enrolment tokens (access.ports.Hosts). Statements are built once, as in
storage.certificates."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from access.ports import HostToken, StoredHostCertificate
from ca.cert import Certificate
from ca.keys import PublicKey
from storage.db import unique
from storage.models import HostCertificateRecord, HostTokenRecord
from storage.types import UInt64, UTCDateTime

_TOKENS = HostTokenRecord.__table__
_T = _TOKENS.c
_HOSTS = HostCertificateRecord.__table__
_H = _HOSTS.c
_COLUMNS = [_H[name] for name in (
    "serial", "key_id", "hostnames", "subject_key", "subject_fingerprint", "ca_key",
    "valid_after", "valid_before", "issued_at", "issued_by", "enrolled_via", "revoked_at",
    "revoked_by", "revoke_reason")]

_ADD_TOKEN = _TOKENS.insert()
_TOKEN = select(_TOKENS).where(_T.token_hash == bindparam("digest"))
# The compare-and-set that spends a token: of two concurrent uses, one updates the row and the
# other finds used_at set and changes nothing. (An UPDATE's parameters may not be named like the
# table's columns.)
_NOW = bindparam("now", type_=UTCDateTime())
_USE_TOKEN = (update(_TOKENS)
              .where(_T.token_hash == bindparam("digest"), _T.used_at.is_(None),
                     _T.expires_at > _NOW)
              .values(used_at=_NOW, used_by=bindparam("by")))
_INSERT = _HOSTS.insert()
_BY_SERIAL = select(*_COLUMNS).where(_H.serial == bindparam("serial", type_=UInt64()))
_OF_KEYS = (select(*_COLUMNS)
            .where(_H.subject_fingerprint.in_(bindparam("fingerprints", expanding=True)))
            .order_by(_H.issued_at.desc(), _H.id.desc()))
_THE_SERIAL = bindparam("the_serial", type_=UInt64())
_MARK_REVOKED = (update(_HOSTS).where(_H.serial == _THE_SERIAL, _H.revoked_at.is_(None))
                 .values(revoked_at=bindparam("at", type_=UTCDateTime()),
                         revoked_by=bindparam("by"), revoke_reason=bindparam("reason")))
# ix_host_certificates_revoked
_REVOKED = (select(*_COLUMNS)
            .where(_H.revoked_at.is_not(None),
                   _H.valid_before > bindparam("valid_after", type_=UTCDateTime()))
            .order_by(_H.serial))
_REVOCATIONS = select(func.count()).select_from(_HOSTS).where(_H.revoked_at.is_not(None))


def _token(row) -> HostToken:
    return HostToken(token_hash=row.token_hash, hostnames=tuple(json.loads(row.hostnames)),
                     created_at=row.created_at, created_by=row.created_by,
                     expires_at=row.expires_at, used_at=row.used_at, used_by=row.used_by)


def _stored(row) -> StoredHostCertificate:
    return StoredHostCertificate(
        serial=row.serial, key_id=row.key_id, hostnames=tuple(json.loads(row.hostnames)),
        public_key=row.subject_key, fingerprint=row.subject_fingerprint, ca_key=row.ca_key,
        valid_after=row.valid_after, valid_before=row.valid_before, issued_at=row.issued_at,
        issued_by=row.issued_by, via=row.enrolled_via, revoked_at=row.revoked_at,
        revoked_by=row.revoked_by, revoke_reason=row.revoke_reason)


class SqlHosts:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def add_token(self, token: HostToken) -> None:
        with unique("host token"):
            self.connection.execute(_ADD_TOKEN, {
                "token_hash": token.token_hash, "hostnames": json.dumps(list(token.hostnames)),
                "created_at": token.created_at, "created_by": token.created_by,
                "expires_at": token.expires_at})

    def token(self, token_hash: str) -> HostToken | None:
        row = self.connection.execute(_TOKEN, {"digest": token_hash}).first()
        return None if row is None else _token(row)

    def use_token(self, token_hash: str, *, now: datetime, by: str) -> bool:
        return self.connection.execute(_USE_TOKEN, {"digest": token_hash, "now": now,
                                                    "by": by}).rowcount == 1

    def add(self, certificate: Certificate, *, ca_key: PublicKey, issued_at: datetime,
            issued_by: str, via: str) -> None:
        spec = certificate.spec
        with unique("host certificate"):
            self.connection.execute(_INSERT, {
                "serial": spec.serial, "key_id": spec.key_id,
                "hostnames": json.dumps(list(spec.principals)),
                "subject_fingerprint": spec.public_key.fingerprint,
                "subject_key": PublicKey(spec.public_key.type, spec.public_key.blob,
                                         spec.public_key.bits).line(),
                "ca_fingerprint": ca_key.fingerprint,
                "ca_key": PublicKey(ca_key.type, ca_key.blob, ca_key.bits).line(),
                "valid_after": spec.valid_after, "valid_before": spec.valid_before,
                "issued_at": issued_at, "issued_by": issued_by, "enrolled_via": via})

    def by_serial(self, serial: int) -> StoredHostCertificate | None:
        row = self.connection.execute(_BY_SERIAL, {"serial": serial}).first()
        return None if row is None else _stored(row)

    def of_keys(self, fingerprints: Collection[str]) -> list[StoredHostCertificate]:
        if not fingerprints:
            return []
        return [_stored(row) for row in self.connection.execute(
            _OF_KEYS, {"fingerprints": sorted(fingerprints)})]

    def mark_revoked(self, serial: int, *, at: datetime, by: str, reason: str | None) -> bool:
        return self.connection.execute(_MARK_REVOKED, {"the_serial": serial, "at": at, "by": by,
                                                       "reason": reason}).rowcount == 1

    def revoked(self, valid_after: datetime) -> tuple[list[StoredHostCertificate], int]:
        rows = self.connection.execute(_REVOKED, {"valid_after": valid_after})
        return [_stored(row) for row in rows], self.connection.execute(_REVOCATIONS).scalar() or 0
