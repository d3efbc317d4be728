"""The Web API methods the fake Slack answers, from a SlackState and the way Slack answers them:
``{"ok": true, ...}``, or ``{"ok": false, "error": "..."}`` for a bad token, bad arguments or a
fault a test injected; and what a post to a ``response_url`` does.

It knows only the methods the bot calls (``_methods``; anything else is ``unknown_method``, so a
new call in the bot fails loudly here until the fake learns it). Callers hold the state's lock.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from typing import Any, Callable

from bot.sandbox.slack_state import SlackError, SlackState
from bot.sandbox.socket_mode import SocketModeLink

__all__ = ["WebApi"]

# Methods that take the app-level token (xapp-…), not the bot token.
_APP_TOKEN_METHODS = {"apps.connections.open"}
_MAX_BLOCKS = 50
_MAX_TEXT = 40_000


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class WebApi:
    def __init__(self, state: SlackState, socket_mode: SocketModeLink) -> None:
        self._state = state
        self._socket_mode = socket_mode
        # The bot's calls (bot/slack.py), and Socket Mode's connection (slack-sdk).
        self._methods: dict[str, Callable[[dict], dict]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.open": self._conversations_open,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
            "apps.connections.open": self._apps_connections_open,
        }

    def dispatch(self, method: str, params: dict, token: str | None,
                 bad_body: str | None) -> tuple[int, dict, dict]:
        """One call's answer: ``(status, body, headers)``."""
        s = self._state
        injected = self._take_injection(method)
        if injected:
            headers = {}
            if injected["status"] == 429:
                headers["Retry-After"] = str(injected["retry_after"])
            return injected["status"], {"ok": False, "error": injected["error"]}, headers
        handler = self._methods.get(method)
        try:
            if handler is None:
                raise SlackError("unknown_method")
            if bad_body:
                raise SlackError(bad_body)
            if not token:
                raise SlackError("not_authed")
            wanted = s.app_token if method in _APP_TOKEN_METHODS else s.bot_token
            if token != wanted:
                raise SlackError("not_allowed_token_type"
                                 if token in (s.bot_token, s.app_token) else "invalid_auth")
            result = handler(params)
            return 200, {"ok": True, **result}, {}
        except SlackError as exc:
            return exc.status, {"ok": False, "error": exc.error}, exc.headers

    def _take_injection(self, method: str) -> dict | None:
        for key in (method, "*"):
            queue = self._state.injected.get(key)
            if queue:
                spec = queue[0]
                spec["left"] -= 1
                if spec["left"] <= 0:
                    queue.pop(0)
                return spec
        return None

    def respond(self, hook: dict, payload: dict) -> tuple[int, str]:
        """A post to a response_url: ``(status, text)`` as Slack answers it."""
        s = self._state
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
        s.ephemerals.append(dict(
            source="response_url", user=user, channel=channel, text=text,
            blocks=copy.deepcopy(blocks or []), response_type=rtype, replace_original=replace,
            delete_original=delete, thread_ts=payload.get("thread_ts"),
            message_ts=hook["message_ts"], at=time.time()))
        original = None
        if hook["message_ts"]:
            original = next((m for m in s.messages.get(channel, [])
                             if m.ts == hook["message_ts"]), None)
        if delete:
            if original is not None:
                original.deleted = True
        elif replace and original is not None:
            original.edited.append(dict(payload, source="response_url", at=time.time()))
            original.text = text
            original.blocks = s.with_block_ids(blocks or [])
        elif rtype == "in_channel":
            if channel in s.messages or channel in s.channels:
                s.store_message(channel, text, blocks or [], payload.get("thread_ts"))
        return 200, "ok"

    # --- argument checks -------------------------------------------------------------------

    @staticmethod
    def _check_content(params: dict) -> tuple[str, list | None]:
        text, blocks = params.get("text"), params.get("blocks")
        if blocks is not None:
            if isinstance(blocks, str) and blocks.strip() in ("", "[]"):
                blocks = []
            if (not isinstance(blocks, list) or len(blocks) > _MAX_BLOCKS
                    or not all(isinstance(b, dict) and b.get("type") for b in blocks)):
                raise SlackError("invalid_blocks")
        if not text and not blocks:
            raise SlackError("no_text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        if text and len(text) > _MAX_TEXT:
            raise SlackError("msg_too_long")
        return text or "", blocks

    def _view_param(self, params: dict) -> dict:
        view = params.get("view")
        if not isinstance(view, dict):
            raise SlackError("invalid_arguments")
        if view.get("type") not in ("modal", "home"):
            raise SlackError("invalid_arguments")
        if not isinstance(view.get("blocks", []), list) or len(view.get("blocks", [])) > 100:
            raise SlackError("invalid_arguments")
        return view

    # --- Web API methods -------------------------------------------------------------------

    def _auth_test(self, p: dict) -> dict:
        s = self._state
        return dict(url=f"https://{s.team_domain}.slack.com/", team=s.team_name,
                    user=s.bot_name, team_id=s.team_id, user_id=s.bot_user_id,
                    bot_id=s.bot_id, is_enterprise_install=False)

    def _chat_post_message(self, p: dict) -> dict:
        s = self._state
        channel = s.resolve_channel(p.get("channel"))
        text, blocks = self._check_content(p)
        msg = s.store_message(channel, text, blocks or [], p.get("thread_ts"))
        return dict(channel=channel, ts=msg.ts, message=s.message_json(msg))

    def _chat_update(self, p: dict) -> dict:
        s = self._state
        channel = s.resolve_channel(p.get("channel"))
        msg = s.find_message(channel, p.get("ts"))
        if msg.user != s.bot_user_id:
            raise SlackError("cant_update_message")
        text, blocks = self._check_content(p)
        msg.edited.append(dict(p, edit_ts=s.new_ts(), at=time.time()))
        msg.text = text
        msg.blocks = s.with_block_ids(blocks or [])  # like Slack: replaced, not merged
        return dict(channel=channel, ts=msg.ts, text=msg.text, message=s.message_json(msg))

    def _chat_post_ephemeral(self, p: dict) -> dict:
        s = self._state
        channel = s.resolve_channel(p.get("channel"))
        user = p.get("user")
        if user not in s.users:
            raise SlackError("user_not_found")
        text, blocks = self._check_content(p)
        ts = s.new_ts()
        s.ephemerals.append(dict(
            source="chat.postEphemeral", user=user, channel=channel, text=text,
            blocks=s.with_block_ids(blocks or []), response_type="ephemeral",
            thread_ts=p.get("thread_ts"), message_ts=ts, at=time.time()))
        return dict(message_ts=ts)

    def _conversations_info(self, p: dict) -> dict:
        # The app is a member of every channel this workspace has (add_channel).
        s = self._state
        channel = s.resolve_channel(p.get("channel"))
        return dict(channel={"id": channel, "name": s.channels.get(channel, ""),
                             "is_member": True, "is_archived": False})

    def _conversations_open(self, p: dict) -> dict:
        s = self._state
        if p.get("channel"):
            channel = s.resolve_channel(p["channel"])
            return dict(channel={"id": channel}, no_op=True, already_open=True)
        users = p.get("users")
        if isinstance(users, str):
            users = [u.strip() for u in users.split(",") if u.strip()]
        if not users:
            raise SlackError("users_list_not_supplied")
        for u in users:
            info = s.users.get(u)
            if info is None:
                raise SlackError("user_not_found")
            if info["deleted"]:
                raise SlackError("user_disabled")
        if len(users) == 1:
            if s.users[users[0]]["is_bot"]:
                raise SlackError("cannot_dm_bot")
            already = users[0] in s.dms
            channel = s.open_dm(users[0])
        else:
            channel = "G" + secrets.token_hex(5).upper()
            already = False
            s.add_channel(channel, "mpdm-" + "--".join(s.users[u]["name"] for u in users))
        out: dict[str, Any] = dict(channel={"id": channel})
        if already:
            out.update(no_op=True, already_open=True)
        return out

    def _users_info(self, p: dict) -> dict:
        u = self._state.users.get(p.get("user"))
        if u is None:
            raise SlackError("user_not_found")
        return dict(user=self._state.user_json(u))

    def _usergroups_list(self, p: dict) -> dict:
        s = self._state
        include = _truthy(p.get("include_users", False))
        return dict(usergroups=[s.group_json(g, include) for g in s.groups.values()])

    def _usergroups_users_list(self, p: dict) -> dict:
        g = self._state.groups.get(p.get("usergroup"))
        if g is None:
            raise SlackError("no_such_subteam")
        return dict(users=list(g["users"]))

    def _views_open(self, p: dict) -> dict:
        s = self._state
        trigger = s.use_trigger(p.get("trigger_id"))
        obj = s.make_view(self._view_param(p))
        s.log_view("views.open", trigger["user_id"], obj)
        return dict(view=copy.deepcopy(obj))

    def _views_publish(self, p: dict) -> dict:
        s = self._state
        user = p.get("user_id")
        if user not in s.users:
            raise SlackError("user_not_found")
        view = self._view_param(p)
        if view.get("type") != "home":
            raise SlackError("invalid_arguments")
        obj = s.make_view(view)
        s.homes[user] = obj
        s.log_view("views.publish", user, obj)
        return dict(view=copy.deepcopy(obj))

    def _apps_connections_open(self, p: dict) -> dict:
        return dict(url=self._socket_mode.new_url(self._state.url))
