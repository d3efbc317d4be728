"""The bolt listeners: acks answer at once with no I/O; the lazy part checks who acted, runs the
use case, and hands the outcome to the notifier. Authorization comes from the policy through the
use cases, never from the message a button sits in."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from access import breakglass, keys, offboarding, opening, revoking, users, voting
from access.context import Access
from access.durations import parse_duration
from access.errors import (AlreadyVoted, BadInput, InvalidTransition, IssueRefused,
                           PolicyRefusal, SignerUnavailable, VouchError)
from access.requests import Request, requestable_targets
from bot import commands, modals, payloads, texts
from bot.metrics import Metrics
from bot.notifier import Notifier
from bot.payloads import Actor
from bot.slack import SlackGateway

log = logging.getLogger("vouch.bot")


class Refused(VouchError):
    """The person may not use Vouch at all (guest, bot, deleted, other workspace)."""


class Bot:
    def __init__(self, access: Access, notifier: Notifier, slack: SlackGateway, metrics: Metrics,
                 *, team_id: str) -> None:
        self.access = access
        self.notify = notifier
        self.slack = slack
        self.metrics = metrics
        self.team_id = team_id
        self._remembered: set[str] = set()  # users recorded in the users table by this process

    # --- acks: no I/O, answered within milliseconds ---------------------------------------

    def ack_command(self, ack, body) -> None:
        command = payloads.command(body)
        if command.actor.team != self.team_id:
            ack(text=texts.OTHER_WORKSPACE)
            return
        parsed = commands.parse(command.name, command.text)
        if isinstance(parsed, commands.Help):
            ack(text=parsed.text())
        else:
            ack()

    def ack_empty(self, ack) -> None:
        ack()

    def ack_form(self, ack, body) -> None:
        errors = form_errors(payloads.submission(body).values)
        if errors:
            ack(response_action="errors", errors=errors)
        else:
            ack()

    # --- lazy listeners: the work ---------------------------------------------------------

    def on_command(self, body) -> None:
        command = payloads.command(body)
        parsed = commands.parse(command.name, command.text)
        if command.actor.team != self.team_id:  # answered in the ack; logged here, off its path
            _log_refusal(command.actor, command.name, texts.OTHER_WORKSPACE)
        elif isinstance(parsed, commands.Help):
            if parsed.problem:
                _log_refusal(command.actor, command.name, parsed.problem)
        else:
            self.acting(command.actor, command.name,
                         lambda: self._run(command.name, parsed, command.actor))

    def on_approve(self, body) -> None:
        click = payloads.click(body)
        doing = f"approve {click.value}"
        self.acting(click.actor, doing,
                    lambda: self.decide(click.actor, click.value, doing, approve=True))

    def on_form(self, body) -> None:
        form = payloads.submission(body)
        if form_errors(form.values):
            return  # shown next to the fields by the ack; nothing to do

        about = modals.Modal.read(form.private_metadata)
        actor = payloads.Actor(user=form.actor.user, team=form.actor.team, channel=about.channel)

        def ask() -> None:
            wanted = commands.AskAccess(target=form.values.get("target", ""),
                                        duration=parse_duration(form.values.get("duration", "")),
                                        reason=form.values.get("reason", ""))
            self.ask_access(actor, wanted, key=form.values.get("key") or None,
                            channel=about.channel, extends=about.extends)

        self.acting(actor, "the request form", ask)

    def on_user_change(self, body) -> None:
        """A user was deactivated, made a guest, renamed…: their next action is checked anew,
        not against what was cached about them; the deactivated and guests are offboarded."""
        user = payloads.changed_user(body)
        if not user:
            return
        self.slack.forget(user)
        try:
            why = texts.offboarding_reason(self.slack.user(user, fresh=True))
        except VouchError as exc:  # the hourly sweep asks again
            log.warning("user_change for %s: cannot look them up: %s", user, exc.detail)
            return
        if why is not None:
            self.notify.offboarded(offboarding.offboard(self.access, user, why=why))

    def on_home_opened(self, body) -> None:
        """The App Home tab: published for whoever opened it (events need no ack of their own)."""
        event = body.get("event") or {}
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        actor = payloads.Actor(user=str(event["user"]), team=body.get("team_id"))
        self.acting(actor, "open the App Home", lambda: self.notify.home.opened(actor.user))

    def on_unhandled(self, body) -> None:
        """A request no listener takes (a button from an older version, an event not subscribed
        to): Slack gets bolt's 404, the log one line naming it and nothing anyone typed."""
        log.warning("unhandled Slack request: %s", payloads.kind(body))

    def on_error(self, error, body) -> None:
        log.error("unhandled error in a listener (ref %s): %r", secrets.token_hex(4), error)

    # --- the commands ---------------------------------------------------------------------

    def _run(self, name: str, parsed: commands.Command, actor: Actor) -> None:
        if isinstance(parsed, commands.AskAccess):
            if name == "/ssh-breakglass":
                self._breakglass(actor, parsed)
            else:
                self.ask_access(actor, parsed, key=None, channel=actor.channel)
        elif isinstance(parsed, commands.OpenForm):
            self.open_form(actor)
        elif isinstance(parsed, commands.CancelRequest):
            cancelled = voting.cancel(self.access, parsed.request_id, user=actor.user)
            self.notify.cancelled(cancelled)
            self.notify.tell(actor, texts.cancelled_reply(cancelled))
        elif isinstance(parsed, commands.KeyAdd):
            key, newly = keys.add_key(self.access, actor.user, parsed.line)
            self.notify.tell(actor, texts.key_added(key, newly))
        elif isinstance(parsed, commands.KeyList):
            self.notify.tell(actor, texts.key_list(keys.list_keys(self.access, actor.user)))
        elif isinstance(parsed, commands.KeyRemove):
            removed = keys.remove_key(self.access, actor.user, parsed.fingerprint)
            self.notify.tell(actor, texts.key_removed(removed))
        elif isinstance(parsed, commands.Revoke):
            self.revoke(actor, parsed.reference, parsed.reason)
        elif isinstance(parsed, commands.Status):
            self.notify.tell(actor, texts.status(self.notify.home.lists(actor.user),
                                                 self.slack.tz(actor.user)))

    def revoke(self, actor: Actor, reference: str, reason: str | None) -> None:
        """`/ssh-revoke`, the card's Revoke and the alert's Revoke now: a certificate revoked,
        or an approved request with none yet cancelled; then everyone concerned is told."""
        done = revoking.revoke(self.access, reference, actor=actor.user, reason=reason,
                               as_user=actor.user)
        if done.cancelled is not None:
            self.notify.cancelled_unissued(actor.user, done.cancelled, reason)
            self.notify.tell(actor, texts.cancelled_unissued_reply(done.cancelled))
            return
        self.notify.revoked(done.certificates)
        self.notify.tell(actor, texts.revoked_reply(done.certificates))

    def ask_access(self, actor: Actor, ask: commands.AskAccess, *, key: str | None,
                   channel: str | None, extends: str | None = None,
                   key_proven: bool = False) -> Request:
        channel = self.access.policy.requests_channel or channel
        if channel is None:
            raise BadInput(texts.NO_CHANNEL)
        try:
            request = opening.open_request(self.access, user=actor.user, target=ask.target,
                                           duration=ask.duration, reason=ask.reason,
                                           key_fingerprint=key, extends=extends,
                                           key_proven=key_proven)
        except PolicyRefusal:
            self.metrics.requests.labels(outcome="refused").inc()
            raise
        self.metrics.requests.labels(outcome="created").inc()
        self.notify.request_opened(actor, request, channel, tell=not key_proven)
        return request

    def _breakglass(self, actor: Actor, ask: commands.AskAccess) -> None:
        """Stored, then the security channel alerted, then signed and delivered: nobody holds a
        break-glass certificate the security channel was not (or is not being) told about."""
        try:
            request = breakglass.open_breakglass(self.access, user=actor.user, target=ask.target,
                                                 duration=ask.duration, reason=ask.reason)
        except PolicyRefusal as exc:
            self.notify.breakglass_refused(actor.user, ask.target, exc.message)
            raise
        self.notify.breakglass_used(request)
        try:
            issued = breakglass.issue_breakglass(self.access, request)
        except SignerUnavailable as exc:
            log.warning("signing failed for break-glass %s: %s", request.id, exc.detail)
            self.notify.tell(actor, texts.signing_failed_dm(request))
            return
        self.notify.delivered(issued)
        self.notify.tell(actor, texts.breakglass_done(request))

    def open_form(self, actor: Actor, *, prefill=None, extends: str | None = None) -> None:
        """The request form; prefilled from an earlier request by Extend and Request again."""
        policy = self.access.policy
        registered = keys.list_keys(self.access, actor.user)
        if not registered:
            raise PolicyRefusal(texts.NO_KEY_FOR_FORM)
        targets = requestable_targets(policy, self.access.person(actor.user, *policy.requesters()))
        if not targets:
            raise PolicyRefusal(texts.NO_TARGET_FOR_FORM)
        options = [(f"{k.key_type} {k.fingerprint[:30]}… {k.comment}", k.fingerprint)
                   for k in registered]
        about = modals.Modal(channel=actor.channel if actor.channel and
                             not actor.channel.startswith("D") else None, extends=extends)
        self.slack.open_view(actor.trigger_id, modals.request_form(policy, targets, options, about,
                                                                   prefill=prefill))

    def decide(self, actor: Actor, request_id: str, doing: str, *, approve: bool,
               comment: str | None = None) -> None:
        """An approver's Approve (with an optional comment) or Deny (with its reason)."""
        try:
            result = voting.vote(self.access, request_id, approver=actor.user, approve=approve,
                                 comment=comment)
        except AlreadyVoted as exc:
            _log_refusal(actor, doing, exc)
            self.notify.tell(actor, texts.ALREADY_VOTED)
            return
        except InvalidTransition as exc:
            _log_refusal(actor, doing, exc)
            self.notify.tell(actor, texts.nothing_to_do(exc))
            return
        except IssueRefused:
            self.metrics.approvals.labels(decision="approve").inc()
            self.notify.issue_refused(request_id)
            return
        except SignerUnavailable as exc:
            # The approval stands; the certificate follows when the CA answers again.
            log.warning("signing failed for %s: %s", request_id, exc.detail)
            self.metrics.approvals.labels(decision="approve").inc()
            self.notify.signing_failed(request_id)
            return
        self.metrics.approvals.labels(decision="approve" if approve else "deny").inc()
        self.notify.voted(actor, result, approve=approve)

    # --- who acted ------------------------------------------------------------------------

    def acting(self, actor: Actor, doing: str, work: Callable[[], None]) -> None:
        """Check who acted, then do the work; any refusal goes back to them, ephemerally, and to
        the log as one line."""
        try:
            self.check_actor(actor)
            work()
        except VouchError as exc:
            _log_refusal(actor, doing, exc)
            self.notify.tell(actor, texts.refusal(exc))
        except Exception:  # noqa: BLE001 - the person gets a reference, the log gets the rest
            ref = secrets.token_hex(4)
            log.exception("error handling a Slack request (ref %s)", ref)
            self.notify.tell(actor, texts.internal_error(ref))

    def check_actor(self, actor: Actor) -> None:
        """Refused unless the person may use Vouch at all (and remembered by name)."""
        if actor.team != self.team_id:
            raise Refused(texts.OTHER_WORKSPACE)
        user = self.slack.user(actor.user)
        if user.is_bot:
            raise Refused(texts.BOT_USER)
        if user.deleted:
            raise Refused(texts.DEACTIVATED)
        if user.restricted:
            raise Refused(texts.GUEST)
        if user.team_id and user.team_id != self.team_id:
            raise Refused(texts.OTHER_WORKSPACE)
        if user.id not in self._remembered:
            users.remember(self.access, user.id, name=user.name, tz=user.tz)
            self._remembered.add(user.id)


def _log_refusal(actor: Actor, doing: str, why: VouchError | str) -> None:
    """One line for anything refused (or failed) to someone: who, what, and why."""
    if isinstance(why, VouchError) and not isinstance(
            why, (PolicyRefusal, BadInput, InvalidTransition, Refused)):
        log.warning("failed %s by %s: %s", doing, actor.user, why.detail)  # Slack or the signer
    else:
        log.info("refused %s by %s: %s", doing, actor.user, getattr(why, "detail", why))


def form_errors(values: dict[str, str]) -> dict[str, str]:
    """The request form's problems by block, as Slack shows them next to the fields."""
    errors = {}
    try:
        parse_duration(values.get("duration", ""))
    except BadInput as exc:
        errors["duration"] = exc.message[:150]
    if not values.get("reason", "").strip():
        errors["reason"] = texts.FORM_NO_REASON
    if not values.get("target"):
        errors["target"] = texts.FORM_NO_TARGET
    return errors
