"""access.issuing on the in-memory store: claim, sign, record; failures and retries."""

from datetime import timedelta

import pytest
from world import World, user_key

from access import issuing, keys, lookup, opening, voting
from access import sweeps
from access.errors import IssueRefused, SignerUnavailable
from access.issuing import ISSUE_LEASE, MAX_ATTEMPTS, retry_delay
from access.policy import Target
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
    assert issuing.retry_issuing(world.access).issued == []  # backing off: not yet
    world.clock.advance(seconds=retry_delay(1).total_seconds())
    [issued] = issuing.retry_issuing(world.access).issued
    assert issued.request.state is State.ISSUED and issued.request.issue_error is None
    assert lookup.request(world.access, request_id)[0].state is State.ISSUED
    assert issuing.retry_issuing(world.access).issued == []
    assert issuing.issue(world.access, request_id) is None  # issued already: nothing signed
    assert world.signer.signed == 1


def test_a_claim_stands_until_its_lease_lapses(world):
    request_id = approve(world)
    with world.store.unit() as unit:  # another worker claimed it, then died
        unit.requests.claim_issue(request_id, serial=5, now=world.clock.now, lease=ISSUE_LEASE,
                                  max_attempts=MAX_ATTEMPTS)
    assert issuing.issue(world.access, request_id) is None
    assert issuing.retry_issuing(world.access).issued == []
    world.clock.advance(seconds=ISSUE_LEASE.total_seconds() + 1)
    [issued] = issuing.retry_issuing(world.access).issued
    assert issued.certificate.spec.serial != 5


def test_retries_back_off_and_stop_after_the_last_attempt(world):
    world.policy = _with(world.policy, request_ttl=timedelta(hours=2))
    request_id = approve(world)  # attempt 1 failed
    world.signer.down = SignerUnavailable("PKCS#11 token 'ca' is not present")
    waits = []
    for attempt in range(2, MAX_ATTEMPTS + 1):
        wait = retry_delay(attempt - 1)
        world.clock.advance(seconds=wait.total_seconds() - 1)
        assert issuing.retry_issuing(world.access).issued == []
        assert world.store.data.requests[request_id].request.issue_attempts == attempt - 1
        world.clock.advance(seconds=1)
        issuing.retry_issuing(world.access)
        assert world.store.data.requests[request_id].request.issue_attempts == attempt
        waits.append(wait.total_seconds())
    assert waits == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    world.signer.down = None
    world.clock.advance(hours=1)
    assert issuing.retry_issuing(world.access).issued == []  # no attempt after the last
    assert issuing.issue(world.access, request_id) is None
    assert world.signer.signed == 0


def test_an_approved_request_never_issued_expires_request_ttl_after_its_approval(world):
    world.clock.advance(minutes=20)  # opened at 12:00, approved at 12:20 below
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=30), reason="deploy")
    world.clock.advance(minutes=20)
    world.signer.down = SignerUnavailable("PKCS#11 token 'ca' is not present")
    with pytest.raises(SignerUnavailable):
        voting.vote(world.access, request.id, approver="U0BOB", approve=True)
    world.clock.advance(minutes=29)  # 49 minutes after opening, 29 after approval
    assert sweeps.expire_due(world.access) == []
    world.clock.advance(minutes=1)
    [expired] = sweeps.expire_due(world.access)
    assert expired.id == request.id and expired.state is State.EXPIRED
    world.signer.down = None
    assert issuing.retry_issuing(world.access).issued == []
    assert world.store.actions()[-1] == "request.expired"


def test_a_target_gone_from_the_policy_signs_nothing_and_cancels_the_request(world):
    request_id = approve(world)
    world.policy = _with(world.policy, targets={"prod-db": world.policy.targets["prod-db"]})
    world.clock.advance(minutes=1)
    with pytest.raises(IssueRefused, match="no longer in the policy") as refused:
        issuing.issue(world.access, request_id)
    assert "nothing was signed" in refused.value.message
    stored = lookup.request(world.access, request_id)[0]
    assert stored.state is State.CANCELLED and "no longer in the policy" in stored.issue_error
    assert world.store.actions()[-1] == "certificate.refused"
    assert issuing.retry_issuing(world.access) == issuing.Retried([], [])
    assert world.signer.signed == 0


@pytest.mark.parametrize("change, why", [
    ({"principals": ("postgres",)}, "no longer allows the principals www"),
    ({"extensions": frozenset()}, "no longer allows the extensions permit-pty"),
    ({"force_command": "/usr/bin/true"}, "now requires force-command /usr/bin/true"),
    ({"source_address": "10.0.0.0/8"}, "now requires source-address 10.0.0.0/8"),
    ({"max_duration": timedelta(minutes=10)}, "30m is now longer than web's maximum of 10m"),
])
def test_what_the_policy_no_longer_allows_is_not_signed(world, change, why):
    request_id = approve(world)
    web = world.policy.targets["web"]
    world.policy = _with(world.policy, targets={**world.policy.targets,
                                                "web": Target(**{**web.__dict__, **change})})
    world.clock.advance(seconds=retry_delay(1).total_seconds())
    refused = issuing.retry_issuing(world.access)
    assert refused.issued == [] and [r.id for r in refused.refused] == [request_id]
    assert why in lookup.request(world.access, request_id)[0].issue_error
    assert world.signer.signed == 0


def test_a_narrower_policy_still_signs_the_template_the_approvers_saw(world):
    request = opening.open_request(world.access, user="U0REQ", target="web",
                                   duration=timedelta(minutes=30), reason="deploy")
    web = world.policy.targets["web"]
    wider = Target(**{**web.__dict__, "principals": ("www", "root"),
                      "extensions": frozenset({"permit-pty", "permit-port-forwarding"})})
    world.policy = _with(world.policy, targets={**world.policy.targets, "web": wider})
    spec = voting.vote(world.access, request.id, approver="U0BOB",
                       approve=True).issued.certificate.spec
    assert spec.principals == ("www",) and spec.extensions == frozenset({"permit-pty"})


def _with(policy, **changes):
    return type(policy)(**{**policy.__dict__, **changes})


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
