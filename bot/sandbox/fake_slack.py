"""A fake of the part of Slack's Web API that the bot uses, served over real HTTP.

The bot talks to it through an unmodified slack-sdk ``WebClient(token, base_url=fake.base_url)``,
so what is exercised is the bot's real request building, error handling and retries. Responses
follow Slack's documented shapes: HTTP 200 with ``{"ok": true, ...}`` or ``{"ok": false, "error":
"..."}``; rate limiting is HTTP 429 with ``Retry-After``. Everything the bot sends is recorded for
tests to assert on (``calls``, ``messages``, ``ephemerals``, ``views``).

``FakeSlack`` is the side tests hold: set-up, inspection, faults, start and stop. What it holds is
in ``slack_state`` (one lock for all of it), the methods it answers in ``web_api``, its routes in
``slack_http``.
"""

from __future__ import annotations

import copy
import json
import secrets
import socket
import time
from typing import Any, Callable
from zoneinfo import ZoneInfo

from bot.sandbox.slack_http import SlackHttp
from bot.sandbox.slack_state import Call, Message, SlackState
from bot.sandbox.socket_mode import SocketModeLink
from bot.sandbox.threaded_server import ThreadedServer

__all__ = ["Call", "FakeSlack", "Message"]


def _on_state(name: str) -> property:
    # Kept on the SlackState, where the Web API reads it; tests set some (latency, trigger_ttl).
    return property(lambda self: getattr(self._state, name),
                    lambda self, value: setattr(self._state, name, value))


