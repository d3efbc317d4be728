"""The slack-bolt app: every request's signature verified, acked at once, the work done lazily
(bot.handlers)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App
from slack_bolt.error import BoltUnhandledRequestError
from slack_sdk import WebClient

from bot import commands, modals, views
from bot.handlers import Bot
from bot.lifecycle import Lifecycle


def build_app(bot: Bot, client: WebClient, signing_secret: str, *, workers: int = 32) -> App:
    # bolt gives each of its loggers the level of the one passed here, else the root's (INFO, at
    # which it logs a whole request body when it finds a signature wrong).
    app = App(client=client, signing_secret=signing_secret, process_before_response=True,
              token_verification_enabled=False, request_verification_enabled=True,
              listener_executor=ThreadPoolExecutor(max_workers=workers,
                                                   thread_name_prefix="vouch-lazy"),
              logger=logging.getLogger("slack_bolt"),
              # to on_error, not to bolt's warning: that one quotes typed values over many lines
              raise_error_for_unhandled_request=True)
    for name in commands.USAGE:
        app.command(name)(ack=bot.ack_command, lazy=[bot.on_command])
    life = Lifecycle(bot)
    app.action(views.APPROVE)(ack=bot.ack_empty, lazy=[bot.on_approve])
    for action_id, listener in ((views.DENY, life.on_deny),
                                (views.APPROVE_WITH_COMMENT, life.on_approve_with_comment),
                                (views.CANCEL, life.on_cancel), (views.REVOKE, life.on_revoke),
                                (views.REVIEW, life.on_review), (views.REVOKE_NOW, life.on_revoke_now),
                                (views.EXTEND, life.on_extend),
                                (views.REQUEST_AGAIN, life.on_request_again)):
        app.action(action_id)(ack=bot.ack_empty, lazy=[listener])
    app.view(modals.REQUEST_FORM)(ack=bot.ack_form, lazy=[bot.on_form])
    for callback_id, ack, listener in (
            (modals.DENY_FORM, life.ack_required_note, life.on_deny_form),
            (modals.APPROVE_FORM, life.ack_optional_note, life.on_approve_form),
            (modals.REVOKE_FORM, life.ack_required_note, life.on_revoke_form),
            (modals.REVIEW_FORM, life.ack_required_note, life.on_review_form)):
        app.view(callback_id)(ack=ack, lazy=[listener])
    app.event("user_change")(bot.on_user_change)
    app.event("app_home_opened")(bot.on_home_opened)

    def on_error(error, body) -> None:
        if isinstance(error, BoltUnhandledRequestError):
            bot.on_unhandled(body)
        else:
            bot.on_error(error, body)

    app.error(on_error)
    return app
