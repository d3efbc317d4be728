"""access.voting on the in-memory store: who may vote, what a vote does, cancelling."""

from datetime import timedelta

import pytest
from world import World, user_key

from access import keys, lookup, opening, voting
from access.errors import AlreadyVoted, BadInput, InvalidTransition, NotAnApprover, PolicyRefusal
from access.requests import State
from support.certcheck import parse_certificate_line, verify_signature


@pytest.fixture
def world() -> World:
    world = World()
    keys.add_key(world.access, "U0REQ", user_key())
    return world


def ask(world: World, target: str = "prod-db", duration=timedelta(hours=2)):
    return opening.open_request(world.access, user="U0REQ", target=target, duration=duration,
                                reason="investigating slow queries")


def test_two_approvals_issue_one_certificate_after_the_deciding_vote(world):
    request = ask(world)
    first = voting.vote(world.access, request.id, approver="U0BOB", approve=True)
    assert not first.decided and first.issued is None and first.request.approvers == ["U0BOB"]
    assert world.signer.signed == 0
    second = voting.vote(world.access, request.id, approver="U0DAVE", approve=True)  # via @dba
    assert second.decided and second.issued is not None
    parsed = parse_certificate_line(second.issued.certificate.line())
    verify_signature(parsed, world.signer.public_key.line())
    assert parsed.principals == ["postgres"]
    assert parsed.valid_before - parsed.valid_after == 2 * 3600 + 60
    stored, certificate = lookup.request(world.access, request.id)
    assert stored.state is State.ISSUED and certificate.serial == parsed.serial
    assert world.store.actions()[-5:] == ["request.voted", "request.voted", "request.approved",
                                          "certificate.reserved", "certificate.issued"]
    assert world.directory.asked == ["@dba"]  # BOB is listed by ID: no lookup for him


@pytest.mark.parametrize("removed", ["U0BOB", "@dba"])
def test_an_approval_stops_counting_when_its_approver_leaves_the_policy(world, removed):
    request = ask(world)
    first = "U0BOB" if removed == "U0BOB" else "U0DAVE"
    voting.vote(world.access, request.id, approver=first, approve=True)
    prod = world.policy.targets["prod-db"]
    approvers = type(prod.approvers)(users=(prod.approvers.users - {removed}) | {"U0CARL"},
                                     groups=prod.approvers.groups - {removed})
    world.policy = type(world.policy)(**{**world.policy.__dict__, "targets": {
        **world.policy.targets, "prod-db": type(prod)(**{**prod.__dict__, "approvers": approvers})}})
    second = voting.vote(world.access, request.id, approver="U0CARL", approve=True)
    assert not second.decided and second.request.state is State.PENDING  # 1 of 2 still counts
    assert world.signer.signed == 0
    third = "U0DAVE" if removed == "U0BOB" else "U0BOB"
    assert voting.vote(world.access, request.id, approver=third, approve=True).issued is not None


def test_who_may_not_vote(world):
    request = ask(world)
    with pytest.raises(PolicyRefusal, match="your own request"):
        voting.vote(world.access, request.id, approver="U0REQ", approve=True)  # listed, still not
    with pytest.raises(NotAnApprover) as refused:
        voting.vote(world.access, request.id, approver="U0EVE", approve=True)
    assert refused.value.target == "prod-db" and "U0BOB" in refused.value.message
    voting.vote(world.access, request.id, approver="U0BOB", approve=True)
    with pytest.raises(AlreadyVoted):
        voting.vote(world.access, request.id, approver="U0BOB", approve=False, comment="no way")
    with pytest.raises(BadInput, match="no request 'req-nope'"):
        voting.vote(world.access, "req-nope", approver="U0BOB", approve=True)
    assert world.store.actions().count("request.voted") == 1
    # the policy's refusals are in the audit log too, with who and why; a repeat click is not
    refused = [e for e in world.store.data.audit if e["action"] == "request.vote.refused"]
    assert [(e["actor"], e["subject"]) for e in refused] == [
        ("U0REQ", f"request:{request.id}"), ("U0EVE", f"request:{request.id}")]
    assert "your own request" in refused[0]["details"]["reason"]
    assert "not an approver for prod-db" in refused[1]["details"]["reason"]


def test_a_deny_ends_it_and_later_votes_change_nothing(world):
    request = ask(world)
    denied = voting.vote(world.access, request.id, approver="U0DAVE", approve=False,
                         comment="not during the freeze")
    assert denied.decided and denied.request.state is State.DENIED
    assert denied.request.denied_by == "U0DAVE" and denied.request.decided_at == world.clock.now
    with pytest.raises(InvalidTransition, match="already denied"):
        voting.vote(world.access, request.id, approver="U0BOB", approve=True)
    assert world.signer.signed == 0


def test_a_vote_after_the_ttl_is_refused(world):
    request = ask(world)
    world.clock.advance(minutes=30)
    with pytest.raises(InvalidTransition, match="expired"):
        voting.vote(world.access, request.id, approver="U0BOB", approve=True)


def test_cancel_by_the_requester_or_an_admin_only(world):
    mine, theirs = ask(world, "web", timedelta(minutes=30)), ask(world, "web", timedelta(minutes=30))
    with pytest.raises(PolicyRefusal, match="only the requester or an admin"):
        voting.cancel(world.access, mine.id, user="U0BOB")
    assert voting.cancel(world.access, mine.id, user="U0REQ").state is State.CANCELLED
    assert voting.cancel(world.access, theirs.id, user="U0ADMIN").state is State.CANCELLED
    with pytest.raises(InvalidTransition, match="it cannot become cancelled"):
        voting.cancel(world.access, mine.id, user="U0REQ")
    with pytest.raises(InvalidTransition):
        voting.vote(world.access, mine.id, approver="U0BOB", approve=True)
    assert world.store.actions().count("request.cancelled") == 2
