"""Host certificates (CONTRACT "Host certificates"): enrolment with a one-time token, renewal
signed by the host's own key, the operator's direct signing, revocation and known_hosts.

Everything is signed by the host CA (a ca.cert.HostCa, passed in: the user CA never signs host
keys). As in access.issuing, nothing is signed inside a unit, and a certificate is handed out only
after the unit recording it committed: a token is spent by a compare-and-set in that unit, so two
hosts presenting the same token get one set of certificates between them.

Refusals are audited (`host.refused`) when they concern something Vouch issued (a token it made,
a key it certified); garbage from strangers is only logged, so nobody can flood the audit chain.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from access import host_input
from access.context import Access
from access.errors import BadInput, PolicyRefusal, SignerUnavailable, VouchError
from access.ports import HostToken, StoredHostCertificate, Unit
from access.signed_calls import SignedCall, Unauthorized, first_use
from ca.cert import Certificate, CertificateSpec, CertType, Signer, new_serial, \
    sign_certificate, validity
from ca.keys import PublicKey

log = logging.getLogger("vouch.hosts")

HOST_VALIDITY = timedelta(days=30)
MAX_HOST_VALIDITY = timedelta(days=366)
TOKEN_TTL = timedelta(hours=1)
MAX_TOKEN_TTL = timedelta(days=7)
NO_HOST_CA = "no host CA configured: run vouch ca init --host"
TOKEN_USED = "this host token was already used: make a new one with `vouch host token`"


class NoHostCa(SignerUnavailable):
    """VOUCH_HOST_CA_KEY names no key yet: host endpoints answer 503."""

    def __init__(self) -> None:
        super().__init__(NO_HOST_CA)


@dataclass(frozen=True)
class HostIssued:
    certificates: tuple[Certificate, ...]
    hostnames: tuple[str, ...]
    valid_before: datetime


def require(host_ca: Signer | None) -> Signer:
    if host_ca is None:
        raise NoHostCa()
    return host_ca


# --- tokens ---------------------------------------------------------------------------------

def create_token(access: Access, *, names: Sequence[str], ttl: timedelta,
                 actor: str) -> tuple[str, HostToken]:
    """A one-time enrolment token for these names; only its hash is stored. The token itself
    is returned once, to be handed to the host."""
    names = host_input.hostnames(names)
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise BadInput(f"a host token lives at most {MAX_TOKEN_TTL.days}d")
    token = host_input.new_token()
    now = access.clock()
    record = HostToken(token_hash=host_input.token_hash(token), hostnames=names, created_at=now,
                       created_by=actor, expires_at=now + ttl)
    with access.unit() as unit:
        unit.hosts.add_token(record)
        unit.audit.record(actor=actor, action="host.token_created",
                          subject=f"host-token:{host_input.token_id(record.token_hash)}", now=now,
                          details={"hostnames": list(names), "expires_at": _utc(record.expires_at)})
    return token, record


# --- enrolment and renewal ------------------------------------------------------------------

def enrol(access: Access, host_ca: Signer | None, *, token: str,
          public_keys: Sequence[str]) -> HostIssued:
    """Certificates for the host's keys, for the names the token was made for; the token is
    spent. Unauthorized for an unknown, used or expired token."""
    host_ca = require(host_ca)
    keys = host_input.host_keys(public_keys)
    digest = host_input.token_hash(token)
    subject = f"host-token:{host_input.token_id(digest)}"
    now = access.clock()
    with _refusals(access, via="token", subject=subject, keys=keys):
        with access.unit(read_only=True) as unit:
            found = unit.hosts.token(digest)
            _check_token(found, now)
            _refuse_revoked(unit, keys, status=PolicyRefusal)
        certificates = _sign(host_ca, keys, found.hostnames, now, HOST_VALIDITY)
        with access.unit() as unit:
            if not unit.hosts.use_token(digest, now=now, by=keys[0].fingerprint):
                raise _Known(Unauthorized(TOKEN_USED))
            _record(unit, host_ca, certificates, now=now, by=subject, via="token")
            unit.audit.record(actor=subject, action="host.enrolled",
                              subject=f"host:{found.hostnames[0]}", now=now,
                              details=_describe(certificates))
    return HostIssued(certificates, found.hostnames, certificates[0].spec.valid_before)


def renew(access: Access, host_ca: Signer | None, call: SignedCall, *,
          names: Sequence[str] | None, public_keys: Sequence[str] | None) -> HostIssued:
    """New certificates for the same keys and names, for a call signed (vouch-host) by one of
    the host's keys while its Vouch certificate is valid and not revoked. Unauthorized for a
    key without one (or a replay); PolicyRefusal for other names, or a key not certified for
    them."""
    host_ca = require(host_ca)
    keys = host_input.host_keys(public_keys) if public_keys else (call.key,)
    asked = host_input.hostnames(names) if names is not None else None
    fingerprints = {call.fingerprint, *(key.fingerprint for key in keys)}
    subject = f"host-key:{call.fingerprint}"
    now = access.clock()
    with _refusals(access, via="renewal", subject=subject, keys=keys):
        with access.unit() as unit:
            known = unit.hosts.of_keys(fingerprints)
            current = _renewable(known, call, keys, asked, now)
            try:
                first_use(unit, call, now)
            except Unauthorized as exc:  # a replay, by a key Vouch certified
                raise _Known(exc) from None
        certificates = _sign(host_ca, keys, current.hostnames, now, HOST_VALIDITY)
        with access.unit() as unit:
            _refuse_revoked(unit, [call.key, *keys], status=Unauthorized)  # revoked meanwhile
            _record(unit, host_ca, certificates, now=now, by=subject, via="renewal")
            unit.audit.record(actor=subject, action="host.renewed",
                              subject=f"host:{current.hostnames[0]}", now=now,
                              details={**_describe(certificates),
                                       "renewed_serial": str(current.serial)})
    return HostIssued(certificates, current.hostnames, certificates[0].spec.valid_before)


def _renewable(known: list[StoredHostCertificate], call: SignedCall,
               keys: Sequence[PublicKey], asked: tuple[str, ...] | None,
               now: datetime) -> StoredHostCertificate:
    """The signing key's current certificate, if it may be renewed as asked."""
    if not any(c.fingerprint == call.fingerprint for c in known):  # a stranger: logged only
        raise Unauthorized(f"key {call.fingerprint} has no Vouch host certificate to renew: "
                           "enrol the host with a token (`vouch host token`)")
    _refuse_revoked_in(known, status=Unauthorized)
    own = [c for c in known if c.fingerprint == call.fingerprint and c.live(now)]
    if not own:
        raise _Known(Unauthorized(
            f"key {call.fingerprint} has no valid Vouch host certificate: an expired one cannot "
            "be renewed; enrol the host again with a token (`vouch host token`)"))
    current = max(own, key=lambda c: (c.issued_at, c.valid_before))
    if asked is not None and set(asked) != set(current.hostnames):
        raise _Known(PolicyRefusal(
            f"host names cannot change on renewal: this host is certified for "
            f"{', '.join(current.hostnames)}; enrol with a new token for other names"))
    for key in keys:
        if not any(c.fingerprint == key.fingerprint and c.live(now)
                   and set(c.hostnames) == set(current.hostnames) for c in known):
            raise _Known(PolicyRefusal(
                f"key {key.fingerprint} has no valid certificate for "
                f"{', '.join(current.hostnames)}: renewal certifies the same keys; enrol a new "
                "key with a token"))
    return current


