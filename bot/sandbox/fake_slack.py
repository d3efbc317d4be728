"""A fake of the part of Slack's Web API that the bot uses, served over real HTTP.

The bot talks to it through an unmodified slack-sdk ``WebClient(token, base_url=fake.base_url)``,
so what is exercised is the bot's real request building, error handling and retries. Responses
follow Slack's documented shapes: HTTP 200 with ``{"ok": true, ...}`` or ``{"ok": false, "error":
"..."}``; rate limiting is HTTP 429 with ``Retry-After``. Everything the bot sends is recorded for
tests to assert on (``calls``, ``messages``, ``ephemerals``, ``views``).

It answers only the methods the bot calls (``_methods``; anything else is ``unknown_method``, so
a new call in the bot fails loudly here until the fake learns it), and besides ``/api/<method>``:

* ``POST /response/<token>`` — a ``response_url`` as Slack hands out with commands and clicks;
* ``/link/?ticket=…`` (websocket) — Socket Mode (``bot.sandbox.socket_mode``), at the URL
  ``apps.connections.open`` hands out.

All state lives behind one lock: the server runs in its own thread, tests read from theirs. A
call is appended to ``calls`` in the same critical section that applies its effects, so once a
call is visible its message or view is visible too.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from bot.sandbox.socket_mode import SocketModeLink
from bot.sandbox.threaded_server import ThreadedServer

__all__ = ["Call", "FakeSlack", "Message"]

# Form-encoded parameters that carry JSON (slack-sdk serialises these when it sends a form body).
_JSON_PARAMS = {"blocks", "view"}
# Methods that take the app-level token (xapp-…), not the bot token.
_APP_TOKEN_METHODS = {"apps.connections.open"}
_MAX_BLOCKS = 50
_MAX_TEXT = 40_000

_TZ_LABELS = {
    "CET": "Central European Time", "CEST": "Central European Summer Time",
    "EET": "Eastern European Time", "EEST": "Eastern European Summer Time",
    "WET": "Western European Time", "WEST": "Western European Summer Time",
    "GMT": "Greenwich Mean Time", "BST": "British Summer Time", "UTC": "Coordinated Universal Time",
    "IST": "India Standard Time", "JST": "Japan Standard Time",
    "EST": "Eastern Standard Time", "EDT": "Eastern Daylight Time",
    "CST": "Central Standard Time", "CDT": "Central Daylight Time",
    "MST": "Mountain Standard Time", "MDT": "Mountain Daylight Time",
    "PST": "Pacific Standard Time", "PDT": "Pacific Daylight Time",
    "AEST": "Australian Eastern Standard Time", "AEDT": "Australian Eastern Daylight Time",
}


@dataclass
class Call:
    """One request to the fake, in the order they were answered. ``method`` is the Web API method
    (``"chat.postMessage"``), or ``"response_url"`` for a post to one."""

    method: str
    params: dict
    at: float
    status: int
    response: Any = None

    @property
    def ok(self) -> bool:
        return isinstance(self.response, dict) and self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        return self.response.get("error") if isinstance(self.response, dict) else None


@dataclass
class Message:
    channel: str
    ts: str
    user: str
    text: str
    blocks: list
    thread_ts: str | None = None
    edited: list = field(default_factory=list)  # every chat.update / replace_original payload
    deleted: bool = False


class _SlackError(Exception):
    def __init__(self, error: str, *, status: int = 200, headers: dict | None = None):
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _decode_json_params(params: dict) -> dict:
    for key in _JSON_PARAMS & params.keys():
        value = params[key]
        if isinstance(value, str) and value[:1] in ("[", "{"):
            try:
                params[key] = json.loads(value)
            except ValueError:
                pass  # left as a string; the method answers invalid_arguments / invalid_blocks
    return params


class FakeSlack:
    def __init__(self, *, bot_token: str = "xoxb-fake", team_id: str = "T0VOUCH",
                 team_domain: str = "vouch-demo", bot_user_id: str = "U0VOUCHBOT",
                 latency: float = 0.0, app_token: str = "xapp-fake", bot_id: str = "B0VOUCHBOT",
                 app_id: str = "A0VOUCHAPP", team_name: str = "Vouch Demo",
                 bot_name: str = "vouch"):
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.team_domain = team_domain
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.bot_name = bot_name
        self.latency = latency
        self.trigger_ttl = 3.0  # Slack: a trigger_id must be exchanged within 3 seconds

        self._lock = threading.RLock()
        self._calls: list[Call] = []
        self._users: dict[str, dict] = {}
        self._groups: dict[str, dict] = {}
        self._channels: dict[str, str] = {}  # id -> name
        self._dms: dict[str, str] = {}  # user id -> D… channel, once opened
        self._messages: dict[str, list[Message]] = {}
        self._ephemerals: list[dict] = []
        self._views: dict[str, dict] = {}  # view id -> current view object
        self._view_log: list[dict] = []
        self._triggers: dict[str, dict] = {}
        self._response_urls: dict[str, dict] = {}
        self._injected: dict[str, list[dict]] = {}
        self._delays: dict[str, float] = {}  # method -> seconds before it answers
        self._waiting: list[str] = []  # delayed calls under way, by method
        self._last_ts_us = 0
        self._view_seq = 0
        self._socket_mode = SocketModeLink(app_id)

        self._server: ThreadedServer | None = None
        self.url = ""
        self.base_url = ""

        self.add_user(bot_user_id, bot_name, real_name="Vouch", is_bot=True)
        self.add_channel("C0GENERAL", "general")
        self.app = Starlette(routes=[
            Route("/api/{method}", self._handle_api, methods=["GET", "POST"]),
            Route("/response/{token:path}", self._handle_response_url, methods=["POST"]),
            WebSocketRoute("/link/", self._socket_mode.endpoint),
        ])
        # The bot's calls (bot/slack.py), and Socket Mode's connection (slack-sdk).
        self._methods: dict[str, Callable[[dict], dict]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.open": self._conversations_open,
            "users.info": self._users_info,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
            "views.open": self._views_open,
            "apps.connections.open": self._apps_connections_open,
        }

    # --- workspace setup -------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, real_name: str | None = None,
                 tz: str = "Europe/Berlin", is_bot: bool = False, deleted: bool = False,
                 is_restricted: bool = False, is_ultra_restricted: bool = False,
                 team_id: str | None = None, is_admin: bool = False,
                 display_name: str | None = None, email: str | None = None) -> None:
        ZoneInfo(tz)  # an unknown zone fails here, not in the middle of users.info
        with self._lock:
            self._users[user_id] = dict(
                id=user_id, name=name, real_name=real_name or name, tz=tz, is_bot=is_bot,
                deleted=deleted, is_restricted=is_restricted,
                is_ultra_restricted=is_ultra_restricted, team_id=team_id or self.team_id,
                is_admin=is_admin, display_name=name if display_name is None else display_name,
                email=email, updated=int(time.time()))

    def add_group(self, handle: str, group_id: str, members: list[str], *,
                  name: str | None = None, description: str = "") -> None:
        with self._lock:
            self._groups[group_id] = dict(id=group_id, handle=handle.lstrip("@"),
                                          name=name or handle.lstrip("@"),
                                          description=description, users=list(members))

    def add_channel(self, channel_id: str, name: str) -> None:
        with self._lock:
            self._channels[channel_id] = name.lstrip("#")
            self._messages.setdefault(channel_id, [])

    def user(self, user_id: str) -> dict | None:
        with self._lock:
            u = self._users.get(user_id)
            return dict(u) if u else None

    def channel_name(self, channel_id: str) -> str | None:
        with self._lock:
            if channel_id in self._channels:
                return self._channels[channel_id]
            if channel_id in self._dms.values():
                return "directmessage"
            return None

    def dm_channel(self, user_id: str) -> str:
        """The bot's DM with this user, as conversations.open returns it (stable, and open
        from now on)."""
        with self._lock:
            return self._open_dm(user_id)

    def _open_dm(self, user_id: str) -> str:
        dm = self._dms.get(user_id)
        if dm is None:
            dm = "D" + user_id[1:] if len(user_id) > 1 else "D" + user_id
            self._dms[user_id] = dm
            self._messages.setdefault(dm, [])
        return dm

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
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def inject_error(self, method: str, *, status: int = 429, retry_after: int = 1,
                     error: str = "ratelimited", count: int = 1) -> None:
        """The next ``count`` calls to ``method`` (``"*"``: to any method) fail: 429 with
        ``Retry-After``; 5xx with ``internal_error`` (unless another error is named); 200 with
        ``{"ok": false, "error": error}``."""
        if status >= 500 and error == "ratelimited":
            error = "internal_error"
        with self._lock:
            self._injected.setdefault(method, []).append(
                dict(status=status, retry_after=retry_after, error=error, left=count))

    def delay(self, method: str, seconds: float) -> None:
        """Every later call to ``method`` answers after ``seconds`` (a slow Slack, for one
        method; ``latency`` slows every method). 0 ends it."""
        with self._lock:
            self._delays[method] = seconds

    def waiting(self, method: str) -> int:
        """How many delayed calls to ``method`` are under way: received, not yet answered
        (and so not yet in ``calls``)."""
        with self._lock:
            return self._waiting.count(method)

    def messages(self, channel: str) -> list[Message]:
        with self._lock:
            return sorted((m for m in self._messages.get(channel, [])
                           if m.thread_ts is None and not m.deleted), key=lambda m: float(m.ts))

    def replies(self, channel: str, ts: str) -> list[Message]:
        """The replies in the thread under ``ts`` (without the parent), oldest first."""
        with self._lock:
            return sorted((m for m in self._messages.get(channel, [])
                           if m.thread_ts == ts and not m.deleted), key=lambda m: float(m.ts))

    def message(self, channel: str, ts: str) -> Message:
        with self._lock:
            for m in self._messages.get(channel, []):
                if m.ts == ts:
                    return m
        raise KeyError(f"no message {ts} in {channel}")

    def ephemerals(self, user_id: str | None = None) -> list[dict]:
        with self._lock:
            return [dict(e) for e in self._ephemerals if user_id is None or e["user"] == user_id]

    def views(self, user_id: str | None = None) -> list[dict]:
        """Every views.open, in order: the view object as Slack returned it (with ``id``), plus
        ``method`` and ``user_id``."""
        with self._lock:
            return [copy.deepcopy(v) for v in self._view_log
                    if user_id is None or v["user_id"] == user_id]

    def view(self, view_id: str) -> dict:
        """The current state of a view."""
        with self._lock:
            return copy.deepcopy(self._views[view_id])

    def new_trigger_id(self, user_id: str) -> str:
        """A trigger_id as Slack puts into a command or interaction payload: usable once, for
        ``trigger_ttl`` seconds, with views.open."""
        now = time.time()
        trigger = f"{int(now * 1000)}.{secrets.randbelow(10**10):010d}.{secrets.token_hex(16)}"
        with self._lock:
            self._triggers[trigger] = dict(user_id=user_id, issued=now, used=False)
        return trigger

    def response_url(self, user_id: str, channel_id: str, message_ts: str | None = None) -> str:
        """A response_url for an interaction by ``user_id`` in ``channel_id``; with
        ``message_ts`` (a click on that message) replace_original / delete_original act on it."""
        token = f"{self.team_id}/{secrets.randbelow(10**12):012d}/{secrets.token_urlsafe(18)}"
        with self._lock:
            self._response_urls[token] = dict(user=user_id, channel=channel_id,
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
            channels = {cid: {"name": name} for cid, name in self._channels.items()}
            for uid, dm in self._dms.items():
                channels[dm] = {"name": "directmessage", "user": uid}
            for cid, info in channels.items():
                info["messages"] = [
                    dict(self._message_json(m),
                         replies=[self._message_json(r) for r in self.replies(cid, m.ts)])
                    for m in self.messages(cid)]
            return dict(team={"id": self.team_id, "domain": self.team_domain},
                        users=[self._user_json(u) for u in self._users.values()],
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

    # --- HTTP handlers ---------------------------------------------------------------------

    async def _read_params(self, request: Request) -> dict:
        params: dict[str, Any] = {k: v for k, v in request.query_params.items()}
        body = await request.body()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body:
            if ctype == "application/json":
                data = json.loads(body)  # a ValueError becomes invalid_json
                if not isinstance(data, dict):
                    raise ValueError("JSON body is not an object")
                params.update(data)
            else:
                for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
                    params[k] = v[-1]
        return _decode_json_params(params)

    async def _handle_api(self, request: Request) -> Response:
        method = request.path_params["method"]
        try:
            params = await self._read_params(request)
            bad_body = None
        except (ValueError, UnicodeDecodeError):
            params, bad_body = {}, "invalid_json"
        token = None
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        token = token or params.pop("token", None)
        params.pop("token", None)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        with self._lock:
            delay = self._delays.get(method, 0.0)
            if delay > 0:
                self._waiting.append(method)
        if delay > 0:
            await asyncio.sleep(delay)
            with self._lock:
                self._waiting.remove(method)
        with self._lock:
            status, body, headers = self._dispatch(method, params, token, bad_body)
            self._calls.append(Call(method, params, time.time(), status, body))
        return JSONResponse(body, status_code=status, headers=headers)

    def _take_injection(self, method: str) -> dict | None:
        for key in (method, "*"):
            queue = self._injected.get(key)
            if queue:
                spec = queue[0]
                spec["left"] -= 1
                if spec["left"] <= 0:
                    queue.pop(0)
                return spec
        return None

    def _dispatch(self, method: str, params: dict, token: str | None,
                  bad_body: str | None) -> tuple[int, dict, dict]:
        injected = self._take_injection(method)
        if injected:
            headers = {}
            if injected["status"] == 429:
                headers["Retry-After"] = str(injected["retry_after"])
            return injected["status"], {"ok": False, "error": injected["error"]}, headers
        handler = self._methods.get(method)
        try:
            if handler is None:
                raise _SlackError("unknown_method")
            if bad_body:
                raise _SlackError(bad_body)
            if not token:
                raise _SlackError("not_authed")
            wanted = self.app_token if method in _APP_TOKEN_METHODS else self.bot_token
            if token != wanted:
                raise _SlackError("not_allowed_token_type"
                                  if token in (self.bot_token, self.app_token) else "invalid_auth")
            result = handler(params)
            return 200, {"ok": True, **result}, {}
        except _SlackError as exc:
            return exc.status, {"ok": False, "error": exc.error}, exc.headers

    async def _handle_response_url(self, request: Request) -> Response:
        token = request.path_params["token"]
        body = await request.body()
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                payload = json.loads(body or b"{}")
            else:
                form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
                payload = json.loads(form["payload"]) if "payload" in form else form
        except (ValueError, KeyError, UnicodeDecodeError):
            payload = None
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        with self._lock:
            hook = self._response_urls.get(token)
            if hook is None:
                status, text = 404, "no_active_hooks"
            elif not isinstance(payload, dict):
                status, text = 400, "invalid_payload"
            else:
                status, text = self._respond(hook, payload)
            self._calls.append(Call("response_url", payload if isinstance(payload, dict) else {},
                                    time.time(), status, text))
        return PlainTextResponse(text, status_code=status)

    def _respond(self, hook: dict, payload: dict) -> tuple[int, str]:
        hook["uses"] += 1
        blocks = payload.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return 400, "invalid_blocks"
        if blocks is not None and not isinstance(blocks, list):
            return 400, "invalid_blocks"
        text = payload.get("text") or ""
        if not text and not blocks and not payload.get("delete_original"):
            return 400, "no_text"
        rtype = payload.get("response_type") or "ephemeral"
        replace = _truthy(payload.get("replace_original", False))
        delete = _truthy(payload.get("delete_original", False))
        channel, user = hook["channel"], hook["user"]
        self._ephemerals.append(dict(
            source="response_url", user=user, channel=channel, text=text,
            blocks=copy.deepcopy(blocks or []), response_type=rtype, replace_original=replace,
            delete_original=delete, thread_ts=payload.get("thread_ts"),
            message_ts=hook["message_ts"], at=time.time()))
        original = None
        if hook["message_ts"]:
            original = next((m for m in self._messages.get(channel, [])
                             if m.ts == hook["message_ts"]), None)
        if delete:
            if original is not None:
                original.deleted = True
        elif replace and original is not None:
            original.edited.append(dict(payload, source="response_url", at=time.time()))
            original.text = text
            original.blocks = self._with_block_ids(blocks or [])
        elif rtype == "in_channel":
            if channel in self._messages or channel in self._channels:
                self._store_message(channel, text, blocks or [], payload.get("thread_ts"))
        return 200, "ok"

    # --- helpers ---------------------------------------------------------------------------

    def _new_ts(self) -> str:
        us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
        self._last_ts_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def _resolve_channel(self, channel: Any) -> str:
        if not channel or not isinstance(channel, str):
            raise _SlackError("channel_not_found")
        if channel in self._channels or channel in self._dms.values():
            return channel
        name = channel.lstrip("#")
        for cid, cname in self._channels.items():
            if cname == name:
                return cid
        if channel in self._users:  # a user id: the app's DM with that user
            return self._open_dm(channel)
        raise _SlackError("channel_not_found")

    @staticmethod
    def _with_block_ids(blocks: list) -> list:
        blocks = copy.deepcopy(blocks)
        for b in blocks:
            if isinstance(b, dict) and "block_id" not in b:
                b["block_id"] = secrets.token_urlsafe(4)  # Slack fills in a random one
        return blocks

    @staticmethod
    def _check_content(params: dict) -> tuple[str, list | None]:
        text, blocks = params.get("text"), params.get("blocks")
        if blocks is not None:
            if isinstance(blocks, str) and blocks.strip() in ("", "[]"):
                blocks = []
            if (not isinstance(blocks, list) or len(blocks) > _MAX_BLOCKS
                    or not all(isinstance(b, dict) and b.get("type") for b in blocks)):
                raise _SlackError("invalid_blocks")
        if not text and not blocks:
            raise _SlackError("no_text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        if text and len(text) > _MAX_TEXT:
            raise _SlackError("msg_too_long")
        return text or "", blocks

    def _store_message(self, channel: str, text: str, blocks: list,
                       thread_ts: str | None) -> Message:
        msg = Message(channel=channel, ts=self._new_ts(), user=self.bot_user_id, text=text,
                      blocks=self._with_block_ids(blocks), thread_ts=thread_ts or None)
        self._messages.setdefault(channel, []).append(msg)
        return msg

    def _find_message(self, channel: str, ts: Any) -> Message:
        for m in self._messages.get(channel, []):
            if m.ts == ts and not m.deleted:
                return m
        raise _SlackError("message_not_found")

    def _message_json(self, m: Message) -> dict:
        out: dict[str, Any] = dict(type="message", user=m.user, text=m.text,
                                   blocks=copy.deepcopy(m.blocks), ts=m.ts, team=self.team_id)
        if m.user == self.bot_user_id:
            out.update(bot_id=self.bot_id, app_id=self.app_id)
        if m.thread_ts:
            out["thread_ts"] = m.thread_ts
            out["parent_user_id"] = self.bot_user_id
        if m.edited:
            out["edited"] = {"user": self.bot_user_id, "ts": m.edited[-1].get("edit_ts", m.ts)}
        return out

    def _user_json(self, u: dict) -> dict:
        zone = ZoneInfo(u["tz"])
        now = datetime.now(zone)
        abbr = now.tzname() or ""
        profile = dict(real_name=u["real_name"], real_name_normalized=u["real_name"],
                       display_name=u["display_name"], display_name_normalized=u["display_name"],
                       team=u["team_id"], status_text="", status_emoji="")
        if u["email"]:
            profile["email"] = u["email"]
        if u["is_bot"]:
            profile["bot_id"] = self.bot_id if u["id"] == self.bot_user_id else "B" + u["id"][1:]
        return dict(
            id=u["id"], team_id=u["team_id"], name=u["name"], deleted=u["deleted"],
            color="9f69e7", real_name=u["real_name"], tz=u["tz"],
            tz_label=_TZ_LABELS.get(abbr, abbr),
            tz_offset=int(now.utcoffset().total_seconds()), profile=profile,
            is_admin=u["is_admin"], is_owner=False, is_primary_owner=False,
            is_restricted=u["is_restricted"], is_ultra_restricted=u["is_ultra_restricted"],
            is_bot=u["is_bot"], is_app_user=False, updated=u["updated"],
            is_email_confirmed=bool(u["email"]))

    def _use_trigger(self, trigger_id: Any) -> dict:
        trigger = self._triggers.get(trigger_id) if isinstance(trigger_id, str) else None
        if trigger is None:
            raise _SlackError("invalid_trigger_id")
        if trigger["used"]:
            raise _SlackError("exchanged_trigger_id")
        if time.time() - trigger["issued"] > self.trigger_ttl:
            raise _SlackError("expired_trigger_id")
        trigger["used"] = True
        return trigger

    def _view_param(self, params: dict) -> dict:
        view = params.get("view")
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        if view.get("type") not in ("modal", "home"):
            raise _SlackError("invalid_arguments")
        if not isinstance(view.get("blocks", []), list) or len(view.get("blocks", [])) > 100:
            raise _SlackError("invalid_arguments")
        return view

    def _make_view(self, view: dict) -> dict:
        self._view_seq += 1
        view_id = f"V{self._view_seq:02d}" + secrets.token_hex(4).upper()
        obj = dict(
            id=view_id, team_id=self.team_id, type=view.get("type", "modal"),
            title=view.get("title"), submit=view.get("submit"), close=view.get("close"),
            blocks=self._with_block_ids(view.get("blocks", [])),
            private_metadata=view.get("private_metadata", ""),
            callback_id=view.get("callback_id", ""), external_id=view.get("external_id", ""),
            state={"values": {}}, hash=f"{int(time.time())}.{secrets.token_hex(4)}",
            clear_on_close=bool(view.get("clear_on_close", False)),
            notify_on_close=bool(view.get("notify_on_close", False)),
            root_view_id=view_id, previous_view_id=None, app_id=self.app_id,
            app_installed_team_id=self.team_id, bot_id=self.bot_id)
        self._views[view_id] = obj
        return obj

    def _log_view(self, method: str, user_id: str | None, obj: dict) -> None:
        self._view_log.append(dict(copy.deepcopy(obj), method=method, user_id=user_id))

    # --- Web API methods -------------------------------------------------------------------

    def _auth_test(self, p: dict) -> dict:
        return dict(url=f"https://{self.team_domain}.slack.com/", team=self.team_name,
                    user=self.bot_name, team_id=self.team_id, user_id=self.bot_user_id,
                    bot_id=self.bot_id, is_enterprise_install=False)

    def _chat_post_message(self, p: dict) -> dict:
        channel = self._resolve_channel(p.get("channel"))
        text, blocks = self._check_content(p)
        msg = self._store_message(channel, text, blocks or [], p.get("thread_ts"))
        return dict(channel=channel, ts=msg.ts, message=self._message_json(msg))

    def _chat_update(self, p: dict) -> dict:
        channel = self._resolve_channel(p.get("channel"))
        msg = self._find_message(channel, p.get("ts"))
        if msg.user != self.bot_user_id:
            raise _SlackError("cant_update_message")
        text, blocks = self._check_content(p)
        msg.edited.append(dict(p, edit_ts=self._new_ts(), at=time.time()))
        msg.text = text
        msg.blocks = self._with_block_ids(blocks or [])  # like Slack: replaced, not merged
        return dict(channel=channel, ts=msg.ts, text=msg.text, message=self._message_json(msg))

    def _chat_post_ephemeral(self, p: dict) -> dict:
        channel = self._resolve_channel(p.get("channel"))
        user = p.get("user")
        if user not in self._users:
            raise _SlackError("user_not_found")
        text, blocks = self._check_content(p)
        ts = self._new_ts()
        self._ephemerals.append(dict(
            source="chat.postEphemeral", user=user, channel=channel, text=text,
            blocks=self._with_block_ids(blocks or []), response_type="ephemeral",
            thread_ts=p.get("thread_ts"), message_ts=ts, at=time.time()))
        return dict(message_ts=ts)

    def _conversations_open(self, p: dict) -> dict:
        if p.get("channel"):
            channel = self._resolve_channel(p["channel"])
            return dict(channel={"id": channel}, no_op=True, already_open=True)
        users = p.get("users")
        if isinstance(users, str):
            users = [u.strip() for u in users.split(",") if u.strip()]
        if not users:
            raise _SlackError("users_list_not_supplied")
        for u in users:
            info = self._users.get(u)
            if info is None:
                raise _SlackError("user_not_found")
            if info["deleted"]:
                raise _SlackError("user_disabled")
        if len(users) == 1:
            if self._users[users[0]]["is_bot"]:
                raise _SlackError("cannot_dm_bot")
            already = users[0] in self._dms
            channel = self._open_dm(users[0])
        else:
            channel = "G" + secrets.token_hex(5).upper()
            already = False
            self.add_channel(channel, "mpdm-" + "--".join(self._users[u]["name"] for u in users))
        out: dict[str, Any] = dict(channel={"id": channel})
        if already:
            out.update(no_op=True, already_open=True)
        return out

    def _users_info(self, p: dict) -> dict:
        u = self._users.get(p.get("user"))
        if u is None:
            raise _SlackError("user_not_found")
        return dict(user=self._user_json(u))

    def _group_json(self, g: dict, include_users: bool) -> dict:
        out = dict(id=g["id"], team_id=self.team_id, is_usergroup=True, is_subteam=True,
                   name=g["name"], description=g["description"], handle=g["handle"],
                   is_external=False, date_delete=0, user_count=len(g["users"]))
        if include_users:
            out["users"] = list(g["users"])
        return out

    def _usergroups_list(self, p: dict) -> dict:
        include = _truthy(p.get("include_users", False))
        return dict(usergroups=[self._group_json(g, include) for g in self._groups.values()])

    def _usergroups_users_list(self, p: dict) -> dict:
        g = self._groups.get(p.get("usergroup"))
        if g is None:
            raise _SlackError("no_such_subteam")
        return dict(users=list(g["users"]))

    def _views_open(self, p: dict) -> dict:
        trigger = self._use_trigger(p.get("trigger_id"))
        obj = self._make_view(self._view_param(p))
        self._log_view("views.open", trigger["user_id"], obj)
        return dict(view=copy.deepcopy(obj))

    def _apps_connections_open(self, p: dict) -> dict:
        return dict(url=self._socket_mode.new_url(self.url))
