from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from access.certificate import certificate_spec, key_id
from access.errors import AlreadyVoted, InvalidTransition, PolicyRefusal
from access.policy import Person
from access.policy_file import parse_policy
from access.requests import (ALLOWED, Kind, State, cancel, cast_vote, expire, issued, may_revoke,
                             new_request_id, open_breakglass, open_request, revoked)
from ca.keys import parse_public_key

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
KEY = parse_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
POLICY = parse_policy("""
security_channel: C0SEC
request_ttl: 30m
admins: [U0ADMIN]
targets:
  prod-db:
    principals: [postgres]
    max_duration: 4h
    approvers: [U0BOB, U0REQ, "@dba"]
    approvals_required: 2
    source_address: [10.0.0.0/8]
    force_command: /usr/bin/psql
    extensions: [permit-pty, permit-port-forwarding]
  web:
    principals: [www, deploy]
    max_duration: 1h
    min_duration: 10m
    approvers: [U0BOB]
    requesters: [U0REQ, "@devs"]
breakglass:
  users: [U0GLASS]
  max_duration: 1h
  targets: [web]
""")


class Groups:
    def members(self, handle):
        return frozenset({"@dba": {"U0CAROL", "U0DAVE"}, "@devs": {"U0DEV"}}.get(handle, ()))


DIR = Groups()


def who(user: str) -> Person:
    """`user` with every group of the directory they are in."""
    return Person(user, frozenset(g for g in ("@dba", "@devs") if user in DIR.members(g)))


def _open(target="prod-db", duration=timedelta(hours=2), requester="U0REQ", reason="slow queries",
          pending=0):
    return open_request(POLICY, requester=who(requester), target_name=target, duration=duration,
                        reason=reason, key_fingerprint=KEY.fingerprint, public_key=KEY.line(),
                        now=NOW, pending_for_target=pending)


def _vote(request, approver, approve=True, now=NOW + timedelta(minutes=1)):
    return cast_vote(POLICY, request, approver=who(approver), approve=approve, now=now,
                     comment=None if approve else "not during the freeze")


def test_open_request_is_pending_until_ttl():
    request = _open()
    assert request.state is State.PENDING and request.kind is Kind.REQUEST
    assert request.expires_at == NOW + timedelta(minutes=30)
    assert request.id.startswith("req-") and not request.id.isdigit()


@pytest.mark.parametrize("kwargs, phrase", [
    ({"target": "prod-dbx"}, "unknown target 'prod-dbx'; targets you can request: prod-db, web"),
    ({"duration": timedelta(hours=5)}, "5h is longer than prod-db's maximum of 4h"),
    ({"target": "web", "duration": timedelta(minutes=5)}, "5m is shorter than web's minimum of 10m"),
    ({"reason": "   "}, "a reason is required"),
    ({"reason": "x" * 501}, "keep it under 500"),
    ({"target": "web", "duration": timedelta(minutes=30), "requester": "U0EVE"},
     "not allowed to request web; targets you can request: prod-db"),
    ({"pending": 3}, "already have 3 pending requests"),
])
def test_open_request_refusals_are_specific(kwargs, phrase):
    with pytest.raises(PolicyRefusal) as err:
        _open(**kwargs)
    assert phrase in err.value.message


def test_requesters_via_group():
    assert _open(target="web", duration=timedelta(minutes=30), requester="U0DEV").target == "web"


def test_two_distinct_approvals_approve_and_requester_never_counts():
    request = _open()
    with pytest.raises(PolicyRefusal, match="your own request"):
        _vote(request, "U0REQ")  # listed as an approver, still the requester
    first = _vote(request, "U0BOB")
    assert not first.decided and first.request.state is State.PENDING
    assert first.request.approvers == ["U0BOB"]
    with pytest.raises(AlreadyVoted):
        _vote(first.request, "U0BOB")
    second = _vote(first.request, "U0CAROL")  # through the @dba group
    assert second.decided and second.request.state is State.APPROVED
    assert second.request.approvers == ["U0BOB", "U0CAROL"]
    with pytest.raises(InvalidTransition, match="already approved"):
        _vote(second.request, "U0DAVE")


def test_non_approver_is_refused_naming_the_approvers():
    with pytest.raises(PolicyRefusal) as err:
        _vote(_open(), "U0EVE")
    assert "not an approver for prod-db" in err.value.message and "U0BOB" in err.value.message


def test_any_deny_ends_it():
    first = _vote(_open(), "U0BOB")
    denied = _vote(first.request, "U0DAVE", approve=False)
    assert denied.decided and denied.request.state is State.DENIED
    assert denied.request.denied_by == "U0DAVE"
    assert denied.request.deny_reason == "not during the freeze"