# --- the operator's path --------------------------------------------------------------------

def sign_host(access: Access, host_ca: Signer | None, *, public_key: PublicKey,
              names: Sequence[str], duration: timedelta, actor: str, reason: str) -> Certificate:
    """`vouch ca sign-host`: one host certificate, recorded and audited like `ca sign`."""
    host_ca = require(host_ca)
    host_input.host_key(public_key.line())
    names = host_input.hostnames(names)
    if not timedelta(0) < duration <= MAX_HOST_VALIDITY:
        raise BadInput(f"a host certificate is valid at most {MAX_HOST_VALIDITY.days}d")
    now = access.clock()
    with _refusals(access, via="operator", subject=actor, keys=[public_key]), \
            access.unit(read_only=True) as unit:
        _refuse_revoked(unit, [public_key], status=PolicyRefusal)
    [certificate] = _sign(host_ca, [public_key], names, now, duration)
    with access.unit() as unit:
        _record(unit, host_ca, [certificate], now=now, by=actor, via="operator")
        unit.audit.record(actor=actor, action="host.signed_direct",
                          subject=f"host:{names[0]}", now=now,
                          details={**_describe([certificate]), "reason": reason})
    return certificate


# --- revocation and known_hosts -------------------------------------------------------------

def revoke_in(unit: Unit, certificate: StoredHostCertificate, *, actor: str,
              reason: str | None, now: datetime) -> list[tuple[int, bool]]:
    """Revoke a host certificate inside `unit`, and with it every other certificate of the same
    host key: a revoked host key is compromised, so no certificate of it may stand (and none is
    issued for it again). (serial, newly revoked) for each."""
    done = []
    others = [c for c in unit.hosts.of_keys([certificate.fingerprint])
              if c.serial != certificate.serial and c.revoked_at is None
              and c.valid_before > now]
    for stored in (certificate, *others):
        newly = unit.hosts.mark_revoked(stored.serial, at=now, by=actor, reason=reason)
        if newly:
            unit.audit.record(actor=actor, action="host.revoked", subject=f"serial:{stored.serial}",
                              now=now, details={"reason": reason, "key_id": stored.key_id,
                                                "hostnames": list(stored.hostnames),
                                                "subject_fingerprint": stored.fingerprint})
        done.append((stored.serial, newly))
    return done


