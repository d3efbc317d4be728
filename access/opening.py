"""Opening a request for access (`/ssh-request`, the request form)."""

from __future__ import annotations

from datetime import timedelta

from access.context import Access
from access.keys import choose_key
from access.lookup import find
from access.requests import Request, open_request as new_request


def open_request(access: Access, *, user: str, target: str, duration: timedelta, reason: str,
                 key_fingerprint: str | None = None, extends: str | None = None,
                 key_proven: bool = False) -> Request:
    """Check a request against policy and store it (pending, audited) before anything is posted.
    `extends`: the id of the requester's earlier request this one asks to extend; `key_proven`:
    the call was signed by the key to certify (the client API)."""
    policy = access.policy
    requester = access.person(user, *policy.requesters())
    now = access.clock()
    with access.unit() as unit:
        key = choose_key(unit, user, key_fingerprint)
        earlier = find(unit, extends) if extends else None
        request = new_request(policy, requester=requester, target_name=target, duration=duration,
                              reason=reason, key_fingerprint=key.fingerprint,
                              public_key=key.public_key, now=now,
                              pending_for_target=unit.requests.pending_count(user, target),
                              extends=earlier, key_proven=key_proven)
        unit.requests.add(request)
        unit.audit.record(actor=user, action="request.created", subject=f"request:{request.id}",
                          now=now, details=details(request))
    return request


def details(request: Request) -> dict:
    """What the audit log says about a new request."""
    described = {"kind": request.kind.value, "target": request.target,
                 "duration_seconds": int(request.duration.total_seconds()),
                 "reason": request.reason, "key_fingerprint": request.key_fingerprint}
    if request.extends:
        described["extends"] = request.extends
    if request.key_proven:
        described["key_proven"] = True
    return described
