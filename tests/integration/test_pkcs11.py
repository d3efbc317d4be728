"""ca/pkcs11.py against a real SoftHSM2 token: key creation, signing, and failure modes.

Every certificate is checked by parties that share no code with Vouch: `ssh-keygen -L` (which
verifies the CA signature while loading a certificate), cryptography's certificate parser, and a
plain cryptography signature check over the signed bytes.

PKCS#11 login state belongs to the process, and a process initialises SoftHSM2 only once, so the
in-process tests share the one `softhsm` token (each with its own key labels, prefixed `t-p11-`).
Wrong PINs and "first login of the process" scenarios run in subprocesses on a token of their own.
Note that python-pkcs11's Session.close() calls C_Logout for a session that logged in, which logs
out every session of the process; the signer under test copes by reopening its session.

test_signer_follows_a_replaced_key_on_the_first_signature pins down a fixed defect: reopening a
session used to log the process out by closing the old session after the new one shared its login.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from ca.cert import CertificateSpec, sign_certificate, new_serial, validity
from ca.errors import BadInput, SignerError, SignerUnavailable
from ca.keys import PublicKey
from ca.keystore import create_ca_key, open_signer
from ca.pkcs11 import Pkcs11Signer, create_token_key, load_module, parse_pkcs11_uri
from ca.signer import CaKeyType, probe

ROOT = Path(__file__).resolve().parents[2]
CA_TYPES = (CaKeyType.ECDSA_P256, CaKeyType.ECDSA_P384, CaKeyType.ED25519, CaKeyType.RSA_3072,
            CaKeyType.RSA_4096)
USER_KEY_NAMES = ("ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048",
                  "sk-ed25519", "sk-ecdsa-p256")
SSH_KIND = {"ecdsa-sha2-nistp256": "ECDSA", "ecdsa-sha2-nistp384": "ECDSA",
            "ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}
SIGNATURE_ALGORITHM = {"ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
                       "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384",
                       "ssh-ed25519": "ssh-ed25519", "ssh-rsa": "rsa-sha2-512"}


# --- helpers --------------------------------------------------------------------------------

def uri_for(softhsm, label: str):
    return parse_pkcs11_uri(softhsm.uri(label))


def new_key(softhsm, label: str, key_type: CaKeyType = CaKeyType.ECDSA_P256, **kw) -> PublicKey:
    return create_token_key(uri_for(softhsm, label), key_type, module=softhsm.module,
                            pin=softhsm.pin, **kw)


def open_pkcs11(softhsm, label: str, pin: str | None = "default") -> Pkcs11Signer:
    return Pkcs11Signer(uri_for(softhsm, label), module=softhsm.module,
                        pin=softhsm.pin if pin == "default" else pin)


@contextmanager
def own_session(softhsm, *, rw: bool = False):
    """A session of the test's own, sharing the process's login (never logging in itself, so
    closing it never logs the process out). Call it right after a signer signed: that signature
    proves the process is logged in, without which private objects are invisible."""
    token = load_module(softhsm.module).get_token(token_label=softhsm.label)
    session = token.open(rw=rw)
    try:
        yield session
    finally:
        session.close()


def private_object(session, label: str):
    return session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)


def make_spec(user_key: PublicKey, key_id: str = "alice@example.org",
              principals: tuple[str, ...] = ("alice", "deploy")) -> CertificateSpec:
    after, before = validity(datetime.now(timezone.utc), timedelta(hours=1))
    return CertificateSpec(public_key=user_key, serial=new_serial(), key_id=key_id,
                           principals=principals, valid_after=after, valid_before=before)


def crypto_ca_key(public: PublicKey):
    return serialization.load_ssh_public_key(public.line().encode())


def _string(data: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack(">I", data[offset:offset + 4])
    end = offset + 4 + length
    assert end <= len(data), "truncated SSH string"
    return data[offset + 4:end], end


def _mpint(data: bytes, offset: int) -> tuple[int, int]:
    """RFC 4251 mpint, strictly: OpenSSH refuses a negative or non-minimal one."""
    raw, end = _string(data, offset)
    assert raw, "zero mpint in a signature"
    assert not raw[0] & 0x80, f"negative mpint {raw[:2].hex()}..."
    minimal = len(raw) == 1 or raw[0] != 0 or raw[1] & 0x80
    assert minimal, f"non-minimal mpint {raw[:2].hex()}..."
    return int.from_bytes(raw, "big"), end


def ssh_mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return struct.pack(">I", len(raw)) + raw


def ssh_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def verify_signature_by_hand(cert_line: str, ca_public: PublicKey) -> None:
    """Split the certificate at the CA key (its last field before the signature) and verify the
    signature over everything before it with cryptography's primitives: works for sk-* certificates
    too, which cryptography's certificate parser does not read."""
    blob = base64.b64decode(cert_line.split()[1])
    marker = struct.pack(">I", len(ca_public.blob)) + ca_public.blob
    body_end = blob.rindex(marker) + len(marker)
    signature, end = _string(blob, body_end)
    assert end == len(blob), "bytes after the signature"
    body = blob[:body_end]
    algorithm, offset = _string(signature, 0)
    raw, offset = _string(signature, offset)
    assert offset == len(signature)
    key = crypto_ca_key(ca_public)
    assert algorithm.decode() == SIGNATURE_ALGORITHM[ca_public.type]
    if isinstance(key, ec.EllipticCurvePublicKey):
        r, inner = _mpint(raw, 0)
        s, inner = _mpint(raw, inner)
        assert inner == len(raw)
        der = encode_dss_signature(r, s)
        digest = {256: hashes.SHA256(), 384: hashes.SHA384()}[key.curve.key_size]
        key.verify(der, body, ec.ECDSA(digest))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(raw, body)
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(raw, body, padding.PKCS1v15(), hashes.SHA512())