def known_hosts(access: Access, host_ca: Signer | None, pattern: str) -> str:
    """The known_hosts lines users add: trust the host CA for `pattern`, and refuse each host key
    whose certificate was revoked (while that certificate would still be valid)."""
    line = require(host_ca).public_key.line()
    now = access.clock()
    with access.unit(read_only=True) as unit:
        revoked, _ = unit.hosts.revoked(now)
    lines = [f"@cert-authority {host_input.host_pattern(pattern)} {line} vouch-host-ca"]
    lines += (f"@revoked * {key}" for key in sorted({c.public_key for c in revoked}))
    return "\n".join(lines) + "\n"


# --- helpers --------------------------------------------------------------------------------

class _Known(VouchError):
    """A refusal about a token or key Vouch issued: it goes into the audit chain."""

    def __init__(self, refusal: VouchError) -> None:
        super().__init__(refusal.message, detail=refusal.detail)
        self.refusal = refusal


@contextmanager
def _refusals(access: Access, *, via: str, subject: str,
              keys: Sequence[PublicKey]) -> Iterator[None]:
    try:
        yield
    except _Known as known:
        access.record(actor=subject, action="host.refused", subject=subject,
                      details={"via": via, "reason": known.message,
                               "keys": [key.fingerprint for key in keys]})
        raise known.refusal from None
    except (Unauthorized, PolicyRefusal) as exc:
        log.warning("host %s refused (%s): %s", via, subject, exc.message)
        raise


def _check_token(found: HostToken | None, now: datetime) -> None:
    if found is None:
        raise Unauthorized("unknown host token: make one with `vouch host token`")
    if found.used_at is not None:
        raise _Known(Unauthorized(TOKEN_USED))
    if found.expires_at <= now:
        raise _Known(Unauthorized(f"this host token expired at {_utc(found.expires_at)}: make "
                                  "a new one with `vouch host token`"))


def _refuse_revoked(unit: Unit, keys: Sequence[PublicKey], *, status: type[VouchError]) -> None:
    _refuse_revoked_in(unit.hosts.of_keys({key.fingerprint for key in keys}), status=status)


def _refuse_revoked_in(known: list[StoredHostCertificate], *, status: type[VouchError]) -> None:
    for certificate in known:
        if certificate.revoked_at is not None:
            raise _Known(status(f"host key {certificate.fingerprint} was revoked (serial "
                                f"{certificate.serial}): make new host keys, then enrol them "
                                "with a token"))


def _sign(host_ca: Signer, keys: Sequence[PublicKey], names: tuple[str, ...], now: datetime,
          duration: timedelta) -> tuple[Certificate, ...]:
    valid_after, valid_before = validity(now, duration)
    certificates = []
    for key in keys:
        serial = new_serial()
        spec = CertificateSpec(public_key=key, serial=serial,
                               key_id=f"vouch-host:{names[0]}:{serial}", principals=names,
                               valid_after=valid_after, valid_before=valid_before,
                               extensions=frozenset(), cert_type=CertType.HOST)
        certificates.append(sign_certificate(spec, host_ca))
    return tuple(certificates)


def _record(unit: Unit, host_ca: Signer, certificates: Sequence[Certificate], *, now: datetime,
            by: str, via: str) -> None:
    for certificate in certificates:
        unit.hosts.add(certificate, ca_key=host_ca.public_key, issued_at=now, issued_by=by,
                       via=via)


def _describe(certificates: Sequence[Certificate]) -> dict:
    spec = certificates[0].spec
    return {"serials": [str(c.spec.serial) for c in certificates],
            "subject_fingerprints": [c.spec.public_key.fingerprint for c in certificates],
            "hostnames": list(spec.principals), "valid_after": _utc(spec.valid_after),
            "valid_before": _utc(spec.valid_before)}


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
