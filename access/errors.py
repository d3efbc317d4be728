"""The refusals the domain gives, on top of ca.errors' hierarchy (a message for the person who
acted, a detail for the log)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ca.errors import BadInput, SignerUnavailable, VouchError

if TYPE_CHECKING:
    from access.policy import People
    from access.requests import Request

__all__ = ["AlreadyVoted", "BadInput", "InvalidTransition", "IssueRefused", "NotAnApprover",
           "PolicyRefusal", "SignerUnavailable", "VouchError"]


class PolicyRefusal(VouchError):
    """The policy does not allow this person to do this."""


class NotAnApprover(PolicyRefusal):
    """A vote by someone the target does not list; the message names who may."""

    def __init__(self, target: str, approvers: People) -> None:
        self.target = target
        self.approvers = approvers
        super().__init__(self.describe(lambda user: user))

    def describe(self, name: Callable[[str], str]) -> str:
        """The message, with each approver's user ID written by `name` (a Slack mention, say)."""
        names = [name(user) for user in sorted(self.approvers.users)]
        return (f"you are not an approver for {self.target}; its approvers are "
                + ", ".join(names + sorted(self.approvers.groups)))


class InvalidTransition(VouchError):
    """The request is not in a state where this can happen (already decided, expired, …)."""


class AlreadyVoted(InvalidTransition):
    """A second click by the same approver: it changes nothing."""


class IssueRefused(PolicyRefusal):
    """An approved request the policy no longer allows: nothing was signed, and it is
    cancelled. `request` is as it was approved."""

    def __init__(self, request: Request, why: str) -> None:
        self.request = request
        self.why = why
        super().__init__(f"{request.id} was approved, but nothing was signed: {why}. "
                         "Ask again with /ssh-request")
