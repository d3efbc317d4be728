"""What Vouch does when nobody types anything: one method per scheduled job. vouch.scheduler
runs them (APScheduler) and makes each run happen in one replica; each job also claims its items
in the database (compare-and-set), so no reminder, alert or message goes out twice."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from access import breakglass, digest, issuing, offboarding, sweeps
from access.context import Access
from bot import texts
from bot.notifier import Notifier
from bot.slack import SlackUnavailable

log = logging.getLogger("vouch.jobs")


class Jobs:
    def __init__(self, access: Access, notifier: Notifier, *,
                 also: dict[str, Callable[[], object]] | None = None) -> None:
        self.access = access
        self.notify = notifier
        self.also = also or {}  # other packages' periodic work, by name (audit checkpoints)

    def periodic(self) -> dict[str, Callable[[], object]]:
        """The jobs run every VOUCH_SCHEDULER_INTERVAL, by name."""
        jobs = {"expire": self.expire, "retry-issuing": self.retry_issuing,
                "post-unposted": self.post_unposted, "remind": self.remind,
                "escalate": self.escalate, "announce-revocations": self.announce_revocations}
        return {**jobs, **self.also}

    def expire(self) -> None:
        """Undecided requests past request_ttl: their message says they expired."""
        for request in sweeps.expire_due(self.access):
            self.notify.expired(request)

    def retry_issuing(self) -> None:
        """Approved requests whose signing failed: sign now that the CA may be back."""
        retried = issuing.retry_issuing(self.access)
        for request in retried.refused:
            self.notify.issue_refused(request.id)
        for issued in retried.issued:
            try:
                self.notify.delivered(issued)
            except SlackUnavailable as exc:  # one undelivered DM must not stop the others
                log.error("certificate for %s issued but not delivered: %s", issued.request.id,
                          exc.detail)

    def post_unposted(self) -> None:
        """Requests and break-glass alerts stored while Slack was failing: post them now."""
        self.notify.repost_unposted()

    def remind(self) -> None:
        """A DM to each holder, once, reminder_before their certificate expires."""
        for certificate in sweeps.reminders_due(self.access):
            self.notify.reminder(certificate)

    def escalate(self) -> None:
        """Break-glass uses nobody reviewed: said again every review_within (and at the next
        run, if it could not be posted)."""
        for escalation in breakglass.escalate_unreviewed(self.access):
            if not self.notify.escalated(escalation.request):
                breakglass.escalation_failed(self.access, escalation)

    def announce_revocations(self) -> None:
        """Revocations made outside Slack (`vouch revoke`): the card, thread and holder hear."""
        self.notify.announce_revocations()

    def offboard_sweep(self) -> None:
        """The safety net under the user_change event: ask Slack about everyone who holds a
        key or a certificate, and offboard the deactivated and the guests."""
        for user in offboarding.offboarding_candidates(self.access):
            try:
                why = texts.offboarding_reason(self.notify.slack.user(user, fresh=True))
            except SlackUnavailable as exc:
                log.warning("offboarding sweep: cannot look up %s: %s", user, exc.detail)
                continue
            if why is not None:
                self.notify.offboarded(offboarding.offboard(self.access, user, why=why))

    def digest(self, slot: datetime) -> bool:
        """The digest of the 24 hours up to `slot` (a day's VOUCH_DIGEST_AT), once: False when
        it was posted already or could not be."""
        if not self.notify.claim_digest(slot):
            return False
        return self.notify.digest(digest.activity(self.access, until=slot), slot)
