"""The access request state machine: every rule about who may move a request where, in one place.

    pending --approve x N--> approved --signed--> issued --> revoked | expired
    pending --deny | ttl | cancel--> denied | expired | cancelled
    break-glass: created issued-ready (approved, no approver), then reviewed after the fact

Pure: no I/O. Callers pass `now` and a group directory; storage applies the outcome with a
compare-and-set on the request's state, so a lost race is a no-op rather than a second outcome.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from access.durations import format_duration
from access.policy import Directory, Policy, Target
from ca.cert import CertificateSpec, validity
from ca.errors import VouchError
from ca.keys import PublicKey

MAX_PENDING_PER_TARGET = 3
MAX_REASON_LENGTH = 500


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
    State.APPROVED: {State.ISSUED, State.CANCELLED},
    State.ISSUED: {State.REVOKED, State.EXPIRED},
}
FINAL = frozenset({State.DENIED, State.EXPIRED, State.CANCELLED, State.REVOKED})


class PolicyRefusal(VouchError):
    """The policy does not allow this person to do this."""


class InvalidTransition(VouchError):
    """The request is not in a state where this can happen (already decided, expired, …)."""


class AlreadyVoted(InvalidTransition):
    """A second click by the same approver: it changes nothing."""


@dataclass(frozen=True)
class Vote:
    approver: str
    approve: bool
    at: datetime


@dataclass(frozen=True)
class Request:
    id: str
    kind: Kind
    requester: str
    target: str
    duration: timedelta
    reason: str
    key_fingerprint: str
    state: State
    created_at: datetime
    expires_at: datetime  # undecided requests expire at this time
    votes: tuple[Vote, ...] = ()
    version: int = 0

    @property
    def approvers(self) -> list[str]:
        return [v.approver for v in self.votes if v.approve]

    @property
    def denied_by(self) -> str | None:
        return next((v.approver for v in self.votes if not v.approve), None)


def new_request_id() -> str:
    """`req-` and 12 base32 characters: never all digits, so it is never mistaken for a serial."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return "req-" + "".join(secrets.choice(alphabet) for _ in range(12))


def check_transition(current: State, new: State) -> None:
    if new not in ALLOWED.get(current, set()):
        raise InvalidTransition(f"this request is {current.value}; it cannot become {new.value}")


# --- creating ----------------------------------------------------------------------------

def check_reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise PolicyRefusal("a reason is required: say why you need access (it is shown to approvers)")
    if len(reason) > MAX_REASON_LENGTH:
        raise PolicyRefusal(f"the reason is {len(reason)} characters long; keep it under "
                            f"{MAX_REASON_LENGTH}")
    return reason


def check_duration(target: Target, duration: timedelta) -> None:
    if duration > target.max_duration:
        raise PolicyRefusal(f"{format_duration(duration)} is longer than {target.name}'s maximum of "
                            f"{format_duration(target.max_duration)}")
    if duration < target.min_duration:
        raise PolicyRefusal(f"{format_duration(duration)} is shorter than {target.name}'s minimum of "
                            f"{format_duration(target.min_duration)}")


def resolve_target(policy: Policy, name: str, *, allowed: list[str] | None = None) -> Target:
    target = policy.target(name)
    if target is None:
        names = allowed if allowed is not None else sorted(policy.targets)
        listing = ", ".join(names) if names else "none"
        raise PolicyRefusal(f"unknown target {name[:64]!r}; targets you can request: {listing}")
    return target


def requestable_targets(policy: Policy, user: str, directory: Directory) -> list[str]:
    return sorted(name for name, target in policy.targets.items()
                  if target.requesters.includes(user, directory))


def open_request(policy: Policy, *, requester: str, target_name: str, duration: timedelta,
                 reason: str, key_fingerprint: str, now: datetime, directory: Directory,
                 pending_for_target: int, request_id: str | None = None) -> Request:
    """A new pending request, or PolicyRefusal saying exactly which rule refused it."""
    allowed = requestable_targets(policy, requester, directory)
    target = resolve_target(policy, target_name, allowed=allowed)
    if target_name not in allowed:
        raise PolicyRefusal(f"you are not allowed to request {target_name}; "
                            f"targets you can request: {', '.join(allowed) or 'none'}")
    check_duration(target, duration)
    reason = check_reason(reason)
    if pending_for_target >= MAX_PENDING_PER_TARGET:
        raise PolicyRefusal(f"you already have {pending_for_target} pending requests for "
                            f"{target_name}; wait for a decision or cancel one")
    return Request(id=request_id or new_request_id(), kind=Kind.REQUEST, requester=requester,
                   target=target_name, duration=duration, reason=reason,
                   key_fingerprint=key_fingerprint, state=State.PENDING, created_at=now,
                   expires_at=now + policy.request_ttl)


