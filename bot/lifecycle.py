"""The listeners of a request's life after it is posted: Cancel, Deny (with a reason), Approve
with a comment, Revoke (with a reason), Extend and Request again, and the break-glass alert's
Mark reviewed (with a note) and Revoke now. A button that needs words opens a modal; its
submission does the work. Who may do what is decided by the use cases, as everywhere."""

from __future__ import annotations

from access import breakglass, lookup, voting
from access.errors import InvalidTransition, PolicyRefusal
from access.requests import State
from bot import modals, payloads, texts
from bot.handlers import Bot
from bot.modals import Modal
from bot.payloads import Actor, Click


class Lifecycle:
    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.access = bot.access
        self.notify = bot.notify

    # --- acks -----------------------------------------------------------------------------

    @staticmethod
    def ack_required_note(ack, body) -> None:
        _ack_note(ack, body, required=True)

    @staticmethod
    def ack_optional_note(ack, body) -> None:
        _ack_note(ack, body, required=False)

    # --- buttons --------------------------------------------------------------------------

    def on_cancel(self, body) -> None:
        click = payloads.click(body)

        def cancel() -> None:
            cancelled = voting.cancel(self.access, click.value, user=click.actor.user)
            self.notify.cancelled(cancelled)
            self.notify.tell(click.actor, texts.cancelled_reply(cancelled))

        self.bot.acting(click.actor, f"cancel {click.value}", cancel)

    def on_deny(self, body) -> None:
        self._open(body, "deny", modals.deny_form, State.PENDING)

    def on_approve_with_comment(self, body) -> None:
        self._open(body, "approve", modals.approve_form, State.PENDING)

    def on_revoke(self, body) -> None:
        self._open(body, "revoke", modals.revoke_form, State.ISSUED, State.APPROVED)

    def on_review(self, body) -> None:
        click = payloads.click(body)

        def review_form() -> None:
            self._admin(click.actor.user, texts.ONLY_ADMINS_REVIEW)
            request, _ = lookup.request(self.access, click.value)
            self.bot.slack.open_view(click.actor.trigger_id,
                                     modals.review_form(request, _where(click)))

        self.bot.acting(click.actor, f"review {click.value}", review_form)

    def on_revoke_now(self, body) -> None:
        click = payloads.click(body)

        def revoke_now() -> None:
            self._admin(click.actor.user, texts.ONLY_ADMINS_REVOKE_NOW)
            self.bot.revoke(click.actor, click.value, "revoked from the break-glass alert")

        self.bot.acting(click.actor, f"revoke {click.value} now", revoke_now)

    def on_extend(self, body) -> None:
        self._again(body, extends=True)

    def on_request_again(self, body) -> None:
        self._again(body, extends=False)

    # --- modal submissions ----------------------------------------------------------------

    def on_deny_form(self, body) -> None:
        form, about = _submitted(body)
        if modals.note_errors(form.values, required=True):
            return  # shown under the field by the ack; nothing to do
        doing = f"deny {about.request}"
        self.bot.acting(form.actor, doing, lambda: self.bot.decide(
            form.actor, about.request or "", doing, approve=False,
            comment=form.values.get(modals.NOTE)))

    def on_approve_form(self, body) -> None:
        form, about = _submitted(body)
        if modals.note_errors(form.values, required=False):
            return  # shown under the field by the ack; nothing to do
        doing = f"approve {about.request}"
        self.bot.acting(form.actor, doing, lambda: self.bot.decide(
            form.actor, about.request or "", doing, approve=True,
            comment=form.values.get(modals.NOTE) or None))

    def on_revoke_form(self, body) -> None:
        form, about = _submitted(body)
        if modals.note_errors(form.values, required=True):
            return  # shown under the field by the ack; nothing to do
        self.bot.acting(form.actor, f"revoke {about.request}", lambda: self.bot.revoke(
            form.actor, about.request or "", form.values.get(modals.NOTE) or ""))

    def on_review_form(self, body) -> None:
        form, about = _submitted(body)
        if modals.note_errors(form.values, required=True):
            return  # shown under the field by the ack; nothing to do

        def review() -> None:
            request = breakglass.review(self.access, about.request or "", reviewer=form.actor.user,
                                        note=form.values.get(modals.NOTE))
            clicked = (about.channel, about.ts) if about.channel and about.ts else None
            self.notify.reviewed(request, clicked=clicked)
            self.notify.tell(form.actor, texts.reviewed_reply(request))

        self.bot.acting(form.actor, f"review {about.request}", review)

    # --- helpers --------------------------------------------------------------------------

    def _open(self, body, doing: str, form, *states: State) -> None:
        """Open the modal `form` builds for the clicked request, if it is in one of `states`
        (else say what it is now: no modal for a decision already made)."""
        click = payloads.click(body)

        def open_modal() -> None:
            request, _ = lookup.request(self.access, click.value)
            if request.state not in states:
                raise InvalidTransition(f"this request is already {request.state.value}")
            self.bot.slack.open_view(click.actor.trigger_id, form(request, _where(click)))

        self.bot.acting(click.actor, f"{doing} {click.value}", open_modal)

    def _admin(self, user: str, refusal: str) -> None:
        """Refuse `user` unless an admin: for buttons that exist only for admins."""
        policy = self.access.policy
        if not policy.admins.includes(self.access.person(user, policy.admins)):
            raise PolicyRefusal(refusal)

    def _again(self, body, *, extends: bool) -> None:
        click = payloads.click(body)

        def open_form() -> None:
            earlier, _ = lookup.request(self.access, click.value)
            if earlier.requester != click.actor.user:
                raise PolicyRefusal(texts.NOT_YOURS_TO_EXTEND)
            self.bot.open_form(click.actor, prefill=earlier,
                               extends=earlier.id if extends else None)

        self.bot.acting(click.actor, f"{'extend' if extends else 'repeat'} {click.value}",
                        open_form)


def _where(click: Click) -> Modal:
    return Modal(request=click.value, channel=click.actor.channel, ts=click.message_ts)


def _submitted(body) -> tuple[payloads.Submission, Modal]:
    form = payloads.submission(body)
    about = Modal.read(form.private_metadata)
    # Answer where the button was clicked (ephemerally; by DM when that was a DM or a Home tab).
    actor = Actor(user=form.actor.user, team=form.actor.team, channel=about.channel)
    return payloads.Submission(actor, form.values, form.private_metadata), about


def _ack_note(ack, body, *, required: bool) -> None:
    errors = modals.note_errors(payloads.submission(body).values, required=required)
    if errors:
        ack(response_action="errors", errors=errors)
    else:
        ack()
