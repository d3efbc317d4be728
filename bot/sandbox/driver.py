"""Sends the bot the HTTP requests Slack would send: slash commands, button clicks, modal
submissions and Events API callbacks, form-encoded and signed with the app's signing secret
(https://docs.slack.dev/authentication/verifying-requests-from-slack).

Payload contents (user names, channel names, the clicked message's current blocks, trigger_ids,
response_urls) come from the FakeSlack the bot talks to, so a click sees what a person would see.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urlencode

from bot.sandbox.fake_slack import FakeSlack

__all__ = ["Response", "SlackDriver"]


@dataclass
class Response:
    status: int
    body: str
    elapsed: float  # seconds from sending the request to having read the whole answer
    headers: dict = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


class SlackDriver:
    def __init__(self, bot_url: str, signing_secret: str, slack: FakeSlack, *,
                 team_id: str | None = None, verification_token: str = "fake-verification-token",
                 timeout: float = 10.0):
        self.bot_url = bot_url
        self.signing_secret = signing_secret
        self.slack = slack
        self.team_id = team_id or slack.team_id
        self.verification_token = verification_token  # deprecated by Slack, still sent
        self.timeout = timeout

    # --- signing and transport -------------------------------------------------------------

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if timestamp is None else int(timestamp)
        base = b"v0:" + str(ts).encode() + b":" + body
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": "v0=" + digest}

    def raw(self, body: bytes, headers: dict, content_type: str) -> Response:
        """POST ``body`` to the bot as is (no signing beyond what ``headers`` carry)."""
        all_headers = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        all_headers.update(headers)
        req = urllib.request.Request(self.bot_url, data=body, headers=all_headers, method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, data, hdrs = resp.status, resp.read(), dict(resp.headers.items())
        except urllib.error.HTTPError as err:
            status, data, hdrs = err.code, err.read(), dict(err.headers.items())
        elapsed = time.monotonic() - started
        return Response(status=status, body=data.decode("utf-8", "replace"), elapsed=elapsed,
                        headers=hdrs)

    def _post_form(self, fields: dict[str, str], *, timestamp: int | None,
                   signature: str | None, extra_headers: dict | None = None) -> Response:
        body = urlencode(fields).encode()
        headers = self.sign(body, timestamp)
        if signature is not None:
            headers["X-Slack-Signature"] = signature
        headers.update(extra_headers or {})
        return self.raw(body, headers, "application/x-www-form-urlencoded")

    def _post_payload(self, payload: dict, *, timestamp: int | None = None,
                      signature: str | None = None) -> Response:
        return self._post_form({"payload": json.dumps(payload, separators=(",", ":"))},
                               timestamp=timestamp, signature=signature)

    # --- what Slack knows about people and places ------------------------------------------

    def _user_name(self, user_id: str) -> str:
        u = self.slack.user(user_id)
        return u["name"] if u else user_id.lower()

    def _user(self, user_id: str, team_id: str) -> dict:
        name = self._user_name(user_id)
        return {"id": user_id, "username": name, "name": name, "team_id": team_id}

    def _channel_name(self, channel_id: str) -> str:
        name = self.slack.channel_name(channel_id)
        if name is None:
            return "directmessage" if channel_id.startswith("D") else "privategroup"
        return name

    def _team(self, team_id: str) -> dict:
        return {"id": team_id, "domain": self.slack.team_domain}

    # --- slash commands --------------------------------------------------------------------

    def command(self, user_id: str, command: str, text: str = "", *, channel_id: str = "C0GENERAL",
                team_id: str | None = None, timestamp: int | None = None,
                signature: str | None = None) -> Response:
        team = team_id or self.team_id
        fields = {
            "token": self.verification_token,
            "team_id": team,
            "team_domain": self.slack.team_domain,
            "channel_id": channel_id,
            "channel_name": self._channel_name(channel_id),
            "user_id": user_id,
            "user_name": self._user_name(user_id),
            "command": command if command.startswith("/") else "/" + command,
            "text": text,
            "api_app_id": self.slack.app_id,
            "is_enterprise_install": "false",
            "response_url": self.slack.response_url(user_id, channel_id),
            "trigger_id": self.slack.new_trigger_id(user_id),
        }
        return self._post_form(fields, timestamp=timestamp, signature=signature)

    # --- buttons ---------------------------------------------------------------------------

    def click(self, user_id: str, *, channel: str, ts: str, action_id: str, value: str,
              text: str = "Approve", team_id: str | None = None, block_id: str | None = None,
              timestamp: int | None = None, signature: str | None = None) -> Response:
        team = team_id or self.team_id
        msg = self.slack.message(channel, ts)
        if block_id is None:
            block_id = next((b for b, el in _buttons(msg.blocks) if el.get("action_id") == action_id),
                            secrets.token_urlsafe(4))
        message = {"type": "message", "user": msg.user, "bot_id": self.slack.bot_id,
                   "app_id": self.slack.app_id, "text": msg.text, "blocks": msg.blocks,
                   "team": self.slack.team_id, "ts": msg.ts}
        if msg.thread_ts:
            message["thread_ts"] = msg.thread_ts
        payload = {
            "type": "block_actions",
            "user": self._user(user_id, team),
            "api_app_id": self.slack.app_id,
            "token": self.verification_token,
            "container": {"type": "message", "message_ts": ts, "channel_id": channel,
                          "is_ephemeral": False},
            "trigger_id": self.slack.new_trigger_id(user_id),
            "team": self._team(team),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self._channel_name(channel)},
            "message": message,
            "state": {"values": {}},
            "response_url": self.slack.response_url(user_id, channel, ts),
            "actions": [{
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": text, "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }],
        }
        return self._post_payload(payload, timestamp=timestamp, signature=signature)

    def click_button(self, user_id: str, *, channel: str, ts: str, label: str,
                     team_id: str | None = None) -> Response:
        """Click the button labelled ``label`` in the message as it is now; a LookupError when
        the message shows no such button (e.g. after an update removed it)."""
        msg = self.slack.message(channel, ts)
        labels = []
        for block_id, el in _buttons(msg.blocks):
            shown = (el.get("text") or {}).get("text", "")
            labels.append(shown)
            if shown == label:
                return self.click(user_id, channel=channel, ts=ts, action_id=el.get("action_id", ""),
                                  value=el.get("value", ""), text=shown, team_id=team_id,
                                  block_id=block_id)
        raise LookupError(f"no button {label!r} in message {ts} in {channel}; buttons: {labels}")

    def click_in_home(self, user_id: str, *, label: str, value: str | None = None,
                      team_id: str | None = None) -> Response:
        """Click the button labelled ``label`` (about request ``value``, if given) in the App
        Home Slack shows ``user_id`` now, as Slack sends it: a block_actions with a view
        container and no channel or message."""
        home = self.slack.home(user_id)
        if home is None:
            raise LookupError(f"{user_id} has no App Home published")
        team = team_id or self.team_id
        for block_id, el in _buttons(home.get("blocks", [])):
            shown = (el.get("text") or {}).get("text", "")
            if shown == label and (value is None or el.get("value") == value):
                payload = {
                    "type": "block_actions", "user": self._user(user_id, team),
                    "api_app_id": self.slack.app_id, "token": self.verification_token,
                    "container": {"type": "view", "view_id": home["id"]},
                    "trigger_id": self.slack.new_trigger_id(user_id), "team": self._team(team),
                    "enterprise": None, "is_enterprise_install": False, "view": home,
                    "actions": [{"action_id": el.get("action_id", ""), "block_id": block_id,
                                 "text": {"type": "plain_text", "text": shown, "emoji": True},
                                 "value": el.get("value", ""), "type": "button",
                                 "action_ts": f"{time.time():.6f}"}],
                }
                return self._post_payload(payload)
        raise LookupError(f"no button {label!r} for {value!r} in {user_id}'s App Home")

    def open_home(self, user_id: str, *, team_id: str | None = None) -> Response:
        """The user opens the app's Home tab (the app_home_opened event)."""
        return self.event({"type": "app_home_opened", "user": user_id, "channel": "D0HOME",
                           "tab": "home", "event_ts": f"{time.time():.6f}"}, team_id=team_id)

    # --- modals ----------------------------------------------------------------------------

    def submit_view(self, user_id: str, view: dict, values: dict, *, team_id: str | None = None,
                    timestamp: int | None = None, signature: str | None = None) -> Response:
        """Submit a modal. ``view`` is one from ``slack.views()`` (its current state is used when
        the fake knows its id); ``values`` is state.values: {block_id: {action_id: {...}}}."""
        team = team_id or self.team_id
        current = dict(view)
        try:
            current = self.slack.view(view["id"])
        except KeyError:
            pass
        current.pop("method", None)
        current.pop("user_id", None)
        current["state"] = {"values": values}
        payload = {
            "type": "view_submission",
            "team": self._team(team),
            "user": self._user(user_id, team),
            "api_app_id": self.slack.app_id,
            "token": self.verification_token,
            "trigger_id": self.slack.new_trigger_id(user_id),
            "view": current,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return self._post_payload(payload, timestamp=timestamp, signature=signature)

    # --- Events API ------------------------------------------------------------------------

    def event(self, event: dict, *, team_id: str | None = None, retry_num: int | None = None,
              timestamp: int | None = None, signature: str | None = None) -> Response:
        """An Events API ``event_callback`` (JSON body) wrapping ``event``."""
        team = team_id or self.team_id
        envelope = {
            "token": self.verification_token, "team_id": team, "api_app_id": self.slack.app_id,
            "event": event, "type": "event_callback", "event_id": "Ev" + secrets.token_hex(5).upper(),
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": team,
                                "user_id": self.slack.bot_user_id, "is_bot": True,
                                "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
        }
        body = json.dumps(envelope).encode()
        headers = self.sign(body, timestamp)
        if signature is not None:
            headers["X-Slack-Signature"] = signature
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return self.raw(body, headers, "application/json")


def _buttons(blocks: list) -> Iterator[tuple[str, dict]]:
    """(block_id, element) for every button in actions blocks and section accessories."""
    for block in blocks or []:
        if not isinstance(block, dict):
            continue
        block_id = block.get("block_id", "")
        elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for el in elements:
            if isinstance(el, dict) and el.get("type") == "button":
                yield block_id, el
