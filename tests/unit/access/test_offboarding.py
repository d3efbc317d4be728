"""access.offboarding on the in-memory store: a deactivated user loses everything at once."""

from datetime import timedelta

import pytest
from world import World, user_key

from access import issuing, keys, lookup, offboarding, opening, revoking, voting
from access.errors import SignerUnavailable
from access.requests import State
from ca.krl import decode_krl


@pytest.fixture
def world() -> World:
    world = World()
    for user in ("U0REQ", "U0BOB"):
        keys.add_key(world.access, user, user_key())
    return world


def ask(world: World, target: str = "web", user: str = "U0REQ"):
    return opening.open_request(world.access, user=user, target=target,
                                duration=timedelta(minutes=30), reason="deploy")


def test_everything_a_deactivated_user_holds_goes_at_once(world):
    live = voting.vote(world.access, ask(world).id, approver="U0BOB", approve=True).issued
    pending = ask(world, target="prod-db")
    unissued = ask(world)
    world.signer.down = SignerUnavailable("token gone")
    with pytest.raises(SignerUnavailable):
        voting.vote(world.access, unissued.id, approver="U0BOB", approve=True)
    world.signer.down = None
    assert offboarding.offboarding_candidates(world.access) == ["U0BOB", "U0REQ"]

    done = offboarding.offboard(world.access, "U0REQ", why="deactivated in Slack")
    assert [r.serial for r in done.revoked] == [live.certificate.spec.serial]
    assert {r.id for r in done.cancelled} == {pending.id, unissued.id}
    assert len(done.keys) == 1 and keys.list_keys(world.access, "U0REQ") == []
    krl = decode_krl(revoking.krl(world.access).data)
    assert krl.certificates[0].revokes_serial(live.certificate.spec.serial)
    for request_id in (pending.id, unissued.id):
        stored = lookup.request(world.access, request_id)[0]
        assert (stored.state, stored.cancelled_by) == (State.CANCELLED, "vouch")
    assert lookup.request(world.access, live.request.id)[0].state is State.REVOKED
    world.clock.advance(hours=1)
    assert issuing.retry_issuing(world.access).issued == []  # the unissued one never will be
    assert world.store.actions().count("user.offboarded") == 1
    assert offboarding.offboarding_candidates(world.access) == ["U0BOB"]

    again = offboarding.offboard(world.access, "U0REQ", why="the hourly sweep")
    assert not again.anything and world.store.actions().count("user.offboarded") == 1
