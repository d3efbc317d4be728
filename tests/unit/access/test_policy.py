from datetime import timedelta
from pathlib import Path

import pytest

from access.policy import People, find_person
from access.policy_file import PolicyError, check_policy, load_policy, parse_policy
from ca.errors import BadInput

EXAMPLE = Path(__file__).parents[3] / "examples" / "policy.yaml"


class Groups:
    def __init__(self, groups):
        self.groups = groups

    def members(self, handle):
        return frozenset(self.groups.get(handle, ()))


def test_the_contracts_example_loads():
    policy = load_policy(str(EXAMPLE))
    target = policy.target("prod-db")
    assert target.principals == ("postgres",)
    assert target.max_duration == timedelta(hours=4)
    assert target.min_duration == timedelta(minutes=5)
    assert target.approvals_required == 1
    assert target.source_address == "10.0.0.0/8"
    assert target.force_command is None
    assert target.extensions == frozenset({"permit-pty"})
    assert policy.request_ttl == timedelta(minutes=30)
    assert policy.reminder_before == timedelta(minutes=15)
    assert policy.security_channel == "C0SECURITY"
    assert policy.breakglass.covers("prod-db") and policy.breakglass.targets is None
    assert policy.breakglass.review_within == timedelta(hours=4)


def test_defaults_for_a_minimal_policy():
    policy = parse_policy("targets:\n  web:\n    principals: [www]\n    max_duration: 1h\n"
                          "    approvers: [U0BOB]\n")
    web = policy.target("web")
    assert web.requesters.everyone
    assert web.approvals_required == 1
    assert web.extensions == frozenset({"permit-pty"})
    assert policy.breakglass is None and policy.requests_channel is None
    assert not policy.admins.users


def test_people_resolve_users_and_groups():
    policy = load_policy(str(EXAMPLE))
    approvers = policy.target("prod-db").approvers
    directory = Groups({"@db-owners": ["U0CAROL"]})
    assert approvers.includes(find_person("U0BOB", directory, approvers))
    assert approvers.includes(find_person("U0CAROL", directory, approvers))
    assert not approvers.includes(find_person("U0MALLORY", directory, approvers))


class CountingGroups:
    def __init__(self, members):
        self.members_of, self.asked = members, []

    def members(self, handle):
        self.asked.append(handle)
        return frozenset(self.members_of.get(handle, ()))


def test_groups_are_looked_up_only_when_the_answer_depends_on_them():
    policy = load_policy(str(EXAMPLE))
    approvers = policy.target("prod-db").approvers
    directory = CountingGroups({"@db-owners": ["U0CAROL"]})
    bob = find_person("U0BOB", directory, approvers)  # listed by ID: no lookup
    assert directory.asked == [] and approvers.includes(bob)
    assert find_person("U0ANY", directory, People(everyone=True)).groups == frozenset()
    assert directory.asked == []
    carol = find_person("U0CAROL", directory, approvers)
    assert directory.asked == ["@db-owners"] and carol.groups == {"@db-owners"}


BAD = """\
requests_channel: general
aprovers: [U0BOB]
request_ttl: 2 hours
targets:
  prod-db:
    principals: [postgres]
    max_duration: 1h
    min_duration: 2h
    aprovers: [U0BOB]
    approvers: [U0BOB, bob]
    approvals_required: 3
    extensions: [permit-everything]
    source_address: [10.0.0.1/8]
  Web Server:
    principals: []
    max_duration: -1h
    approvers: []
  cache:
    principals: [redis]
    max_duration: 0s
    approvers: [U0BOB]
    approvals_required: 0
breakglass:
  users: [U0ALICE]
  max_duration: 1h
  targets: [prod-dbb]
"""


def test_every_problem_is_reported_with_its_line():
    with pytest.raises(PolicyError) as err:
        parse_policy(BAD, "bad.yaml")
    lines = err.value.lines()
    expected = [
        ("bad.yaml:1:", "requests_channel must be a Slack channel ID"),
        ("bad.yaml:2:", "unknown key 'aprovers' in the policy"),
        ("bad.yaml:3:", "request_ttl"),
        ("bad.yaml:8:", "min_duration 2h is longer than max_duration 1h"),
        ("bad.yaml:9:", "unknown key 'aprovers' in target 'prod-db' (did you mean 'approvers'?)"),
        ("bad.yaml:10:", "'bob' is not one of Slack user IDs"),
        ("bad.yaml:11:", "approvals_required is 3 but only 1 approver(s) are listed"),
        ("bad.yaml:12:", "unknown extension 'permit-everything'"),
        ("bad.yaml:13:", "host bits must be zero"),
        ("bad.yaml:14:", "target name 'Web Server'"),
        ("bad.yaml:15:", "principals must be a non-empty list"),
        ("bad.yaml:16:", "not a duration"),
        ("bad.yaml:17:", "approvers is empty, so nobody could approve"),
        ("bad.yaml:20:", "zero"),
        ("bad.yaml:22:", "approvals_required must be a whole number of at least 1"),
        ("bad.yaml:26:", "breakglass target 'prod-dbb' does not exist"),
    ]
    for prefix, phrase in expected:
        assert any(line.startswith(prefix) and phrase in line for line in lines), (prefix, phrase, lines)
    assert all(line.startswith("bad.yaml:") for line in lines)


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(PolicyError) as err:
        parse_policy("targets:\n  web:\n    principals: [www\n    max_duration: 1h\n", "p.yaml")
    [line] = err.value.lines()
    assert line.startswith("p.yaml:") and "YAML syntax error" in line


