"""The Slack Web API, as the rest of the bot needs it: neutral types in, neutral types out.

Calls are retried on 429 (honouring Retry-After), 5xx and connection errors by slack-sdk's retry
handlers; posts to one channel go one at a time so a burst queues instead of tripping the
per-channel limit (about one message per second).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (ConnectionErrorRetryHandler,
                                                   RateLimitErrorRetryHandler,
                                                   ServerErrorRetryHandler)
from slack_sdk.webhook import WebhookClient

from bot.metrics import Metrics
from ca.errors import VouchError

log = logging.getLogger("vouch.slack")

# Who someone is (deactivated? a guest?) is trusted this long; a user_change event from Slack
# ends it at once (forget).
_CACHE_SECONDS = 60.0
# Time zones change rarely and only shape how times are written: known ones are kept this long,
# so a certificate DM needs no users.info call of its own.
_TZ_SECONDS = 6 * 3600.0


class SlackUnavailable(VouchError):
    """A Web API call failed after its retries."""


@dataclass(frozen=True)
class SlackUser:
    id: str
    team_id: str | None
    name: str
    tz: str | None
    is_bot: bool
    deleted: bool
    restricted: bool  # a guest: is_restricted or is_ultra_restricted


def make_client(token: str, base_url: str, *, timeout: int = 10) -> WebClient:
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    return WebClient(token=token, base_url=base_url, timeout=timeout, retry_handlers=[
        RateLimitErrorRetryHandler(max_retry_count=5),
        ServerErrorRetryHandler(max_retry_count=3),
        ConnectionErrorRetryHandler(max_retry_count=3),
    ])


class SlackGateway:
    def __init__(self, client: WebClient, metrics: Metrics) -> None:
        self.client = client
        self.metrics = metrics
        self._users: dict[str, tuple[float, SlackUser]] = {}
        self._zones: dict[str, tuple[float, str | None]] = {}
        self._dms: dict[str, str] = {}
        self._channel_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        self._groups: tuple[float, dict[str, str]] | None = None
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._channel_names: dict[str, tuple[float, str | None]] = {}

    def _call(self, method: str, **params) -> dict:
        try:
            response = getattr(self.client, method.replace(".", "_"))(**params)
            return response.data  # type: ignore[return-value]
        except SlackApiError as exc:
            self.metrics.slack_errors.labels(method=method).inc()
            error = exc.response.get("error", "unknown") if exc.response is not None else "unknown"
            raise SlackUnavailable(f"Slack refused {method}: {error}", detail=str(exc)) from None
        except Exception as exc:  # connection errors after the retry handler gave up
            self.metrics.slack_errors.labels(method=method).inc()
            raise SlackUnavailable(f"Slack is unreachable ({method})", detail=repr(exc)) from None

    def auth_test(self) -> tuple[str, str]:
        data = self._call("auth.test")
        return data["team_id"], data["user_id"]

    def post(self, channel: str, text: str, blocks: list | None = None,
             thread_ts: str | None = None) -> tuple[str, str]:
        params = {"channel": channel, "text": text, "unfurl_links": False, "unfurl_media": False}
        if blocks is not None:
            params["blocks"] = blocks
        if thread_ts:
            params["thread_ts"] = thread_ts
        with self._lock_for(channel):
            data = self._call("chat.postMessage", **params)
        return data["channel"], data["ts"]

    def channel_name(self, channel: str) -> str | None:
        """`#name` of a channel for people outside Slack (the terminal client), cached; None
        when Slack will not say."""
        known = self._channel_names.get(channel)
        if known and known[0] > time.monotonic():
            return known[1]
        try:
            name = self._call("conversations.info", channel=channel).get("channel", {}).get("name")
        except SlackUnavailable:
            name = None
        self._channel_names[channel] = (time.monotonic() + _CACHE_SECONDS,
                                        f"#{name}" if name else None)
        return self._channel_names[channel][1]

    def channel_problem(self, channel: str) -> str | None:
        """Why the app could not post in `channel`, or None. None too when Slack will not say
        (conversations.info needs channels:read / groups:read): then the first post tells."""
        try:
            info = self._call("conversations.info", channel=channel).get("channel", {})
        except SlackUnavailable as exc:
            return None if "missing_scope" in exc.message else exc.message
        if info.get("is_archived"):
            return f"channel {channel} is archived"
        if info.get("is_member") is False:
            return f"the app is not a member of channel {channel}: invite it there"
        return None

    def update(self, channel: str, ts: str, text: str, blocks: list) -> None:
        self._call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks)

    def dm(self, user: str, text: str, blocks: list | None = None) -> tuple[str, str]:
        """A direct message from the app: conversations.open (once per user, then cached), then
        chat.postMessage."""
        return self.post(self.dm_channel(user), text, blocks)

    def dm_channel(self, user: str) -> str:
        """The app's DM channel with `user`. Opened ahead of time (bot.notifier) it leaves a
        certificate's delivery a single Web API call."""
        channel = self._dms.get(user)
        if channel is None:
            channel = self._call("conversations.open", users=user)["channel"]["id"]
            self._dms[user] = channel
        return channel

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        self._call("chat.postEphemeral", channel=channel, user=user, text=text)

    def respond(self, response_url: str, text: str) -> None:
        """An ephemeral reply through a slash command's or button's response_url."""
        try:
            response = WebhookClient(response_url, timeout=10).send(
                text=text, response_type="ephemeral", replace_original=False)
        except Exception as exc:  # noqa: BLE001 - reported, never raised into a listener
            self.metrics.slack_errors.labels(method="response_url").inc()
            log.warning("response_url failed: %r", exc)
            return
        if response.status_code >= 300:
            self.metrics.slack_errors.labels(method="response_url").inc()
            log.warning("response_url answered %s", response.status_code)

    def open_view(self, trigger_id: str, view: dict) -> None:
        self._call("views.open", trigger_id=trigger_id, view=view)

    def publish_home(self, user: str, view: dict) -> None:
        self._call("views.publish", user_id=user, view=view)

    def user(self, user_id: str, *, fresh: bool = False) -> SlackUser:
        """users.info, cached for a minute; `fresh` asks Slack again (the offboarding sweep)."""
        cached = self._users.get(user_id)
        if cached and cached[0] > time.monotonic() and not fresh:
            return cached[1]
        data = self._call("users.info", user=user_id)["user"]
        user = SlackUser(
            id=data["id"], team_id=data.get("team_id"),
            name=(data.get("profile") or {}).get("display_name") or data.get("real_name") or data.get("name", ""),
            tz=data.get("tz"), is_bot=bool(data.get("is_bot")) or data["id"] == "USLACKBOT",
            deleted=bool(data.get("deleted")),
            restricted=bool(data.get("is_restricted") or data.get("is_ultra_restricted")))
        self._users[user_id] = (time.monotonic() + _CACHE_SECONDS, user)
        self._zones[user_id] = (time.monotonic() + _TZ_SECONDS, user.tz)
        return user

    def forget(self, user_id: str) -> None:
        """Slack says this user changed: look them up again on their next action."""
        self._users.pop(user_id, None)

    def tz(self, user_id: str) -> str | None:
        """The user's time zone for writing times, None (UTC) when Slack cannot say."""
        known = self._zones.get(user_id)
        if known and known[0] > time.monotonic():
            return known[1]
        try:
            return self.user(user_id).tz
        except SlackUnavailable:
            return None

    def group_ids(self) -> dict[str, str]:
        """User group handles ("@db-owners") to their ids, for mentions and membership."""
        if self._groups is None or self._groups[0] < time.monotonic():
            data = self._call("usergroups.list")
            groups = {f"@{g['handle']}": g["id"] for g in data.get("usergroups", [])}
            self._groups = (time.monotonic() + _CACHE_SECONDS, groups)
        return self._groups[1]

    def group_members(self, handle: str) -> frozenset[str]:
        cached = self._members.get(handle)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        group_id = self.group_ids().get(handle)
        members = frozenset()
        if group_id is not None:
            members = frozenset(self._call("usergroups.users.list", usergroup=group_id).get("users", []))
        self._members[handle] = (time.monotonic() + 60.0, members)
        return members

    def _lock_for(self, channel: str) -> threading.Lock:
        with self._locks_guard:
            return self._channel_locks[channel]


class SlackDirectory:
    """Resolves "@handle" user groups through Slack (cached), for the policy's approver lists."""

    def __init__(self, gateway: SlackGateway) -> None:
        self.gateway = gateway

    def members(self, handle: str) -> frozenset[str]:
        try:
            return self.gateway.group_members(handle)
        except SlackUnavailable as exc:
            # Fail closed: an unresolvable group grants nobody anything.
            log.warning("cannot resolve user group %s: %s", handle, exc.detail)
            return frozenset()
