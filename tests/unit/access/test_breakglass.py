"""access.breakglass on the in-memory store: issued at once, reviewed once, escalated once."""

from datetime import timedelta

import pytest
from world import World, user_key

from access import breakglass, keys
from access.errors import BadInput, InvalidTransition, PolicyRefusal
from access.requests import Kind


@pytest.fixture
def world() -> World:
    world = World()
    for user in ("U0GLASS", "U0REQ", "U0ADMIN"):
        keys.add_key(world.access, user, user_key())
    return world


def breaks(world: World, user: str = "U0GLASS"):
    return breakglass.breakglass(world.access, user=user, target="web",
                                 duration=timedelta(minutes=30), reason="site down")


def test_breakglass_issues_at_once_with_no_votes(world):
    issued = breaks(world)  # U0GLASS breaks glass through the @oncall group
    assert issued.request.kind is Kind.BREAKGLASS and issued.request.votes == ()
    assert issued.certificate.spec.key_id.startswith("vouch:breakglass:")
    assert world.store.actions()[-3:] == ["breakglass.used", "certificate.reserved",
                                          "certificate.issued"]
    assert world.directory.asked == ["@oncall"]


def test_breakglass_refusals(world):
    with pytest.raises(PolicyRefusal, match="not allowed to break glass"):
        breaks(world, "U0REQ")
    with pytest.raises(PolicyRefusal, match="does not cover 'prod-db'"):
        breakglass.breakglass(world.access, user="U0GLASS", target="prod-db",
                              duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="longer than break-glass's maximum of 1h"):
        breakglass.breakglass(world.access, user="U0GLASS", target="web",
                              duration=timedelta(hours=2), reason="x")
    assert world.signer.signed == 0 and not world.store.data.requests
    refused = [(e["actor"], e["subject"]) for e in world.store.data.audit
               if e["action"] == "breakglass.use.refused"]
    assert refused == [("U0REQ", "target:web"), ("U0GLASS", "target:prod-db"),
                       ("U0GLASS", "target:web")]


def test_review_by_another_admin_once(world):
    issued = breaks(world, "U0ADMIN")
    with pytest.raises(PolicyRefusal, match="only admins"):
        breakglass.review(world.access, issued.request.id, reviewer="U0BOB", note="looked at it")
    with pytest.raises(PolicyRefusal, match="your own break-glass use"):
        breakglass.review(world.access, issued.request.id, reviewer="U0ADMIN", note="looked at it")
    other = breaks(world)
    reviewed = breakglass.review(world.access, other.request.id, reviewer="U0ADMIN", note="looked at it")
    assert reviewed.id == other.request.id
    with pytest.raises(InvalidTransition, match="already reviewed"):
        breakglass.review(world.access, other.request.id, reviewer="U0ADMIN", note="looked at it")
    with pytest.raises(BadInput, match="no break-glass use 'req-nope'"):
        breakglass.review(world.access, "req-nope", reviewer="U0ADMIN", note="looked at it")
    assert world.store.actions().count("breakglass.reviewed") == 1
    assert world.store.actions().count("breakglass.review.refused") == 2  # not an admin; own use


def test_unreviewed_uses_are_escalated_every_review_within_until_reviewed(world):
    used = breaks(world)
    world.clock.advance(hours=3, minutes=59)
    assert breakglass.escalate_unreviewed(world.access) == []
    world.clock.advance(minutes=1)
    [first] = breakglass.escalate_unreviewed(world.access)
    assert first.request.id == used.request.id and first.request.escalated_at is None
    assert breakglass.escalate_unreviewed(world.access) == []
    world.clock.advance(hours=3, minutes=59)
    assert breakglass.escalate_unreviewed(world.access) == []
    world.clock.advance(minutes=1)  # review_within after the first escalation: again
    [second] = breakglass.escalate_unreviewed(world.access)
    assert second.request.escalated_at == first.at
    breakglass.review(world.access, used.request.id, reviewer="U0ADMIN", note="looked at it")
    world.clock.advance(hours=5)
    assert breakglass.escalate_unreviewed(world.access) == []  # reviewed: no more
    assert world.store.actions().count("breakglass.escalated") == 2


def test_an_escalation_that_could_not_be_posted_is_escalated_again(world):
    used = breaks(world)
    world.clock.advance(hours=4)
    [failed] = breakglass.escalate_unreviewed(world.access)
    breakglass.escalation_failed(world.access, failed)
    world.clock.advance(seconds=30)
    [again] = breakglass.escalate_unreviewed(world.access)  # not review_within later: at once
    assert again.request.id == used.request.id
    assert world.store.actions()[-3:] == ["breakglass.escalated", "breakglass.escalation_failed",
                                          "breakglass.escalated"]
