"""Revoking certificates (`/ssh-revoke`, `vouch revoke`) and the revocation list hosts fetch.
Revoking an approved request that has no certificate yet cancels it, so none is ever issued."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from access import hosts
from access import requests as rules
from access.context import Access
from access.errors import BadInput, InvalidTransition, PolicyRefusal
from access.ports import StoredCertificate, StoredHostCertificate, Unit
from access.requests import Request, State
from ca.keys import parse_public_key
from ca.krl import Revocations, encode_krl

# Hosts may run a little behind: keep revoked certificates in the KRL a day past their expiry.
KRL_EXPIRY_GRACE = timedelta(days=1)
_MAX_SERIAL = 2**64 - 1


@dataclass(frozen=True)
class Revoked:
    serial: int
    newly: bool  # False when it had been revoked before (revoking twice is not an error)
    holder: str | None = None
    request_id: str | None = None
    host: bool = False  # a host certificate (the host CA's)


@dataclass(frozen=True)
class Revocation:
    certificates: list[Revoked]
    cancelled: Request | None = None  # an approved request that had no certificate yet


def revoke(access: Access, reference: str, *, actor: str, reason: str | None = None,
           as_user: str | None = None) -> Revocation:
    """Revoke a certificate by serial, or every certificate of a request by its id; a request
    approved but not issued yet is cancelled instead.

    `as_user`: a Slack user, allowed only their own certificates unless an admin. The CLI (an
    operator on the host) passes None.
    """
    person = None
    if as_user is not None:
        policy = access.policy
        person = access.person(as_user, policy.admins)
    now = access.clock()
    with access.refusals_audited(actor=actor, action="certificate.revoke",
                                 subject=f"reference:{reference.strip()[:64]}"), \
            access.unit() as unit:
        unissued = _unissued(unit, reference.strip())
        if unissued is not None:
            if person is not None and not rules.may_revoke(policy, holder=unissued.requester,
                                                           user=person):
                raise PolicyRefusal("you can revoke only your own requests (admins can revoke any)")
            cancelled = rules.cancel_unissued(unissued, by=actor, now=now)
            if not unit.requests.move(unissued, cancelled):
                raise InvalidTransition("this request changed meanwhile; look again")
            unit.audit.record(actor=actor, action="request.cancelled",
                              subject=f"request:{unissued.id}", now=now,
                              details={"reason": reason, "before": "issued"})
            return Revocation([], cancelled)
        host = _host(unit, reference.strip())
        if host is not None:
            if person is not None and not rules.may_revoke(policy, holder="", user=person):
                raise PolicyRefusal("only admins can revoke host certificates")
            return Revocation([Revoked(serial=serial, newly=newly, host=True) for serial, newly
                               in hosts.revoke_in(unit, host, actor=actor, reason=reason,
                                                  now=now)])
        certificates = _find(unit, reference.strip())
        if person is not None and not all(
                rules.may_revoke(policy, holder=c.holder or "", user=person) for c in certificates):
            raise PolicyRefusal("you can revoke only your own certificates (admins can revoke any)")
        done = [revoke_in(unit, certificate, actor=actor, reason=reason, now=now)
                for certificate in certificates]
    return Revocation(done)


def revoke_in(unit: Unit, certificate: StoredCertificate, *, actor: str, reason: str | None,
              now: datetime) -> Revoked:
    """Revoke one certificate inside `unit`: recorded, audited, its request moved to revoked.
    Twice is no error: the first revocation stands."""
    newly = unit.certificates.mark_revoked(certificate.serial, at=now, by=actor, reason=reason)
    if newly:
        unit.audit.record(actor=actor, action="certificate.revoked",
                          subject=f"serial:{certificate.serial}", now=now,
                          details={"reason": reason, "key_id": certificate.key_id,
                                   "request_id": certificate.request_id})
        if certificate.request_id:
            request = unit.requests.get(certificate.request_id)
            if request is not None and request.state is State.ISSUED:
                unit.requests.move(request, rules.revoked(request))
    return Revoked(serial=certificate.serial, newly=newly, holder=certificate.holder,
                   request_id=certificate.request_id)


def _host(unit: Unit, reference: str) -> StoredHostCertificate | None:
    """The host certificate `reference` names by serial, if it is no user certificate's."""
    if not (reference.isascii() and reference.isdigit()) or not 0 < int(reference) <= _MAX_SERIAL:
        return None
    if unit.certificates.by_serial(int(reference)) is not None:
        return None
    return unit.hosts.by_serial(int(reference))


