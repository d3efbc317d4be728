"""What the fake Slack holds: the app's identity and tokens, the workspace (users, groups,
channels, DMs), what was posted in it (messages, ephemerals, views), the trigger_ids and
response_urls handed out, the calls answered and the faults tests set; with the JSON shapes Slack
gives these in.

All of it lives behind one lock (``lock``): the server runs in its own thread, tests read from
theirs. A call is appended to ``calls`` in the same critical section that applies its effects, so
once a call is visible its message or view is visible too. The helpers expect the lock held.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["Call", "Message", "SlackError", "SlackState"]

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


class SlackError(Exception):
    """A Web API error: answered as ``{"ok": false, "error": error}`` with ``status``."""

    def __init__(self, error: str, *, status: int = 200, headers: dict | None = None):
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}


class SlackState:
    def __init__(self, *, bot_token: str, app_token: str, team_id: str, team_domain: str,
                 team_name: str, bot_user_id: str, bot_id: str, app_id: str, bot_name: str,
                 latency: float):
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
        self.url = ""  # where the fake is served, once started

        self.lock = threading.RLock()
        self.calls: list[Call] = []
        self.users: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.channels: dict[str, str] = {}  # id -> name
        self.dms: dict[str, str] = {}  # user id -> D… channel, once opened
        self.messages: dict[str, list[Message]] = {}
        self.ephemerals: list[dict] = []
        self.views: dict[str, dict] = {}  # view id -> current view object
        self.homes: dict[str, dict] = {}  # user id -> the App Home published for them
        self.view_log: list[dict] = []
        self.triggers: dict[str, dict] = {}
        self.response_urls: dict[str, dict] = {}
        self.injected: dict[str, list[dict]] = {}
        self.delays: dict[str, float] = {}  # method -> seconds before it answers
        self.waiting: list[str] = []  # delayed calls under way, by method
        self._last_ts_us = 0
        self._view_seq = 0

    # Here rather than only on FakeSlack: conversations.open adds a group DM as a channel.
    def add_channel(self, channel_id: str, name: str) -> None:
        with self.lock:
            self.channels[channel_id] = name.lstrip("#")
            self.messages.setdefault(channel_id, [])

    def open_dm(self, user_id: str) -> str:
        dm = self.dms.get(user_id)
        if dm is None:
            dm = "D" + user_id[1:] if len(user_id) > 1 else "D" + user_id
            self.dms[user_id] = dm
            self.messages.setdefault(dm, [])
        return dm

    def new_ts(self) -> str:
        us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
        self._last_ts_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def resolve_channel(self, channel: Any) -> str:
        if not channel or not isinstance(channel, str):
            raise SlackError("channel_not_found")
        if channel in self.channels or channel in self.dms.values():
            return channel
        name = channel.lstrip("#")
        for cid, cname in self.channels.items():
            if cname == name:
                return cid
        if channel in self.users:  # a user id: the app's DM with that user
            return self.open_dm(channel)
        raise SlackError("channel_not_found")

    @staticmethod
    def with_block_ids(blocks: list) -> list:
        blocks = copy.deepcopy(blocks)
        for b in blocks:
            if isinstance(b, dict) and "block_id" not in b:
                b["block_id"] = secrets.token_urlsafe(4)  # Slack fills in a random one
        return blocks

    def store_message(self, channel: str, text: str, blocks: list,
                      thread_ts: str | None) -> Message:
        msg = Message(channel=channel, ts=self.new_ts(), user=self.bot_user_id, text=text,
                      blocks=self.with_block_ids(blocks), thread_ts=thread_ts or None)
        self.messages.setdefault(channel, []).append(msg)
        return msg

    def find_message(self, channel: str, ts: Any) -> Message:
        for m in self.messages.get(channel, []):
            if m.ts == ts and not m.deleted:
                return m
        raise SlackError("message_not_found")

    def message_json(self, m: Message) -> dict:
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

    def user_json(self, u: dict) -> dict:
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

    def group_json(self, g: dict, include_users: bool) -> dict:
        out = dict(id=g["id"], team_id=self.team_id, is_usergroup=True, is_subteam=True,
                   name=g["name"], description=g["description"], handle=g["handle"],
                   is_external=False, date_delete=0, user_count=len(g["users"]))
        if include_users:
            out["users"] = list(g["users"])
        return out

    def use_trigger(self, trigger_id: Any) -> dict:
        trigger = self.triggers.get(trigger_id) if isinstance(trigger_id, str) else None
        if trigger is None:
            raise SlackError("invalid_trigger_id")
        if trigger["used"]:
            raise SlackError("exchanged_trigger_id")
        if time.time() - trigger["issued"] > self.trigger_ttl:
            raise SlackError("expired_trigger_id")
        trigger["used"] = True
        return trigger

    def make_view(self, view: dict) -> dict:
        self._view_seq += 1
        view_id = f"V{self._view_seq:02d}" + secrets.token_hex(4).upper()
        obj = dict(
            id=view_id, team_id=self.team_id, type=view.get("type", "modal"),
            title=view.get("title"), submit=view.get("submit"), close=view.get("close"),
            blocks=self.with_block_ids(view.get("blocks", [])),
            private_metadata=view.get("private_metadata", ""),
            callback_id=view.get("callback_id", ""), external_id=view.get("external_id", ""),
            state={"values": {}}, hash=f"{int(time.time())}.{secrets.token_hex(4)}",
            clear_on_close=bool(view.get("clear_on_close", False)),
            notify_on_close=bool(view.get("notify_on_close", False)),
            root_view_id=view_id, previous_view_id=None, app_id=self.app_id,
            app_installed_team_id=self.team_id, bot_id=self.bot_id)
        self.views[view_id] = obj
        return obj

    def log_view(self, method: str, user_id: str | None, obj: dict) -> None:
        self.view_log.append(dict(copy.deepcopy(obj), method=method, user_id=user_id))
