"""The slack-bolt app: listeners ack at once and do the work afterwards (lazy listeners).

Slack payload dicts are read only in the `_from_*` functions below; everything after them works
on neutral values. Authorization comes from the policy through the service, never from the
message a button sits in.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from slack_bolt import App
from slack_sdk import WebClient

from access.durations import format_duration, parse_duration
from access.policy import Policy
from access.requests import (AlreadyVoted, InvalidTransition, Kind, PolicyRefusal, State,
                             requestable_targets)
from access.service import AccessService, Issued
from bot import commands, views
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.slack import SlackGateway, SlackUnavailable
from ca.errors import BadInput, SignerUnavailable, VouchError

log = logging.getLogger("vouch.bot")


class Refused(VouchError):
    """The person may not use Vouch at all (guest, bot, deleted, other workspace)."""


@dataclass(frozen=True)
class Actor:
    """Who acted, and where an answer for their eyes only can go."""

    user: str
    team: str | None
    channel: str | None = None
    response_url: str | None = None
    trigger_id: str | None = None


@dataclass(frozen=True)
class Click:
    actor: Actor
    action_id: str
    request_id: str


def _from_command(body: dict) -> tuple[Actor, str, str]:
    actor = Actor(user=body.get("user_id", ""), team=body.get("team_id"),
                  channel=body.get("channel_id"), response_url=body.get("response_url"),
                  trigger_id=body.get("trigger_id"))
    return actor, body.get("command", ""), body.get("text", "")


def _from_action(body: dict) -> Click:
    user = body.get("user") or {}
    action = (body.get("actions") or [{}])[0]
    actor = Actor(user=user.get("id", ""), team=(body.get("team") or {}).get("id") or user.get("team_id"),
                  channel=(body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id"),
                  response_url=body.get("response_url"), trigger_id=body.get("trigger_id"))
    return Click(actor=actor, action_id=action.get("action_id", ""), request_id=str(action.get("value", "")))


def _from_view(body: dict) -> tuple[Actor, dict[str, str], str]:
    user = body.get("user") or {}
    view = body.get("view") or {}
    actor = Actor(user=user.get("id", ""), team=(body.get("team") or {}).get("id") or user.get("team_id"),
                  channel=view.get("private_metadata") or None)
    values = {}
    for block_id, actions in ((view.get("state") or {}).get("values") or {}).items():
        for element in actions.values():
            selected = element.get("selected_option")
            values[block_id] = (selected or {}).get("value") if selected is not None \
                else (element.get("value") or "")
    return actor, values, view.get("private_metadata") or ""


class Bot:
    def __init__(self, service: AccessService, gateway: SlackGateway, metrics: Metrics, *,
                 team_id: str, policy: Callable[[], Policy]) -> None:
        self.service = service
        self.slack = gateway
        self.metrics = metrics
        self.team_id = team_id
        self.policy = policy
        self.outbox = Outbox()
        self._remembered: set[str] = set()  # users recorded in the users table by this process

    # --- acks: no I/O, answered within milliseconds ---------------------------------------

    def ack_command(self, ack, body) -> None:
        actor, name, text = _from_command(body)
        if actor.team != self.team_id:
            ack(text="Vouch serves only its own workspace.")
            return
        parsed = commands.parse(name, text)
        if isinstance(parsed, commands.Help):
            ack(text=parsed.text())
        else:
            ack()

    def ack_empty(self, ack) -> None:
        ack()

    def ack_form(self, ack, body) -> None:
        _, values, _ = _from_view(body)
        errors = _form_errors(values)
        if errors:
            ack(response_action="errors", errors=errors)
        else:
            ack()

    # --- lazy listeners: the work ---------------------------------------------------------

    def on_command(self, body) -> None:
        actor, name, text = _from_command(body)
        parsed = commands.parse(name, text)
        if isinstance(parsed, commands.Help) or actor.team != self.team_id:
            return  # answered in the ack
        self._acting(actor, lambda: self._run(name, parsed, actor))

    def on_vote(self, body) -> None:
        click = _from_action(body)
        self._acting(click.actor, lambda: self._vote(click.actor, click.request_id,
                                                     approve=click.action_id == views.APPROVE))

    def on_review(self, body) -> None:
        click = _from_action(body)
        message_ts = (body.get("message") or {}).get("ts")

        def review() -> None:
            request = self.service.review(click.request_id, reviewer=click.actor.user)
            self._refresh_alert(request.id, click.actor.channel, message_ts)
            self._tell(click.actor, f"Marked break-glass use `{request.id}` as reviewed.")

        self._acting(click.actor, review)

    def on_form(self, body) -> None:
        actor, values, channel = _from_view(body)
        if _form_errors(values):
            return  # shown next to the fields by the ack; nothing to do

        def ask() -> None:
            wanted = commands.AskAccess(target=values.get("target", ""),
                                        duration=parse_duration(values.get("duration", "")),
                                        reason=values.get("reason", ""))
            self._ask(actor, wanted, key=values.get("key") or None, channel=channel or None)

        self._acting(actor, ask)

    def on_error(self, error, body) -> None:
        ref = secrets.token_hex(4)
        log.error("unhandled error in a listener (ref %s): %r", ref, error)

    # --- the commands ---------------------------------------------------------------------

    def _run(self, name: str, parsed: commands.Command, actor: Actor) -> None:
        if isinstance(parsed, commands.AskAccess):
            if name == "/ssh-breakglass":
                self._breakglass(actor, parsed)
            else:
                self._ask(actor, parsed, key=None, channel=actor.channel)
        elif isinstance(parsed, commands.OpenForm):
            self._open_form(actor)
        elif isinstance(parsed, commands.KeyAdd):
            key, newly = self.service.add_key(actor.user, parsed.line)
            verb = "Registered" if newly else "Already registered:"
            self._tell(actor, f"{verb} {key.describe()}. Certificates are issued for your newest "
                              "key unless you choose another in the /ssh-request form.")
        elif isinstance(parsed, commands.KeyList):
            self._list_keys(actor)
        elif isinstance(parsed, commands.KeyRemove):
            key = self.service.remove_key(actor.user, parsed.fingerprint)
            self._tell(actor, f"Removed key `{key.fingerprint}`. Certificates already issued for it "
                              "stay valid until they expire; revoke them with /ssh-revoke.")
        elif isinstance(parsed, commands.Revoke):
            self._revoke(actor, parsed)
        elif isinstance(parsed, commands.Status):
            self._status(actor)

    def _ask(self, actor: Actor, ask: commands.AskAccess, *, key: str | None, channel: str | None) -> None:
        policy = self.policy()
        target_channel = policy.requests_channel or channel
        if target_channel is None:
            raise BadInput("there is no channel to post the request in: set requests_channel in the policy")
        try:
            request = self.service.open_request(user=actor.user, target=ask.target, duration=ask.duration,
                                                reason=ask.reason, key_fingerprint=key,
                                                channel=target_channel)
        except PolicyRefusal:
            self.metrics.requests.labels(outcome="refused").inc()
            raise
        self.metrics.requests.labels(outcome="created").inc()
        self.outbox.submit(target_channel, lambda: self.post_request(request.id, target_channel))
        self._tell(actor, f"Request `{request.id}` for *{request.target}* "
                          f"({format_duration(request.duration)}) is stored and goes to "
                          f"<#{target_channel}> for approval. You'll get the certificate by DM "
                          "once it is approved.")

    def _breakglass(self, actor: Actor, ask: commands.AskAccess) -> None:
        issued = self.service.breakglass(user=actor.user, target=ask.target, duration=ask.duration,
                                         reason=ask.reason)
        self.metrics.requests.labels(outcome="breakglass").inc()
        self.deliver(issued)
        policy = self.policy()
        request, info = self.service.get(issued.request.id)
        review = format_duration(policy.breakglass.review_within) if policy.breakglass else "soon"
        alert = views.breakglass_alert(request, info, review_within=review)
        channel, ts = self.slack.post(policy.security_channel, alert.text, alert.blocks)
        self.service.set_message(request.id, channel=channel, ts=ts)
        self._tell(actor, f"Break-glass certificate for *{request.target}* sent by DM. The security "
                          "channel was alerted and an admin will review this use.")

    def _open_form(self, actor: Actor) -> None:
        policy = self.policy()
        keys = self.service.list_keys(actor.user)
        if not keys:
            raise PolicyRefusal("you have no registered SSH public key: add one with "
                                "`/ssh-key add ssh-ed25519 AAAA…` first")
        targets = requestable_targets(policy, actor.user, self.service.directory)
        if not targets:
            raise PolicyRefusal("the policy lets you request no target")
        options = [(f"{k.key_type} {k.fingerprint[:30]}… {k.comment}", k.fingerprint) for k in keys]
        self.slack.open_view(actor.trigger_id, views.request_form(policy, targets, options,
                                                                  actor.channel or ""))

    def _list_keys(self, actor: Actor) -> None:
        keys = self.service.list_keys(actor.user)
        if not keys:
            self._tell(actor, "You have no registered keys. Add one with `/ssh-key add <public key>`.")
            return
        lines = [f"• `{k.fingerprint}` {k.key_type} {k.comment} (added {k.added_at:%Y-%m-%d})"
                 + (" — used by default" if i == 0 else "") for i, k in enumerate(keys)]
        self._tell(actor, "Your keys, newest first:\n" + "\n".join(lines))

    def _revoke(self, actor: Actor, revoke: commands.Revoke) -> None:
        done = self.service.revoke(revoke.reference, actor=actor.user, reason=revoke.reason,
                                   as_user=actor.user)
        for item in done:
            if item.newly:
                self.metrics.revocations.inc()
            if item.request_id:
                self.refresh(item.request_id)
                _, info = self.service.get(item.request_id)
                if info.ts and item.newly:
                    self.quietly(self.slack.post, info.channel,
                               f"Certificate serial {item.serial} revoked by {views.mention(actor.user)}"
                               + (f": {revoke.reason}" if revoke.reason else "."), thread_ts=info.ts)
        serials = ", ".join(str(i.serial) for i in done)
        self._tell(actor, f"Revoked certificate serial {serials}. Hosts refuse it from their next "
                          "revocation-list refresh.")

    def _status(self, actor: Actor) -> None:
        pending, live = self.service.status(actor.user)
        tz = self.slack.user(actor.user).tz
        lines = [f"• `{r.id}` {r.target} for {format_duration(r.duration)} — pending" for r in pending]
        lines += [f"• serial {c.serial}: {', '.join(c.principals)} until "
                  f"{views.local_time(c.valid_before, tz)}" for c in live]
        self._tell(actor, "\n".join(["Your pending requests and live certificates:", *lines])
                   if lines else "You have no pending requests and no live certificates.")

    # --- votes and certificates -----------------------------------------------------------

    def _vote(self, actor: Actor, request_id: str, *, approve: bool) -> None:
        policy = self.policy()
        try:
            result = self.service.vote(request_id, approver=actor.user, approve=approve)
        except AlreadyVoted:
            self._tell(actor, "You have already voted on this request; your vote counts once.")
            return
        except InvalidTransition as exc:
            self._tell(actor, f"Nothing to do: {exc.message}.")
            return
        except SignerUnavailable as exc:
            # The approval stands; the certificate follows when the CA answers again.
            self.metrics.approvals.labels(decision="approve").inc()
            self._signing_failed(request_id, exc)
            return
        self.metrics.approvals.labels(decision="approve" if approve else "deny").inc()
        request = result.request
        target = policy.target(request.target)
        required = target.approvals_required if target else 1
        if result.issued is not None:
            self._send_certificate(result.issued)
        _, info = self.service.get(request_id)
        if info.ts:
            self.quietly(self.slack.post, info.channel, views.vote_note(actor.user, approve, request, required),
                       thread_ts=info.ts)
            if result.issued is not None:
                spec = result.issued.certificate.spec
                self.quietly(self.slack.post, info.channel, views.issued_note(spec.serial, spec.valid_before),
                           thread_ts=info.ts)
        if result.decided and request.state is State.DENIED:
            self.quietly(self.slack.dm, request.requester,
                       f"Your request `{request.id}` for {request.target} was denied by "
                       f"{views.mention(actor.user)}.")
        self.refresh(request_id)

    def _signing_failed(self, request_id: str, error: SignerUnavailable) -> None:
        request, info = self.service.get(request_id)
        log.warning("signing failed for %s: %s", request_id, error.detail)
        self.quietly(self.slack.dm, request.requester,
                   f"Your request `{request.id}` for {request.target} is approved, but the CA could "
                   "not sign right now. Vouch retries automatically and sends the certificate here.")
        if info.ts:
            self.quietly(self.slack.post, info.channel, "Approved, but signing failed; Vouch will retry.",
                       thread_ts=info.ts)
        self.refresh(request_id)

    def deliver(self, issued: Issued) -> None:
        """DM the certificate to its holder and note it in the request's thread."""
        self._send_certificate(issued)
        request, spec = issued.request, issued.certificate.spec
        _, info = self.service.get(request.id)
        if info.ts and request.kind is Kind.REQUEST:
            self.quietly(self.slack.post, info.channel, views.issued_note(spec.serial, spec.valid_before),
                       thread_ts=info.ts)

    def _send_certificate(self, issued: Issued) -> None:
        request, certificate = issued.request, issued.certificate
        kind = "breakglass" if request.kind is Kind.BREAKGLASS else "request"
        self.metrics.certificates.labels(kind=kind).inc()
        self.metrics.signing.observe(issued.seconds)
        tz = None
        try:
            tz = self.slack.user(request.requester).tz
        except SlackUnavailable:
            pass
        dm = views.certificate_dm(certificate, request, tz=tz)
        self.slack.dm(request.requester, dm.text, dm.blocks)

    def post_request(self, request_id: str, channel: str) -> bool:
        """Post the request message and call the approvers in its thread. False if Slack failed
        (the posting sweep tries again) or another worker is posting it."""
        if not self.service.claim_post(request_id):
            return False
        policy = self.policy()
        request, info = self.service.get(request_id)
        target = policy.target(request.target)
        if target is None or request.state is not State.PENDING:
            return False
        rendered = views.request_message(request, info, principals=target.principals,
                                         approvals_required=target.approvals_required)
        try:
            posted_channel, ts = self.slack.post(channel, rendered.text, rendered.blocks)
        except SlackUnavailable as exc:
            log.warning("could not post request %s: %s", request_id, exc.detail)
            self.service.release_post(request_id)
            return False
        self.service.set_message(request_id, channel=posted_channel, ts=ts)
        groups = self._group_mentions()
        self.quietly(self.slack.post, posted_channel, views.approvers_note(target, groups), thread_ts=ts)
        return True

    def refresh(self, request_id: str) -> None:
        """Re-render the request message from its current state."""
        request, info = self.service.get(request_id)
        if not info.ts or request.kind is Kind.BREAKGLASS:
            return
        target = self.policy().target(request.target)
        principals = target.principals if target else ()
        required = target.approvals_required if target else 1
        rendered = views.request_message(request, info, principals=principals, approvals_required=required)
        self.quietly(self.slack.update, info.channel, info.ts, rendered.text, rendered.blocks)

    def _refresh_alert(self, request_id: str, channel: str | None, ts: str | None) -> None:
        request, info = self.service.get(request_id)
        policy = self.policy()
        review = format_duration(policy.breakglass.review_within) if policy.breakglass else "soon"
        alert = views.breakglass_alert(request, info, review_within=review)
        channel, ts = info.channel or channel, info.ts or ts
        if channel and ts:
            self.quietly(self.slack.update, channel, ts, alert.text, alert.blocks)

    def _group_mentions(self) -> dict[str, str]:
        try:
            return {handle: f"<!subteam^{gid}|{handle}>" for handle, gid in self.slack.group_ids().items()}
        except SlackUnavailable:
            return {}

    # --- plumbing -------------------------------------------------------------------------

    def _acting(self, actor: Actor, work: Callable[[], None]) -> None:
        """Check who acted, then do the work; any refusal goes back to them, ephemerally."""
        try:
            self._check(actor)
            work()
        except VouchError as exc:
            self._tell(actor, exc.message[:1].upper() + exc.message[1:])
        except Exception:  # noqa: BLE001 - the person gets a reference, the log gets the rest
            ref = secrets.token_hex(4)
            log.exception("error handling a Slack request (ref %s)", ref)
            self._tell(actor, f"Something went wrong on Vouch's side (ref `{ref}`). "
                              "Try again, or ask an admin to look up the reference.")

    def _check(self, actor: Actor):
        if actor.team != self.team_id:
            raise Refused("Vouch serves only its own workspace.")
        user = self.slack.user(actor.user)
        if user.is_bot:
            raise Refused("Bots cannot use Vouch.")
        if user.deleted:
            raise Refused("Deactivated accounts cannot use Vouch.")
        if user.restricted:
            raise Refused("Guests cannot request, approve or revoke access with Vouch.")
        if user.team_id and user.team_id != self.team_id:
            raise Refused("Vouch serves only its own workspace.")
        if user.id not in self._remembered:
            self.service.remember_user(user.id, name=user.name, tz=user.tz)
            self._remembered.add(user.id)
        return user

    def _tell(self, actor: Actor, text: str) -> None:
        if actor.response_url:
            self.slack.respond(actor.response_url, text)
        elif actor.channel and not actor.channel.startswith("D"):
            self.quietly(self.slack.ephemeral, actor.channel, actor.user, text)
        else:
            self.quietly(self.slack.dm, actor.user, text)

    @staticmethod
    def quietly(call, *args, **kwargs):
        """A notification that may fail without undoing what was decided (it is logged)."""
        try:
            return call(*args, **kwargs)
        except SlackUnavailable as exc:
            log.warning("Slack notification failed: %s", exc.detail)
            return None


