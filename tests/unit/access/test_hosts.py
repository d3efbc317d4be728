"""access.hosts on the in-memory store: tokens are one-time and kept hashed, renewal needs the
host's own key and a live certificate for the same names, revocation reaches the KRL and
known_hosts, and every refusal about something Vouch issued is audited."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from conftest import make_sk_key
from world import World

from access import hosts, revoking
from access.errors import BadInput, PolicyRefusal
from access.signed_calls import HOST, SCHEME, Unauthorized, check, message
from ca import sshsig
from ca.cert import CertType, HostCa
from ca.keys import parse_public_key
from ca.krl import decode_krl
from ca.signer import FileSigner

TARGET = "/api/v1/hosts/certificate"


class Host:
    """A host's keys: an Ed25519 one that signs renewals, and an ECDSA one."""

    def __init__(self) -> None:
        self.ed25519 = ed25519.Ed25519PrivateKey.generate()
        self.ecdsa = ec.generate_private_key(ec.SECP256R1())

    @staticmethod
    def line(private) -> str:
        return private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH).decode()

    @property
    def lines(self) -> list[str]:
        return [self.line(self.ed25519), self.line(self.ecdsa)]

    def call(self, world: World, body: dict, *, key=None):
        """The renewal call as the host signs it (namespace vouch-host), checked."""
        raw = json.dumps(body).encode()
        stamp = str(int(world.clock().timestamp()))
        armored = sshsig.sign(FileSigner(key or self.ed25519), message(stamp, "POST", TARGET, raw),
                              HOST)
        return check(authorization=f"{SCHEME} {base64.b64encode(armored.encode()).decode()}",
                     timestamp=stamp, method="POST", target=TARGET, body=raw, namespace=HOST,
                     now=world.clock())


class HostCaSigner:
    """The host CA; `during` runs once inside the first signature (a concurrent request)."""

    def __init__(self, world: World) -> None:
        self.inner = FileSigner(ed25519.Ed25519PrivateKey.generate())
        self.public_key, self.world, self.during = self.inner.public_key, world, None

    def sign(self, data: bytes) -> bytes:
        assert self.world.store.open_units == 0, "signed inside a transaction"
        during, self.during = self.during, None
        if during is not None:
            during()
        return self.inner.sign(data)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def host_ca(world) -> HostCa:
    return HostCa(HostCaSigner(world))


def token(world, *names: str, ttl=timedelta(hours=1)) -> str:
    made, _ = hosts.create_token(world.access, names=names or ("db1.example.com",), ttl=ttl,
                                 actor="cli:root")
    return made


def actions(world) -> list[str]:
    return world.store.actions()


def issued(world) -> list:
    return sorted(world.store.data.host_certificates.values(), key=lambda c: c.issued_at)


def test_a_token_is_stored_hashed_and_enrols_the_hosts_keys_once(world, host_ca):
    host = Host()
    made = token(world, "DB1.example.com", "db1", "10.0.0.7")
    [stored] = world.store.data.host_tokens.values()
    assert made.startswith("vht_") and made not in repr(world.store.data)
    assert stored.hostnames == ("db1.example.com", "db1", "10.0.0.7")
    done = hosts.enrol(world.access, host_ca, token=made, public_keys=host.lines)
    assert done.hostnames == ("db1.example.com", "db1", "10.0.0.7")
    for certificate, line in zip(done.certificates, host.lines, strict=True):
        spec = certificate.spec
        assert spec.cert_type is CertType.HOST and spec.public_key == parse_public_key(line)
        assert spec.principals == done.hostnames and not spec.extensions
        assert spec.valid_before - spec.valid_after == hosts.HOST_VALIDITY + timedelta(minutes=1)
    assert [c.via for c in issued(world)] == ["token", "token"]
    assert actions(world) == ["host.token_created", "host.enrolled"]
    with pytest.raises(Unauthorized, match="already used"):
        hosts.enrol(world.access, host_ca, token=made, public_keys=host.lines)
    assert len(issued(world)) == 2
    assert actions(world)[-1] == "host.refused"
    assert world.store.data.audit[-1]["details"]["reason"].startswith("this host token was "
                                                                      "already used")


