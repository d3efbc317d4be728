"""The refusals the domain gives, on top of ca.errors' hierarchy (a message for the person who
acted, a detail for the log)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ca.errors import BadInput, SignerUnavailable, VouchError

if TYPE_CHECKING:
    from access.policy import People

__all__ = ["AlreadyVoted", "BadInput", "Busy", "InvalidTransition", "NotAnApprover",
           "PolicyRefusal", "SignerUnavailable", "VouchError"]


class PolicyRefusal(VouchError):
    """The policy does not allow this person to do this."""


class NotAnApprover(PolicyRefusal):
    """A vote by someone the target does not list; `approvers` lets a view name who may."""

    def __init__(self, target: str, approvers: People) -> None:
        names = sorted(approvers.users) + sorted(approvers.groups)
        super().__init__(f"you are not an approver for {target}; its approvers are "
                         + ", ".join(names))
        self.target = target
        self.approvers = approvers


class InvalidTransition(VouchError):
    """The request is not in a state where this can happen (already decided, expired, …)."""


class AlreadyVoted(InvalidTransition):
    """A second click by the same approver: it changes nothing."""


class Busy(VouchError):
    """Someone else is changing the same thing right now; trying again will do."""