def verify_certificate(cert_line: str, spec: CertificateSpec, ca_public: PublicKey) -> None:
    """Independent checks of one certificate line; raises on any mismatch or bad signature."""
    verify_signature_by_hand(cert_line, ca_public)
    if spec.public_key.is_security_key:
        return
    cert = serialization.load_ssh_public_identity(cert_line.encode())
    cert.verify_cert_signature()  # against the CA key embedded in the certificate...
    expected_ca = crypto_ca_key(ca_public).public_bytes(serialization.Encoding.OpenSSH,
                                                        serialization.PublicFormat.OpenSSH)
    embedded_ca = cert.signature_key().public_bytes(serialization.Encoding.OpenSSH,
                                                    serialization.PublicFormat.OpenSSH)
    assert embedded_ca == expected_ca  # ...which must be the token's key
    assert cert.serial == spec.serial
    assert cert.key_id == spec.key_id.encode()
    assert cert.valid_principals == [p.encode() for p in spec.principals]
    subject = cert.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH)
    assert subject.split()[1] == base64.b64encode(spec.public_key.blob)


def keygen(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh-keygen", *map(str, args)], capture_output=True, text=True,
                          timeout=30)


def keygen_fingerprint(public: PublicKey, directory: Path) -> str:
    path = directory / "ca.pub"
    path.write_text(public.line() + "\n")
    cp = keygen("-l", "-E", "sha256", "-f", path)
    assert cp.returncode == 0, cp.stderr
    bits, fp, *_rest, kind = cp.stdout.split()
    assert kind == f"({SSH_KIND[public.type]})"
    assert int(bits) == public.bits
    return fp


# --- one CA key of each type ----------------------------------------------------------------

@dataclass
class Ca:
    key_type: CaKeyType
    label: str
    created: PublicKey
    signer: Pkcs11Signer


@pytest.fixture(scope="module", params=CA_TYPES, ids=lambda kt: kt.value)
def ca(request, softhsm):
    key_type = request.param
    label = f"t-p11-ca-{key_type.value}"
    created = new_key(softhsm, label, key_type)
    signer = open_pkcs11(softhsm, label)
    yield Ca(key_type, label, created, signer)
    signer.close()


def test_signer_reads_the_key_create_returned(ca):
    expected_type = {CaKeyType.ECDSA_P256: ("ecdsa-sha2-nistp256", 256),
                     CaKeyType.ECDSA_P384: ("ecdsa-sha2-nistp384", 384),
                     CaKeyType.ED25519: ("ssh-ed25519", 256),
                     CaKeyType.RSA_3072: ("ssh-rsa", 3072),
                     CaKeyType.RSA_4096: ("ssh-rsa", 4096)}[ca.key_type]
    assert (ca.created.type, ca.created.bits) == expected_type
    assert ca.signer.public_key == ca.created
    assert ca.signer.public_key.blob == ca.created.blob


def test_public_key_matches_the_token_objects(ca, softhsm):
    """Compare with the token's own attributes, read without ca/pkcs11.py's decoding."""
    ca.signer.sign(b"log in")
    key = crypto_ca_key(ca.signer.public_key)
    with own_session(softhsm) as session:
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=ca.label)
        if isinstance(key, rsa.RSAPublicKey):
            assert int.from_bytes(public[Attribute.MODULUS], "big") == key.public_numbers().n
            exponent = public[Attribute.PUBLIC_EXPONENT]
            assert int.from_bytes(exponent, "big") == key.public_numbers().e
            return
        point = public[Attribute.EC_POINT]
        if isinstance(key, ed25519.Ed25519PublicKey):
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = key.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)
        assert point == bytes([0x04, len(raw)]) + raw  # a DER OCTET STRING around the point


def test_private_key_is_sensitive_and_never_extractable(ca, softhsm):
    ca.signer.sign(b"log in")
    with own_session(softhsm) as session:
        private = private_object(session, ca.label)
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.PRIVATE] is True
        assert private[Attribute.SIGN] is True
        assert private[Attribute.ALWAYS_AUTHENTICATE] is False
        is_rsa = ca.key_type.value.startswith("rsa")
        secret = Attribute.PRIVATE_EXPONENT if is_rsa else Attribute.VALUE
        with pytest.raises(p11.AttributeSensitive):
            private[secret]


