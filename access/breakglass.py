"""Break-glass: access with no approver, issued at once, audited loudly, reviewed afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from access import requests as rules
from access.context import Access
from access.errors import BadInput, InvalidTransition, PolicyRefusal, VouchError
from access.issuing import Issued, issue
from access.keys import choose_key
from access.opening import details
from access.policy import People
from access.requests import Request


def open_breakglass(access: Access, *, user: str, target: str, duration: timedelta,
                    reason: str) -> Request:
    """Store and audit a break-glass use, approved with no approver; issuing follows (the
    caller alerts the security channel first)."""
    policy = access.policy
    person = access.person(user, policy.breakglass.users if policy.breakglass else People())
    now = access.clock()
    with access.refusals_audited(actor=user, action="breakglass.use", subject=f"target:{target}"), \
            access.unit() as unit:
        key = choose_key(unit, user, None)
        request = rules.open_breakglass(policy, user=person, target_name=target, duration=duration,
                                        reason=reason, key_fingerprint=key.fingerprint,
                                        public_key=key.public_key, now=now)
        unit.requests.add(request)
        unit.audit.record(actor=user, action="breakglass.used", subject=f"request:{request.id}",
                          now=now, details=details(request))
    return request


def breakglass(access: Access, *, user: str, target: str, duration: timedelta,
               reason: str) -> Issued:
    """Open a break-glass use and issue its certificate at once."""
    request = open_breakglass(access, user=user, target=target, duration=duration, reason=reason)
    return issue_breakglass(access, request)


def issue_breakglass(access: Access, request: Request) -> Issued:
    issued = issue(access, request.id)
    if issued is None:  # only possible if someone else issued this brand-new request
        raise VouchError("break-glass certificate was not issued", detail=request.id)
    return issued


def review(access: Access, request_id: str, *, reviewer: str, note: str | None = None) -> Request:
    """An admin marks a break-glass use as reviewed, with a note; the first review stands."""
    policy = access.policy
    person = access.person(reviewer, policy.admins)
    now = access.clock()
    with access.refusals_audited(actor=reviewer, action="breakglass.review",
                                 subject=f"request:{request_id}"), access.unit() as unit:
        if not policy.admins.includes(person):
            raise PolicyRefusal("only admins can review break-glass use")
        request = unit.requests.get(request_id)
        if request is None:
            raise BadInput(f"no break-glass use {request_id[:64]!r}")
        reviewed = rules.review(policy, request, reviewer=person, note=note, now=now)
        if not unit.requests.mark_reviewed(request_id, by=reviewer, now=now,
                                           note=reviewed.review_note):
            raise InvalidTransition("this break-glass use was already reviewed")
        unit.audit.record(actor=reviewer, action="breakglass.reviewed",
                          subject=f"request:{request_id}", now=now,
                          details={"note": reviewed.review_note})
    return reviewed


@dataclass(frozen=True)
class Escalation:
    request: Request  # as it was: its escalated_at is the previous escalation, if any
    at: datetime  # when this escalation was marked


def escalate_unreviewed(access: Access) -> list[Escalation]:
    """Break-glass uses unreviewed review_within after they happened, and again every
    review_within until an admin reviews them; each marked here, and unmarked by
    escalation_failed when the escalation could not be posted."""
    policy = access.policy
    if policy.breakglass is None:
        return []
    now = access.clock()
    with access.unit() as unit:
        due = unit.requests.escalate_unreviewed(due_before=now - policy.breakglass.review_within,
                                                now=now)
        for request in due:
            unit.audit.record(actor="vouch", action="breakglass.escalated",
                              subject=f"request:{request.id}", now=now,
                              details={"again": request.escalated_at is not None})
    return [Escalation(request, now) for request in due]


def escalation_failed(access: Access, escalation: Escalation) -> None:
    """It could not be posted: the next sweep escalates it again."""
    now = access.clock()
    with access.unit() as unit:
        if unit.requests.unescalate(escalation.request, escalated_at=escalation.at):
            unit.audit.record(actor="vouch", action="breakglass.escalation_failed",
                              subject=f"request:{escalation.request.id}", now=now)
