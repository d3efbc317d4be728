"""Slash command grammar (CONTRACT "Slash commands"): text in, a neutral command out. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from access.durations import USAGE as DURATION_USAGE
from access.durations import parse_duration
from ca.errors import BadInput

USAGE = {
    "/ssh-request": (
        "*Usage:* `/ssh-request <target> <duration> <reason…>`, e.g. "
        "`/ssh-request prod-db 2h investigating slow queries`.\n"
        "`/ssh-request cancel <request-id>` withdraws your pending request.\n"
        "Type `/ssh-request` alone to open a form. " + DURATION_USAGE.capitalize() + "."),
    "/ssh-breakglass": (
        "*Usage:* `/ssh-breakglass <target> <duration> <reason…>` — emergency access with no "
        "approver. The security channel is alerted and an admin reviews every use."),
    "/ssh-key": (
        "*Usage:*\n• `/ssh-key add <OpenSSH public key line>` — e.g. the contents of "
        "`~/.ssh/id_ed25519.pub`\n• `/ssh-key list`\n• `/ssh-key remove <SHA256:fingerprint>`"),
    "/ssh-revoke": (
        "*Usage:* `/ssh-revoke <serial|request-id> [reason…]` — revoke your certificate "
        "(admins: anyone's). Hosts refuse it from their next KRL refresh."),
    "/ssh-status": ("*Usage:* `/ssh-status` — your pending requests, live certificates and the "
                    "requests waiting for your approval."),
}


@dataclass(frozen=True)
class Help:
    command: str
    problem: str | None = None  # what was wrong with the text, if it was not a plain `help`

    def text(self) -> str:
        usage = USAGE[self.command]
        return f"{self.problem}\n{usage}" if self.problem else usage


@dataclass(frozen=True)
class AskAccess:
    target: str
    duration: timedelta
    reason: str


@dataclass(frozen=True)
class OpenForm:
    pass


@dataclass(frozen=True)
class CancelRequest:
    request_id: str


@dataclass(frozen=True)
class KeyAdd:
    line: str


@dataclass(frozen=True)
class KeyList:
    pass


@dataclass(frozen=True)
class KeyRemove:
    fingerprint: str


@dataclass(frozen=True)
class Revoke:
    reference: str
    reason: str | None


@dataclass(frozen=True)
class Status:
    pass


Command = (Help | AskAccess | OpenForm | CancelRequest | KeyAdd | KeyList | KeyRemove | Revoke
           | Status)


def parse(command: str, text: str) -> Command:
    """Parse a slash command's text. Anything malformed becomes Help naming the problem."""
    text = (text or "").strip()
    if command not in USAGE:
        raise ValueError(f"not a Vouch command: {command}")
    if text.lower() in ("help", "-h", "--help", "?"):
        return Help(command)
    try:
        return _PARSERS[command](command, text)
    except BadInput as exc:
        return Help(command, exc.message)


def _access(command: str, text: str) -> Command:
    if not text:
        if command == "/ssh-request":
            return OpenForm()
        return Help(command, "Say which target, for how long, and why.")
    parts = text.split(None, 2)
    if command == "/ssh-request" and parts[0].lower() == "cancel" and \
            (len(parts) == 1 or parts[1].startswith("req-")):  # not a target named "cancel"
        if len(parts) != 2:
            raise BadInput("Give the request id after `cancel`: `/ssh-request cancel req-…`.")
        return CancelRequest(parts[1])
    if len(parts) < 2:
        raise BadInput(f"Missing the duration after `{parts[0]}`.")
    duration = parse_duration(parts[1])
    if len(parts) < 3 or not parts[2].strip():
        raise BadInput("Missing the reason: say why you need access (approvers see it).")
    return AskAccess(target=parts[0].lower(), duration=duration, reason=parts[2].strip())


def _key(command: str, text: str) -> Command:
    verb, _, rest = text.partition(" ")
    verb = verb.lower()
    rest = rest.strip()
    if verb == "add":
        if not rest:
            raise BadInput("Paste your public key after `add`.")
        return KeyAdd(rest)
    if verb in ("list", "ls", ""):
        if rest:
            raise BadInput("`list` takes nothing after it.")
        return KeyList()
    if verb in ("remove", "rm", "delete"):
        if not rest.startswith("SHA256:") or " " in rest:
            raise BadInput("Give the key's fingerprint after `remove`, as `/ssh-key list` shows it "
                           "(SHA256:…).")
        return KeyRemove(rest)
    raise BadInput(f"Unknown subcommand `{verb[:20]}`.")


def _revoke(command: str, text: str) -> Command:
    if not text:
        raise BadInput("Say which certificate: its serial or its request id.")
    reference, _, reason = text.partition(" ")
    return Revoke(reference=reference, reason=reason.strip() or None)


def _status(command: str, text: str) -> Command:
    if text:
        raise BadInput("`/ssh-status` takes no arguments.")
    return Status()


_PARSERS = {"/ssh-request": _access, "/ssh-breakglass": _access, "/ssh-key": _key,
            "/ssh-revoke": _revoke, "/ssh-status": _status}