@pytest.mark.parametrize("reason", [None, "", "  ", "no", "x" * 501])
def test_a_deny_needs_a_reason_of_3_to_500_characters(reason):
    with pytest.raises(PolicyRefusal, match="reason for denying"):
        cast_vote(POLICY, _open(), approver=who("U0BOB"), approve=False, now=NOW, comment=reason)


def test_votes_after_ttl_are_refused_and_expiry_is_detected():
    request = _open()
    late = NOW + timedelta(minutes=30)
    with pytest.raises(InvalidTransition, match="not expired yet"):
        expire(request, now=late - timedelta(seconds=1))
    expired = expire(request, now=late)
    assert expired.state is State.EXPIRED and expired.decided_at == late
    with pytest.raises(InvalidTransition, match="expired"):
        _vote(request, "U0BOB", now=late)


# Each transition function and the state it moves a request to.
_TRANSITIONS = {
    State.CANCELLED: lambda r: cancel(POLICY, r, by=who("U0REQ"), now=NOW),
    State.EXPIRED: lambda r: expire(r, now=r.expires_at),
    State.ISSUED: issued,
    State.REVOKED: revoked,
}


def test_transition_table():
    """Every transition function moves exactly the requests ALLOWED lets it move."""
    request = _open()
    for state in State:
        for new, move in _TRANSITIONS.items():
            at = replace(request, state=state)
            if new in ALLOWED.get(state, set()):
                assert move(at).state is new
            else:
                with pytest.raises(InvalidTransition):
                    move(at)
    for final in (State.DENIED, State.EXPIRED, State.CANCELLED, State.REVOKED):
        assert final not in ALLOWED


def test_only_the_requester_or_an_admin_cancels():
    request = _open()
    assert cancel(POLICY, request, by=who("U0ADMIN"), now=NOW).state is State.CANCELLED
    with pytest.raises(PolicyRefusal, match="only the requester or an admin"):
        cancel(POLICY, request, by=who("U0BOB"), now=NOW)


def test_breakglass_rules():
    request = open_breakglass(POLICY, user=who("U0GLASS"), target_name="web",
                              duration=timedelta(hours=1), reason="outage",
                              key_fingerprint=KEY.fingerprint, public_key=KEY.line(), now=NOW)
    assert request.state is State.APPROVED and request.kind is Kind.BREAKGLASS
    with pytest.raises(PolicyRefusal, match="not allowed to break glass"):
        open_breakglass(POLICY, user=who("U0BOB"), target_name="web",
                        duration=timedelta(hours=1), reason="x",
                        key_fingerprint=KEY.fingerprint, public_key=KEY.line(), now=NOW)
    with pytest.raises(PolicyRefusal, match="does not cover 'prod-db'; it covers: web"):
        open_breakglass(POLICY, user=who("U0GLASS"), target_name="prod-db",
                        duration=timedelta(hours=1), reason="x",
                        key_fingerprint=KEY.fingerprint, public_key=KEY.line(), now=NOW)
    with pytest.raises(PolicyRefusal, match="2h is longer than break-glass's maximum of 1h"):
        open_breakglass(POLICY, user=who("U0GLASS"), target_name="web",
                        duration=timedelta(hours=2), reason="x",
                        key_fingerprint=KEY.fingerprint, public_key=KEY.line(), now=NOW)


def test_certificate_spec_derives_from_policy_and_request():
    request = _vote(_vote(_open(), "U0BOB").request, "U0DAVE").request
    spec = certificate_spec(request, POLICY.target("prod-db"), KEY, serial=99, now=NOW)
    assert spec.principals == ("postgres",)
    assert spec.valid_after == NOW - timedelta(seconds=60)
    assert spec.valid_before == NOW + timedelta(hours=2)
    assert spec.key_id == key_id(request) == f"vouch:request:{request.id}:U0REQ"
    assert spec.critical_options == {"source-address": "10.0.0.0/8", "force-command": "/usr/bin/psql"}
    assert spec.extensions == frozenset({"permit-pty", "permit-port-forwarding"})
    other = parse_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkD1ng0kjZ0mJ8Y0o1cJ9nqkbhR2Q7TnCuWm7Ee8u6Q")
    with pytest.raises(InvalidTransition, match="not the key"):
        certificate_spec(request, POLICY.target("prod-db"), other, serial=99, now=NOW)


def test_revocation_rights():
    assert may_revoke(POLICY, holder="U0REQ", user=who("U0REQ"))
    assert may_revoke(POLICY, holder="U0REQ", user=who("U0ADMIN"))
    assert not may_revoke(POLICY, holder="U0REQ", user=who("U0BOB"))


def test_request_ids_are_unique():
    assert len({new_request_id() for _ in range(1000)}) == 1000
