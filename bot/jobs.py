"""Scheduled sweeps, run every VOUCH_SCHEDULER_INTERVAL by every replica.

Each sweep claims its items in the database (compare-and-set), so with several replicas every
reminder, expiry and retry still happens once. A failing sweep is logged and the next one runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from access import breakglass, issuing, sweeps
from access.context import Access
from bot.notifier import Notifier
from bot.slack import SlackUnavailable

log = logging.getLogger("vouch.jobs")


class Jobs:
    def __init__(self, access: Access, notifier: Notifier, *,
                 also: tuple[Callable[[], object], ...] = ()) -> None:
        self.access = access
        self.notify = notifier
        self.also = also  # periodic work of other packages, given by `vouch serve` (checkpoints)

    def sweeps(self) -> list[Callable[[], object]]:
        return [self.expire, self.retry_issuing, self.post_unposted, self.remind, self.escalate,
                self.announce_revocations, *self.also]

    def run_once(self) -> None:
        for sweep in self.sweeps():
            try:
                sweep()
            except Exception:  # noqa: BLE001 - one broken sweep must not stop the others
                log.exception("scheduled sweep %s failed", getattr(sweep, "__name__", sweep))

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
        """Requests stored while Slack was failing: post them now."""
        self.notify.repost_unposted()

    def announce_revocations(self) -> None:
        """Revocations made outside Slack (`vouch revoke`): the card, thread and holder hear."""
        self.notify.announce_revocations()

    def remind(self) -> None:
        """A DM to each holder, once, reminder_before their certificate expires."""
        for certificate in sweeps.reminders_due(self.access):
            self.notify.reminder(certificate)

    def escalate(self) -> None:
        """Break-glass uses nobody reviewed within review_within: say so, loudly, once (again
        next time, if it could not be posted)."""
        for request in breakglass.escalate_unreviewed(self.access):
            if not self.notify.escalated(request):
                breakglass.escalation_failed(self.access, request)


class Scheduler:
    """Runs Jobs.run_once every `interval` seconds on a daemon thread until stopped."""

    def __init__(self, jobs: Jobs, interval: float) -> None:
        self.jobs = jobs
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vouch-scheduler", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.jobs.run_once()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
