"""The policy: who may ask for which target, for how long, and who must vouch for it.

Frozen dataclasses; `access.policy_file` reads them from YAML. An empty allow-list means nobody;
everyone must be spelled `"*"`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

DEFAULT_MIN_DURATION = timedelta(minutes=5)


class Directory(Protocol):
    """Resolves a user group handle ("@db-owners") to its members' user IDs. It may ask Slack,
    so it is consulted before a transaction opens, never inside one (see Person)."""

    def members(self, handle: str) -> frozenset[str]: ...


class NoDirectory:
    """For places without Slack (the CLI): groups have no known members."""

    def members(self, handle: str) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class Person:
    """Someone acting, with the groups they were found to belong to: the pure rules decide on
    this, so that the group lookups (Slack calls) happen before any transaction."""

    id: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class People:
    """A list of user IDs and "@group" handles, or everyone ("*")."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    everyone: bool = False

    def includes(self, person: Person) -> bool:
        return self.everyone or person.id in self.users or not self.groups.isdisjoint(person.groups)

    def needs_lookup(self, user_id: str) -> frozenset[str]:
        """The groups whose members must be known to tell whether `user_id` is in this list:
        none when the answer does not depend on them."""
        if self.everyone or user_id in self.users:
            return frozenset()
        return self.groups


def find_person(user_id: str, directory: Directory, *lists: People) -> Person:
    """`user_id` with the groups of `lists` they belong to, looked up only where it matters."""
    handles = frozenset().union(*(people.needs_lookup(user_id) for people in lists))
    return Person(user_id, frozenset(h for h in handles if user_id in directory.members(h)))


@dataclass(frozen=True)
class Target:
    name: str
    principals: tuple[str, ...]
    max_duration: timedelta
    approvers: People
    min_duration: timedelta = DEFAULT_MIN_DURATION
    approvals_required: int = 1
    requesters: People = People(everyone=True)
    source_address: str | None = None
    force_command: str | None = None
    extensions: frozenset[str] = frozenset({"permit-pty"})


@dataclass(frozen=True)
class Breakglass:
    users: People
    max_duration: timedelta
    targets: frozenset[str] | None  # None: every target
    review_within: timedelta

    def covers(self, target: str) -> bool:
        return self.targets is None or target in self.targets


@dataclass(frozen=True)
class Policy:
    targets: dict[str, Target]
    request_ttl: timedelta = timedelta(minutes=30)
    reminder_before: timedelta = timedelta(minutes=15)
    admins: People = People()
    requests_channel: str | None = None
    security_channel: str | None = None
    breakglass: Breakglass | None = None
    source: str = field(default="", compare=False)

    def target(self, name: str) -> Target | None:
        return self.targets.get(name)

    def requesters(self) -> tuple[People, ...]:
        """Every target's requesters: what deciding which targets someone may ask for needs."""
        return tuple(target.requesters for target in self.targets.values())
