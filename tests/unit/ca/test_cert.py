from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import ca.cert
from ca.cert import (BACKDATE, CertificateSpec, CertType, HostCa, new_serial, sign_certificate,
                     validity)
from ca.errors import BadInput, SignerError
from ca.keys import parse_public_key
from ca.signer import FileSigner
from conftest import make_sk_key
from support.certcheck import parse_certificate_line, verify_signature

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def _public(private_key):
    return parse_public_key(private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode())


@pytest.fixture(scope="module")
def subject():
    return _public(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="module", params=["p256", "p384", "ed25519", "rsa3072"])
def signer(request):
    key = {"p256": lambda: ec.generate_private_key(ec.SECP256R1()),
           "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
           "ed25519": ed25519.Ed25519PrivateKey.generate,
           "rsa3072": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
           }[request.param]()
    return FileSigner(key)


def _spec(public_key, **overrides):
    fields = dict(public_key=public_key, serial=12345, key_id="req-1:alice", principals=("postgres",),
                  valid_after=NOW - BACKDATE, valid_before=NOW + timedelta(hours=2))
    fields.update(overrides)
    return CertificateSpec(**fields)


def test_cryptography_parses_and_verifies_what_we_encode(signer, subject):
    spec = _spec(subject, principals=("postgres", "admin"),
                 critical_options={"source-address": "10.0.0.0/8", "force-command": "/bin/true"},
                 extensions=frozenset({"permit-pty", "permit-agent-forwarding"}))
    cert = sign_certificate(spec, signer)
    parsed = serialization.load_ssh_public_identity(cert.line().encode())
    parsed.verify_cert_signature()
    assert parsed.serial == 12345
    assert parsed.key_id == b"req-1:alice"
    assert parsed.valid_principals == [b"postgres", b"admin"]
    assert parsed.valid_after == int((NOW - BACKDATE).timestamp())
    assert parsed.valid_before == int((NOW + timedelta(hours=2)).timestamp())
    assert parsed.critical_options == {b"force-command": b"/bin/true", b"source-address": b"10.0.0.0/8"}
    assert parsed.extensions == {b"permit-agent-forwarding": b"", b"permit-pty": b""}
    assert parsed.type == serialization.SSHCertificateType.USER
    assert parsed.signature_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() \
        == signer.public_key.line()


def test_security_key_subjects_are_certified(signer, subject):
    sk = make_sk_key(subject)
    cert = sign_certificate(_spec(sk), signer)
    assert cert.type == "sk-ssh-ed25519-cert-v01@openssh.com"
    parsed = parse_certificate_line(cert.line())
    verify_signature(parsed, signer.public_key.line())
    assert parsed.principals == ["postgres"]


def test_options_and_extensions_are_in_lexical_order(subject):
    signer = FileSigner(ed25519.Ed25519PrivateKey.generate())
    spec = _spec(subject, critical_options={"source-address": "10.0.0.0/8", "force-command": "x"},
                 extensions=frozenset(ca.cert.EXTENSIONS))
    parsed = parse_certificate_line(sign_certificate(spec, signer).line())
    assert list(parsed.critical_options) == ["force-command", "source-address"]
    assert parsed.extensions == sorted(ca.cert.EXTENSIONS)
    # OpenSSH compares with strcmp: uppercase 'X' sorts before lowercase letters.
    assert parsed.extensions[0] == "permit-X11-forwarding"


def test_host_certificate_type(subject):
    signer = HostCa(FileSigner(ed25519.Ed25519PrivateKey.generate()))
    spec = _spec(subject, cert_type=CertType.HOST, principals=("db1.example.com",),
                 extensions=frozenset())
    parsed = serialization.load_ssh_public_identity(sign_certificate(spec, signer).line().encode())
    assert parsed.type == serialization.SSHCertificateType.HOST


def test_the_user_ca_never_signs_host_keys_nor_the_host_ca_user_keys(subject):
    """Two CA keys, two roles: the signer object decides which certificates it may make."""
    user_ca = FileSigner(ed25519.Ed25519PrivateKey.generate())
    host_ca = HostCa(FileSigner(ed25519.Ed25519PrivateKey.generate()))
    host_spec = _spec(subject, cert_type=CertType.HOST, principals=("db1.example.com",),
                      extensions=frozenset())
    with pytest.raises(SignerError, match="user CA does not sign host certificates"):
        sign_certificate(host_spec, user_ca)
    with pytest.raises(SignerError, match="host CA does not sign user certificates"):
        sign_certificate(_spec(subject), host_ca)


def test_a_host_certificate_carries_no_user_extensions(subject):
    with pytest.raises(BadInput, match="no critical options or extensions"):
        _spec(subject, cert_type=CertType.HOST, principals=("db1",))


def test_line_comment_defaults_to_key_id(subject):
    signer = FileSigner(ed25519.Ed25519PrivateKey.generate())
    cert = sign_certificate(_spec(subject), signer)
    assert cert.line().endswith(" req-1:alice")
    assert len(cert.line("").split()) == 2


@pytest.mark.parametrize("overrides, phrase", [
    ({"principals": ()}, "at least one principal"),
    ({"principals": ("a b",)}, "not a valid name"),
    ({"principals": ("a,b",)}, "not a valid name"),
    ({"principals": ("",)}, "not a valid name"),
    ({"serial": 0}, "serial"),
    ({"serial": 2**64}, "serial"),
    ({"valid_before": NOW - BACKDATE}, "end after it starts"),
    ({"key_id": ""}, "key ID"),
    ({"key_id": "a\nb"}, "key ID"),
    ({"critical_options": {"permit-everything": "1"}}, "unknown critical option"),
    ({"critical_options": {"source-address": "10.0.0.1/8"}}, "host bits"),
    ({"critical_options": {"source-address": "10.0.0.0/8,"}}, "CIDR"),
    ({"critical_options": {"force-command": " "}}, "force-command"),
    ({"extensions": frozenset({"permit-root"})}, "unknown extension"),
])
def test_spec_refusals(subject, overrides, phrase):
    with pytest.raises(BadInput) as err:
        _spec(subject, **overrides)
    assert phrase in err.value.message


def test_naive_times_are_a_programming_error(subject):
    with pytest.raises(ValueError, match="timezone-aware"):
        _spec(subject, valid_after=datetime(2026, 1, 1))


def test_validity_backdates_sixty_seconds():
    after, before = validity(NOW, timedelta(hours=2))
    assert after == NOW - timedelta(seconds=60)
    assert before == NOW + timedelta(hours=2)


def test_serial_is_never_zero(monkeypatch):
    draws = iter([bytes(8), bytes(8), (7).to_bytes(8, "big")])
    monkeypatch.setattr(ca.cert.os, "urandom", lambda n: next(draws))
    assert new_serial() == 7


def test_serials_are_random_64_bit():
    serials = {new_serial() for _ in range(2000)}
    assert len(serials) == 2000
    assert max(serials) > 2**63 or max(serials).bit_length() > 60