def test_token_keys_may_only_sign_and_verify(ca, softhsm):
    """A CA key that can also decrypt, unwrap or derive is an oracle for whoever gets a session:
    the private half may only sign, the public half only verify (read back from the token)."""
    ca.signer.sign(b"log in")
    with own_session(softhsm) as session:
        private = private_object(session, ca.label)
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=ca.label)
        assert {a: private[a] for a in (Attribute.SIGN, Attribute.DECRYPT, Attribute.UNWRAP,
                                        Attribute.DERIVE)} == {
            Attribute.SIGN: True, Attribute.DECRYPT: False, Attribute.UNWRAP: False,
            Attribute.DERIVE: False}
        assert {a: public[a] for a in (Attribute.VERIFY, Attribute.ENCRYPT, Attribute.WRAP)} == {
            Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False}


@pytest.mark.parametrize("user", USER_KEY_NAMES)
def test_certificate_verifies_independently(ca, user, user_keys, tmp_path):
    spec = make_spec(user_keys[user].public, key_id=f"alice via {ca.key_type.value} for {user}")
    cert = sign_certificate(spec, ca.signer)
    line = cert.line()
    verify_certificate(line, spec, ca.signer.public_key)

    fingerprint = keygen_fingerprint(ca.signer.public_key, tmp_path)
    assert fingerprint == ca.signer.public_key.fingerprint
    path = tmp_path / "cert.pub"
    path.write_text(line + "\n")
    shown = keygen("-L", "-f", path)
    assert shown.returncode == 0, shown.stderr
    kind = SSH_KIND[ca.signer.public_key.type]
    algorithm = SIGNATURE_ALGORITHM[ca.signer.public_key.type]
    assert f"Signing CA: {kind} {fingerprint} (using {algorithm})" in shown.stdout
    assert f'Key ID: "{spec.key_id}"' in shown.stdout
    assert f"Serial: {spec.serial}\n" in shown.stdout
    assert "user certificate" in shown.stdout
    principals = shown.stdout.split("Principals:", 1)[1].split("Critical Options:", 1)[0].split()
    assert principals == list(spec.principals)


def test_a_corrupted_signature_is_caught_by_the_checks(ca, user_keys, tmp_path):
    """The verifiers above must be able to fail: flip one signature bit and all of them do."""
    spec = make_spec(user_keys["ed25519"].public)
    good = sign_certificate(spec, ca.signer).line()
    kind, data, *_ = good.split()
    blob = bytearray(base64.b64decode(data))
    blob[-3] ^= 0x01
    bad = f"{kind} {base64.b64encode(bytes(blob)).decode()}"
    with pytest.raises(Exception):
        verify_signature_by_hand(bad, ca.signer.public_key)
    with pytest.raises(Exception):
        serialization.load_ssh_public_identity(bad.encode()).verify_cert_signature()
    path = tmp_path / "bad-cert.pub"
    path.write_text(bad + "\n")
    shown = keygen("-L", "-f", path)
    assert shown.returncode != 0
    # "incorrect signature" (ECDSA, Ed25519) or "error in libcrypto" (RSA, garbage after decryption)
    assert f"{path}:1: invalid key: " in shown.stderr


def test_check_succeeds_on_a_healthy_signer(ca):
    assert ca.signer.check() is None
    assert ca.signer.source == f"PKCS#11 key {ca.label!r} in token 'vouch-test'"
    assert repr(ca.signer) == f"Pkcs11Signer(key {ca.label!r} in token 'vouch-test')"


def test_probe_makes_and_checks_a_signature(ca):
    assert probe(ca.signer) is None


def test_probe_sees_a_key_that_answers_but_cannot_sign(softhsm):
    """/readyz's question is "can it sign?": a key the token no longer lets sign still answers
    check() (an attribute read), and only a test signature tells."""
    label = "t-p11-probe-nosign"
    new_key(softhsm, label, CaKeyType.ECDSA_P256)
    signer = open_pkcs11(softhsm, label)
    try:
        probe(signer)
        with own_session(softhsm, rw=True) as session:
            private_object(session, label)[Attribute.SIGN] = False
        signer.check()
        with pytest.raises(SignerUnavailable, match=f"PKCS#11 key {label!r} in token 'vouch-test' "
                                                    "cannot sign: "):
            probe(signer)
        with own_session(softhsm, rw=True) as session:
            private_object(session, label)[Attribute.SIGN] = True
        probe(signer)
    finally:
        signer.close()


def test_open_signer_takes_the_module_from_its_argument(ca, softhsm):
    reference = f"pkcs11:token={softhsm.label};object={ca.label}"  # no module-path
    signer = open_signer(reference, module=softhsm.module, pin=softhsm.pin)
    try:
        assert signer.public_key == ca.created
    finally:
        signer.close()


