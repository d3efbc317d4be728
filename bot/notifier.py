"""What Slack shows after something happened: one method per outcome, each turning it into the
messages people see (texts in bot.texts and bot.views). Nothing here decides anything; a failed
notification is logged and never undoes what was decided."""

from __future__ import annotations

import logging
from collections.abc import Callable

from access import lookup
from access.context import Access
from access.durations import format_duration
from access.issuing import Issued
from access.ports import StoredCertificate
from access.requests import Kind, Request, State
from access.revoking import Revoked
from access.voting import VoteResult
from bot import texts, views
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

    def request_opened(self, actor: Actor, request: Request, channel: str) -> None:
        """Queue the request's message (posts to one channel go out one at a time), tell the
        requester where it went, and open their DM now: the certificate's delivery is then one
        Web API call."""
        self.messages.expect(request.id, channel)
        self.outbox.submit(channel, lambda: self.post_request(request.id))
        self.tell(actor, texts.request_stored(request, channel))
        self._quietly(self.slack.dm_channel, request.requester)

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
        self._quietly(self.slack.post, posted_channel,
                      views.approvers_note(target, self._group_mentions()), thread_ts=ts)
        return True

    def repost_unposted(self) -> None:
        """Requests stored while Slack was failing (or by a replica that died): post them now."""
        fallback = self.access.policy.requests_channel
        for request_id, channel in self.messages.unposted(now=self.access.clock(), lease=POST_LEASE):
            if channel is None:  # stored, but its channel never was (a crash in between)
                if fallback is None:
                    continue  # nowhere known to post it
                channel = fallback
                self.messages.expect(request_id, channel)
            self.outbox.submit(channel, lambda r=request_id: self.post_request(r))

    def refresh(self, request_id: str) -> None:
        """Re-render a request's card from its state (break-glass uses have an alert instead)."""
        where = self.messages.get(request_id)
        if where is None:
            return
        request, certificate = lookup.request(self.access, request_id)
        if request.kind is Kind.BREAKGLASS:
            return
        card = self._card(request, certificate)
        self._quietly(self.slack.update, *where, card.text, card.blocks)

    def _card(self, request: Request, certificate: StoredCertificate | None) -> views.Rendered:
        """The request's card, with its target as the policy has it now."""
        target = self.access.policy.target(request.target)
        return views.request_message(
            request, certificate, principals=target.principals if target else (),
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

    def signing_failed(self, request_id: str) -> None:
        request, _ = lookup.request(self.access, request_id)
        self._quietly(self.slack.dm, request.requester, texts.signing_failed_dm(request))
        self._in_thread(request_id, texts.SIGNING_FAILED_NOTE)
        self.refresh(request_id)

    def expired(self, request: Request) -> None:
        self.metrics.requests.labels(outcome="expired").inc()
        self.refresh(request.id)
        self._quietly(self.slack.dm, request.requester, texts.expired_dm(request))

    # --- certificates ---------------------------------------------------------------------

    def certificate(self, issued: Issued) -> None:
        """The certificate to its holder by DM."""
        request, certificate = issued.request, issued.certificate
        self.metrics.certificates.labels(kind=request.kind.value).inc()
        self.metrics.signing.observe(issued.seconds)
        dm = views.certificate_dm(certificate, request, tz=self.slack.tz(request.requester))
        self.slack.dm(request.requester, dm.text, dm.blocks)

    def delivered(self, issued: Issued) -> None:
        """A certificate issued on a retry: DM it and note it on the request."""
        self.certificate(issued)
        spec = issued.certificate.spec
        if issued.request.kind is Kind.REQUEST:
            self._in_thread(issued.request.id, texts.issued_note(spec.serial, spec.valid_before))
        self.refresh(issued.request.id)

    def revoked(self, by: str, done: list[Revoked], reason: str | None) -> None:
        for item in done:
            if item.newly:
                self.metrics.revocations.inc()
            if item.request_id:
                self.refresh(item.request_id)
                if item.newly:
                    note = views.revoked_note(item.serial, by, reason)
                    self._in_thread(item.request_id, note.text, note.blocks)

    def reminder(self, certificate: StoredCertificate) -> None:
        target = None
        if certificate.request_id:
            target = lookup.request(self.access, certificate.request_id)[0].target
        self._quietly(self.slack.dm, certificate.holder,
                      texts.reminder_dm(target, certificate.serial, certificate.valid_before,
                                        self.slack.tz(certificate.holder)))

    # --- break-glass ----------------------------------------------------------------------

    def breakglass_used(self, issued: Issued) -> None:
        """The certificate to its holder, and the alert to the security channel."""
        self.certificate(issued)
        self.metrics.requests.labels(outcome="breakglass").inc()
        request, certificate = lookup.request(self.access, issued.request.id)
        alert = views.breakglass_alert(request, certificate, review_within=self._review_within())
        channel, ts = self.slack.post(self.access.policy.security_channel, alert.text, alert.blocks)
        self.messages.posted(request.id, channel, ts)

    def reviewed(self, request: Request, *, clicked: tuple[str, str] | None) -> None:
        """Re-render the break-glass alert as reviewed: where it was recorded, else the message
        whose button was clicked (its record may have failed after the alert went out)."""
        where = self.messages.get(request.id) or clicked
        if where is None:
            return
        request, certificate = lookup.request(self.access, request.id)
        alert = views.breakglass_alert(request, certificate, review_within=self._review_within())
        self._quietly(self.slack.update, *where, alert.text, alert.blocks)

    def escalated(self, request: Request) -> None:
        policy = self.access.policy  # break-glass needs a security channel (policy_file)
        self._quietly(self.slack.post, policy.security_channel,
                      texts.escalation(request, self._review_within(), sorted(policy.admins.users)))

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
