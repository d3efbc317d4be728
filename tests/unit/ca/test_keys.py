import base64
import hashlib
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from ca.errors import BadInput
from ca.keys import ACCEPTED_TYPES, parse_public_key, parse_public_key_blob
from ca.wire import put_mpint, put_string
from conftest import make_sk_key


def _line(private_key) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture(scope="module")
def lines() -> dict[str, str]:
    out = {
        "ssh-ed25519": _line(ed25519.Ed25519PrivateKey.generate()),
        "ecdsa-sha2-nistp256": _line(ec.generate_private_key(ec.SECP256R1())),
        "ecdsa-sha2-nistp384": _line(ec.generate_private_key(ec.SECP384R1())),
        "ecdsa-sha2-nistp521": _line(ec.generate_private_key(ec.SECP521R1())),
        "ssh-rsa": _line(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    }
    out["sk-ssh-ed25519@openssh.com"] = make_sk_key(parse_public_key(out["ssh-ed25519"])).line()
    out["sk-ecdsa-sha2-nistp256@openssh.com"] = make_sk_key(
        parse_public_key(out["ecdsa-sha2-nistp256"])).line()
    return out


def test_every_accepted_type_parses_with_comment_and_fingerprint(lines):
    assert set(lines) == set(ACCEPTED_TYPES)
    for key_type, line in lines.items():
        bare = " ".join(line.split()[:2])
        key = parse_public_key(f"  {bare} alice@laptop  \n")
        assert key.type == key_type
        assert key.comment == "alice@laptop"
        blob = base64.b64decode(line.split()[1])
        assert key.blob == blob
        expected = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        assert key.fingerprint == "SHA256:" + expected
        assert parse_public_key(key.line()) == key


def test_bits_as_ssh_keygen_reports_them(lines):
    assert parse_public_key(lines["ssh-rsa"]).bits == 2048
    assert parse_public_key(lines["ecdsa-sha2-nistp521"]).bits == 521
    assert parse_public_key(lines["ssh-ed25519"]).bits == 256


@pytest.mark.parametrize("text, phrase", [
    ("", "no public key given"),
    ("   \n", "no public key given"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...\n-----END OPENSSH PRIVATE KEY-----", "PRIVATE key"),
    ("-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----", "PEM file"),
    ("---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----", "RFC 4716"),
    ("ssh-ed25519", "no key data"),
    ("ssh-ed25519 not*base64!", "not valid base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA", "not valid base64"),
    ("ssh-foo AAAA", "unknown key type 'ssh-foo'"),
    ("hello world", "unknown key type 'hello'"),
])
def test_refusals_name_the_problem(text, phrase):
    with pytest.raises(BadInput) as err:
        parse_public_key(text)
    assert phrase in err.value.message


def test_dsa_is_refused_by_name():
    key = dsa.generate_private_key(key_size=1024)
    numbers = key.public_key().public_numbers()
    blob = put_string("ssh-dss") + b"".join(put_mpint(v) for v in (
        numbers.parameter_numbers.p, numbers.parameter_numbers.q, numbers.parameter_numbers.g,
        numbers.y))
    with pytest.raises(BadInput, match="DSA keys"):
        parse_public_key(f"ssh-dss {base64.b64encode(blob).decode()} old")


def test_short_rsa_is_refused_with_its_size():
    line = _line(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(BadInput, match="1024 bits: at least 2048"):
        parse_public_key(line)


def test_certificate_is_refused(lines):
    blob = put_string("ssh-ed25519-cert-v01@openssh.com") + put_string(os.urandom(32))
    with pytest.raises(BadInput, match="certificate, not a public key"):
        parse_public_key(f"ssh-ed25519-cert-v01@openssh.com {base64.b64encode(blob).decode()}")


def test_type_and_blob_mismatch(lines):
    rsa_b64 = lines["ssh-rsa"].split()[1]
    with pytest.raises(BadInput, match="says 'ssh-ed25519' but its key data is a 'ssh-rsa' key"):
        parse_public_key(f"ssh-ed25519 {rsa_b64}")


def test_curve_mismatch_and_bad_point():
    blob = put_string("ecdsa-sha2-nistp256") + put_string("nistp384") + put_string(b"\x04" + bytes(96))
    with pytest.raises(BadInput, match="curve 'nistp384'"):
        parse_public_key_blob(blob)
    blob = put_string("ecdsa-sha2-nistp256") + put_string("nistp256") + put_string(b"\x04" + bytes(64))
    with pytest.raises(BadInput, match="not on curve nistp256"):
        parse_public_key_blob(blob)


def test_wrong_ed25519_length_and_bad_sk_application(lines):
    with pytest.raises(BadInput, match="not 32 bytes"):
        parse_public_key_blob(put_string("ssh-ed25519") + put_string(bytes(31)))
    good = parse_public_key(lines["sk-ssh-ed25519@openssh.com"])
    bad = good.blob[: -len(put_string("ssh:"))] + put_string("https:")
    with pytest.raises(BadInput, match="application must start with 'ssh:'"):
        parse_public_key_blob(bad)


def test_every_truncation_and_any_trailing_byte_is_refused(lines):
    for line in lines.values():
        blob = base64.b64decode(line.split()[1])
        for cut in range(len(blob)):
            with pytest.raises(BadInput):
                parse_public_key_blob(blob[:cut])
            with pytest.raises(BadInput):
                parse_public_key(f"{line.split()[0]} {base64.b64encode(blob[:cut]).decode()}")
        with pytest.raises(BadInput, match="trailing"):
            parse_public_key_blob(blob + b"\0")


def test_describe_matches_ssh_keygen_layout(lines):
    key = parse_public_key(lines["ssh-ed25519"] + " me@host")
    assert key.describe() == f"256 {key.fingerprint} me@host (ED25519)"


def _rsa_line(exponent: int, modulus: int) -> str:
    import base64

    from ca.wire import put_mpint, put_string

    blob = put_string("ssh-rsa") + put_mpint(exponent) + put_mpint(modulus)
    return f"ssh-rsa {base64.b64encode(blob).decode()}"


@pytest.mark.parametrize(("exponent", "modulus_bits", "even", "message"), [
    (3, 2048, False, "public exponent 3 is refused"),
    (65535, 2048, False, "public exponent 65535 is refused"),
    (65538, 2048, False, "public exponent 65538 is refused"),
    (65537, 2048, True, "modulus is even"),
    (65537, 16385, False, "at most 16384"),
])
def test_weak_or_absurd_rsa_keys_are_refused(exponent, modulus_bits, even, message):
    modulus = (1 << (modulus_bits - 1)) | 12345 | 1
    if even:
        modulus -= 1
    with pytest.raises(BadInput, match=message):
        parse_public_key(_rsa_line(exponent, modulus))
    # the same shape with a sane exponent and an odd modulus of an allowed size is fine
    assert parse_public_key(_rsa_line(65537, (1 << 2047) | 12345 | 1)).bits == 2048
