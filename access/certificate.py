"""The certificate a request earns: each field derived in one small function from the policy and
the request (as Vault's SSH engine computes each field of a signed key in one place)."""

from __future__ import annotations

from datetime import datetime

from access.errors import InvalidTransition
from access.policy import Target
from access.requests import Request
from ca.cert import CertificateSpec, validity
from ca.keys import PublicKey


def key_id(request: Request) -> str:
    """Names the request and the requester: sshd logs it on every login."""
    return f"vouch:{request.kind.value}:{request.id}:{request.requester}"


def critical_options(target: Target) -> dict[str, str]:
    options = {}
    if target.source_address:
        options["source-address"] = target.source_address
    if target.force_command:
        options["force-command"] = target.force_command
    return options


def certificate_spec(request: Request, target: Target, public_key: PublicKey, *, serial: int,
                     now: datetime) -> CertificateSpec:
    """PROTOCOL.certkeys fields for `request`: everything derives from the policy and request."""
    if public_key.fingerprint != request.key_fingerprint:
        raise InvalidTransition("the key on the request is not the key being certified")
    valid_after, valid_before = validity(now, request.duration)
    return CertificateSpec(public_key=public_key, serial=serial, key_id=key_id(request),
                           principals=target.principals, valid_after=valid_after,
                           valid_before=valid_before, critical_options=critical_options(target),
                           extensions=target.extensions)
