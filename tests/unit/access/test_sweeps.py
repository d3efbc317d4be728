"""access.sweeps on the in-memory store: expiry and reminders, each once."""

from datetime import timedelta

import pytest
from world import World, user_key

from access import keys, opening, sweeps, voting
from access.requests import State


@pytest.fixture
def world() -> World:
    world = World()
    keys.add_key(world.access, "U0REQ", user_key())
    return world


def test_undecided_requests_expire_once_at_their_ttl(world):
    stale = opening.open_request(world.access, user="U0REQ", target="prod-db",
                                 duration=timedelta(hours=1), reason="x")
    world.clock.advance(minutes=10)
    fresh = opening.open_request(world.access, user="U0REQ", target="prod-db",
                                 duration=timedelta(hours=1), reason="y")
    world.clock.advance(minutes=19, seconds=59)
    assert sweeps.expire_due(world.access) == []
    world.clock.advance(seconds=1)
    [expired] = sweeps.expire_due(world.access)
    assert expired.id == stale.id and expired.state is State.EXPIRED
    assert expired.decided_at == world.clock.now
    assert sweeps.expire_due(world.access) == []
    assert world.store.data.requests[fresh.id].request.state is State.PENDING
    assert world.store.actions().count("request.expired") == 1


def test_a_holder_is_reminded_once_reminder_before_expiry(world):
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=40), reason="x")
    serial = voting.vote(world.access, request.id, approver="U0BOB",
                         approve=True).issued.certificate.spec.serial
    world.clock.advance(minutes=24)
    assert sweeps.reminders_due(world.access) == []
    world.clock.advance(minutes=1)
    [due] = sweeps.reminders_due(world.access)
    assert due.serial == serial and due.holder == "U0REQ"
    assert sweeps.reminders_due(world.access) == []
    world.clock.advance(minutes=20)
    assert sweeps.reminders_due(world.access) == []  # expired: never after


def _issued(world: World, minutes: int) -> int:
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=minutes), reason="x")
    return voting.vote(world.access, request.id, approver="U0BOB",
                       approve=True).issued.certificate.spec.serial


def test_no_reminder_for_a_certificate_shorter_than_reminder_before(world):
    _issued(world, 10)  # reminder_before is 15m: the reminder would come before it was issued
    assert sweeps.reminders_due(world.access) == []
    world.clock.advance(minutes=5)
    assert sweeps.reminders_due(world.access) == []


def test_a_reminder_more_than_half_of_reminder_before_late_is_skipped(world):
    on_time, late = _issued(world, 40), None
    world.clock.advance(minutes=5)
    late = _issued(world, 40)
    world.clock.advance(minutes=20 + 8)  # Vouch was down: on_time's reminder is 8 minutes late
    assert [c.serial for c in sweeps.reminders_due(world.access)] == [late]  # 3 minutes late
    assert on_time not in [c.serial for c in sweeps.reminders_due(world.access)]
