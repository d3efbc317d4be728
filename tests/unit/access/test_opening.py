"""access.opening and access.keys on the in-memory store."""

from datetime import timedelta

import pytest
from world import World, user_key

from access import keys, opening
from access.errors import BadInput, PolicyRefusal
from access.requests import State


@pytest.fixture
def world() -> World:
    return World()


def test_a_request_is_stored_pending_and_audited_with_the_newest_key(world):
    older, newer = user_key(), user_key()
    keys.add_key(world.access, "U0REQ", older)
    world.clock.advance(seconds=1)
    key, newly = keys.add_key(world.access, "U0REQ", newer)
    assert newly and keys.add_key(world.access, "U0REQ", newer)[1] is False
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=30), reason="deploy  the\nhotfix")
    assert request.state is State.PENDING and request.reason == "deploy the hotfix"
    assert request.key_fingerprint == key.fingerprint
    assert request.public_key == " ".join(newer.split()[:2])  # the key itself, no comment
    assert request.expires_at == world.clock.now + timedelta(minutes=30)
    with world.store.unit(read_only=True) as unit:
        assert unit.requests.get(request.id) == request
    assert world.store.actions() == ["key.added", "key.added", "request.created"]
    assert world.store.data.audit[-1]["details"]["target"] == "web"


def test_another_registered_key_can_be_chosen(world):
    first = keys.add_key(world.access, "U0REQ", user_key())[0]
    keys.add_key(world.access, "U0REQ", user_key())
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=30), reason="x",
                                   key_fingerprint=first.fingerprint)
    assert request.key_fingerprint == first.fingerprint
    with pytest.raises(BadInput, match="no registered key 'SHA256:nope'"):
        opening.open_request(world.access, user="U0REQ", target="web",
                             duration=timedelta(minutes=30), reason="x",
                             key_fingerprint="SHA256:nope")


def test_a_refused_request_leaves_nothing_behind(world):
    with pytest.raises(PolicyRefusal, match="no registered SSH public key"):
        opening.open_request(world.access, user="U0REQ", target="web",
                             duration=timedelta(minutes=30), reason="x")
    keys.add_key(world.access, "U0REQ", user_key())
    for _ in range(3):
        opening.open_request(world.access, user="U0REQ", target="web",
                             duration=timedelta(minutes=30), reason="x")
    before = world.store.actions()
    with pytest.raises(PolicyRefusal, match="already have 3 pending requests for web"):
        opening.open_request(world.access, user="U0REQ", target="web",
                             duration=timedelta(minutes=30), reason="x")
    with pytest.raises(PolicyRefusal, match="longer than web's maximum of 1h"):
        opening.open_request(world.access, user="U0REQ", target="web",
                             duration=timedelta(hours=2), reason="x")
    assert world.store.actions() == before
    assert len(world.store.data.requests) == 3


def test_keys_are_removed_and_restored(world):
    line = user_key()
    key, _ = keys.add_key(world.access, "U0REQ", line)
    assert keys.remove_key(world.access, "U0REQ", f" {key.fingerprint} ").fingerprint == key.fingerprint
    assert keys.list_keys(world.access, "U0REQ") == []
    with pytest.raises(BadInput, match="no registered key"):
        keys.remove_key(world.access, "U0REQ", key.fingerprint)
    assert keys.add_key(world.access, "U0REQ", line)[1] is True  # restored
    assert [k.fingerprint for k in keys.list_keys(world.access, "U0REQ")] == [key.fingerprint]
    assert world.store.actions() == ["key.added", "key.removed", "key.added"]


def test_a_key_belongs_to_one_person(world):
    line = user_key()
    key, _ = keys.add_key(world.access, "U0REQ", line)
    with pytest.raises(PolicyRefusal, match="registered by another Slack user"):
        keys.add_key(world.access, "U0BOB", line)
    assert world.store.actions()[-1] == "key.add.refused"
    keys.remove_key(world.access, "U0REQ", key.fingerprint)
    assert keys.add_key(world.access, "U0BOB", line)[1]  # free once its holder removed it
