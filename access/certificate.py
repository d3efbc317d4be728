"""The certificate a request earns: each field derived in one small function from the request
and the template fixed on it when it was opened (as Vault's SSH engine computes each field of a
signed key in one place)."""

from __future__ import annotations

from datetime import datetime

from access.errors import InvalidTransition
from access.policy import Target
from access.requests import Request
from access.template import Template
from ca.cert import CertificateSpec, validity
from ca.keys import PublicKey


def key_id(request: Request) -> str:
    """Names the request and the requester: sshd logs it on every login."""
    return f"vouch:{request.kind.value}:{request.id}:{request.requester}"


def template(request: Request, target: Target) -> Template:
    """What the approvers saw; the target's for requests opened before templates were kept."""
    return request.template if request.template is not None else Template.for_target(target)


def certificate_spec(request: Request, target: Target, public_key: PublicKey, *, serial: int,
                     now: datetime) -> CertificateSpec:
    """PROTOCOL.certkeys fields for `request`, exactly as its template says."""
    if public_key.fingerprint != request.key_fingerprint:
        raise InvalidTransition("the key on the request is not the key being certified")
    fixed = template(request, target)
    valid_after, valid_before = validity(now, request.duration)
    return CertificateSpec(public_key=public_key, serial=serial, key_id=key_id(request),
                           principals=fixed.principals, valid_after=valid_after,
                           valid_before=valid_before, critical_options=fixed.options,
                           extensions=frozenset(fixed.extensions))