class _FixedSignature:
    """Stands in for the token's key handle: answers a chosen r || s, records what it was given."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.calls: list[tuple] = []

    def sign(self, data: bytes, *, mechanism, pin=None) -> bytes:
        self.calls.append((data, mechanism, pin))
        return self.raw


@pytest.mark.parametrize("key_type", [CaKeyType.ECDSA_P256, CaKeyType.ECDSA_P384],
                         ids=lambda kt: kt.value)
def test_ecdsa_blob_turns_fixed_width_r_s_into_minimal_mpints(softhsm, key_type):
    """Edge values a real token produces only now and then (a leading zero byte in r or s: 1 in
    128 signatures), fed through the signer's encoding deterministically."""
    label = f"t-p11-mpint-{key_type.value}"
    new_key(softhsm, label, key_type)
    signer = open_pkcs11(softhsm, label)
    size, digest = {CaKeyType.ECDSA_P256: (32, hashlib.sha256),
                    CaKeyType.ECDSA_P384: (48, hashlib.sha384)}[key_type]
    cases = [
        (b"\x00" + b"\x7f" * (size - 1), b"\x80" + b"\x01" * (size - 1)),
        (b"\x00\x00\x80" + b"\x11" * (size - 3), b"\x00" * (size - 1) + b"\x05"),
        (b"\xff" * size, b"\x01" + b"\x00" * (size - 1)),
        (b"\x00" * (size - 2) + b"\x00\x80", b"\x7f" * size),
    ]
    real = signer._key
    try:
        for r, s in cases:
            stub = _FixedSignature(r + s)
            signer._key = stub
            blob = signer.sign(b"payload")
            name = signer.public_key.type.encode()
            expected = ssh_string(name) + ssh_string(ssh_mpint(int.from_bytes(r, "big"))
                                                    + ssh_mpint(int.from_bytes(s, "big")))
            assert blob == expected, (r.hex(), s.hex())
            assert stub.calls == [(digest(b"payload").digest(), Mechanism.ECDSA, None)]
    finally:
        signer._key = real
        signer.close()


# --- finding the key and the token ----------------------------------------------------------

def test_key_found_by_id_serial_and_slot(softhsm):
    label = "t-p11-by-id"
    created = new_key(softhsm, label, CaKeyType.ED25519)
    signer = open_pkcs11(softhsm, label)
    try:
        signer.sign(b"log in")
        with own_session(softhsm) as session:
            key_id = private_object(session, label)[Attribute.ID]
            token = session.token
            serial = token.serial.decode().strip()
            slot_id = token.slot.slot_id
        assert len(key_id) == 8
        encoded_id = "".join(f"%{b:02x}" for b in key_id)
        for text in (f"pkcs11:token={softhsm.label};id={encoded_id}",
                     f"pkcs11:serial={serial};object={label}",
                     f"pkcs11:slot-id={slot_id};id={encoded_id}"):
            other = Pkcs11Signer(parse_pkcs11_uri(text), module=softhsm.module, pin=softhsm.pin)
            try:
                assert other.public_key == created, text
            finally:
                other.close()
    finally:
        signer.close()


def test_unknown_token_lists_the_tokens_present(softhsm):
    uri = parse_pkcs11_uri("pkcs11:token=no-such-token;object=ca")
    with pytest.raises(SignerUnavailable) as caught:
        Pkcs11Signer(uri, module=softhsm.module, pin=softhsm.pin)
    message = str(caught.value)
    assert message.startswith("no PKCS#11 token matches key 'ca' in token 'no-such-token'")
    assert "tokens present: " in message
    assert f"'{softhsm.label}'" in message.split("tokens present: ", 1)[1]
    assert softhsm.pin not in message


def test_wrong_serial_is_unavailable(softhsm):
    uri = parse_pkcs11_uri(f"pkcs11:token={softhsm.label};serial=0000000000000000;object=ca")
    with pytest.raises(SignerUnavailable, match="no PKCS#11 token matches"):
        Pkcs11Signer(uri, module=softhsm.module, pin=softhsm.pin)


def test_missing_module_is_unavailable(softhsm):
    uri = parse_pkcs11_uri("pkcs11:token=x;object=y")
    with pytest.raises(SignerUnavailable, match="'/nonexistent/libpkcs11.so' does not exist"):
        Pkcs11Signer(uri, module="/nonexistent/libpkcs11.so", pin=softhsm.pin)


def test_unknown_label_has_no_private_key(softhsm):
    with pytest.raises(SignerUnavailable) as caught:
        open_pkcs11(softhsm, "t-p11-never-created")
    assert str(caught.value) == "no private key matches key 't-p11-never-created' in token 'vouch-test'"


# python-pkcs11's get_key leaves its search generator open when it raises MultipleObjectsReturned;
# it is finalised after the signer closed the session and complains (harmless here).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_several_matching_keys_is_a_signer_error(softhsm):
    new_key(softhsm, "t-p11-many-a")
    new_key(softhsm, "t-p11-many-b")
    uri = parse_pkcs11_uri(f"pkcs11:token={softhsm.label}")  # no object= or id=
    with pytest.raises(SignerError, match="several keys matching its only key in token "
                                          "'vouch-test': add object= or id="):
        Pkcs11Signer(uri, module=softhsm.module, pin=softhsm.pin)