def open_breakglass(policy: Policy, *, user: str, target_name: str, duration: timedelta,
                    reason: str, key_fingerprint: str, now: datetime, directory: Directory,
                    request_id: str | None = None) -> Request:
    """Break-glass: approved at once with no approver, within its own narrower limits."""
    breakglass = policy.breakglass
    if breakglass is None:
        raise PolicyRefusal("break-glass is not enabled in the policy")
    if not breakglass.users.includes(user, directory):
        raise PolicyRefusal("you are not allowed to break glass; ask for access with /ssh-request")
    covered = sorted(name for name in policy.targets if breakglass.covers(name))
    if target_name not in policy.targets or not breakglass.covers(target_name):
        raise PolicyRefusal(f"break-glass does not cover {target_name[:64]!r}; it covers: "
                            f"{', '.join(covered) or 'none'}")
    if duration > breakglass.max_duration:
        raise PolicyRefusal(f"{format_duration(duration)} is longer than break-glass's maximum of "
                            f"{format_duration(breakglass.max_duration)}")
    reason = check_reason(reason)
    return Request(id=request_id or new_request_id(), kind=Kind.BREAKGLASS, requester=user,
                   target=target_name, duration=duration, reason=reason,
                   key_fingerprint=key_fingerprint, state=State.APPROVED, created_at=now,
                   expires_at=now)


# --- deciding ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What a vote did: the request after it, and whether this vote decided it."""

    request: Request
    vote: Vote
    decided: bool = False

    @property
    def approvals(self) -> int:
        return len(self.request.approvers)


def may_approve(policy: Policy, request: Request, user: str, directory: Directory) -> bool:
    target = policy.target(request.target)
    return (target is not None and user != request.requester
            and target.approvers.includes(user, directory))


def cast_vote(policy: Policy, request: Request, *, approver: str, approve: bool, now: datetime,
              directory: Directory) -> Outcome:
    """Apply one approver's click. Refuses self-approval, non-approvers, second votes, and votes
    on requests that are no longer pending."""
    if request.state is not State.PENDING:
        raise InvalidTransition(f"this request is already {request.state.value}")
    if now >= request.expires_at:
        raise InvalidTransition("this request has expired; ask again with /ssh-request")
    if approver == request.requester:
        raise PolicyRefusal("you cannot approve or deny your own request: another approver must vouch")
    target = policy.target(request.target)
    if target is None:
        raise PolicyRefusal(f"target {request.target!r} is no longer in the policy")
    if not target.approvers.includes(approver, directory):
        raise PolicyRefusal(f"you are not an approver for {request.target}; its approvers are "
                            + ", ".join(target.approvers.mentions()))
    if any(v.approver == approver for v in request.votes):
        raise AlreadyVoted("you have already voted on this request")
    vote = Vote(approver=approver, approve=approve, at=now)
    votes = request.votes + (vote,)
    if not approve:
        return Outcome(replace(request, votes=votes, state=State.DENIED), vote, decided=True)
    approvals = {v.approver for v in votes if v.approve and v.approver != request.requester}
    if len(approvals) >= target.approvals_required:
        return Outcome(replace(request, votes=votes, state=State.APPROVED), vote, decided=True)
    return Outcome(replace(request, votes=votes), vote)


def is_expired(request: Request, now: datetime) -> bool:
    return request.state is State.PENDING and now >= request.expires_at


def may_revoke(policy: Policy, *, holder: str, user: str, directory: Directory) -> bool:
    """The certificate's holder may revoke their own; admins may revoke any."""
    return user == holder or policy.admins.includes(user, directory)


def may_review(policy: Policy, user: str, directory: Directory) -> bool:
    return policy.admins.includes(user, directory)


# --- the certificate ---------------------------------------------------------------------

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
    """The certificate a request earns: everything in it derives from the policy and request."""
    if public_key.fingerprint != request.key_fingerprint:
        raise InvalidTransition("the key on the request is not the key being certified")
    valid_after, valid_before = validity(now, request.duration)
    return CertificateSpec(public_key=public_key, serial=serial, key_id=key_id(request),
                           principals=target.principals, valid_after=valid_after,
                           valid_before=valid_before, critical_options=critical_options(target),
                           extensions=target.extensions)

