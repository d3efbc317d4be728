"""Slack's payload dicts in, neutral values out: the only place that reads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """Who acted, and where an answer for their eyes only can go."""

    user: str
    team: str | None
    channel: str | None = None
    response_url: str | None = None
    trigger_id: str | None = None


@dataclass(frozen=True)
class Command:
    actor: Actor
    name: str  # "/ssh-request"
    text: str


@dataclass(frozen=True)
class Click:
    actor: Actor
    action_id: str
    value: str  # the request id the button is about
    message_ts: str | None = None  # the message the button sits in


@dataclass(frozen=True)
class Submission:
    """A modal's submitted values by block id, and what the modal carried along."""

    actor: Actor
    values: dict[str, str]
    private_metadata: str


def command(body: dict) -> Command:
    actor = Actor(user=body.get("user_id", ""), team=body.get("team_id"),
                  channel=body.get("channel_id"), response_url=body.get("response_url"),
                  trigger_id=body.get("trigger_id"))
    return Command(actor, body.get("command", ""), body.get("text", ""))


def _team(body: dict, user: dict) -> str | None:
    return (body.get("team") or {}).get("id") or user.get("team_id")


def click(body: dict) -> Click:
    user = body.get("user") or {}
    action = (body.get("actions") or [{}])[0]
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    actor = Actor(user=user.get("id", ""), team=_team(body, user), channel=channel,
                  response_url=body.get("response_url"), trigger_id=body.get("trigger_id"))
    return Click(actor=actor, action_id=action.get("action_id", ""),
                 value=str(action.get("value", "")), message_ts=(body.get("message") or {}).get("ts"))


def submission(body: dict) -> Submission:
    user = body.get("user") or {}
    view = body.get("view") or {}
    metadata = view.get("private_metadata") or ""
    actor = Actor(user=user.get("id", ""), team=_team(body, user))  # a modal is in no channel
    values = {}
    for block_id, actions in ((view.get("state") or {}).get("values") or {}).items():
        for element in actions.values():
            selected = element.get("selected_option")
            values[block_id] = (selected or {}).get("value") if selected is not None \
                else (element.get("value") or "")
    return Submission(actor, values, metadata)


def changed_user(body: dict) -> str | None:
    """The user a `user_change` event is about."""
    user = (body.get("event") or {}).get("user") or {}
    return user.get("id") if isinstance(user, dict) else None


def kind(body: dict) -> str:
    """What a payload is, for a log line: its type and the command, action, view or event it
    names, never what anyone typed."""
    action = _first(body.get("actions"))
    names = (body.get("type"), body.get("command"), action.get("action_id"),
             _dict(body.get("view")).get("callback_id"), body.get("callback_id"),
             _dict(body.get("event")).get("type"))
    return " ".join(str(name)[:64] for name in names if name) or "of no known kind"


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _first(value) -> dict:
    return _dict(value[0]) if isinstance(value, list) and value else {}