@pytest.mark.parametrize("call", ["open_signer", "create_ca_key"])
def test_uri_without_module_and_no_module_is_bad_input(call, softhsm):
    reference = f"pkcs11:token={softhsm.label};object=t-p11-nomodule"
    with pytest.raises(BadInput, match="no module-path and VOUCH_PKCS11_MODULE is not set"):
        if call == "open_signer":
            open_signer(reference, pin=softhsm.pin)
        else:
            create_ca_key(reference, CaKeyType.ECDSA_P256, pin=softhsm.pin)


# --- creating keys --------------------------------------------------------------------------

def test_create_needs_an_object_label(softhsm):
    uri = parse_pkcs11_uri(f"pkcs11:token={softhsm.label}")
    with pytest.raises(BadInput, match="needs object=LABEL"):
        create_token_key(uri, CaKeyType.ECDSA_P256, module=softhsm.module, pin=softhsm.pin)


def test_create_refuses_to_overwrite_and_force_replaces(softhsm, user_keys):
    label = "t-p11-overwrite"
    first = new_key(softhsm, label, CaKeyType.ECDSA_P256)
    for key_type in (CaKeyType.ECDSA_P256, CaKeyType.ED25519):
        with pytest.raises(BadInput) as caught:
            new_key(softhsm, label, key_type)
        message = str(caught.value)
        assert f"already has a key labelled {label!r}" in message
        assert "token 'vouch-test'" in message and "--force" in message

    signer = open_pkcs11(softhsm, label)
    try:
        assert signer.public_key == first  # the refusals left the key alone
    finally:
        signer.close()

    second = new_key(softhsm, label, CaKeyType.ED25519, force=True)
    assert second != first and second.type == "ssh-ed25519"
    third = new_key(softhsm, label, CaKeyType.ECDSA_P256, force=True)
    assert third not in (first, second)

    signer = open_pkcs11(softhsm, label)
    try:
        assert signer.public_key == third
        spec = make_spec(user_keys["ed25519"].public)
        verify_certificate(sign_certificate(spec, signer).line(), spec, third)
        with own_session(softhsm) as session:  # the old pairs are gone, not merely shadowed
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                found = list(session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label}))
                assert len(found) == 1, cls
    finally:
        signer.close()


# --- per-signature PIN (CKA_ALWAYS_AUTHENTICATE) ---------------------------------------------

def test_always_authenticate_key_signs_with_the_pin_each_time(softhsm, user_keys):
    label = "t-p11-always-auth"
    created = new_key(softhsm, label, CaKeyType.ECDSA_P256, always_authenticate=True)
    signer = open_pkcs11(softhsm, label)
    try:
        assert signer.public_key == created
        for _ in range(25):  # many signatures in a row, each needing its own context login
            spec = make_spec(user_keys["ecdsa-p256"].public)
            verify_certificate(sign_certificate(spec, signer).line(), spec, created)

        digest = hashlib.sha256(b"probe").digest()
        with own_session(softhsm) as session:
            private = private_object(session, label)
            assert private[Attribute.ALWAYS_AUTHENTICATE] is True
            # SoftHSM2 enforces the attribute: a logged-in session alone may not sign...
            with pytest.raises(p11.UserNotLoggedIn):
                private.sign(digest, mechanism=Mechanism.ECDSA)
            # ...only with a context-specific login, which is what the signer must be doing.
            assert len(private.sign(digest, mechanism=Mechanism.ECDSA, pin=softhsm.pin)) == 64

        # The per-signature PIN is checked: a signer holding a wrong PIN (opened while the process
        # is logged in, so C_Login is not even tried) cannot sign with this key.
        wrong = "WrongPIN-5551"
        impostor = open_pkcs11(softhsm, label, pin=wrong)
        try:
            with pytest.raises(SignerUnavailable) as caught:
                impostor.sign(b"data")
            message = str(caught.value)
            assert message == (f"PKCS#11 key {label!r} in token 'vouch-test': the per-signature "
                               "PIN was refused (PinIncorrect); no login is tried again until "
                               "vouch restarts or receives SIGHUP (fix the PIN first: tokens "
                               "lock after a few wrong PINs)")
            assert wrong not in message and wrong not in repr(caught.value)
        finally:
            impostor.close()
        spec = make_spec(user_keys["ed25519"].public)  # the refusal did not break the good signer
        verify_certificate(sign_certificate(spec, signer).line(), spec, created)
    finally:
        signer.close()


# --- concurrency and failures ---------------------------------------------------------------

@pytest.mark.parametrize("key_type", [CaKeyType.ECDSA_P256, CaKeyType.ED25519],
                         ids=lambda kt: kt.value)
