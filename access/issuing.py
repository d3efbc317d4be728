"""Signing certificates: for approved requests, exactly once across threads and replicas, and
directly for an operator (`vouch ca sign`).

One path, two units: the claim (a serial reserved and audited) commits before signing, so no lock
is held while a token works; the certificate, the request's move to issued and the audit event
then commit together, and only after that is the certificate handed out. If signing fails, a
third unit releases the claim: the request stays approved with the error recorded, and a retry
(the sweep) issues it later, backing off, at most MAX_ATTEMPTS times; a request still not
issued request_ttl after its approval expires (access.sweeps). If the policy no longer allows
what was approved, nothing is signed and the request is cancelled.
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
from access.errors import IssueRefused, VouchError
from access.ports import Duplicate, Unit
from access.requests import Request
from ca.cert import Certificate, CertificateSpec, new_serial, sign_certificate, validity
from ca.keys import PublicKey, parse_public_key

log = logging.getLogger("vouch.issuing")

# A claim older than this was abandoned (a crashed replica): others may take it over.
ISSUE_LEASE = timedelta(minutes=2)
# Signing attempts per request, retried after 2 s, 4 s, 8 s … doubling up to 5 minutes: a token
# that blinked is back within seconds, and one that is gone is tried for about 23 minutes, most
# of the default request_ttl of 30 minutes (the scheduler's interval rounds each wait up).
MAX_ATTEMPTS = 12
FIRST_RETRY = timedelta(seconds=2)
LAST_RETRY = timedelta(minutes=5)


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt."""
    return min(FIRST_RETRY * 2 ** min(attempts - 1, 16), LAST_RETRY)


@dataclass(frozen=True)
class Retried:
    """What a retry sweep did: certificates issued, and requests the policy no longer allows."""

    issued: list[Issued]
    refused: list[Request]


@dataclass(frozen=True)
class Issued:
    request: Request
    certificate: Certificate
    seconds: float = 0.0  # reserving, signing, recording and auditing it


class _Lost(Exception):
    """Another worker recorded this request's certificate first."""


def issue(access: Access, request_id: str) -> Issued | None:
    """Sign the certificate of an approved request. None when it is not approved (any more) or
    another worker holds the claim or issued it. Raises IssueRefused when the policy no longer
    allows it (the request is then cancelled), SignerUnavailable when the signer failed (the
    request stays approved, for a retry), each after recording it."""
    now = access.clock()
    started = time.perf_counter()
    serial = new_serial()
    with access.unit() as unit:
        request = unit.requests.claim_issue(request_id, serial=serial, now=now, lease=ISSUE_LEASE,
                                            max_attempts=MAX_ATTEMPTS)
        if request is None:
            return None
        unit.audit.record(actor="vouch", action="certificate.reserved",
                          subject=f"request:{request_id}", now=now, details={"serial": str(serial)})
    try:
        _check_policy(access, request)
        certificate = _sign(access, request, serial, now)
    except IssueRefused as exc:
        with access.unit() as unit:
            _refuse(unit, request, serial, now, exc.why)
        raise
    except VouchError as exc:
        with access.unit() as unit:
            _release(unit, request, serial, now, exc.message)
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


def retry_issuing(access: Access) -> Retried:
    """Issue approved requests whose signing failed earlier and is due again, or whose claim
    lapsed."""
    with access.unit(read_only=True) as unit:
        due = unit.requests.issuable(access.clock(), ISSUE_LEASE, MAX_ATTEMPTS)
    done = Retried([], [])
    for request_id in due:
        try:
            result = issue(access, request_id)
        except IssueRefused as exc:
            done.refused.append(exc.request)
            continue
        except VouchError as exc:
            log.warning("retrying %s failed: %s", request_id, exc.detail)
            continue
        if result is not None:
            done.issued.append(result)
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


def _check_policy(access: Access, request: Request) -> None:
    why = rules.signing_refusal(access.policy, request)
    if why is not None:
        raise IssueRefused(request, why)


def _sign(access: Access, request: Request, serial: int, now: datetime) -> Certificate:
    target = access.policy.target(request.target)
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


def _release(unit: Unit, request: Request, serial: int, now: datetime, error: str) -> None:
    """Signing failed: the request stays approved, with the error, for a retry."""
    attempts = request.issue_attempts  # counting this one: the claim counted it
    retry_at = now + retry_delay(attempts)
    unit.requests.release_issue(request.id, serial=serial, error=error, retry_at=retry_at)
    unit.audit.record(actor="vouch", action="certificate.issue_failed",
                      subject=f"request:{request.id}", now=now,
                      details={"serial": str(serial), "error": error, "attempt": attempts,
                               "retry_at": _utc(retry_at) if attempts < MAX_ATTEMPTS else None})


def _refuse(unit: Unit, request: Request, serial: int, now: datetime, why: str) -> None:
    """The policy no longer allows it: nothing was signed, and nothing will be."""
    unit.requests.release_issue(request.id, serial=serial, error=why, retry_at=now)
    current = unit.requests.get(request.id)
    if current is not None and current.state is request.state:
        unit.requests.move(current, rules.refuse_issuing(current, now=now, why=why))
    unit.audit.record(actor="vouch", action="certificate.refused", subject=f"request:{request.id}",
                      now=now, details={"serial": str(serial), "reason": why})


def _release_unrecorded(access: Access, request_id: str, serial: int, now: datetime,
                        exc: Exception) -> None:
    """Recording the certificate failed, so it was not handed out: free the claim so a retry
    need not wait out the lease. If even this fails, the lease frees it later."""
    try:
        with access.unit() as unit:
            unit.requests.release_issue(request_id, serial=serial,
                                        error=f"recording the certificate failed: "
                                              f"{type(exc).__name__}", retry_at=now)
    except Exception:  # noqa: BLE001 - the original failure is what the caller hears about
        log.warning("could not release the claim on %s after a failed record", request_id)
