"""Deciding a request: an approver's Approve or Deny, and the requester's Cancel."""

from __future__ import annotations

from dataclasses import dataclass

from access import requests as rules
from access.context import Access
from access.errors import AlreadyVoted, InvalidTransition
from access.issuing import Issued, issue
from access.lookup import find
from access.policy import People
from access.ports import Duplicate
from access.requests import Request, State


@dataclass(frozen=True)
class VoteResult:
    request: Request          # after the vote
    decided: bool             # this vote approved or denied the request
    issued: Issued | None = None


def vote(access: Access, request_id: str, *, approver: str, approve: bool,
         comment: str | None = None) -> VoteResult:
    """One approver's decision (a deny needs a reason as `comment`); the deciding approval
    issues the certificate (after it committed)."""
    policy = access.policy
    with access.unit(read_only=True) as unit:
        seen = find(unit, request_id)
    target = policy.target(seen.target)
    approvers = target.approvers if target else People()
    person = access.person(approver, approvers)
    # Earlier approvals by people the policy no longer lists do not count (looked up here, as
    # no lookup may happen inside the unit; a vote cast meanwhile was checked as it was cast).
    no_longer = frozenset(user for user in seen.approvers
                          if not approvers.includes(access.person(user, approvers)))
    now = access.clock()
    try:
        with access.refusals_audited(actor=approver, action="request.vote",
                                     subject=f"request:{request_id}"), access.unit() as unit:
            request = find(unit, request_id, lock=True)
            outcome = rules.cast_vote(policy, request, approver=person, approve=approve, now=now,
                                      no_longer_approvers=no_longer, comment=comment)
            unit.requests.add_vote(request_id, outcome.vote)
            if not unit.requests.move(request, outcome.request):
                raise InvalidTransition("this request changed meanwhile; look again")
            unit.audit.record(actor=approver, action="request.voted",
                              subject=f"request:{request_id}", now=now,
                              details={"approve": approve, "comment": outcome.vote.comment})
            if outcome.decided:
                unit.audit.record(actor=approver, action=f"request.{outcome.request.state.value}",
                                  subject=f"request:{request_id}", now=now,
                                  details={"approvers": outcome.request.approvers})
    except Duplicate:
        # The unique (request, approver) constraint: a concurrent second click by the same person.
        raise AlreadyVoted("you have already voted on this request") from None
    if outcome.request.state is State.APPROVED:
        return VoteResult(outcome.request, True, issue(access, request_id))
    return VoteResult(outcome.request, outcome.decided)


def cancel(access: Access, request_id: str, *, user: str) -> Request:
    """The requester (or an admin) withdraws a pending or approved-but-unissued request."""
    policy = access.policy
    person = access.person(user, policy.admins)
    now = access.clock()
    with access.unit() as unit:
        request = find(unit, request_id)
        cancelled = rules.cancel(policy, request, by=person, now=now)
        if not unit.requests.move(request, cancelled):
            raise InvalidTransition("this request changed meanwhile; look again")
        unit.audit.record(actor=user, action="request.cancelled", subject=f"request:{request_id}",
                          now=now, details={"before": request.state.value})
    return cancelled

