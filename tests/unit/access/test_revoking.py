"""access.revoking on the in-memory store: who may revoke, twice is no error, the KRL."""

from datetime import timedelta

import pytest
from world import World, user_key

from access import issuing, keys, lookup, opening, revoking, voting
from access.errors import BadInput, PolicyRefusal, SignerUnavailable
from access.requests import State
from ca.krl import decode_krl


@pytest.fixture
def world() -> World:
    world = World()
    keys.add_key(world.access, "U0REQ", user_key())
    return world


def issued(world: World):
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=30), reason="deploy")
    return voting.vote(world.access, request.id, approver="U0BOB", approve=True).issued


def test_holders_revoke_their_own_and_admins_any(world):
    certificate = issued(world).certificate
    serial = str(certificate.spec.serial)
    with pytest.raises(PolicyRefusal, match="only your own"):
        revoking.revoke(world.access, serial, actor="U0BOB", as_user="U0BOB")
    [refused] = [e for e in world.store.data.audit if e["action"] == "certificate.revoke.refused"]
    assert (refused["actor"], refused["subject"]) == ("U0BOB", f"reference:{serial}")
    [done] = revoking.revoke(world.access, f" {serial} ", actor="U0REQ", as_user="U0REQ",
                             reason="done early").certificates
    assert done.newly and done.holder == "U0REQ"
    assert lookup.request(world.access, done.request_id)[0].state is State.REVOKED
    [again] = revoking.revoke(world.access, done.request_id, actor="U0ADMIN",
                              as_user="U0ADMIN").certificates
    assert not again.newly and again.serial == certificate.spec.serial
    assert world.store.actions().count("certificate.revoked") == 1


def test_revoking_an_approved_request_with_no_certificate_yet_cancels_it(world):
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=30), reason="deploy")
    world.signer.down = SignerUnavailable("PKCS#11 token 'ca' is not present")
    with pytest.raises(SignerUnavailable):
        voting.vote(world.access, request.id, approver="U0BOB", approve=True)
    world.signer.down = None
    with pytest.raises(PolicyRefusal, match="only your own requests"):
        revoking.revoke(world.access, request.id, actor="U0BOB", as_user="U0BOB")
    done = revoking.revoke(world.access, request.id, actor="U0REQ", as_user="U0REQ",
                           reason="not needed any more")
    assert done.certificates == [] and done.cancelled.state is State.CANCELLED
    assert lookup.request(world.access, request.id)[0].state is State.CANCELLED
    world.clock.advance(hours=1)
    assert issuing.retry_issuing(world.access).issued == []
    assert issuing.issue(world.access, request.id) is None and world.signer.signed == 0
    assert world.store.data.audit[-1]["action"] == "request.cancelled"
    with pytest.raises(BadInput, match="no certificate with serial or request id"):
        revoking.revoke(world.access, request.id, actor="cli:ops")  # nothing left to revoke


def test_the_krl_names_revoked_serials_until_a_day_past_expiry(world):
    certificate = issued(world).certificate
    assert decode_krl(revoking.krl(world.access).data).certificates == ()
    revoking.revoke(world.access, str(certificate.spec.serial), actor="cli:ops")
    [section] = decode_krl(revoking.krl(world.access).data).certificates
    assert section.revokes_serial(certificate.spec.serial)
    world.clock.advance(minutes=30, days=1, seconds=1)
    assert decode_krl(revoking.krl(world.access).data).certificates == ()


@pytest.mark.parametrize(("reference", "message"), [
    ("42", "no certificate with serial 42"),
    ("0", "not a certificate serial"),
    (str(2**64), "not a certificate serial"),
    ("req-nope", "no certificate with serial or request id 'req-nope'"),
    ("٣", "no certificate with serial or request id '٣'"),  # not serial 3
])
def test_unknown_references_are_bad_input(world, reference, message):
    with pytest.raises(BadInput, match=message):
        revoking.revoke(world.access, reference, actor="cli:ops")