class FakeSlack:
    bot_token = _on_state("bot_token")
    app_token = _on_state("app_token")
    team_id = _on_state("team_id")
    team_domain = _on_state("team_domain")
    team_name = _on_state("team_name")
    bot_user_id = _on_state("bot_user_id")
    bot_id = _on_state("bot_id")
    app_id = _on_state("app_id")
    bot_name = _on_state("bot_name")
    latency = _on_state("latency")
    trigger_ttl = _on_state("trigger_ttl")
    url = _on_state("url")

    def __init__(self, *, bot_token: str = "xoxb-fake", team_id: str = "T0VOUCH",
                 team_domain: str = "vouch-demo", bot_user_id: str = "U0VOUCHBOT",
                 latency: float = 0.0, app_token: str = "xapp-fake", bot_id: str = "B0VOUCHBOT",
                 app_id: str = "A0VOUCHAPP", team_name: str = "Vouch Demo",
                 bot_name: str = "vouch"):
        self._state = SlackState(bot_token=bot_token, app_token=app_token, team_id=team_id,
                                 team_domain=team_domain, team_name=team_name,
                                 bot_user_id=bot_user_id, bot_id=bot_id, app_id=app_id,
                                 bot_name=bot_name, latency=latency)
        self._lock = self._state.lock
        self._socket_mode = SocketModeLink(app_id)

        self._server: ThreadedServer | None = None
        self.base_url = ""

        self.add_user(bot_user_id, bot_name, real_name="Vouch", is_bot=True)
        self.add_channel("C0GENERAL", "general")
        self.app = SlackHttp(self._state, self._socket_mode).app

    # --- workspace setup -------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, real_name: str | None = None,
                 tz: str = "Europe/Berlin", is_bot: bool = False, deleted: bool = False,
                 is_restricted: bool = False, is_ultra_restricted: bool = False,
                 team_id: str | None = None, is_admin: bool = False,
                 display_name: str | None = None, email: str | None = None) -> None:
        ZoneInfo(tz)  # an unknown zone fails here, not in the middle of users.info
        with self._lock:
            self._state.users[user_id] = dict(
                id=user_id, name=name, real_name=real_name or name, tz=tz, is_bot=is_bot,
                deleted=deleted, is_restricted=is_restricted,
                is_ultra_restricted=is_ultra_restricted, team_id=team_id or self.team_id,
                is_admin=is_admin, display_name=name if display_name is None else display_name,
                email=email, updated=int(time.time()))

    def add_group(self, handle: str, group_id: str, members: list[str], *,
                  name: str | None = None, description: str = "") -> None:
        with self._lock:
            self._state.groups[group_id] = dict(id=group_id, handle=handle.lstrip("@"),
                                                name=name or handle.lstrip("@"),
                                                description=description, users=list(members))

    def add_channel(self, channel_id: str, name: str) -> None:
        self._state.add_channel(channel_id, name)

    def user(self, user_id: str) -> dict | None:
        with self._lock:
            u = self._state.users.get(user_id)
            return dict(u) if u else None

    def channel_name(self, channel_id: str) -> str | None:
        with self._lock:
            if channel_id in self._state.channels:
                return self._state.channels[channel_id]
            if channel_id in self._state.dms.values():
                return "directmessage"
            return None

    def dm_channel(self, user_id: str) -> str:
        """The bot's DM with this user, as conversations.open returns it (stable, and open
        from now on)."""
        with self._lock:
            return self._state.open_dm(user_id)

    # --- server ----------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("FakeSlack is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        server = ThreadedServer(self.app, sock, "fake Slack")
        try:
            server.start(timeout=10)
        except RuntimeError:
            server.stop()
            raise
        self._server = server
        url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.url = f"http://{url_host}:{port}/"
        self.base_url = self.url + "api/"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "FakeSlack":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what tests look at ----------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._state.calls)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._state.calls if c.method == method]

    def inject_error(self, method: str, *, status: int = 429, retry_after: int = 1,
                     error: str = "ratelimited", count: int = 1) -> None:
        """The next ``count`` calls to ``method`` (``"*"``: to any method) fail: 429 with
        ``Retry-After``; 5xx with ``internal_error`` (unless another error is named); 200 with
        ``{"ok": false, "error": error}``."""
        if status >= 500 and error == "ratelimited":
            error = "internal_error"
        with self._lock:
            self._state.injected.setdefault(method, []).append(
                dict(status=status, retry_after=retry_after, error=error, left=count))

    def delay(self, method: str, seconds: float) -> None:
        """Every later call to ``method`` answers after ``seconds`` (a slow Slack, for one
        method; ``latency`` slows every method). 0 ends it."""
        with self._lock:
            self._state.delays[method] = seconds

    def waiting(self, method: str) -> int:
        """How many delayed calls to ``method`` are under way: received, not yet answered
        (and so not yet in ``calls``)."""
        with self._lock:
            return self._state.waiting.count(method)

    def messages(self, channel: str) -> list[Message]:
        with self._lock:
            return sorted((m for m in self._state.messages.get(channel, [])
                           if m.thread_ts is None and not m.deleted), key=lambda m: float(m.ts))

    def replies(self, channel: str, ts: str) -> list[Message]:
        """The replies in the thread under ``ts`` (without the parent), oldest first."""
        with self._lock:
            return sorted((m for m in self._state.messages.get(channel, [])
                           if m.thread_ts == ts and not m.deleted), key=lambda m: float(m.ts))

    def message(self, channel: str, ts: str) -> Message:
        with self._lock:
            for m in self._state.messages.get(channel, []):
                if m.ts == ts:
                    return m
        raise KeyError(f"no message {ts} in {channel}")

    def ephemerals(self, user_id: str | None = None) -> list[dict]:
        with self._lock:
            return [dict(e) for e in self._state.ephemerals
                    if user_id is None or e["user"] == user_id]

    def views(self, user_id: str | None = None) -> list[dict]:
        """Every views.open, in order: the view object as Slack returned it (with ``id``), plus
        ``method`` and ``user_id``."""
        with self._lock:
            return [copy.deepcopy(v) for v in self._state.view_log
                    if user_id is None or v["user_id"] == user_id]

    def home(self, user_id: str) -> dict | None:
        """The App Home last published for ``user_id`` (views.publish), if any."""
        with self._lock:
            home = self._state.homes.get(user_id)
            return copy.deepcopy(home) if home is not None else None

    def view(self, view_id: str) -> dict:
        """The current state of a view."""
        with self._lock:
            return copy.deepcopy(self._state.views[view_id])

    def new_trigger_id(self, user_id: str) -> str:
        """A trigger_id as Slack puts into a command or interaction payload: usable once, for
        ``trigger_ttl`` seconds, with views.open."""
        now = time.time()
        trigger = f"{int(now * 1000)}.{secrets.randbelow(10**10):010d}.{secrets.token_hex(16)}"
        with self._lock:
            self._state.triggers[trigger] = dict(user_id=user_id, issued=now, used=False)
        return trigger

    def response_url(self, user_id: str, channel_id: str, message_ts: str | None = None) -> str:
        """A response_url for an interaction by ``user_id`` in ``channel_id``; with
        ``message_ts`` (a click on that message) replace_original / delete_original act on it."""
        token = f"{self.team_id}/{secrets.randbelow(10**12):012d}/{secrets.token_urlsafe(18)}"
        with self._lock:
            self._state.response_urls[token] = dict(user=user_id, channel=channel_id,
                                                    message_ts=message_ts, uses=0)
        return f"{self.url}response/{token}"

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll ``predicate`` until it returns something truthy and return that. A LookupError
        from it counts as "not yet". On timeout: AssertionError listing the recent calls."""
        deadline = time.monotonic() + timeout
        last_exc: BaseException | None = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except LookupError as exc:
                last_exc = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        lines = [f"condition not met within {timeout}s"
                 + (f" (last error: {last_exc!r})" if last_exc else "") + "; recent calls:"]
        for c in self.calls[-15:]:
            what = "ok" if c.ok else f"error={c.error}" if c.error else ""
            lines.append(f"  {c.method} {c.status} {what} {json.dumps(c.params, default=str)[:200]}")
        if len(lines) == 1:
            lines.append("  (none)")
        raise AssertionError("\n".join(lines))

    def snapshot(self) -> dict:
        """The visible workspace as JSON-able data (what the sandbox page renders)."""
        with self._lock:
            channels = {cid: {"name": name} for cid, name in self._state.channels.items()}
            for uid, dm in self._state.dms.items():
                channels[dm] = {"name": "directmessage", "user": uid}
            for cid, info in channels.items():
                info["messages"] = [
                    dict(self._state.message_json(m),
                         replies=[self._state.message_json(r) for r in self.replies(cid, m.ts)])
                    for m in self.messages(cid)]
            return dict(team={"id": self.team_id, "domain": self.team_domain},
                        users=[self._state.user_json(u) for u in self._state.users.values()],
                        channels=channels)

    # --- Socket Mode -----------------------------------------------------------------------

    def socket_connected(self, timeout: float = 5.0) -> bool:
        """Wait until an app is connected over Socket Mode (True), or ``timeout`` passed (False)."""
        return self._socket_mode.connected(timeout)

    def socket_received(self) -> list[dict]:
        """Every JSON message the app sent over Socket Mode (acks), oldest first, as
        ``{"data": <the message>, "at": <time.time()>}``."""
        return self._socket_mode.received()

    def socket_send(self, type: str, payload: dict, *, timeout: float = 5.0,
                    envelope_id: str | None = None, accepts_response_payload: bool = True,
                    retry_attempt: int = 0, retry_reason: str = "") -> dict:
        """Deliver an envelope (``type``: ``slash_commands``, ``interactive``, ``events_api``) to
        the newest connected app and return its ack, ``{"envelope_id": ..., "payload": ...}``
        (``payload`` only when the app answered with one). AssertionError when no app is
        connected or no ack arrives within ``timeout`` seconds."""
        return self._socket_mode.send(type, payload, timeout=timeout, envelope_id=envelope_id,
                                      accepts_response_payload=accepts_response_payload,
                                      retry_attempt=retry_attempt, retry_reason=retry_reason)
