"""The people Vouch has seen, as Slack last described them (name, time zone)."""

from __future__ import annotations

from access.context import Access


def remember(access: Access, user: str, *, name: str, tz: str | None) -> None:
    with access.unit() as unit:
        unit.users.remember(user, name=name, tz=tz, at=access.clock())