def test_two_hosts_racing_with_one_token_get_one_set_of_certificates(world, host_ca):
    """Both pass the first look at the token; the compare-and-set lets one through."""
    made, first, second = token(world), Host(), Host()
    inner = []
    host_ca._signer.during = lambda: inner.append(
        hosts.enrol(world.access, host_ca, token=made, public_keys=second.lines))
    with pytest.raises(Unauthorized, match="already used"):
        hosts.enrol(world.access, host_ca, token=made, public_keys=first.lines)
    assert len(inner) == 1
    assert {c.fingerprint for c in issued(world)} == {parse_public_key(line).fingerprint
                                                      for line in second.lines}


def test_an_expired_or_unknown_token_enrols_nothing(world, host_ca):
    made = token(world, ttl=timedelta(minutes=5))
    world.clock.advance(minutes=5)
    with pytest.raises(Unauthorized, match="expired"):
        hosts.enrol(world.access, host_ca, token=made, public_keys=Host().lines)
    assert actions(world) == ["host.token_created", "host.refused"]
    with pytest.raises(Unauthorized, match="unknown host token"):
        hosts.enrol(world.access, host_ca, token="vht_" + "A" * 43, public_keys=Host().lines)
    with pytest.raises(Unauthorized, match="not a Vouch host token"):
        hosts.enrol(world.access, host_ca, token="hunter2", public_keys=Host().lines)
    # A stranger's guesses are logged, not audited: nobody can flood the chain.
    assert actions(world) == ["host.token_created", "host.refused"] and not issued(world)


@pytest.mark.parametrize("names, why", [
    (("*",), "no wildcards"), (("*.example.com",), "no wildcards"), (("a b",), "not a host"),
    (("",), "empty"), ((), "at least one"), (("-x.example",), "not a host"),
])
def test_host_names_are_names_or_addresses_never_patterns(world, names, why):
    with pytest.raises(BadInput, match=why):
        hosts.create_token(world.access, names=names, ttl=timedelta(hours=1), actor="cli:root")


@pytest.mark.parametrize("line, why", [
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP== x", "DSA"),
    (make_sk_key(parse_public_key(Host.line(ed25519.Ed25519PrivateKey.generate()))).line(),
     "not a host key type"),
    ("garbage", "not a host key type"),
    ("ssh-ed25519", "no key data"),
])
def test_bad_host_keys_are_refused_before_the_token_is_looked_at(world, host_ca, line, why):
    made = token(world)
    with pytest.raises(BadInput, match=why):
        hosts.enrol(world.access, host_ca, token=made, public_keys=[line])
    assert world.store.data.host_tokens[next(iter(world.store.data.host_tokens))].used_at is None


def enrolled(world, host_ca, *names: str) -> Host:
    host = Host()
    hosts.enrol(world.access, host_ca, token=token(world, *names), public_keys=host.lines)
    return host


def test_a_renewal_signed_by_the_host_key_certifies_the_same_keys_and_names(world, host_ca):
    host = enrolled(world, host_ca, "db1.example.com", "db1")
    world.clock.advance(days=25)
    body = {"public_keys": host.lines}
    done = hosts.renew(world.access, host_ca, host.call(world, body), names=None,
                       public_keys=host.lines)
    assert done.hostnames == ("db1.example.com", "db1")
    assert done.valid_before == world.clock() + hosts.HOST_VALIDITY
    assert [c.via for c in issued(world)] == ["token", "token", "renewal", "renewal"]
    assert actions(world)[-1] == "host.renewed"
    same_names = {"public_keys": host.lines, "hostnames": ["db1", "db1.example.com"]}
    world.clock.advance(seconds=1)
    hosts.renew(world.access, host_ca, host.call(world, same_names), names=same_names["hostnames"],
                public_keys=host.lines)


def test_a_renewal_by_another_key_issues_nothing_and_is_not_audited(world, host_ca):
    host, stranger = enrolled(world, host_ca), ed25519.Ed25519PrivateKey.generate()
    before = (len(issued(world)), actions(world))
    with pytest.raises(Unauthorized, match="no Vouch host certificate to renew"):
        hosts.renew(world.access, host_ca, host.call(world, {}, key=stranger), names=None,
                    public_keys=host.lines)
    assert (len(issued(world)), actions(world)) == before


def test_a_renewal_that_changes_names_is_refused_and_audited(world, host_ca):
    host = enrolled(world, host_ca, "db1.example.com")
    names = ["db1.example.com", "payments.example.com"]
    with pytest.raises(PolicyRefusal, match="cannot change on renewal"):
        hosts.renew(world.access, host_ca, host.call(world, {"hostnames": names}), names=names,
                    public_keys=host.lines)
    assert len(issued(world)) == 2 and actions(world)[-1] == "host.refused"


