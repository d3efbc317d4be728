"""bot/slack-manifest.yaml matches the code: the slash commands and events the bolt app registers
(build_app, spied on), interactivity for its buttons and modals, and bot scopes that are exactly
those needed by the Web API methods the code calls (found by reading bot/ and vouch/) and the
events it subscribes to. A new Web API call needs a row in METHOD_SCOPES below, and so a look at
the scopes it needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from slack_bolt import App
from slack_sdk import WebClient

from bot.app import build_app
from bot.handlers import Bot

ROOT = Path(__file__).resolve().parents[3]
MANIFEST = ROOT / "bot" / "slack-manifest.yaml"
REQUEST_URL = "https://vouch.example.com/slack/events"

# Each Web API method Vouch calls with the bot token, and the bot scopes it needs (Slack's method
# reference). conversations.info takes channels:read for a public channel, groups:read for a
# private one: the security channel may be either.
METHOD_SCOPES = {
    "auth.test": set(),
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "conversations.open": {"im:write"},
    "conversations.info": {"channels:read", "groups:read"},
    "views.open": set(),
    "views.publish": set(),
    "users.info": {"users:read"},
    "usergroups.list": {"usergroups:read"},
    "usergroups.users.list": {"usergroups:read"},
}
EVENT_SCOPES = {"app_home_opened": set(), "user_change": {"users:read"}}
COMMAND_SCOPE = "commands"


def called_methods() -> set[str]:
    """Web API methods named in the code that talks to Slack (the sandbox, a fake Slack, aside):
    `_call("chat.postMessage", …)` and any direct `client.chat_postMessage(…)`."""
    found = set()
    files = [p for p in (ROOT / "bot").rglob("*.py") if "sandbox" not in p.parts]
    files += list((ROOT / "vouch").rglob("*.py"))
    for path in files:
        text = path.read_text()
        found |= set(re.findall(r"""_call\(\s*["']([a-zA-Z]+(?:\.[a-zA-Z]+)+)["']""", text))
        for name in re.findall(r"\bclient\.([a-z]+_[a-zA-Z_]+)\(", text):
            found.add(name.replace("_", "."))
    return found


def registrations(monkeypatch) -> dict[str, set[str]]:
    """What build_app registers with bolt, by kind, from the real Bot's listeners."""
    seen: dict[str, set[str]] = {"command": set(), "action": set(), "view": set(), "event": set()}
    for kind in seen:
        original = getattr(App, kind)

        def spy(self, constraint, *args, _kind=kind, _original=original, **kwargs):
            seen[_kind].add(constraint if isinstance(constraint, str) else repr(constraint))
            return _original(self, constraint, *args, **kwargs)

        monkeypatch.setattr(App, kind, spy)
    bot = Bot.__new__(Bot)  # its listeners are only registered here, never called
    bot.access = bot.notify = None
    build_app(bot, WebClient(token="xoxb-unused"), "unused-signing-secret", workers=1)
    return seen


def problems(manifest: dict, registered: dict[str, set[str]], methods: set[str]) -> list[str]:
    """Every way the manifest and the code disagree; empty when they match."""
    found = []
    features, settings = manifest.get("features", {}), manifest.get("settings", {})
    commands = {c["command"] for c in features.get("slash_commands", [])}
    for name in sorted(registered["command"] - commands):
        found.append(f"{name} is registered but not in the manifest")
    for name in sorted(commands - registered["command"]):
        found.append(f"{name} is in the manifest but nothing handles it")
    events = set(settings.get("event_subscriptions", {}).get("bot_events", []))
    for name in sorted(registered["event"] ^ events):
        found.append(f"event {name}: " + ("not subscribed" if name in registered["event"]
                                          else "subscribed but nothing listens"))
    if (registered["action"] or registered["view"]) and \
            not settings.get("interactivity", {}).get("is_enabled"):
        found.append("buttons and modals are registered but interactivity is off")
    if "views.publish" in methods and not features.get("app_home", {}).get("home_tab_enabled"):
        found.append("the Home tab is published but not enabled")
    if "conversations.open" in methods and \
            not features.get("app_home", {}).get("messages_tab_enabled"):
        found.append("DMs are sent but the messages tab is off")

    for method in sorted(methods - METHOD_SCOPES.keys()):
        found.append(f"{method} is called: add it, with its scopes, to METHOD_SCOPES")
    for method in sorted(METHOD_SCOPES.keys() - methods):
        found.append(f"{method} is in METHOD_SCOPES but no longer called")
    needed = set().union(*(METHOD_SCOPES.get(m, set()) for m in methods),
                         *(EVENT_SCOPES.get(e, set()) for e in registered["event"]))
    if registered["command"]:
        needed.add(COMMAND_SCOPE)
    for name in sorted(registered["event"] - EVENT_SCOPES.keys()):
        found.append(f"event {name}: add it, with its scopes, to EVENT_SCOPES")
    scopes = set(manifest.get("oauth_config", {}).get("scopes", {}).get("bot", []))
    for scope in sorted(needed - scopes):
        found.append(f"scope {scope} is needed but not requested")
    for scope in sorted(scopes - needed):
        found.append(f"scope {scope} is requested but nothing needs it")
    if manifest.get("oauth_config", {}).get("scopes", {}).get("user"):
        found.append("user scopes are requested: Vouch acts only as its bot")
    return found


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture
def registered(monkeypatch) -> dict[str, set[str]]:
    return registrations(monkeypatch)


def test_the_spy_sees_what_the_contract_names(registered):
    assert registered["command"] == {"/ssh-request", "/ssh-breakglass", "/ssh-key",
                                     "/ssh-revoke", "/ssh-status"}
    assert {"app_home_opened", "user_change"} <= registered["event"]
    assert registered["action"] and registered["view"]
    assert {"chat.postMessage", "chat.update", "conversations.open", "views.publish",
            "users.info"} <= called_methods()


def test_the_manifest_matches_the_code(manifest, registered):
    assert problems(manifest, registered, called_methods()) == []


def test_it_is_a_version_1_manifest_for_http_with_one_request_url(manifest):
    assert manifest["_metadata"]["major_version"] == 1
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is False
    urls = [c["url"] for c in manifest["features"]["slash_commands"]]
    urls += [settings["event_subscriptions"]["request_url"],
             settings["interactivity"]["request_url"]]
    assert set(urls) == {REQUEST_URL}
    assert 'Route("/slack/events"' in (ROOT / "vouch" / "web.py").read_text()
    assert manifest["features"]["bot_user"]["display_name"]
    for command in manifest["features"]["slash_commands"]:
        assert 0 < len(command["description"]) <= 100, command["command"]
    assert len(manifest["display_information"]["description"]) <= 140
    assert 175 <= len(manifest["display_information"]["long_description"]) <= 4000


def test_the_socket_mode_variant_is_explained_in_the_file():
    comments = "\n".join(line for line in MANIFEST.read_text().splitlines()
                         if line.startswith("#"))
    for needed in ("socket_mode_enabled: true", "connections:write", "VOUCH_SLACK_APP_TOKEN",
                   "request_url"):
        assert needed in comments


def test_it_ships_with_the_package():
    data = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^bot = \[.*"slack-manifest\.yaml"', data, re.M)


def test_the_readme_explains_each_scope_it_requests(manifest):
    readme = (ROOT / "README.md").read_text()
    explained = set(re.findall(r"^ *\| `([a-z.:]+)` \|", readme, re.M))
    assert explained == set(manifest["oauth_config"]["scopes"]["bot"])


# problems() must be able to fail: each kind of mismatch, on a copy of the real manifest.
def mutated(manifest: dict, change) -> dict:
    copy = yaml.safe_load(yaml.safe_dump(manifest))
    change(copy)
    return copy


def bot_scopes(m):
    return m["oauth_config"]["scopes"]["bot"]


@pytest.mark.parametrize("change, expected", [
    (lambda m: bot_scopes(m).remove("usergroups:read"),
     "scope usergroups:read is needed but not requested"),
    (lambda m: bot_scopes(m).append("channels:history"),
     "scope channels:history is requested but nothing needs it"),
    (lambda m: bot_scopes(m).remove("commands"), "scope commands is needed but not requested"),
    (lambda m: m["features"]["slash_commands"].pop(),
     "/ssh-status is registered but not in the manifest"),
    (lambda m: m["features"]["slash_commands"].append({"command": "/ssh-nope"}),
     "/ssh-nope is in the manifest but nothing handles it"),
    (lambda m: m["settings"]["event_subscriptions"]["bot_events"].remove("user_change"),
     "event user_change: not subscribed"),
    (lambda m: m["settings"]["event_subscriptions"]["bot_events"].append("message.im"),
     "event message.im: subscribed but nothing listens"),
    (lambda m: m["settings"]["interactivity"].update(is_enabled=False),
     "interactivity is off"),
    (lambda m: m["features"]["app_home"].update(home_tab_enabled=False),
     "the Home tab is published but not enabled"),
    (lambda m: m["oauth_config"]["scopes"].update(user=["search:read"]), "user scopes"),
])
def test_each_mismatch_is_named(manifest, registered, change, expected):
    found = problems(mutated(manifest, change), registered, called_methods())
    assert any(expected in line for line in found), found


def test_a_new_web_api_call_needs_a_row_in_the_table(manifest, registered):
    found = problems(manifest, registered, called_methods() | {"files.uploadV2"})
    assert "files.uploadV2 is called: add it, with its scopes, to METHOD_SCOPES" in found
    found = problems(manifest, registered, called_methods() - {"usergroups.list",
                                                               "usergroups.users.list"})
    assert "scope usergroups:read is requested but nothing needs it" in found
