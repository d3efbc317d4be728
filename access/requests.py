"""The access request and its state machine: every rule about who may move a request where.

    pending --approve x N--> approved --signed--> issued --revoke--> revoked
    pending --deny | ttl | cancel--> denied | expired | cancelled
    approved --ttl (never issued) | cancel | policy no longer allows it--> expired | cancelled
    break-glass: opened approved (no approver), issued at once, reviewed after the fact

Pure: no I/O. Callers pass `now` and Person values whose groups were looked up beforehand; each
function returns the request after the change (or refuses with a specific message), and storage
applies it with a compare-and-set on (state, version), so a lost race is a no-op.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from access.durations import format_duration
from access.errors import AlreadyVoted, BadInput, InvalidTransition, NotAnApprover, PolicyRefusal
from access.policy import Person, Policy, Target
from access.template import Template

MAX_PENDING_PER_TARGET = 3
MAX_REASON_LENGTH = 500
MIN_NOTE_LENGTH = 3  # a deny reason, a revocation's reason, a break-glass review note


class State(str, enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    ISSUED = "issued"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REVOKED = "revoked"


class Kind(str, enum.Enum):
    REQUEST = "request"
    BREAKGLASS = "breakglass"


ALLOWED = {
    State.PENDING: {State.APPROVED, State.DENIED, State.EXPIRED, State.CANCELLED},
    State.APPROVED: {State.ISSUED, State.EXPIRED, State.CANCELLED},
    State.ISSUED: {State.REVOKED},
}


@dataclass(frozen=True)
class Vote:
    approver: str
    approve: bool
    at: datetime
    comment: str | None = None  # a deny's reason (required), an approval's note (optional)


@dataclass(frozen=True)
class Request:
    id: str
    kind: Kind
    requester: str
    target: str
    duration: timedelta
    reason: str
    key_fingerprint: str
    public_key: str  # the OpenSSH line of the key to certify
    state: State
    created_at: datetime
    expires_at: datetime  # pending or approved (never issued) requests expire at this time
    votes: tuple[Vote, ...] = ()
    version: int = 0
    decided_at: datetime | None = None
    issue_error: str | None = None  # the last failed signing attempt, until one succeeds
    issue_attempts: int = 0  # signing attempts so far (each claim counts one)
    reviewed_by: str | None = None  # break-glass: the admin who reviewed this use
    # What will be signed, fixed at opening; None only for requests opened before Vouch kept it.
    template: Template | None = None
    cancelled_by: str | None = None  # who cancelled it ("vouch" when the policy stopped it)
    extends: str | None = None  # the request whose access this one extends
    review_note: str | None = None  # break-glass: the reviewing admin's note
    reviewed_at: datetime | None = None
    escalated_at: datetime | None = None  # break-glass: last posted as unreviewed
    # Opened through the client API with a signature by the very key to certify.
    key_proven: bool = False

    @property
    def approvers(self) -> list[str]:
        return [v.approver for v in self.votes if v.approve]

    @property
    def denied_by(self) -> str | None:
        return next((v.approver for v in self.votes if not v.approve), None)

    @property
    def deny_reason(self) -> str | None:
        return next((v.comment for v in self.votes if not v.approve), None)


def new_request_id() -> str:
    """`req-` and 12 base32 characters: never all digits, so it is never mistaken for a serial."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return "req-" + "".join(secrets.choice(alphabet) for _ in range(12))


def _move(request: Request, new: State, **changes) -> Request:
    """The one place a request changes state: refuses every move ALLOWED does not list."""
    if new not in ALLOWED.get(request.state, set()):
        raise InvalidTransition(f"this request is {request.state.value}; it cannot become {new.value}")
    return replace(request, state=new, **changes)


# --- opening -----------------------------------------------------------------------------

def check_reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise PolicyRefusal("a reason is required: say why you need access (it is shown to approvers)")
    if len(reason) > MAX_REASON_LENGTH:
        raise PolicyRefusal(f"the reason is {len(reason)} characters long; keep it under "
                            f"{MAX_REASON_LENGTH}")
    return reason


def check_note(note: str | None, what: str, *, required: bool = True) -> str | None:
    """A reason or note typed into a modal: MIN_NOTE_LENGTH to MAX_REASON_LENGTH characters."""
    note = " ".join((note or "").split())
    if not note and not required:
        return None
    if len(note) < MIN_NOTE_LENGTH:
        raise PolicyRefusal(f"{what} is required: at least {MIN_NOTE_LENGTH} characters")
    if len(note) > MAX_REASON_LENGTH:
        raise PolicyRefusal(f"{what} is {len(note)} characters long; keep it under "
                            f"{MAX_REASON_LENGTH}")
    return note


