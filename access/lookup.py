"""Reading requests and certificates back: by id, and a user's own (`/ssh-status`)."""

from __future__ import annotations

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


def status(access: Access, user: str) -> tuple[list[Request], list[StoredCertificate]]:
    """The user's pending requests and live certificates."""
    now = access.clock()
    with access.unit(read_only=True) as unit:
        return unit.requests.pending_of(user), unit.certificates.live_of(user, now)