def test_a_renewal_cannot_add_a_key_it_was_not_certified_for(world, host_ca):
    host = enrolled(world, host_ca)
    extra = Host.line(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(PolicyRefusal, match="renewal certifies the same keys"):
        hosts.renew(world.access, host_ca, host.call(world, {}), names=None,
                    public_keys=[*host.lines, extra])
    assert len(issued(world)) == 2


def test_a_replayed_renewal_is_refused(world, host_ca):
    host = enrolled(world, host_ca)
    call = host.call(world, {})
    hosts.renew(world.access, host_ca, call, names=None, public_keys=None)
    with pytest.raises(Unauthorized, match="already used"):
        hosts.renew(world.access, host_ca, call, names=None, public_keys=None)
    assert len(issued(world)) == 3 and actions(world)[-1] == "host.refused"


def test_an_expired_certificate_is_not_renewed(world, host_ca):
    host = enrolled(world, host_ca)
    world.clock.advance(days=30, seconds=1)
    with pytest.raises(Unauthorized, match="no valid Vouch host certificate"):
        hosts.renew(world.access, host_ca, host.call(world, {}), names=None, public_keys=None)


def test_revoking_a_host_certificate_revokes_its_key_everywhere(world, host_ca):
    host = enrolled(world, host_ca, "db1.example.com")
    hosts.renew(world.access, host_ca, host.call(world, {}), names=None, public_keys=None)
    key = parse_public_key(host.lines[0])
    first, *_ = [c for c in issued(world) if c.fingerprint == key.fingerprint]
    with pytest.raises(PolicyRefusal, match="only admins"):
        revoking.revoke(world.access, str(first.serial), actor="U0BOB", as_user="U0BOB")
    done = revoking.revoke(world.access, str(first.serial), actor="U0ADMIN", as_user="U0ADMIN",
                           reason="host key leaked")
    assert all(item.host and item.newly for item in done.certificates)
    revoked = {c.serial for c in issued(world) if c.revoked_at is not None}
    assert {item.serial for item in done.certificates} == revoked and len(revoked) == 2
    assert actions(world).count("host.revoked") == 2
    sections = {s.ca_key: s for s in decode_krl(revoking.krl(world.access).data).certificates}
    assert set(sections) == {host_ca.public_key.blob}
    assert all(sections[host_ca.public_key.blob].revokes_serial(serial) for serial in revoked)
    lines = hosts.known_hosts(world.access, host_ca, "*.example.com").splitlines()
    assert lines == [f"@cert-authority *.example.com {host_ca.public_key.line()} vouch-host-ca",
                     f"@revoked * {key.line()}"]
    world.clock.advance(seconds=1)
    with pytest.raises(Unauthorized, match="was revoked"):
        hosts.renew(world.access, host_ca, host.call(world, {}), names=None, public_keys=None)
    with pytest.raises(PolicyRefusal, match="was revoked"):
        hosts.enrol(world.access, host_ca, token=token(world), public_keys=host.lines)
    world.clock.advance(days=31)  # expired: known_hosts no longer needs to name it
    assert len(hosts.known_hosts(world.access, host_ca, "*").splitlines()) == 1


def test_the_operator_signs_a_host_certificate_audited_with_the_reason(world, host_ca):
    key = parse_public_key(Host().lines[1])
    certificate = hosts.sign_host(world.access, host_ca, public_key=key, names=["db2"],
                                  duration=timedelta(days=90), actor="cli:root",
                                  reason="new rack")
    assert certificate.spec.principals == ("db2",) and issued(world)[0].via == "operator"
    [event] = world.store.data.audit
    assert event["action"] == "host.signed_direct" and event["details"]["reason"] == "new rack"
    with pytest.raises(BadInput, match="at most 366d"):
        hosts.sign_host(world.access, host_ca, public_key=key, names=["db2"],
                        duration=timedelta(days=400), actor="cli:root", reason="x")


def test_without_a_host_ca_nothing_is_signed(world):
    with pytest.raises(hosts.NoHostCa, match="vouch ca init --host"):
        hosts.enrol(world.access, None, token=token(world), public_keys=Host().lines)
    with pytest.raises(hosts.NoHostCa):
        hosts.known_hosts(world.access, None, "*")
