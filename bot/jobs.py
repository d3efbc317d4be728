"""Scheduled sweeps, run every VOUCH_SCHEDULER_INTERVAL by every replica.

Each sweep claims its items in the database (compare-and-set), so with several replicas every
reminder, expiry and retry still happens once. A failing sweep is logged and the next one runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from access.durations import format_duration
from access.requests import Kind
from bot import views
from bot.app import Bot
from bot.slack import SlackUnavailable

log = logging.getLogger("vouch.jobs")


class Jobs:
    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.service = bot.service

    def sweeps(self) -> list[Callable[[], None]]:
        return [self.expire, self.retry_issuing, self.post_unposted, self.remind, self.escalate]

    def run_once(self) -> None:
        for sweep in self.sweeps():
            try:
                sweep()
            except Exception:  # noqa: BLE001 - one broken sweep must not stop the others
                log.exception("scheduled sweep %s failed", sweep.__name__)

    def expire(self) -> None:
        """Undecided requests past request_ttl: their message says they expired."""
        for request in self.service.expire_due():
            self.bot.metrics.requests.labels(outcome="expired").inc()
            self.bot.refresh(request.id)
            self.bot.quietly(self.bot.slack.dm, request.requester,
                           f"Your request `{request.id}` for {request.target} expired: nobody "
                           "decided in time. Ask again with /ssh-request if you still need access.")

    def retry_issuing(self) -> None:
        """Approved requests whose signing failed: sign now that the CA may be back."""
        for issued in self.service.retry_issuing():
            self.bot.deliver(issued)
            self.bot.refresh(issued.request.id)

    def post_unposted(self) -> None:
        """Requests stored while Slack was failing: post them now."""
        for request_id, channel in self.service.unposted():
            self.bot.outbox.submit(channel, lambda r=request_id, c=channel: self.bot.post_request(r, c))

    def remind(self) -> None:
        """A DM to each holder, once, reminder_before their certificate expires."""
        for reminder in self.service.reminders_due():
            tz = None
            try:
                tz = self.bot.slack.user(reminder.holder).tz
            except SlackUnavailable:
                pass
            hint = ""
            if reminder.request_id:
                request, _ = self.service.get(reminder.request_id)
                hint = f"for {request.target} "
            self.bot.quietly(self.bot.slack.dm, reminder.holder,
                           views.reminder_dm(hint, reminder.serial, reminder.valid_before, tz))

    def escalate(self) -> None:
        """Break-glass uses nobody reviewed within review_within: say so, loudly, once."""
        policy = self.bot.policy()
        if policy.breakglass is None or policy.security_channel is None:
            return
        for request in self.service.unreviewed_breakglass():
            if request.kind is not Kind.BREAKGLASS:
                continue
            admins = " ".join(views.mention(a) for a in sorted(policy.admins.users))
            self.bot.quietly(
                self.bot.slack.post, policy.security_channel,
                f"⚠️ Break-glass use `{request.id}` by {views.mention(request.requester)} on "
                f"{request.target} is still unreviewed after "
                f"{format_duration(policy.breakglass.review_within)}. {admins}".rstrip())


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
