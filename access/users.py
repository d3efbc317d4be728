"""The people Vouch has seen, as Slack last described them (name, time zone), and whose App Home
is open and so worth refreshing when something on it changes."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from access.context import Access
from access.policy import People, Policy
from access.requests import Kind, Request

# Slack sends app_home_opened each time someone switches to the tab, and every open republishes:
# a Home last opened longer ago than this is not worth a views.publish on each change.
HOME_FRESH = timedelta(hours=24)


def remember(access: Access, user: str, *, name: str, tz: str | None) -> None:
    with access.unit() as unit:
        unit.users.remember(user, name=name, tz=tz, at=access.clock())


def opened_home(access: Access, user: str) -> None:
    with access.unit() as unit:
        unit.users.opened_home(user, access.clock())


def home_viewers(access: Access, among: Collection[str] | None = None) -> list[str]:
    """Who has opened their App Home lately (of `among`, if given), through any replica."""
    with access.unit(read_only=True) as unit:
        return unit.users.home_viewers(access.clock() - HOME_FRESH, among)


def concerned(policy: Policy, request: Request) -> People:
    """Whose App Home lists `request`: its requester, its target's approvers and, for a
    break-glass use, the admins who review it."""
    lists = [People(users=frozenset({request.requester}))]
    target = policy.target(request.target)
    if target is not None:
        lists.append(target.approvers)
    if request.kind is Kind.BREAKGLASS:
        lists.append(policy.admins)
    return People(users=frozenset().union(*(p.users for p in lists)),
                  groups=frozenset().union(*(p.groups for p in lists)),
                  everyone=any(p.everyone for p in lists))
