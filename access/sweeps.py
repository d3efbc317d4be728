"""What happens when nobody types anything: undecided requests expire, holders are reminded
before their certificates expire. Scheduled jobs call these; each item is claimed in the
database, so with several replicas it still happens once."""

from __future__ import annotations

from datetime import datetime, timedelta

from access import requests as rules
from access.context import Access
from access.issuing import ISSUE_LEASE
from access.ports import StoredCertificate
from access.requests import Request

BATCH = 500


def expire_due(access: Access) -> list[Request]:
    """Undecided requests past request_ttl become expired, and so do approved ones that could
    not be issued within request_ttl of their approval."""
    now = access.clock()
    moved = []
    with access.unit() as unit:
        for request in unit.requests.past_ttl(now, BATCH, lease=ISSUE_LEASE):
            expired = rules.expire(request, now=now)
            if unit.requests.move(request, expired):
                unit.audit.record(actor="vouch", action="request.expired",
                                  subject=f"request:{request.id}", now=now)
                moved.append(expired)
    return moved


def reminders_due(access: Access) -> list[StoredCertificate]:
    """Certificates due a reminder (reminder_before their expiry), each claimed once. No
    reminder for a certificate that never lasted reminder_before (it would come at issuance),
    nor for one whose reminder is more than half of reminder_before late (Vouch was down):
    those are marked handled, unsent."""
    now = access.clock()
    within = access.policy.reminder_before
    with access.unit() as unit:
        due = [certificate for certificate in unit.certificates.due_reminder(now, within, BATCH)
               if unit.certificates.mark_reminded(certificate.serial, now)]
    return [certificate for certificate in due if _useful(certificate, now, within)]


def _useful(certificate: StoredCertificate, now: datetime, within: timedelta) -> bool:
    reminder_at = certificate.valid_before - within
    if certificate.issued_at is not None and reminder_at < certificate.issued_at:
        return False  # shorter than reminder_before
    return now - reminder_at <= within / 2