def test_one_signer_many_threads(softhsm, user_keys, key_type):
    label = f"t-p11-threads-{key_type.value}"
    created = new_key(softhsm, label, key_type)
    signer = open_pkcs11(softhsm, label)
    threads, per_thread = 16, 25
    barrier = threading.Barrier(threads)
    results: list[list] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    users = [user_keys[name].public for name in USER_KEY_NAMES]

    def work(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            for n in range(per_thread):
                spec = make_spec(users[(index + n) % len(users)], key_id=f"thread {index} cert {n}")
                results[index].append((spec, sign_certificate(spec, signer).line()))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert not any(worker.is_alive() for worker in workers)
        assert errors == []
        issued = [item for batch in results for item in batch]
        assert len(issued) == threads * per_thread
        assert len({spec.serial for spec, _ in issued}) == len(issued)
        for spec, line in issued:
            verify_certificate(line, spec, created)
    finally:
        signer.close()


def test_threads_survive_lost_sessions(softhsm, user_keys):
    """Sessions lost while 8 threads sign: each loss is repaired once, no thread sees an error.
    (python-pkcs11 serialises operations on a session by itself; what the signer's lock must
    protect is the reconnect, which swaps the session and key handle under every thread.)"""
    label = "t-p11-threads-lost"
    created = new_key(softhsm, label, CaKeyType.ECDSA_P256)
    signer = open_pkcs11(softhsm, label)
    threads, per_thread, min_losses = 8, 25, 3
    done = threading.Event()
    results: list[list] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    user = user_keys["ed25519"].public
    losses = []
    deadline = time.monotonic() + 60

    def work(index: int) -> None:
        try:
            n = 0
            # On a busy machine the threads may finish before the loop below got the lock three
            # times: they sign on until it has, so the losses happen mid-run however it goes.
            while n < per_thread or (len(losses) < min_losses and time.monotonic() < deadline):
                spec = make_spec(user, key_id=f"thread {index} cert {n}")
                results[index].append((spec, sign_certificate(spec, signer).line()))
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    try:
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers) and len(losses) < 20:
            with signer._lock:  # between two signatures, like a token reset
                session = signer._conn.session
                if session not in losses:
                    session.close()
                    losses.append(session)
            done.wait(0.005)
        for worker in workers:
            worker.join(timeout=120)
        assert errors == []
        issued = [item for batch in results for item in batch]
        assert len(issued) >= threads * per_thread
        assert len(losses) >= min_losses  # the sessions really were lost mid-run
        for spec, line in issued:
            verify_certificate(line, spec, created)
    finally:
        signer.close()


def test_lost_session_is_reopened(softhsm, user_keys):
    label = "t-p11-lost-session"
    created = new_key(softhsm, label, CaKeyType.ED25519)
    signer = open_pkcs11(softhsm, label)
    try:
        signer.sign(b"first")
        lost = signer._conn.session
        lost.close()  # behind the signer's back, as a token reset would
        spec = make_spec(user_keys["rsa-2048"].public)
        verify_certificate(sign_certificate(spec, signer).line(), spec, created)
        assert signer._conn.session is not lost
        assert signer.public_key == created

        signer._conn.session.close()  # and check() also notices and reopens
        signer.check()
        spec = make_spec(user_keys["ed25519"].public)
        verify_certificate(sign_certificate(spec, signer).line(), spec, created)
    finally:
        signer.close()


def test_destroyed_key_is_unavailable_and_never_shows_the_pin(softhsm, user_keys):
    label = "t-p11-key-gone"
    created = new_key(softhsm, label, CaKeyType.ECDSA_P256)
    signer = open_pkcs11(softhsm, label)
    try:
        spec = make_spec(user_keys["ed25519"].public)
        verify_certificate(sign_certificate(spec, signer).line(), spec, created)
        with own_session(softhsm, rw=True) as session:
            private_object(session, label).destroy()
            with pytest.raises(p11.NoSuchKey):
                private_object(session, label)

        expected = f"no private key matches key {label!r} in token 'vouch-test'"
        for attempt in (lambda: signer.sign(b"data"),
                        lambda: sign_certificate(make_spec(user_keys["ed25519"].public), signer),
                        signer.check):
            with pytest.raises(SignerUnavailable) as caught:
                attempt()
            error = caught.value
            assert str(error) == expected
            for text in (str(error), error.message, error.detail, repr(error)):
                assert softhsm.pin not in text
    finally:
        signer.close()
        with own_session(softhsm, rw=True) as session:
            for obj in session.get_objects({Attribute.LABEL: label}):
                obj.destroy()


# --- subprocesses: a token of their own, a process of their own ----------------------------

SUB_LABEL = "vouch-sub"
SUB_PIN = "5150-good"
SUB_KEY = "t-p11-sub-ca"

