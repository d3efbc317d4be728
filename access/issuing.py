"""Signing certificates: for approved requests, exactly once across threads and replicas, and
directly for an operator (`vouch ca sign`).

One path, two units: the claim (a serial reserved and audited) commits before signing, so no lock
is held while a token works; the certificate, the request's move to issued and the audit event
then commit together, and only after that is the certificate handed out. If signing fails, a
third unit releases the claim: the request stays approved with the error recorded, and a retry
(the sweep) issues it later.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from access import requests as rules
from access.certificate import certificate_spec
from access.context import Access
from access.errors import PolicyRefusal, VouchError
from access.ports import Duplicate, Unit
from access.requests import Request
from ca.cert import Certificate, CertificateSpec, new_serial, sign_certificate, validity
from ca.keys import PublicKey, parse_public_key

log = logging.getLogger("vouch.issuing")

# A claim older than this was abandoned (a crashed replica): others may take it over.
ISSUE_LEASE = timedelta(minutes=2)


@dataclass(frozen=True)
class Issued:
    request: Request
    certificate: Certificate
    seconds: float = 0.0  # reserving, signing, recording and auditing it


class _Lost(Exception):
    """Another worker recorded this request's certificate first."""


def issue(access: Access, request_id: str) -> Issued | None:
    """Sign the certificate of an approved request. None when it is not approved (any more) or
    another worker holds the claim or issued it. Raises SignerUnavailable (or PolicyRefusal, when
    the target left the policy) after recording the failure; the request stays approved."""
    now = access.clock()
    started = time.perf_counter()
    serial = new_serial()
    with access.unit() as unit:
        request = unit.requests.claim_issue(request_id, serial=serial, now=now, lease=ISSUE_LEASE)
        if request is None:
            return None
        unit.audit.record(actor="vouch", action="certificate.reserved",
                          subject=f"request:{request_id}", now=now, details={"serial": str(serial)})
    try:
        certificate = _sign(access, request, serial, now)
    except VouchError as exc:
        with access.unit() as unit:
            _release(unit, request_id, serial, now, exc.message)
        raise
    try:
        with access.unit() as unit:
            _record(unit, access, certificate, issued_at=now, issued_by="vouch",
                    request_id=request.id, holder=request.requester)
            if not unit.requests.mark_issued(request.id, serial=serial, now=now):
                raise _Lost
            unit.audit.record(actor="vouch", action="certificate.issued",
                              subject=f"request:{request.id}", now=now,
                              details=describe(certificate))
    except (_Lost, Duplicate):
        return None  # someone else's certificate stands; ours was never handed out
    except Exception as exc:
        _release_unrecorded(access, request_id, serial, now, exc)
        raise
    return Issued(rules.issued(request), certificate, seconds=time.perf_counter() - started)


def retry_issuing(access: Access) -> list[Issued]:
    """Issue approved requests whose signing failed earlier or whose claim lapsed."""
    with access.unit(read_only=True) as unit:
        due = unit.requests.issuable(access.clock(), ISSUE_LEASE)
    done = []
    for request_id in due:
        try:
            result = issue(access, request_id)
        except VouchError as exc:
            log.warning("retrying %s failed: %s", request_id, exc.detail)
            continue
        if result is not None:
            done.append(result)
    return done


def sign_direct(access: Access, *, public_key: PublicKey, principals: list[str],
                duration: timedelta, actor: str, reason: str, key_id: str | None = None,
                source_address: str | None = None, force_command: str | None = None,
                extensions: frozenset[str] = frozenset({"permit-pty"})) -> Certificate:
    """The operator's path (`vouch ca sign`): one certificate outside any request, recorded and
    audited when there is a store."""
    now = access.clock()
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
    certificate = sign_certificate(spec, access.signer)
    if access.store is not None:
        with access.unit() as unit:
            _record(unit, access, certificate, issued_at=now, issued_by=actor, request_id=None,
                    holder=None)
            unit.audit.record(actor=actor, action="certificate.signed_direct",
                              subject=f"serial:{serial}", now=now,
                              details={**describe(certificate), "reason": reason})
    return certificate


def describe(certificate: Certificate) -> dict:
    """What the audit log says about a certificate."""
    spec = certificate.spec
    return {"serial": str(spec.serial), "key_id": spec.key_id, "principals": list(spec.principals),
            "subject_fingerprint": spec.public_key.fingerprint,
            "valid_after": _utc(spec.valid_after), "valid_before": _utc(spec.valid_before),
            "critical_options": dict(spec.critical_options), "extensions": sorted(spec.extensions)}


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sign(access: Access, request: Request, serial: int, now: datetime) -> Certificate:
    target = access.policy.target(request.target)
    if target is None:
        raise PolicyRefusal(f"target {request.target!r} is no longer in the policy")
    spec = certificate_spec(request, target, _stored_key(request.public_key), serial=serial,
                            now=now)
    return sign_certificate(spec, access.signer)


@functools.lru_cache(maxsize=1024)
def _stored_key(line: str) -> PublicKey:
    """A registered key, parsed once: the same few keys are certified again and again."""
    return parse_public_key(line)


def _record(unit: Unit, access: Access, certificate: Certificate, *, issued_at: datetime,
            issued_by: str, request_id: str | None, holder: str | None) -> None:
    unit.certificates.add(certificate, ca_fingerprint=access.signer.public_key.fingerprint,
                          issued_at=issued_at, issued_by=issued_by, request_id=request_id,
                          holder=holder)


def _release(unit: Unit, request_id: str, serial: int, now: datetime, error: str) -> None:
    """Signing failed: the request stays approved, with the error, for a retry."""
    unit.requests.release_issue(request_id, serial=serial, error=error)
    unit.audit.record(actor="vouch", action="certificate.issue_failed",
                      subject=f"request:{request_id}", now=now,
                      details={"serial": str(serial), "error": error})


def _release_unrecorded(access: Access, request_id: str, serial: int, now: datetime,
                        exc: Exception) -> None:
    """Recording the certificate failed, so it was not handed out: free the claim so a retry
    need not wait out the lease. If even this fails, the lease frees it later."""
    try:
        with access.unit() as unit:
            unit.requests.release_issue(request_id, serial=serial,
                                        error=f"recording the certificate failed: "
                                              f"{type(exc).__name__}")
    except Exception:  # noqa: BLE001 - the original failure is what the caller hears about
        log.warning("could not release the claim on %s after a failed record", request_id)
