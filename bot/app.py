"""The slack-bolt app: every request's signature verified, acked at once, the work done lazily
(bot.handlers)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App
from slack_bolt.error import BoltUnhandledRequestError
from slack_sdk import WebClient

from bot import commands, views
from bot.handlers import Bot


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
    app.action(views.APPROVE)(ack=bot.ack_empty, lazy=[bot.on_vote])
    app.action(views.DENY)(ack=bot.ack_empty, lazy=[bot.on_vote])
    app.action(views.REVIEW)(ack=bot.ack_empty, lazy=[bot.on_review])
    app.view(views.REQUEST_FORM)(ack=bot.ack_form, lazy=[bot.on_form])
    app.event("user_change")(bot.on_user_change)

    def on_error(error, body) -> None:
        if isinstance(error, BoltUnhandledRequestError):
            bot.on_unhandled(body)
        else:
            bot.on_error(error, body)

    app.error(on_error)
    return app