SUBPROCESS_SCRIPT = r"""
import os, sys
from ca.errors import SignerUnavailable
from ca.keystore import create_ca_key, open_signer
from ca.pkcs11 import create_token_key, parse_pkcs11_uri, Pkcs11Signer
from ca.signer import CaKeyType

uri, pin = os.environ["VOUCH_TEST_URI"], os.environ.get("VOUCH_TEST_PIN")
mode = sys.argv[1]
try:
    if mode == "create":
        print("created", create_ca_key(uri, CaKeyType.ECDSA_P256, pin=pin).line())
    elif mode == "open":
        signer = open_signer(uri, pin=pin)
        print("signed", len(signer.sign(b"probe")), signer.public_key.line())
    elif mode == "rotate":
        parsed = parse_pkcs11_uri(uri)
        module = parsed.module_path
        create_token_key(parsed, CaKeyType.ECDSA_P256, module=module, pin=pin, force=True)
        signer = Pkcs11Signer(parsed, module=module, pin=pin)
        signer.sign(b"before")
        new = create_token_key(parsed, CaKeyType.ECDSA_P256, module=module, pin=pin, force=True)
        for attempt in (1, 2):
            try:
                signer.sign(b"after")
                print(f"attempt {attempt}: signed, new key: {signer.public_key == new}")
            except SignerUnavailable as exc:
                print(f"attempt {attempt}: SignerUnavailable: {exc}")
except SignerUnavailable as exc:
    print(f"SignerUnavailable: {exc}")
    sys.exit(3)
"""


@dataclass(frozen=True)
class SubToken:
    env: dict[str, str]
    module: str

    def uri(self, label: str = SUB_KEY, **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"pkcs11:token={SUB_LABEL};object={label}?module-path={self.module}{extra}"

    def run(self, mode: str, uri: str, pin: str | None) -> subprocess.CompletedProcess:
        env = {**self.env, "VOUCH_TEST_URI": uri}
        if pin is not None:
            env["VOUCH_TEST_PIN"] = pin
        return subprocess.run([sys.executable, "-c", SUBPROCESS_SCRIPT, mode], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def sub_token(softhsm, tmp_path_factory) -> SubToken:
    root = tmp_path_factory.mktemp("softhsm-sub")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOUCH_")}
    env.update(SOFTHSM2_CONF=str(conf), PYTHONPATH=str(ROOT))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", SUB_LABEL,
                    "--so-pin", "87654321", "--pin", SUB_PIN], env=env, check=True,
                   capture_output=True, text=True)
    token = SubToken(env=env, module=softhsm.module)
    created = token.run("create", token.uri(), SUB_PIN)
    assert created.returncode == 0, created.stdout + created.stderr
    assert created.stdout.startswith("created ecdsa-sha2-nistp256 ")
    return token


def _pin_file(tmp_path: Path, pin: str) -> Path:
    path = tmp_path / "token-pin"
    path.write_text(pin + "\n")
    return path


@pytest.mark.parametrize("delivery", ["argument", "pin-source", "pin-value"])
def test_wrong_pin_is_refused_in_a_fresh_process(sub_token, tmp_path, delivery):
    wrong = "WrongPIN-90210"

    def attempt(pin: str) -> subprocess.CompletedProcess:
        if delivery == "argument":
            return sub_token.run("open", sub_token.uri(), pin)
        if delivery == "pin-source":
            return sub_token.run("open", sub_token.uri(**{"pin-source": _pin_file(tmp_path, pin)}),
                                 None)
        return sub_token.run("open", sub_token.uri(**{"pin-value": pin}), None)

    refused = attempt(wrong)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert refused.stdout.strip() == (
        f"SignerUnavailable: PKCS#11 token {SUB_LABEL!r} refused the PIN (PinIncorrect); "
        "it is not retried, to avoid locking the token")
    assert wrong not in refused.stdout and wrong not in refused.stderr
    assert refused.stderr == ""

    # Control: the same call with the right PIN signs, so the refusal was about the PIN.
    accepted = attempt(SUB_PIN)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert accepted.stdout.startswith("signed ")
    assert SUB_PIN not in accepted.stdout + accepted.stderr


def test_create_ca_key_refuses_an_existing_label_in_a_fresh_process(sub_token):
    again = sub_token.run("create", sub_token.uri(), SUB_PIN)
    assert again.returncode != 0
    assert f"BadInput: token {SUB_LABEL!r} already has a key labelled {SUB_KEY!r}" in again.stderr


def test_signer_follows_a_replaced_key_on_the_first_signature(sub_token):
    label = "t-p11-sub-rotate"
    rotated = sub_token.run("rotate", sub_token.uri(label), SUB_PIN)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    lines = rotated.stdout.splitlines()
    assert lines[1] == "attempt 2: signed, new key: True"  # holds today: the second try works
    assert lines[0] == "attempt 1: signed, new key: True"


# --- a refused PIN latches: no further login until reset() (SIGHUP) or a restart --------------
# A YubiKey locks its PIN after three wrong tries, so after one refusal the signer must not log in
# again on its own. SoftHSM2 never locks, so each scenario proves "no login was tried" by changing
# the token's PIN back to the signer's before calling it again: any login would now succeed.