def _unissued(unit: Unit, reference: str) -> Request | None:
    """The approved request `reference` names, if it has no certificate yet; its row stays
    locked, so it cannot be issued while it is cancelled (the issuing move would fail)."""
    if not reference.startswith("req-"):
        return None
    request = unit.requests.get(reference, lock=True)
    if request is None or request.state is not State.APPROVED:
        return None
    return request


@dataclass(frozen=True)
class Krl:
    """What a KRL revokes and its PROTOCOL.krl bytes; `tag` names the content, so the bytes
    need making again only when it changes."""

    serials: frozenset[int]
    version: int
    data: bytes
    host_serials: frozenset[tuple[bytes, int]] = frozenset()  # (host CA key blob, serial)
    rotated: frozenset[int] = frozenset()  # signed by an earlier user CA: revoked for any CA

    @property
    def tag(self) -> str:
        named = [*map(str, sorted(self.serials)),
                 *(f"{ca.hex()}:{serial}" for ca, serial in sorted(self.host_serials)),
                 *(f"*:{serial}" for serial in sorted(self.rotated))]
        digest = hashlib.sha256(",".join(named).encode()).hexdigest()
        return f"{self.version}-{digest[:16]}"


def krl(access: Access, *, unless: Krl | None = None) -> Krl:
    """The KRL of every revoked, not long expired, certificate of this CA, of the host
    certificates (in a section per host CA key, as serials are per CA), and of the CAs this one
    replaced (for any CA: their keys are not kept, and hosts trust both during a rotation);
    `unless` is returned as it is when nothing changed since it was made."""
    now = access.clock()
    with access.unit(read_only=True) as unit:
        serials, rotated, version = unit.certificates.revoked_serials(
            now - KRL_EXPIRY_GRACE, ca_fingerprint=access.signer.public_key.fingerprint)
        revoked_hosts, host_version = unit.hosts.revoked(now - KRL_EXPIRY_GRACE)
    serials, rotated = frozenset(serials), frozenset(rotated)
    host_serials = frozenset((parse_public_key(c.ca_key).blob, c.serial) for c in revoked_hosts)
    version += host_version
    if unless is not None and (unless.serials, unless.host_serials, unless.rotated,
                               unless.version) == (serials, host_serials, rotated, version):
        return unless
    other_cas: dict[bytes, set[int]] = {}
    for ca_key, serial in host_serials:
        other_cas.setdefault(ca_key, set()).add(serial)
    data = encode_krl(Revocations(serials=serials), ca_key=access.signer.public_key.blob,
                      version=version, generated_at=int(now.timestamp()), comment="vouch",
                      other_cas={ca: frozenset(s) for ca, s in other_cas.items()},
                      any_ca=rotated)
    return Krl(serials, version, data, host_serials, rotated)


def _find(unit: Unit, reference: str) -> list[StoredCertificate]:
    if reference.isascii() and reference.isdigit():  # int() would read '٣' as 3
        serial = int(reference)
        if not 0 < serial <= _MAX_SERIAL:
            raise BadInput(f"{reference!r} is not a certificate serial (1 to 2^64-1)")
        found = unit.certificates.by_serial(serial)
        if found is None:
            raise BadInput(f"no certificate with serial {serial}")
        return [found]
    found = unit.certificates.of_request(reference)
    if not found:
        raise BadInput(f"no certificate with serial or request id {reference[:64]!r}")
    return found
