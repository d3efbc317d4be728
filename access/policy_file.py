"""The policy file: YAML read into access.policy's dataclasses.

Every problem in a file is reported with its line, so `vouch policy check` can list them all at
once (FILE:LINE: message). access.policy_yaml reads the YAML; this module checks what it says.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from access.durations import format_duration, parse_duration
from access.policy import DEFAULT_MIN_DURATION, Breakglass, People, Policy, Target
from access.policy_yaml import Node, PolicyError, Problem, read_yaml
from ca.cert import EXTENSIONS, parse_source_addresses
from ca.errors import BadInput

EVERYONE = "*"
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_GROUP = re.compile(r"^@[a-z0-9][a-z0-9._-]*$")
_TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_PRINCIPAL = re.compile(r"^[A-Za-z0-9._@-][A-Za-z0-9._@$-]{0,63}$")
# Longer than this loads, with a warning: a certificate is only as short-lived as its maximum.
LONG_DURATION = timedelta(days=7)


@dataclass(frozen=True)
class CheckedPolicy:
    """A policy that loads, and what `vouch policy check` warns of in it (line by line)."""

    policy: Policy
    path: str
    warnings: tuple[Problem, ...] = ()

    def lines(self) -> list[str]:
        return [f"{self.path}:{w.line}: warning: {w.message}" for w in self.warnings]


# --- loading -----------------------------------------------------------------------------

def load_policy(path: str) -> Policy:
    """Read and validate a policy file; raises PolicyError listing every problem."""
    return check_policy_file(path).policy


def check_policy_file(path: str) -> CheckedPolicy:
    """load_policy, with the warnings."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise BadInput(f"policy file {path!r} does not exist (set VOUCH_POLICY_FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"policy file {path!r} cannot be read: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None
    return check_policy(text, path)


def parse_policy(text: str, path: str = "policy.yaml") -> Policy:
    return check_policy(text, path).policy


def check_policy(text: str, path: str = "policy.yaml") -> CheckedPolicy:
    """Validate a policy; raises PolicyError listing every problem, else returns it with the
    warnings (a target nobody can have approved, a max_duration over 7 days)."""
    tree = read_yaml(text, path)
    checker = _Checker()
    policy = checker.policy(tree)
    if checker.problems:
        raise PolicyError(path, checker.problems)
    warnings = tuple(sorted(checker.warnings, key=lambda w: w.line))
    return CheckedPolicy(Policy(**{**policy.__dict__, "source": path}), path, warnings)


_TOP_KEYS = {"requests_channel", "security_channel", "request_ttl", "reminder_before", "admins",
             "targets", "breakglass"}
_TARGET_KEYS = {"principals", "max_duration", "min_duration", "approvers", "approvals_required",
                "requesters", "source_address", "force_command", "extensions"}
_BREAKGLASS_KEYS = {"users", "max_duration", "targets", "review_within"}


class _Checker:
    """Walks the YAML tree, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def fail(self, line: int, message: str) -> None:
        self.problems.append(Problem(line, message))

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(Problem(line, message))

    def long_duration(self, entry: tuple[int, Node] | None, duration: timedelta | None, where: str) -> None:
        if entry is not None and duration is not None and duration > LONG_DURATION:
            self.warn(entry[0], f"{where} max_duration {format_duration(duration)} is longer than "
                                "7 days; certificates are meant to be short-lived")

    def mapping(self, node: Node, where: str, allowed: set[str]) -> dict[str, tuple[int, Node]]:
        if not isinstance(node.value, dict):
            self.fail(node.line, f"{where} must be a mapping of keys to values")
            return {}
        for key, (line, _) in node.value.items():
            if key not in allowed:
                close = _closest(str(key), allowed)
                hint = f" (did you mean {close!r}?)" if close else ""
                self.fail(line, f"unknown key {key!r} in {where}{hint}; allowed: "
                                + ", ".join(sorted(allowed)))
        return node.value

    def duration(self, entry: tuple[int, Node] | None, name: str, default: timedelta | None
                 ) -> timedelta | None:
        if entry is None:
            if default is None:
                self.fail(0, f"{name} is required")
            return default
        line, node = entry
        try:
            return parse_duration(str(node.value)) if node.value is not None else _raise_none(name)
        except BadInput as exc:
            self.fail(line, f"{name}: {exc.message}")
            return default

    def channel(self, entry: tuple[int, Node] | None, name: str) -> str | None:
        if entry is None or entry[1].value is None:
            return None
        line, node = entry
        if not isinstance(node.value, str) or not _CHANNEL_ID.match(node.value):
            self.fail(line, f"{name} must be a Slack channel ID like C0123ABCD, not {node.value!r}")
            return None
        return node.value

    def people(self, entry: tuple[int, Node] | None, name: str, *, allow_everyone: bool,
               default: People) -> People:
        if entry is None:
            return default
        line, node = entry
        if not isinstance(node.value, list):
            self.fail(line, f"{name} must be a list of Slack user IDs (U…) and \"@group\" handles")
            return default
        users, groups, everyone = set(), set(), False
        for item in node.value:
            value = item.value
            if value == EVERYONE and allow_everyone:
                everyone = True
            elif isinstance(value, str) and _USER_ID.match(value):
                users.add(value)
            elif isinstance(value, str) and _GROUP.match(value):
                groups.add(value)
            else:
                allowed = "Slack user IDs like U0123ABCD or \"@group\" handles" + \
                    (' or "*"' if allow_everyone else "")
                self.fail(item.line, f"{name}: {value!r} is not one of {allowed}")
        return People(frozenset(users), frozenset(groups), everyone)

    def policy(self, tree: Node) -> Policy:
        top = self.mapping(tree, "the policy", _TOP_KEYS)
        targets: dict[str, Target] = {}
        targets_entry = top.get("targets")
        if targets_entry is None:
            self.fail(tree.line, "the policy needs `targets:` (at least one target)")
        else:
            line, node = targets_entry
            if not isinstance(node.value, dict) or not node.value:
                self.fail(line, "targets must map target names to their settings")
            else:
                for name, (name_line, target_node) in node.value.items():
                    target = self.target(str(name), name_line, target_node)
                    if target is not None:
                        targets[str(name)] = target
        policy = Policy(
            targets=targets,
            request_ttl=self.duration(top.get("request_ttl"), "request_ttl", timedelta(minutes=30)),
            reminder_before=self.duration(top.get("reminder_before"), "reminder_before",
                                          timedelta(minutes=15)),
            admins=self.people(top.get("admins"), "admins", allow_everyone=False, default=People()),
            requests_channel=self.channel(top.get("requests_channel"), "requests_channel"),
            security_channel=self.channel(top.get("security_channel"), "security_channel"),
        )
        if "breakglass" in top:
            breakglass = self.breakglass(*top["breakglass"], targets_entry, targets)
            if breakglass is not None:
                policy = Policy(**{**policy.__dict__, "breakglass": breakglass})
                if policy.security_channel is None:
                    self.fail(top["breakglass"][0], "breakglass needs security_channel for its alerts")
        return policy

    def target(self, name: str, line: int, node: Node) -> Target | None:
        before = len(self.problems)
        if not _TARGET_NAME.match(name):
            self.fail(line, f"target name {name!r} must be lowercase letters, digits, '.', '_' or '-'")
        where = f"target {name!r}"
        fields = self.mapping(node, where, _TARGET_KEYS)
        principals = self.principals(fields.get("principals"), where, line)
        max_duration = self.duration(fields.get("max_duration"), f"{where} max_duration", None) \
            if "max_duration" in fields else self._missing(line, f"{where} needs max_duration")
        min_duration = self.duration(fields.get("min_duration"), f"{where} min_duration",
                                     DEFAULT_MIN_DURATION)
        if max_duration and min_duration and min_duration > max_duration:
            self.fail(fields["min_duration"][0] if "min_duration" in fields else fields["max_duration"][0],
                      f"{where}: min_duration {format_duration(min_duration)} is longer than "
                      f"max_duration {format_duration(max_duration)}")
        if "approvers" not in fields:
            self.fail(line, f"{where} needs approvers (Slack user IDs or \"@group\" handles)")
        approvers = self.people(fields.get("approvers"), f"{where} approvers", allow_everyone=False,
                                default=People())
        if "approvers" in fields and not approvers.users and not approvers.groups:
            self.fail(fields["approvers"][0], f"{where}: approvers is empty, so nobody could approve")
        required = self.approvals_required(fields.get("approvals_required"), where, approvers)
        requesters = self.people(fields.get("requesters"), f"{where} requesters", allow_everyone=True,
                                 default=People(everyone=True))
        source_address = self.source_address(fields.get("source_address"), where)
        force_command = self.force_command(fields.get("force_command"), where)
        extensions = self.extensions(fields.get("extensions"), where)
        if len(self.problems) > before:
            return None
        self.long_duration(fields.get("max_duration"), max_duration, f"{where}:")
        self.never_approved(fields.get("approvals_required") or fields["approvers"], where,
                            approvers, required, requesters)
        return Target(name=name, principals=principals, max_duration=max_duration,
                      min_duration=min_duration, approvers=approvers, approvals_required=required,
                      requesters=requesters, source_address=source_address,
                      force_command=force_command, extensions=extensions)

    def _missing(self, line: int, message: str) -> None:
        self.fail(line, message)
        return None

    def principals(self, entry, where: str, line: int) -> tuple[str, ...]:
        if entry is None:
            self.fail(line, f"{where} needs principals (the login names on its hosts)")
            return ()
        entry_line, node = entry
        if not isinstance(node.value, list) or not node.value:
            self.fail(entry_line, f"{where} principals must be a non-empty list of login names")
            return ()
        out = []
        for item in node.value:
            if not isinstance(item.value, str) or not _PRINCIPAL.match(item.value):
                self.fail(item.line, f"{where}: principal {item.value!r} is not a valid login name")
            else:
                out.append(item.value)
        return tuple(dict.fromkeys(out))

    def approvals_required(self, entry, where: str, approvers: People) -> int:
        if entry is None:
            return 1
        line, node = entry
        value = node.value
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.fail(line, f"{where}: approvals_required must be a whole number of at least 1")
            return 1
        if not approvers.groups and approvers.users and value > len(approvers.users):
            self.fail(line, f"{where}: approvals_required is {value} but only "
                            f"{len(approvers.users)} approver(s) are listed")
        return value

    def never_approved(self, entry: tuple[int, Node], where: str, approvers: People,
                       required: int, requesters: People) -> None:
        """Warn when some requests of this target can never gather their approvals, as nobody
        approves their own. Only when certain: approvers with a group may be any number, so they
        are never warned of; a requesters' group makes no approver certainly a requester."""
        if approvers.groups or len(approvers.users) - 1 >= required:
            return
        count = len(approvers.users)
        askers = approvers.users if requesters.everyone else approvers.users & requesters.users
        if not askers:
            return
        if not requesters.everyone and not requesters.groups and requesters.users <= askers:
            self.warn(entry[0], f"{where} can never be approved: every requester is one of its "
                                f"{count} approver(s), who cannot approve their own requests, "
                                f"which leaves {count - 1} for approvals_required {required}")
            return
        self.warn(entry[0], f"{where}: a request by {' or '.join(sorted(askers))} can never be "
                            "approved: approvers cannot approve their own requests, which leaves "
                            f"{count - 1} approver(s) for approvals_required {required}")

    def source_address(self, entry, where: str) -> str | None:
        if entry is None or entry[1].value is None:
            return None
        line, node = entry
        value = node.value
        items = [i.value for i in value] if isinstance(value, list) else [value]
        try:
            return parse_source_addresses(",".join(str(i) for i in items))
        except BadInput as exc:
            self.fail(line, f"{where}: {exc.message}")
            return None

    def force_command(self, entry, where: str) -> str | None:
        if entry is None or entry[1].value is None:
            return None
        line, node = entry
        if not isinstance(node.value, str) or not node.value.strip():
            self.fail(line, f"{where}: force_command must be a command line, or null")
            return None
        return node.value

    def extensions(self, entry, where: str) -> frozenset[str]:
        if entry is None:
            return frozenset({"permit-pty"})
        line, node = entry
        if not isinstance(node.value, list):
            self.fail(line, f"{where}: extensions must be a list, e.g. [permit-pty]")
            return frozenset()
        out = set()
        for item in node.value:
            if item.value not in EXTENSIONS:
                self.fail(item.line, f"{where}: unknown extension {item.value!r}; allowed: "
                                     + ", ".join(EXTENSIONS))
            else:
                out.add(item.value)
        return frozenset(out)

    def breakglass(self, line: int, node: Node, targets_entry, targets: dict[str, Target]
                   ) -> Breakglass | None:
        before = len(self.problems)
        fields = self.mapping(node, "breakglass", _BREAKGLASS_KEYS)
        users = self.people(fields.get("users"), "breakglass users", allow_everyone=False,
                            default=People())
        if not users.users and not users.groups:
            self.fail(fields["users"][0] if "users" in fields else line,
                      "breakglass needs users (who may break glass)")
        max_duration = self.duration(fields.get("max_duration"), "breakglass max_duration", None) \
            if "max_duration" in fields else self._missing(line, "breakglass needs max_duration")
        review_within = self.duration(fields.get("review_within"), "breakglass review_within",
                                      timedelta(hours=4))
        allowed: frozenset[str] | None = None
        if "targets" in fields:
            t_line, t_node = fields["targets"]
            names = [item for item in t_node.value] if isinstance(t_node.value, list) else None
            if names is None:
                self.fail(t_line, 'breakglass targets must be a list of target names, or ["*"]')
            elif any(item.value == EVERYONE for item in names):
                allowed = None
            else:
                allowed = frozenset(str(item.value) for item in names)
                known = set(targets) | self._declared_targets(targets_entry)
                for item in names:
                    if str(item.value) not in known:
                        self.fail(item.line, f"breakglass target {item.value!r} does not exist; "
                                             "targets are: " + ", ".join(sorted(known)))
        else:
            self.fail(line, 'breakglass needs targets (a list of target names, or ["*"])')
        if len(self.problems) > before:
            return None
        self.long_duration(fields.get("max_duration"), max_duration, "breakglass")
        return Breakglass(users=users, max_duration=max_duration, targets=allowed,
                          review_within=review_within)

    @staticmethod
    def _declared_targets(targets_entry) -> set[str]:
        # Targets with their own problems still exist by name: do not report them twice.
        if targets_entry is None or not isinstance(targets_entry[1].value, dict):
            return set()
        return {str(name) for name in targets_entry[1].value}


def _raise_none(name: str):
    raise BadInput(f"{name} has no value")


def _closest(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return matches[0] if matches else None


class PolicyStore:
    """The current policy, replaced only by a valid one (`vouch serve` reloads it on SIGHUP)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._policy = load_policy(path)

    def __call__(self) -> Policy:
        return self._policy

    def reload(self) -> Policy:
        """Load the file again; on any problem keep the old policy and raise the error."""
        policy = load_policy(self.path)
        self._policy = policy
        return policy
