"""The sandbox's demo workspace: a handful of people, their channels, and a policy that uses them.

The same people appear in the fake Slack (``populate``) and in the policy written on first run
(``POLICY_YAML``), so every role in the policy can be played from the sandbox page's "You are"
switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.sandbox.fake_slack import FakeSlack

__all__ = ["CHANNELS", "DemoUser", "GROUPS", "POLICY_YAML", "USERS", "populate", "write_policy"]


@dataclass(frozen=True)
class DemoUser:
    id: str
    name: str
    real_name: str
    role: str  # what the policy lets them do, shown next to the name on the page
    tz: str = "Europe/Berlin"


USERS: tuple[DemoUser, ...] = (
    DemoUser("U0ALICE", "alice", "Alice Adler", "requester"),
    DemoUser("U0BOB", "bob", "Bob Brandt", "approver (prod-db, staging)", "Europe/London"),
    DemoUser("U0CAROL", "carol", "Carol Castro", "approver via @db-owners", "America/New_York"),
    DemoUser("U0SECADMIN", "sec", "Sam Security", "security admin", "UTC"),
    DemoUser("U0ERIN", "erin", "Erin Engel", "break-glass engineer"),
)

# (handle, id, members)
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("db-owners", "S0DBOWNERS", ("U0CAROL",)),
)

# (id, name), in the order the page lists them
CHANNELS: tuple[tuple[str, str], ...] = (
    ("C0REQUESTS", "access-requests"),
    ("C0SECURITY", "security"),
    ("C0GENERAL", "general"),
)

POLICY_YAML = """\
# Vouch sandbox policy: the demo workspace's people (see the "You are" switch on the page).
# Edit it freely; restart the sandbox (or send it SIGHUP) to apply. Delete it to get this back.
#   U0ALICE alice (requester)   U0BOB bob (approver)   U0CAROL carol (approver via @db-owners)
#   U0SECADMIN sec (security admin)   U0ERIN erin (break-glass engineer)
requests_channel: C0REQUESTS     # #access-requests
security_channel: C0SECURITY     # #security: break-glass alerts
request_ttl: 30m                 # undecided requests expire
reminder_before: 15m             # DM this long before a certificate expires
admins: [U0SECADMIN]             # may revoke any certificate and review break-glass
targets:
  prod-db:
    principals: [postgres]
    max_duration: 4h
    approvers: [U0BOB, "@db-owners"]
    approvals_required: 1
    requesters: ["*"]
    extensions: [permit-pty]
  staging:
    principals: [deploy]
    max_duration: 8h
    approvers: [U0BOB, U0CAROL]
    approvals_required: 1
    requesters: ["*"]
breakglass:
  users: [U0ERIN]
  max_duration: 1h
  targets: ["*"]
  review_within: 4h
"""


def populate(slack: FakeSlack) -> None:
    """Add the demo people, groups and channels to a fake Slack workspace."""
    for u in USERS:
        slack.add_user(u.id, u.name, real_name=u.real_name, tz=u.tz,
                       email=f"{u.name}@vouch-demo.example", is_admin=u.id == "U0SECADMIN")
    for handle, group_id, members in GROUPS:
        slack.add_group(handle, group_id, list(members), name=handle.replace("-", " ").title())
    for channel_id, name in CHANNELS:
        slack.add_channel(channel_id, name)


def write_policy(path: Path) -> bool:
    """Write the demo policy unless a policy file is already there; True when written."""
    if path.exists():
        return False
    path.write_text(POLICY_YAML)
    return True