LATCH_SCRIPT = r"""
import os, sys
from pathlib import Path
from pkcs11 import Mechanism
from pkcs11 import exceptions as p11
from ca.errors import SignerUnavailable
from ca.pkcs11 import Pkcs11Signer, create_token_key, load_module, parse_pkcs11_uri
from ca.signer import CaKeyType

GOOD, NEW = os.environ["VOUCH_TEST_PIN"], "4711-changed"
mode = sys.argv[1]
uri = parse_pkcs11_uri(os.environ["VOUCH_TEST_URI"])
module = uri.module_path
create_token_key(uri, CaKeyType.ECDSA_P256, module=module, pin=GOOD,
                 always_authenticate=mode == "per-signature")
token = load_module(module).get_token(token_label=uri.token)


def attempt(name, call):
    try:
        call()
        print(f"{name}: ok")
    except SignerUnavailable as exc:
        print(f"{name}: {exc}")


def set_pin(old, new):
    session = token.open(rw=True)  # C_SetPIN in a public R/W session: no login, no logout
    session.set_pin(old, new)
    session.close()


signer = Pkcs11Signer(uri, module=module, pin=uri.pin(GOOD))
attempt("first", lambda: signer.sign(b"first"))
set_pin(GOOD, NEW)  # an administrator changes the PIN, and vouch still has the old one
if mode == "per-signature":
    before = signer._conn.session
    attempt("refused", lambda: signer.sign(b"refused"))  # the context-specific login fails
    after = signer._conn.session
    print("session replaced:", after is not before)
    try:
        before.digest(b"x", mechanism=Mechanism.SHA256)
        print("old session: open")
    except (p11.SessionHandleInvalid, p11.SessionClosed):
        print("old session: closed")
    # SoftHSM2 keeps the refused signature active on its session; the fresh one starts idle.
    print("fresh session idle:", len(after.digest(b"x", mechanism=Mechanism.SHA256)) == 32)
else:
    signer._conn.session.close()  # the token was reset: session and login are gone
    attempt("refused", lambda: signer.sign(b"refused"))  # the C_Login on reconnecting fails
if mode == "pin-source":
    Path(uri.pin_source.removeprefix("file:")).write_text(NEW + "\n")  # the operator fixes the file
else:
    set_pin(NEW, GOOD)  # the token takes vouch's PIN again: a login now would succeed
attempt("sign while latched", lambda: signer.sign(b"again"))
attempt("check while latched", signer.check)
print("reset:", signer.reset())
attempt("sign after reset", lambda: signer.sign(b"after"))
print("reset again:", signer.reset())
"""


@pytest.fixture
def own_token(softhsm, tmp_path) -> SubToken:
    """A token of this test's own: these tests change its PIN."""
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOUCH_")}
    env.update(SOFTHSM2_CONF=str(conf), PYTHONPATH=str(ROOT))
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", SUB_LABEL,
                    "--so-pin", "87654321", "--pin", SUB_PIN], env=env, check=True,
                   capture_output=True, text=True)
    return SubToken(env=env, module=softhsm.module)


def run_latch(token: SubToken, mode: str, uri: str) -> list[str]:
    env = {**token.env, "VOUCH_TEST_URI": uri, "VOUCH_TEST_PIN": SUB_PIN}
    done = subprocess.run([sys.executable, "-c", LATCH_SCRIPT, mode], cwd=ROOT, env=env,
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert SUB_PIN not in done.stdout + done.stderr and "4711-changed" not in done.stdout
    return done.stdout.splitlines()


def latched(what: str) -> str:
    return (f"PKCS#11 key {SUB_KEY!r} in token {SUB_LABEL!r}: the {what} was refused "
            "(PinIncorrect); no login is tried again until vouch restarts or receives SIGHUP "
            "(fix the PIN first: tokens lock after a few wrong PINs)")


def test_pin_refused_at_login_latches_until_reset(own_token):
    lines = run_latch(own_token, "login", own_token.uri())
    assert lines == ["first: ok",
                     f"refused: {latched('PIN')}",
                     f"sign while latched: {latched('PIN')}",  # not signed: no login was tried
                     f"check while latched: {latched('PIN')}",
                     "reset: True",
                     "sign after reset: ok",
                     "reset again: False"]  # nothing latched: a SIGHUP leaves the session alone


def test_reset_rereads_the_pin_source_file(own_token, tmp_path):
    pin_file = _pin_file(tmp_path, SUB_PIN)
    lines = run_latch(own_token, "pin-source", own_token.uri(**{"pin-source": f"file:{pin_file}"}))
    assert lines == ["first: ok",
                     f"refused: {latched('PIN')}",
                     f"sign while latched: {latched('PIN')}",
                     f"check while latched: {latched('PIN')}",
                     "reset: True",
                     "sign after reset: ok",  # with the PIN now in the file
                     "reset again: False"]


def test_refused_per_signature_pin_latches_and_reopens_the_session(own_token):
    lines = run_latch(own_token, "per-signature", own_token.uri())
    assert lines == ["first: ok",
                     f"refused: {latched('per-signature PIN')}",
                     "session replaced: True",
                     "old session: closed",
                     "fresh session idle: True",
                     f"sign while latched: {latched('per-signature PIN')}",
                     f"check while latched: {latched('per-signature PIN')}",
                     "reset: True",
                     "sign after reset: ok",
                     "reset again: False"]
