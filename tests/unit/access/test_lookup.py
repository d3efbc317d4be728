"""access.lookup.overview and the lifecycle's records on the in-memory store: what concerns a
user (the App Home and /ssh-status), who cancelled, what an extension extends."""

from datetime import timedelta

import pytest
from world import World, user_key

from access import breakglass, keys, lookup, opening, voting
from access.errors import PolicyRefusal


@pytest.fixture
def world() -> World:
    world = World()
    for user in ("U0REQ", "U0GLASS", "U0BOB"):
        keys.add_key(world.access, user, user_key())
    return world


def ask(world: World, user: str = "U0REQ", target: str = "prod-db", **kwargs):
    return opening.open_request(world.access, user=user, target=target,
                                duration=timedelta(hours=1), reason="look at the slow queries",
                                **kwargs)


def test_each_user_sees_their_requests_certificates_and_what_waits_for_them(world):
    waiting = ask(world)  # prod-db: approvers U0BOB, U0REQ and @dba (U0DAVE); 2 approvals
    web = ask(world, target="web")
    issued = voting.vote(world.access, web.id, approver="U0BOB", approve=True).issued
    breakglass.breakglass(world.access, user="U0GLASS", target="web",
                          duration=timedelta(minutes=30), reason="site down")

    mine = lookup.overview(world.access, "U0REQ")
    assert [r.id for r in mine.pending] == [waiting.id]
    assert [(c.serial, r.id) for c, r in mine.live] == [(issued.certificate.spec.serial, web.id)]
    assert mine.awaiting == [] and mine.unreviewed == []  # their own request waits for others

    for approver in ("U0BOB", "U0DAVE"):  # listed by ID, and through the @dba group
        assert [r.id for r in lookup.overview(world.access, approver).awaiting] == [waiting.id]
    voting.vote(world.access, waiting.id, approver="U0BOB", approve=True)
    assert lookup.overview(world.access, "U0BOB").awaiting == []  # voted: off their list
    assert [r.id for r in lookup.overview(world.access, "U0DAVE").awaiting] == [waiting.id]
    assert lookup.overview(world.access, "U0EVE").awaiting == []
    assert [r.requester for r in lookup.overview(world.access, "U0ADMIN").unreviewed] == ["U0GLASS"]


def test_a_cancellation_records_who_and_an_extension_what_it_extends(world):
    first = ask(world, target="web")
    cancelled = voting.cancel(world.access, first.id, user="U0REQ")
    assert cancelled.cancelled_by == "U0REQ"
    assert lookup.request(world.access, first.id)[0].cancelled_by == "U0REQ"
    again = ask(world, target="web", extends=first.id)
    assert again.extends == first.id
    assert world.store.data.audit[-1]["details"]["extends"] == first.id
    with pytest.raises(PolicyRefusal, match="only your own access"):
        ask(world, user="U0BOB", target="web", extends=first.id)
    with pytest.raises(PolicyRefusal, match="only your own access"):
        ask(world, target="prod-db", extends=first.id)  # another target


def test_a_review_needs_a_note_and_keeps_it(world):
    used = breakglass.breakglass(world.access, user="U0GLASS", target="web",
                                 duration=timedelta(minutes=30), reason="site down")
    with pytest.raises(PolicyRefusal, match="review note is required"):
        breakglass.review(world.access, used.request.id, reviewer="U0ADMIN", note=" ok ")
    reviewed = breakglass.review(world.access, used.request.id, reviewer="U0ADMIN",
                                 note="the disk filled up; fixed")
    assert reviewed.review_note == "the disk filled up; fixed"
    assert reviewed.reviewed_at == world.clock.now
    stored = lookup.request(world.access, used.request.id)[0]
    assert (stored.reviewed_by, stored.review_note) == ("U0ADMIN", "the disk filled up; fixed")
    assert world.store.data.audit[-1]["details"] == {"note": "the disk filled up; fixed"}