def check_duration(target: Target, duration: timedelta) -> None:
    if duration > target.max_duration:
        raise PolicyRefusal(f"{format_duration(duration)} is longer than {target.name}'s maximum of "
                            f"{format_duration(target.max_duration)}")
    if duration < target.min_duration:
        raise PolicyRefusal(f"{format_duration(duration)} is shorter than {target.name}'s minimum of "
                            f"{format_duration(target.min_duration)}")


def requestable_targets(policy: Policy, requester: Person) -> list[str]:
    return sorted(name for name, target in policy.targets.items()
                  if target.requesters.includes(requester))


def open_request(policy: Policy, *, requester: Person, target_name: str, duration: timedelta,
                 reason: str, key_fingerprint: str, public_key: str, now: datetime,
                 pending_for_target: int, request_id: str | None = None,
                 extends: Request | None = None, key_proven: bool = False) -> Request:
    """A new pending request, or PolicyRefusal saying exactly which rule refused it."""
    allowed = requestable_targets(policy, requester)
    target = policy.target(target_name)
    if target is None:
        raise PolicyRefusal(f"unknown target {target_name[:64]!r}; targets you can request: "
                            f"{', '.join(allowed) or 'none'}")
    if target_name not in allowed:
        raise PolicyRefusal(f"you are not allowed to request {target_name}; "
                            f"targets you can request: {', '.join(allowed) or 'none'}")
    check_duration(target, duration)
    reason = check_reason(reason)
    if pending_for_target >= MAX_PENDING_PER_TARGET:
        raise PolicyRefusal(f"you already have {pending_for_target} pending requests for "
                            f"{target_name}; wait for a decision or cancel one with "
                            "`/ssh-request cancel <request-id>`")
    if extends is not None and (extends.requester != requester.id or extends.target != target_name):
        raise PolicyRefusal(f"{extends.id} is not your request for {target_name}: only your own "
                            "access can be extended")
    return Request(id=request_id or new_request_id(), kind=Kind.REQUEST, requester=requester.id,
                   target=target_name, duration=duration, reason=reason,
                   key_fingerprint=key_fingerprint, public_key=public_key, state=State.PENDING,
                   created_at=now, expires_at=now + policy.request_ttl,
                   template=Template.for_target(target),
                   extends=extends.id if extends is not None else None, key_proven=key_proven)


def open_breakglass(policy: Policy, *, user: Person, target_name: str, duration: timedelta,
                    reason: str, key_fingerprint: str, public_key: str, now: datetime,
                    request_id: str | None = None) -> Request:
    """Break-glass: approved at once with no approver, within its own narrower limits."""
    breakglass = policy.breakglass
    if breakglass is None:
        raise PolicyRefusal("break-glass is not enabled in the policy")
    if not breakglass.users.includes(user):
        raise PolicyRefusal("you are not allowed to break glass; ask for access with /ssh-request")
    covered = sorted(name for name in policy.targets if breakglass.covers(name))
    if target_name not in policy.targets or not breakglass.covers(target_name):
        raise PolicyRefusal(f"break-glass does not cover {target_name[:64]!r}; it covers: "
                            f"{', '.join(covered) or 'none'}")
    if duration > breakglass.max_duration:
        raise PolicyRefusal(f"{format_duration(duration)} is longer than break-glass's maximum of "
                            f"{format_duration(breakglass.max_duration)}")
    reason = check_reason(reason)
    return Request(id=request_id or new_request_id(), kind=Kind.BREAKGLASS, requester=user.id,
                   target=target_name, duration=duration, reason=reason,
                   key_fingerprint=key_fingerprint, public_key=public_key, state=State.APPROVED,
                   created_at=now, expires_at=now + policy.request_ttl, decided_at=now,
                   template=Template.for_target(policy.targets[target_name]))


# --- deciding ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What a vote did: the request after it, and whether this vote decided it."""

    request: Request
    vote: Vote
    decided: bool = False


