"""Every CA type (file key and SoftHSM2 key) x every accepted subject key type, checked by
OpenSSH's own parser (`ssh-keygen -L`) and by cryptography."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization

from ca.cert import CertificateSpec, new_serial, sign_certificate, validity
from ca.pkcs11 import Pkcs11Signer, create_token_key, parse_pkcs11_uri
from ca.signer import CaKeyType, FileSigner, generate_private_key
from conftest import USER_KEY_TYPES, run
from support.certcheck import parse_certificate_line, ssh_keygen_show, verify_signature

CA_TYPES = [t.value for t in CaKeyType]
_SIGNING_CA = {"ecdsa-p256": ("ECDSA", "ecdsa-sha2-nistp256"), "ecdsa-p384": ("ECDSA", "ecdsa-sha2-nistp384"),
               "ed25519": ("ED25519", "ssh-ed25519"), "rsa-3072": ("RSA", "rsa-sha2-512"),
               "rsa-4096": ("RSA", "rsa-sha2-512")}
_CERT_KIND = {"ed25519": "ED25519-CERT", "ecdsa-p256": "ECDSA-CERT", "ecdsa-p384": "ECDSA-CERT",
              "ecdsa-p521": "ECDSA-CERT", "rsa-2048": "RSA-CERT", "sk-ed25519": "ED25519-SK-CERT",
              "sk-ecdsa-p256": "ECDSA-SK-CERT"}


@pytest.fixture(scope="module")
def ca_signers(softhsm):
    signers = {}
    for key_type in CaKeyType:
        signers[f"file-{key_type.value}"] = FileSigner(generate_private_key(key_type))
        uri = parse_pkcs11_uri(softhsm.uri(f"matrix-{key_type.value}"))
        create_token_key(uri, key_type, module=softhsm.module, pin=softhsm.pin, force=True)
        signers[f"pkcs11-{key_type.value}"] = Pkcs11Signer(uri, module=softhsm.module, pin=softhsm.pin)
    yield signers
    for signer in signers.values():
        signer.close()


@pytest.mark.parametrize("backend", ["file", "pkcs11"])
@pytest.mark.parametrize("ca_type", CA_TYPES)
def test_every_subject_type_is_accepted_by_ssh_keygen(tmp_path, ca_signers, user_keys, backend, ca_type):
    signer = ca_signers[f"{backend}-{ca_type}"]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    valid_after, valid_before = validity(now, timedelta(hours=2))
    for subject in USER_KEY_TYPES:
        key = user_keys[subject].public
        spec = CertificateSpec(
            public_key=key, serial=new_serial(), key_id=f"req-42:alice:{subject}",
            principals=("postgres", "deploy"), valid_after=valid_after, valid_before=valid_before,
            critical_options={"source-address": "10.0.0.0/8,192.0.2.7/32", "force-command": "/usr/bin/psql"},
            extensions=frozenset({"permit-pty", "permit-port-forwarding", "permit-X11-forwarding"}))
        certificate = sign_certificate(spec, signer)
        path = tmp_path / f"{subject}-cert.pub"
        path.write_text(certificate.line() + "\n")

        shown = ssh_keygen_show(path)
        assert shown["Type"] == f"{certificate.type} user certificate"
        assert shown["Public key"] == f"{_CERT_KIND[subject]} {key.fingerprint}"
        kind, algorithm = _SIGNING_CA[ca_type]
        assert shown["Signing CA"] == f"{kind} {signer.public_key.fingerprint} (using {algorithm})"
        assert shown["Key ID"] == f'"req-42:alice:{subject}"'
        assert shown["Serial"] == str(spec.serial)
        assert shown["Valid"] == (f"from {valid_after:%Y-%m-%dT%H:%M:%S} "
                                  f"to {valid_before:%Y-%m-%dT%H:%M:%S}")
        assert shown["principals"] == ["postgres", "deploy"]
        assert shown["critical_options"] == ["force-command /usr/bin/psql",
                                             "source-address 10.0.0.0/8,192.0.2.7/32"]
        assert shown["extensions"] == ["permit-X11-forwarding", "permit-port-forwarding", "permit-pty"]

        parsed = parse_certificate_line(certificate.line())
        verify_signature(parsed, signer.public_key.line())
        if not key.is_security_key:  # cryptography has no sk-* certificate support
            identity = serialization.load_ssh_public_identity(certificate.line().encode())
            identity.verify_cert_signature()
            assert identity.serial == spec.serial


def test_a_flipped_byte_is_caught_by_ssh_keygen(tmp_path, ca_signers, user_keys):
    signer = ca_signers["pkcs11-ecdsa-p256"]
    now = datetime.now(timezone.utc)
    valid_after, valid_before = validity(now, timedelta(hours=1))
    spec = CertificateSpec(public_key=user_keys["ed25519"].public, serial=new_serial(), key_id="k",
                           principals=("p",), valid_after=valid_after, valid_before=valid_before)
    blob = bytearray(sign_certificate(spec, signer).blob)
    blob[-10] ^= 0x01
    import base64
    path = tmp_path / "bad-cert.pub"
    path.write_text(f"ssh-ed25519-cert-v01@openssh.com {base64.b64encode(bytes(blob)).decode()}\n")
    with pytest.raises(AssertionError, match="ssh-keygen -L refused"):
        ssh_keygen_show(path)


def test_fingerprints_match_ssh_keygen(user_keys, ca_signers, tmp_path):
    for user_key in user_keys.values():
        printed = run("ssh-keygen", "-l", "-E", "sha256", "-f", str(user_key.public_path)).stdout
        if user_key.private is None:
            # ssh-keygen -l prints the same for sk keys; the layout check covers the rest.
            assert printed.split()[1] == user_key.public.fingerprint
        else:
            assert printed.strip() == user_key.public.describe()
    for signer in ca_signers.values():
        path = tmp_path / "ca.pub"
        path.write_text(signer.public_key.line() + "\n")
        printed = run("ssh-keygen", "-l", "-f", str(path)).stdout
        assert printed.split()[1] == signer.public_key.fingerprint
