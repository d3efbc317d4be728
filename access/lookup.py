"""Reading requests and certificates back: by id, and what concerns a user (`/ssh-status`,
the App Home)."""

from __future__ import annotations

from dataclasses import dataclass

from access.context import Access
from access.errors import BadInput
from access.ports import StoredCertificate, Unit
from access.requests import Request


def find(unit: Unit, request_id: str, *, lock: bool = False) -> Request:
    request = unit.requests.get(request_id, lock=lock)
    if request is None:
        raise BadInput(f"no request {request_id[:64]!r}")
    return request


def request(access: Access, request_id: str) -> tuple[Request, StoredCertificate | None]:
    """The request and its certificate, if it has one."""
    with access.unit(read_only=True) as unit:
        found = find(unit, request_id)
        certificates = unit.certificates.of_request(request_id)
    return found, certificates[0] if certificates else None


def certificate(access: Access, serial: int) -> StoredCertificate:
    with access.unit(read_only=True) as unit:
        found = unit.certificates.by_serial(serial)
    if found is None:
        raise BadInput(f"no certificate with serial {serial}")
    return found


def status(access: Access, user: str) -> tuple[list[Request], list[StoredCertificate]]:
    """The user's pending requests and live certificates."""
    now = access.clock()
    with access.unit(read_only=True) as unit:
        return unit.requests.pending_of(user), unit.certificates.live_of(user, now)


# More than this in one list is not an overview any more.
OVERVIEW_LIMIT = 50


@dataclass(frozen=True)
class Overview:
    """What concerns one user now."""

    pending: list[Request]  # their undecided requests
    live: list[tuple[StoredCertificate, Request | None]]  # their certificates, with the request
    awaiting: list[Request]  # others' requests waiting for their vote
    unreviewed: list[Request]  # for admins: break-glass uses nobody has reviewed


def overview(access: Access, user: str) -> Overview:
    policy = access.policy
    person = access.person(user, policy.admins,
                           *(target.approvers for target in policy.targets.values()))
    now = access.clock()
    with access.unit(read_only=True) as unit:
        pending = unit.requests.pending_of(user)
        live = [(c, unit.requests.get(c.request_id) if c.request_id else None)
                for c in unit.certificates.live_of(user, now)]
        awaiting = []
        for request in unit.requests.pending(now, OVERVIEW_LIMIT * 4):
            target = policy.target(request.target)
            if (request.requester != user and target is not None
                    and target.approvers.includes(person)
                    and all(vote.approver != user for vote in request.votes)):
                awaiting.append(request)
        unreviewed = (unit.requests.unreviewed_breakglass(OVERVIEW_LIMIT)
                      if policy.admins.includes(person) else [])
    return Overview(pending[:OVERVIEW_LIMIT], live[:OVERVIEW_LIMIT], awaiting[:OVERVIEW_LIMIT],
                    unreviewed)
