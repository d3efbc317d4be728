"""Requests from the terminal (`vouch request`, `vouch ssh` through vouch.api): the same use
cases, cards, approvers and refusals as the slash commands, for a person identified by a
signature with their registered SSH key instead of by Slack."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from access import lookup, voting
from access.errors import BadInput
from access.ports import StoredCertificate
from access.requests import Request
from bot import commands, texts
from bot.handlers import Bot
from bot.payloads import Actor
from bot.slack import SlackUnavailable


class NotYours(BadInput):
    """Another person's request, or none at all: the terminal is never told which."""


@dataclass(frozen=True)
class Where:
    """Where a request waits for its approvers."""

    channel: str | None  # Slack channel ID
    channel_name: str | None  # "#access-requests", when Slack says


class Terminal:
    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    def check(self, user: str) -> None:
        """Refused (a guest, a bot, deactivated) exactly as in Slack; SlackUnavailable when
        Slack cannot say, and then nothing is done (fail closed)."""
        self.bot.check_actor(Actor(user=user, team=self.bot.team_id))

    def ask(self, user: str, *, target: str, duration: timedelta, reason: str,
            key_fingerprint: str) -> Request:
        """A request for the key that signed the call: stored, then posted like /ssh-request's
        (its card says the key was proven)."""
        ask = commands.AskAccess(target=target, duration=duration, reason=reason)
        return self.bot.ask_access(Actor(user=user, team=self.bot.team_id), ask,
                                   key=key_fingerprint, channel=None, key_proven=True)

    def get(self, user: str, request_id: str) -> tuple[Request, StoredCertificate | None]:
        try:
            request, certificate = lookup.request(self.bot.access, request_id)
        except BadInput:
            raise NotYours(texts.not_your_request(request_id)) from None
        if request.requester != user:
            raise NotYours(texts.not_your_request(request_id))
        return request, certificate

    def cancel(self, user: str, request_id: str) -> Request:
        self.get(user, request_id)
        cancelled = voting.cancel(self.bot.access, request_id, user=user)
        self.bot.notify.cancelled(cancelled)
        return cancelled

    def where(self, request: Request) -> Where:
        posted = self.bot.notify.messages.get(request.id)
        channel = posted[0] if posted else self.bot.access.policy.requests_channel
        return Where(channel, self.bot.slack.channel_name(channel) if channel else None)

    def name(self, user: str) -> str:
        """A person's Slack name for the terminal; their ID when Slack cannot say."""
        try:
            return self.bot.slack.user(user).name or user
        except SlackUnavailable:
            return user