def _form_errors(values: dict[str, str]) -> dict[str, str]:
    """The request form's problems by block, as Slack shows them next to the fields."""
    errors = {}
    try:
        parse_duration(values.get("duration", ""))
    except BadInput as exc:
        errors["duration"] = exc.message[:150]
    if not values.get("reason", "").strip():
        errors["reason"] = "Say why you need access: approvers see it."
    if not values.get("target"):
        errors["target"] = "Choose a target."
    return errors


def build_app(bot: Bot, client: WebClient, signing_secret: str, *, workers: int = 32) -> App:
    """A bolt App that verifies every request's signature, acks at once and works lazily."""
    app = App(client=client, signing_secret=signing_secret, process_before_response=True,
              token_verification_enabled=False, request_verification_enabled=True,
              listener_executor=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vouch-lazy"),
              raise_error_for_unhandled_request=False)
    for name in commands.USAGE:
        app.command(name)(ack=bot.ack_command, lazy=[bot.on_command])
    app.action(views.APPROVE)(ack=bot.ack_empty, lazy=[bot.on_vote])
    app.action(views.DENY)(ack=bot.ack_empty, lazy=[bot.on_vote])
    app.action(views.REVIEW)(ack=bot.ack_empty, lazy=[bot.on_review])
    app.view(views.REQUEST_FORM)(ack=bot.ack_form, lazy=[bot.on_form])
    app.error(bot.on_error)
    return app

