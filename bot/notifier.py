"""What Slack shows after something happened: one method per outcome, each turning it into the
messages people see (texts in bot.texts and bot.views). Nothing here decides anything; a failed
notification is logged and never undoes what was decided."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from access import lookup
from access.context import Access
from access.durations import format_duration
from access.issuing import Issued
from access.offboarding import Offboarded
from access.ports import Activity, StoredCertificate
from access.requests import Kind, Request, State
from access.template import Template
from access.revoking import Revoked
from access.voting import VoteResult
from bot import texts, views
from bot.home import Home
from bot.messages import POST_LEASE, Messages
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.payloads import Actor
from bot.slack import SlackGateway, SlackUnavailable

log = logging.getLogger("vouch.notifier")


class Notifier:
    def __init__(self, access: Access, slack: SlackGateway, messages: Messages,
                 metrics: Metrics) -> None:
        self.access = access
        self.slack = slack
        self.messages = messages
        self.metrics = metrics
        self.outbox = Outbox()
        self.home = Home(access, slack)
        # Why the security channel cannot be posted to, while it cannot (/readyz reports it).
        self.security_problem: str | None = None

    # --- to the person who acted ----------------------------------------------------------

    def tell(self, actor: Actor, text: str) -> None:
        """An answer for their eyes only."""
        if actor.response_url:
            self.slack.respond(actor.response_url, text)
        elif actor.channel and not actor.channel.startswith("D"):
            self._quietly(self.slack.ephemeral, actor.channel, actor.user, text)
        else:
            self._quietly(self.slack.dm, actor.user, text)

    # --- requests -------------------------------------------------------------------------

    def request_opened(self, actor: Actor, request: Request, channel: str, *,
                       tell: bool = True) -> None:
        """Queue the request's message (posts to one channel go out one at a time), tell the
        requester where it went (unless they asked from the terminal, which shows it), and open
        their DM now: the certificate's delivery is then one Web API call."""
        self.messages.expect(request.id, channel)
        self.outbox.submit(channel, lambda: self.post_request(request.id))
        if tell:
            self.tell(actor, texts.request_stored(request, channel))
        self._quietly(self.slack.dm_channel, request.requester)
        self.home.refresh_about(request)

    def post_request(self, request_id: str) -> bool:
        """Post the request message and call the approvers in its thread. False if Slack failed
        (the posting sweep tries again) or another worker is posting it."""
        channel = self.messages.claim(request_id, now=self.access.clock(), lease=POST_LEASE)
        if channel is None:
            return False
        request, certificate = lookup.request(self.access, request_id)
        target = self.access.policy.target(request.target)
        if target is None or request.state is not State.PENDING:
            return False
        card = self._card(request, certificate)
        try:
            posted_channel, ts = self.slack.post(channel, card.text, card.blocks)
        except SlackUnavailable as exc:
            log.warning("could not post request %s: %s", request_id, exc.detail)
            self.messages.release(request_id)
            return False
        self.messages.posted(request_id, posted_channel, ts)
        note = views.approvers_note(request, target, self._group_mentions())
        self._quietly(self.slack.post, posted_channel, note.text, note.blocks, thread_ts=ts)
        return True

    def repost_unposted(self) -> None:
        """Requests and break-glass alerts stored while Slack was failing (or by a replica that
        died): post them now."""
        for request_id in self.messages.unposted_alerts(now=self.access.clock(), lease=POST_LEASE):
            self.post_alert(request_id)
        fallback = self.access.policy.requests_channel
        for request_id, channel in self.messages.unposted(now=self.access.clock(), lease=POST_LEASE):
            if channel is None:  # stored, but its channel never was (a crash in between)
                if fallback is None:
                    continue  # nowhere known to post it
                channel = fallback
                self.messages.expect(request_id, channel)
            self.outbox.submit(channel, lambda r=request_id: self.post_request(r))

    def refresh(self, request_id: str) -> None:
        """Re-render a request's card, or a break-glass use's alert, from its state."""
        where = self.messages.get(request_id)
        if where is None:
            return
        request, certificate = lookup.request(self.access, request_id)
        card = (self._alert(request, certificate) if request.kind is Kind.BREAKGLASS
                else self._card(request, certificate))
        self._quietly(self.slack.update, *where, card.text, card.blocks)

    def _card(self, request: Request, certificate: StoredCertificate | None) -> views.Rendered:
        """The request's card: the template fixed on it, and its target's approvals."""
        target = self.access.policy.target(request.target)
        template = request.template or (Template.for_target(target) if target else Template(()))
        return views.request_message(
            request, certificate, template=template,
            approvals_required=target.approvals_required if target else 1)

    def voted(self, actor: Actor, result: VoteResult, *, approve: bool) -> None:
        request = result.request
        if result.issued is not None:
            self.certificate(result.issued)
        target = self.access.policy.target(request.target)
        required = target.approvals_required if target else 1
        self._in_thread(request.id, texts.vote_note(actor.user, approve, request, required))
        if result.issued is not None:
            spec = result.issued.certificate.spec
            self._in_thread(request.id, texts.issued_note(spec.serial, spec.valid_before))
        if result.decided and request.state is State.DENIED:
            self._quietly(self.slack.dm, request.requester, texts.denied_dm(request, actor.user))
        self.refresh(request.id)
        self.home.refresh_about(request)

    def cancelled(self, request: Request) -> None:
        """The card and thread say who cancelled; the lists that showed it forget it."""
        self._in_thread(request.id, texts.cancelled_note(request))
        self.refresh(request.id)
        self.home.refresh_about(request)

    def signing_failed(self, request_id: str) -> None:
        request, _ = lookup.request(self.access, request_id)
        self._quietly(self.slack.dm, request.requester, texts.signing_failed_dm(request))
        self._in_thread(request_id, texts.SIGNING_FAILED_NOTE)
        self.refresh(request_id)

    def issue_refused(self, request_id: str) -> None:
        """Approved, but the policy no longer allows it: nothing was signed."""
        request, _ = lookup.request(self.access, request_id)
        self._quietly(self.slack.dm, request.requester, texts.issue_refused_dm(request))
        self._in_thread(request_id, texts.issue_refused_note(request))
        self.refresh(request_id)

    def expired(self, request: Request) -> None:
        self.metrics.requests.labels(outcome="expired").inc()
        self.refresh(request.id)
        self.home.refresh_about(request)
        self._quietly(self.slack.dm, request.requester, texts.expired_dm(request))

    # --- certificates ---------------------------------------------------------------------

    def certificate(self, issued: Issued) -> None:
        """The certificate to its holder by DM."""
        request, certificate = issued.request, issued.certificate
        self.metrics.certificates.labels(kind=request.kind.value).inc()
        self.metrics.signing.observe(issued.seconds)
        dm = views.certificate_dm(certificate, request, tz=self.slack.tz(request.requester))
        self.slack.dm(request.requester, dm.text, dm.blocks)
        self.home.refresh(request.requester)

    def delivered(self, issued: Issued) -> None:
        """A certificate issued on a retry: DM it and note it on the request."""
        self.certificate(issued)
        spec = issued.certificate.spec
        if issued.request.kind is Kind.REQUEST:
            self._in_thread(issued.request.id, texts.issued_note(spec.serial, spec.valid_before))
        self.refresh(issued.request.id)  # the card, or the break-glass alert, shows the serial

    def revoked(self, done: list[Revoked]) -> None:
        """Every revocation, however it was made: the card or alert says so, the thread hears
        why, the holder is told. Once per certificate across replicas (a claimed notice)."""
        for item in done:
            if item.newly:
                self.metrics.revocations.inc()
                if not item.host:  # a host certificate has no request, card or holder
                    self.announce_revocation(item.serial)

    def announce_revocation(self, serial: int) -> None:
        if not self.messages.claim_revocation_notice(serial, now=self.access.clock()):
            return  # announced already, or being announced
        certificate = lookup.certificate(self.access, serial)
        request = lookup.request(self.access, certificate.request_id)[0] \
            if certificate.request_id else None
        if request is not None:
            self.refresh(request.id)
            note = views.revoked_note(serial, certificate.revoked_by or "an operator",
                                      certificate.revoke_reason)
            self._in_thread(request.id, note.text, note.blocks)
        if certificate.holder:
            dm = views.revocation_dm(certificate, request.target if request else None)
            self._quietly(self.slack.dm, certificate.holder, dm.text, dm.blocks)
            self.home.refresh(certificate.holder)

    def announce_revocations(self) -> None:
        """Revocations made where Slack is not (`vouch revoke`, a replica that died): now."""
        for serial in self.messages.unannounced_revocations(now=self.access.clock()):
            self.announce_revocation(serial)

    def cancelled_unissued(self, by: str, request: Request, reason: str | None) -> None:
        """An approved request revoked before its certificate existed: none will be."""
        note = views.cancelled_unissued_note(by, reason)
        self._in_thread(request.id, note.text, note.blocks)
        if by != request.requester:
            self._quietly(self.slack.dm, request.requester, note.text)
        self.refresh(request.id)
        self.home.refresh(request.requester)

    def reminder(self, certificate: StoredCertificate) -> None:
        request = lookup.request(self.access, certificate.request_id)[0] \
            if certificate.request_id else None
        dm = views.reminder_dm(request, certificate, tz=self.slack.tz(certificate.holder))
        self._quietly(self.slack.dm, certificate.holder, dm.text, dm.blocks)

    # --- break-glass ----------------------------------------------------------------------

    def breakglass_used(self, request: Request) -> None:
        """The alert, before any certificate is delivered. If Slack refuses it, it stays queued
        (the posting sweep retries until it is posted) and the channel is reported unreachable."""
        self.metrics.requests.labels(outcome="breakglass").inc()
        self.messages.expect(request.id, self.access.policy.security_channel)
        self.post_alert(request.id)
        self.home.refresh_about(request)  # the admins' unreviewed uses

    def post_alert(self, request_id: str) -> bool:
        channel = self.messages.claim(request_id, now=self.access.clock(), lease=POST_LEASE)
        if channel is None:
            return False  # posted already, or another worker is posting it
        request, certificate = lookup.request(self.access, request_id)
        alert = self._alert(request, certificate)
        try:
            posted_channel, ts = self.slack.post(channel, alert.text, alert.blocks)
        except SlackUnavailable as exc:
            self.messages.release(request_id)
            self._security_unreachable(f"the break-glass alert for {request_id} is queued and "
                                       f"retried: {exc.message}")
            return False
        self.messages.posted(request_id, posted_channel, ts)
        self._security_reachable()
        return True

    def offboarded(self, done: Offboarded) -> None:
        """The security channel hears who lost what; cards and Homes follow."""
        if not done.anything:
            return
        self.revoked(done.revoked)
        for request in done.cancelled:
            self.refresh(request.id)
        self.home.refresh(done.user)
        self.home.refresh_about(*done.cancelled)
        self._to_security(views.offboarded(done), what=f"the offboarding of {done.user}")

    def claim_digest(self, slot: datetime) -> bool:
        """True for the one worker that posts the digest of `slot`'s day."""
        return self.access.policy.security_channel is not None and \
            self.messages.claim_once(f"digest:{slot:%Y-%m-%d}", now=self.access.clock())

    def digest(self, activity: Activity, slot: datetime) -> bool:
        """The day's digest to the security channel (claimed by claim_digest); given back for
        the next try if Slack refuses it."""
        if not self._to_security(views.digest(activity, slot), what="the daily digest"):
            self.messages.release_once(f"digest:{slot:%Y-%m-%d}")
            return False
        return True

    def _to_security(self, said: views.Rendered, *, what: str) -> bool:
        """Post to the security channel; False (and the channel reported unreachable) if Slack
        refused."""
        try:
            self.slack.post(self.access.policy.security_channel, said.text, said.blocks)
        except SlackUnavailable as exc:
            self._security_unreachable(f"{what} was not posted: {exc.message}")
            return False
        self._security_reachable()
        return True

    def breakglass_refused(self, user: str, target: str, why: str) -> None:
        """A refused attempt is the security channel's business too."""
        if self.access.policy.security_channel:
            self._to_security(views.breakglass_refused(user, target, why),
                              what=f"a refused break-glass attempt by {user}")

    def reviewed(self, request: Request, *, clicked: tuple[str, str] | None) -> None:
        """Re-render the break-glass alert as reviewed: where it was recorded, else the message
        whose button was clicked (its record may have failed after the alert went out)."""
        where = self.messages.get(request.id) or clicked
        if where is None:
            return
        request, certificate = lookup.request(self.access, request.id)
        alert = self._alert(request, certificate)
        self._quietly(self.slack.update, *where, alert.text, alert.blocks)
        self.home.refresh_about(request)

    def escalated(self, request: Request) -> bool:
        """Post an escalation; False (and the channel reported unreachable) if Slack refused."""
        policy = self.access.policy  # break-glass needs a security channel (policy_file)
        text = texts.escalation(request, self._review_within(), sorted(policy.admins.users))
        return self._to_security(views.Rendered(text, None),
                                 what=f"the escalation of {request.id} (retried)")

    def check_security_channel(self) -> str | None:
        """Whether the policy's security channel can be posted to (at start and on reload)."""
        channel = self.access.policy.security_channel
        if channel is None:
            self._security_reachable()
            return None
        problem = self.slack.channel_problem(channel)
        if problem is None:
            self._security_reachable()
        else:
            self._security_unreachable(problem)
        return problem

    def _alert(self, request: Request, certificate: StoredCertificate | None) -> views.Rendered:
        return views.breakglass_alert(request, certificate, review_within=self._review_within())

    def _security_unreachable(self, why: str) -> None:
        self.security_problem = (f"the security channel {self.access.policy.security_channel} "
                                 f"cannot be posted to: {why}")
        log.error("%s", self.security_problem)

    def _security_reachable(self) -> None:
        if self.security_problem is not None:
            log.info("the security channel can be posted to again")
        self.security_problem = None

    # --- plumbing -------------------------------------------------------------------------

    def _review_within(self) -> str:
        breakglass = self.access.policy.breakglass
        return format_duration(breakglass.review_within) if breakglass else "soon"

    def _in_thread(self, request_id: str, text: str, blocks: list | None = None) -> None:
        where = self.messages.get(request_id)
        if where is not None:
            self._quietly(self.slack.post, where[0], text, blocks, thread_ts=where[1])

    def _group_mentions(self) -> dict[str, str]:
        try:
            return {handle: f"<!subteam^{gid}|{handle}>"
                    for handle, gid in self.slack.group_ids().items()}
        except SlackUnavailable:
            return {}

    @staticmethod
    def _quietly(call: Callable, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except SlackUnavailable as exc:
            log.warning("Slack notification failed: %s", exc.detail)
            return None
