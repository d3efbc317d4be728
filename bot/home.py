"""The App Home tab (`app_home_opened` -> `views.publish`): what concerns the user who opens it,
with buttons that work exactly like those on the channel's messages. It is published again
whenever one of its lists changes for someone who has opened it."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from access import lookup, users
from access.context import Access
from access.durations import format_duration
from access.lookup import Overview
from access.requests import Request
from bot import views
from bot.slack import SlackGateway, SlackUnavailable
from bot.views import mention

log = logging.getLogger("vouch.home")


def home_view(overview: Overview, now: datetime) -> dict:
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": "Vouch"}}]

    def section(title: str, rows: list[list[dict]], empty: str) -> None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}})
        if not rows:
            blocks.append(views.context(empty))
        for row in rows:
            blocks.extend(row)
        blocks.append({"type": "divider"})

    section("Your pending requests", [
        _row(f"`{r.id}` *{r.target}* for {format_duration(r.duration)} — pending",
             views.button("Cancel", views.CANCEL, r.id)) for r in overview.pending],
        "None. Ask with `/ssh-request <target> <duration> <reason>`.")
    section("Your certificates", [
        _row(f"*{r.target if r else ', '.join(c.principals)}* · serial `{c.serial}` · expires in "
             f"{_minutes(c.valid_before - now)}",
             views.button("Revoke", views.REVOKE, r.id, "danger") if r else None)
        for c, r in overview.live], "No live certificates.")
    section("Waiting for your approval", [
        _row(f"`{r.id}` {mention(r.requester)} asks for *{r.target}* for "
             f"{format_duration(r.duration)}",
             views.button("Approve", views.APPROVE, r.id, "primary"),
             views.button("Deny", views.DENY, r.id, "danger"), plain=r.reason)
        for r in overview.awaiting], "Nothing waits for you.")
    if overview.unreviewed:
        section("Break-glass uses awaiting review", [
            _row(f"`{r.id}` {mention(r.requester)} took *{r.target}* for "
                 f"{format_duration(r.duration)}",
                 views.button("Mark reviewed", views.REVIEW, r.id, "primary"), plain=r.reason)
            for r in overview.unreviewed], "")
    return {"type": "home", "blocks": blocks[:100]}


def _minutes(left: timedelta) -> str:
    return format_duration(timedelta(minutes=max(0, left // timedelta(minutes=1))))


def _row(text: str, *buttons: dict | None, plain: str | None = None) -> list[dict]:
    row = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if plain:
        row.append(views.plain(plain))
    present = [b for b in buttons if b is not None]
    if present:
        row.append({"type": "actions", "elements": present})
    return row


class Home:
    """Publishes App Homes, and republishes those a change concerns for whoever has opened
    theirs lately, whichever replica they opened it through (access.users keeps who)."""

    def __init__(self, access: Access, slack: SlackGateway) -> None:
        self.access = access
        self.slack = slack

    def lists(self, user: str) -> Overview:
        return lookup.overview(self.access, user)

    def opened(self, user: str) -> None:
        users.opened_home(self.access, user)
        self.publish(user)

    def refresh(self, *people: str | None) -> None:
        """Republish for those of `people` who have their App Home open; None: for everyone
        who has."""
        among = None if None in people else {p for p in people if p is not None}
        for user in users.home_viewers(self.access, among):
            self.publish(user)

    def refresh_about(self, *requests: Request) -> None:
        """Republish the Homes that list `requests`: their requesters', approvers' and, for
        break-glass, the admins'. Groups are resolved through Slack only for viewers not
        already named, so a change nobody is looking at costs no Slack call."""
        viewers = set(users.home_viewers(self.access))
        shown: set[str] = set()
        for request in requests:
            concerned = users.concerned(self.access.policy, request)
            if concerned.everyone:
                shown = viewers
                break
            shown |= viewers & concerned.users
            for group in concerned.groups:
                if not viewers - shown:
                    break
                shown |= (viewers - shown) & self.access.directory.members(group)
        for user in sorted(shown):
            self.publish(user)

    def publish(self, user: str) -> None:
        try:
            self.slack.publish_home(user, home_view(self.lists(user), self.access.clock()))
        except SlackUnavailable as exc:
            log.warning("App Home of %s not published: %s", user, exc.detail)
