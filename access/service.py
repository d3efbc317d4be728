"""The service that ties storage and the CA together: direct signing, revocation, the KRL.

Fail closed: a certificate is handed out only after its record and its audit event committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ca.cert import Certificate, CertificateSpec, Signer, new_serial, sign_certificate, validity
from ca.errors import BadInput
from ca.keys import PublicKey
from ca.krl import Revocations, encode_krl
from storage import audit
from storage import certificates as certs
from storage.db import Database

Clock = Callable[[], datetime]

# Hosts may run a little behind: keep revoked certificates in the KRL a day past their expiry.
KRL_EXPIRY_GRACE = timedelta(days=1)
_MAX_SERIAL = 2**64 - 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Revoked:
    serial: int
    newly: bool  # False when it had been revoked before (revoking twice is not an error)


class CertificateService:
    def __init__(self, db: Database | None, signer: Signer, *, clock: Clock = utcnow) -> None:
        self.db = db
        self.signer = signer
        self.clock = clock

    def sign_direct(self, *, public_key: PublicKey, principals: list[str], duration: timedelta,
                    actor: str, key_id: str | None = None, source_address: str | None = None,
                    force_command: str | None = None,
                    extensions: frozenset[str] = frozenset({"permit-pty"})) -> Certificate:
        """The operator's path (`vouch ca sign`): sign one certificate outside any request."""
        now = self.clock()
        valid_after, valid_before = validity(now, duration)
        serial = new_serial()
        options = {}
        if source_address:
            options["source-address"] = source_address
        if force_command:
            options["force-command"] = force_command
        spec = CertificateSpec(
            public_key=public_key, serial=serial, key_id=key_id or f"vouch:{actor}:{serial}",
            principals=tuple(dict.fromkeys(principals)), valid_after=valid_after,
            valid_before=valid_before, critical_options=options, extensions=extensions)
        certificate = sign_certificate(spec, self.signer)
        if self.db is not None:
            with self.db.session() as session:
                self._record(session, certificate, issued_at=now, issued_by=actor, request_id=None)
                audit.append(session, actor=actor, action="certificate.signed_direct",
                             subject=f"serial:{serial}", now=now, details=_describe(certificate))
        return certificate

    def _record(self, session, certificate: Certificate, *, issued_at: datetime, issued_by: str,
                request_id: str | None) -> None:
        spec = certificate.spec
        certs.record_certificate(
            session=session, serial=spec.serial, key_id=spec.key_id, principals=list(spec.principals),
            subject_key=spec.public_key.line(), subject_fingerprint=spec.public_key.fingerprint,
            ca_fingerprint=self.signer.public_key.fingerprint, valid_after=spec.valid_after,
            valid_before=spec.valid_before, issued_at=issued_at, issued_by=issued_by,
            request_id=request_id)

    def revoke(self, reference: str, *, actor: str, reason: str | None = None) -> list[Revoked]:
        """Revoke a certificate by serial, or every certificate of a request by its id."""
        db = self._require_db()
        now = self.clock()
        with db.session() as session:
            records = _find(session, reference.strip())
            done = []
            for record in records:
                newly = certs.mark_revoked(session=session, certificate_id=record.id, at=now,
                                           by=actor, reason=reason)
                if newly:
                    audit.append(session, actor=actor, action="certificate.revoked",
                                 subject=f"serial:{record.serial}", now=now,
                                 details={"reason": reason, "key_id": record.key_id,
                                          "request_id": record.request_id})
                done.append(Revoked(serial=record.serial, newly=newly))
        return done

    def krl(self) -> bytes:
        """PROTOCOL.krl bytes revoking every revoked, not long expired, certificate of this CA."""
        db = self._require_db()
        now = self.clock()
        with db.session() as session:
            serials, version = certs.revoked_serials(session=session,
                                                     valid_after=now - KRL_EXPIRY_GRACE)
        return encode_krl(Revocations(serials=frozenset(serials)),
                          ca_key=self.signer.public_key.blob, version=version,
                          generated_at=int(now.timestamp()), comment="vouch")

    def _require_db(self) -> Database:
        if self.db is None:
            raise BadInput("this needs the database (VOUCH_DATABASE_URL)")
        return self.db


def _find(session, reference: str):
    if reference.isdigit():
        serial = int(reference)
        if not 0 < serial <= _MAX_SERIAL:
            raise BadInput(f"{reference!r} is not a certificate serial (1 to 2^64-1)")
        record = certs.get_by_serial(session=session, serial=serial)
        if record is None:
            raise BadInput(f"no certificate with serial {serial}")
        return [record]
    records = certs.list_by_request(session=session, request_id=reference)
    if not records:
        raise BadInput(f"no certificate with serial or request id {reference[:64]!r}")
    return records


def _describe(certificate: Certificate) -> dict:
    spec = certificate.spec
    return {"serial": str(spec.serial), "key_id": spec.key_id, "principals": list(spec.principals),
            "subject_fingerprint": spec.public_key.fingerprint,
            "valid_after": audit.format_time(spec.valid_after),
            "valid_before": audit.format_time(spec.valid_before),
            "critical_options": dict(spec.critical_options), "extensions": sorted(spec.extensions)}
