"""access.issuing on the in-memory store: claim, sign, record; failures and retries."""

from datetime import timedelta

import pytest
from world import World, user_key

from access import issuing, keys, lookup, opening, voting
from access.errors import PolicyRefusal, SignerUnavailable
from access.issuing import ISSUE_LEASE
from access.requests import State
from ca.keys import parse_public_key


@pytest.fixture
def world() -> World:
    world = World()
    keys.add_key(world.access, "U0REQ", user_key())
    return world


def approve(world: World) -> str:
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=30), reason="deploy")
    world.signer.down = SignerUnavailable("PKCS#11 token 'ca' is not present")
    with pytest.raises(SignerUnavailable):
        voting.vote(world.access, request.id, approver="U0BOB", approve=True)
    world.signer.down = None
    return request.id


def test_a_signer_failure_keeps_the_request_approved_with_the_error_until_a_retry(world):
    request_id = approve(world)
    stored, certificate = lookup.request(world.access, request_id)
    assert stored.state is State.APPROVED and "not present" in stored.issue_error
    assert certificate is None
    assert world.store.actions()[-2:] == ["certificate.reserved", "certificate.issue_failed"]
    [issued] = issuing.retry_issuing(world.access)
    assert issued.request.state is State.ISSUED and issued.request.issue_error is None
    assert lookup.request(world.access, request_id)[0].state is State.ISSUED
    assert issuing.retry_issuing(world.access) == []
    assert issuing.issue(world.access, request_id) is None  # issued already: nothing signed
    assert world.signer.signed == 1


def test_a_claim_stands_until_its_lease_lapses(world):
    request_id = approve(world)
    with world.store.unit() as unit:  # another worker claimed it, then died
        unit.requests.claim_issue(request_id, serial=5, now=world.clock.now, lease=ISSUE_LEASE)
    assert issuing.issue(world.access, request_id) is None
    assert issuing.retry_issuing(world.access) == []
    world.clock.advance(seconds=ISSUE_LEASE.total_seconds() + 1)
    [issued] = issuing.retry_issuing(world.access)
    assert issued.certificate.spec.serial != 5


def test_a_target_gone_from_the_policy_signs_nothing(world):
    request_id = approve(world)
    world.policy = type(world.policy)(**{**world.policy.__dict__,
                                         "targets": {"prod-db": world.policy.targets["prod-db"]}})
    with pytest.raises(PolicyRefusal, match="no longer in the policy"):
        issuing.issue(world.access, request_id)
    assert "no longer in the policy" in lookup.request(world.access, request_id)[0].issue_error
    assert world.signer.signed == 0


def test_the_certificate_is_the_request_key_and_the_targets_principals(world):
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=45), reason="deploy")
    spec = voting.vote(world.access, request.id, approver="U0BOB", approve=True).issued.certificate.spec
    assert spec.public_key.fingerprint == request.key_fingerprint
    assert spec.principals == ("www",) and spec.key_id == f"vouch:request:{request.id}:U0REQ"
    assert spec.valid_before == world.clock.now + timedelta(minutes=45)
    assert spec.valid_after == world.clock.now - timedelta(seconds=60)


def test_direct_signing_is_recorded_and_audited(world):
    subject = parse_public_key(user_key())
    certificate = issuing.sign_direct(world.access, public_key=subject,
                                      principals=["root", "root"], duration=timedelta(hours=1),
                                      actor="cli:ops", reason="Slack is down",
                                      source_address="10.0.0.0/8")
    spec = certificate.spec
    assert spec.principals == ("root",) and spec.key_id == f"vouch:cli:ops:{spec.serial}"
    assert spec.critical_options == {"source-address": "10.0.0.0/8"}
    stored = world.store.data.certificates[spec.serial]
    assert stored.holder is None and stored.request_id is None
    assert world.store.actions() == ["key.added", "certificate.signed_direct"]
    assert world.store.data.audit[-1]["details"]["reason"] == "Slack is down"