def test_duplicate_keys_are_an_error():
    with pytest.raises(PolicyError, match="duplicate key 'web'"):
        parse_policy("targets:\n  web: {}\n  web: {}\n")


@pytest.mark.parametrize("text, phrase", [
    ("", "empty"),
    ("requests_channel: C0X\n", "needs `targets:`"),
    ("targets: {}\n", "targets must map"),
    ("targets:\n  web:\n    principals: [www]\n    approvers: [U0BOB]\n", "needs max_duration"),
    ("targets:\n  web:\n    max_duration: 1h\n    approvers: [U0BOB]\n", "needs principals"),
    ("targets:\n  web:\n    principals: [www]\n    max_duration: 1h\n", "needs approvers"),
    ("targets:\n  web:\n    principals: [www]\n    max_duration: 1h\n    approvers: [U0B]\n"
     "breakglass:\n  users: [U0A]\n  max_duration: 1h\n  targets: ['*']\n", "needs security_channel"),
    ("targets:\n  web:\n    principals: [www]\n    max_duration: 1h\n    approvers: ['*']\n", "is not one of"),
])
def test_missing_and_wrong_pieces(text, phrase):
    with pytest.raises(PolicyError) as err:
        parse_policy(text)
    assert any(phrase in line for line in err.value.lines()), err.value.lines()


def test_groups_make_approval_counts_unknowable_so_they_pass():
    policy = parse_policy("targets:\n  web:\n    principals: [www]\n    max_duration: 1h\n"
                          "    approvers: ['@sre']\n    approvals_required: 3\n")
    assert policy.target("web").approvals_required == 3


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        load_policy(str(tmp_path / "nope.yaml"))


BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
targets: *g
"""


def test_an_alias_bomb_is_refused_at_once_naming_its_line():
    import time

    started = time.monotonic()
    with pytest.raises(PolicyError) as refused:
        parse_policy(BOMB, "bomb.yaml")
    assert time.monotonic() - started < 1
    assert refused.value.lines() == ["bomb.yaml:2: aliases (*name) are not allowed in a policy "
                                     "file: write the value out"]


def test_deep_nesting_and_huge_files_are_refused():
    with pytest.raises(PolicyError, match="nested more than 32 levels deep"):
        parse_policy("targets: " + "[" * 100_000 + "]" * 100_000, "deep.yaml")
    with pytest.raises(PolicyError, match="a policy is a few kilobytes"):
        parse_policy("# " + "x" * (2 * 1024 * 1024), "huge.yaml")


# --- warnings: loadable, but something no one can have meant ------------------------------

def target(approvers: str, *, required: int | None = None, requesters: str | None = None,
           max_duration: str = "1h") -> str:
    lines = ["targets:", "  web:", "    principals: [www]", f"    max_duration: {max_duration}",
             f"    approvers: {approvers}"]
    if required is not None:
        lines.append(f"    approvals_required: {required}")
    if requesters is not None:
        lines.append(f"    requesters: {requesters}")
    return "\n".join(lines) + "\n"


def warnings(text: str) -> list[str]:
    return check_policy(text, "p.yaml").lines()


@pytest.mark.parametrize("text, expected", [
    # Two approvers, two approvals: a requester who is one of them has only the other.
    (target("[U0A, U0B]", required=2), "p.yaml:6: warning: target 'web': a request by U0A or "
     "U0B can never be approved: approvers cannot approve their own requests, which leaves 1 "
     "approver(s) for approvals_required 2"),
    (target("[U0A, U0B]", required=2, requesters="[U0A, U0C, '@devs']"),
     "p.yaml:6: warning: target 'web': a request by U0A can never be approved"),
    # Every requester is an approver: nobody can ever have it.
    (target("[U0A]", requesters="[U0A]"), "p.yaml:5: warning: target 'web' can never be "
     "approved: every requester is one of its 1 approver(s), who cannot approve their own "
     "requests, which leaves 0 for approvals_required 1"),
    (target("[U0A]", max_duration="8d", requesters="[U0C]"),
     "p.yaml:4: warning: target 'web': max_duration 8d is longer than 7 days"),
])
def test_what_is_certain_to_go_wrong_is_a_warning(text, expected):
    assert any(line.startswith(expected) for line in warnings(text)), warnings(text)
    parse_policy(text)  # a warning never stops the policy from loading


@pytest.mark.parametrize("text", [
    target("[U0A, U0B, U0C]", required=2),           # one left over for each approver's request
    target("[U0A, '@sre']", required=2),            # the group's size is unknown
    target("[U0A, U0B]", required=2, requesters="[U0C]"),
    target("[U0A, U0B]", required=2, requesters="['@devs']"),  # an approver may not be a dev
    target("[U0A]", max_duration="7d", requesters="[U0C]"),
])
def test_what_may_work_is_not_warned_of(text):
    assert warnings(text) == []


def test_a_long_breakglass_is_warned_of():
    text = (target("[U0A]", requesters="[U0C]") + "security_channel: C0SEC\nbreakglass:\n"
            "  users: [U0A]\n  max_duration: 7d1s\n  targets: ['*']\n")
    assert warnings(text) == ["p.yaml:10: warning: breakglass max_duration 7d1s is longer than "
                              "7 days; certificates are meant to be short-lived"]


def test_errors_still_refuse_a_policy_with_warnings():
    with pytest.raises(PolicyError) as refused:
        check_policy(target("[U0A]", required=2, max_duration="8d"), "p.yaml")
    assert refused.value.lines() == [
        "p.yaml:6: target 'web': approvals_required is 2 but only 1 approver(s) are listed"]


def test_the_example_policy_has_no_warnings():
    assert check_policy(EXAMPLE.read_text(), str(EXAMPLE)).lines() == []