def cast_vote(policy: Policy, request: Request, *, approver: Person, approve: bool,
              now: datetime, no_longer_approvers: frozenset[str] = frozenset(),
              comment: str | None = None) -> Outcome:
    """Apply one approver's click. Refuses self-approval, non-approvers, second votes, and votes
    on requests that are no longer pending. Earlier approvals by `no_longer_approvers` (people
    the policy stopped listing since they voted) do not count."""
    if request.state is not State.PENDING:
        raise InvalidTransition(f"this request is already {request.state.value}")
    if now >= request.expires_at:
        raise InvalidTransition("this request has expired; ask again with /ssh-request")
    if approver.id == request.requester:
        raise PolicyRefusal("you cannot approve or deny your own request: another approver must vouch")
    target = policy.target(request.target)
    if target is None:
        raise PolicyRefusal(f"target {request.target!r} is no longer in the policy")
    if not target.approvers.includes(approver):
        raise NotAnApprover(request.target, target.approvers)
    if any(v.approver == approver.id for v in request.votes):
        raise AlreadyVoted("you have already voted on this request")
    comment = check_note(comment, "a reason for denying" if not approve else "the comment",
                         required=not approve)
    vote = Vote(approver=approver.id, approve=approve, at=now, comment=comment)
    votes = request.votes + (vote,)
    if not approve:
        return Outcome(_move(request, State.DENIED, votes=votes, decided_at=now), vote, decided=True)
    approvals = {v.approver for v in votes if v.approve and v.approver != request.requester
                 and v.approver not in no_longer_approvers}
    if len(approvals) >= target.approvals_required:
        # Approved but not yet issued: it expires if it cannot be issued within request_ttl.
        return Outcome(_move(request, State.APPROVED, votes=votes, decided_at=now,
                             expires_at=now + policy.request_ttl), vote, decided=True)
    return Outcome(replace(request, votes=votes), vote)


def cancel(policy: Policy, request: Request, *, by: Person, now: datetime) -> Request:
    """The requester (or an admin) withdraws a request nobody has issued yet."""
    if by.id != request.requester and not policy.admins.includes(by):
        raise PolicyRefusal("only the requester or an admin can cancel a request")
    return _move(request, State.CANCELLED, decided_at=now, cancelled_by=by.id)


def withdraw(request: Request, *, by: str, now: datetime) -> Request:
    """A pending request ended by Vouch itself (its requester was offboarded)."""
    return _move(request, State.CANCELLED, decided_at=now, cancelled_by=by)


def cancel_unissued(request: Request, *, by: str, now: datetime) -> Request:
    """Revoking an approved request before its certificate exists: none will be issued."""
    if request.state is not State.APPROVED:
        raise InvalidTransition(f"this request is {request.state.value}, not awaiting its certificate")
    return _move(request, State.CANCELLED, decided_at=now, cancelled_by=by)


def expire(request: Request, *, now: datetime) -> Request:
    """Nobody decided within request_ttl, or it was approved and could not be issued within
    request_ttl after that."""
    if now < request.expires_at:
        raise InvalidTransition("this request has not expired yet")
    return _move(request, State.EXPIRED, decided_at=now)


def signing_refusal(policy: Policy, request: Request) -> str | None:
    """Why the policy as it is now would not sign this approved request's certificate; None if
    it would. People were checked as they acted (a vote counts only while its approver is
    listed: cast_vote); this checks what would be signed."""
    target = policy.target(request.target)
    if target is None:
        return f"target {request.target!r} is no longer in the policy"
    if request.kind is Kind.BREAKGLASS:
        breakglass = policy.breakglass
        if breakglass is None or not breakglass.covers(request.target):
            return f"break-glass no longer covers {request.target}"
        limit, limit_of = breakglass.max_duration, "break-glass"
    else:
        limit, limit_of = target.max_duration, request.target
    if request.duration > limit:
        return (f"{format_duration(request.duration)} is now longer than {limit_of}'s maximum of "
                f"{format_duration(limit)}")
    return request.template.refusal(target) if request.template is not None else None


def refuse_issuing(request: Request, *, now: datetime, why: str) -> Request:
    """The policy no longer allows what was approved: nothing is signed, ever."""
    return _move(request, State.CANCELLED, decided_at=now, issue_error=why, cancelled_by="vouch")


def issued(request: Request) -> Request:
    """Its certificate was signed and recorded."""
    return _move(request, State.ISSUED, issue_error=None)


def revoked(request: Request) -> Request:
    """Its certificate was revoked."""
    return _move(request, State.REVOKED)


def may_revoke(policy: Policy, *, holder: str, user: Person) -> bool:
    """The certificate's holder may revoke their own; admins may revoke any."""
    return user.id == holder or policy.admins.includes(user)


def review(policy: Policy, request: Request, *, reviewer: Person, note: str | None,
           now: datetime) -> Request:
    """The break-glass use, reviewed: refused to anyone but an admin other than the user who
    broke glass, and without a note saying what the review found."""
    if not policy.admins.includes(reviewer):
        raise PolicyRefusal("only admins can review break-glass use")
    if request.kind is not Kind.BREAKGLASS:
        raise BadInput(f"no break-glass use {request.id[:64]!r}")
    if request.requester == reviewer.id:
        raise PolicyRefusal("you cannot review your own break-glass use")
    if request.reviewed_by is not None:
        raise InvalidTransition("this break-glass use was already reviewed")
    note = check_note(note, "a review note")
    return replace(request, reviewed_by=reviewer.id, reviewed_at=now, review_note=note)
