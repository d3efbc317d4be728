"""Vouch's certificates against a real sshd: accepted for every CA type, refused for every reason
a host should refuse them, including revocation through Vouch's own KRL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from access import issuing, revoking
from access.context import Access
from ca.cert import CertificateSpec, new_serial, sign_certificate, validity
from ca.krl import Revocations, encode_krl
from ca.pkcs11 import Pkcs11Signer, create_token_key, parse_pkcs11_uri
from ca.signer import CaKeyType, FileSigner, generate_private_key
from conftest import run
from support.audit import AUDIT_KEY
from storage.db import Database
from storage.store import SqlStore
from support.sshd import Sshd, ensure_test_user, require_sshd

PRINCIPAL = "vouchtest-ok"


@pytest.fixture(scope="module")
def cas(softhsm):
    signers = {}
    for key_type in CaKeyType:
        uri = parse_pkcs11_uri(softhsm.uri(f"login-{key_type.value}"))
        create_token_key(uri, key_type, module=softhsm.module, pin=softhsm.pin, force=True)
        signers[key_type.value] = Pkcs11Signer(uri, module=softhsm.module, pin=softhsm.pin)
    signers["file-ecdsa-p256"] = FileSigner(generate_private_key(CaKeyType.ECDSA_P256))
    signers["untrusted"] = FileSigner(generate_private_key(CaKeyType.ECDSA_P256))
    yield signers
    for signer in signers.values():
        signer.close()


def _empty_krl(signer) -> bytes:
    return encode_krl(Revocations(), ca_key=signer.public_key.blob, version=1, generated_at=0)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory, cas):
    require_sshd()
    user = ensure_test_user()
    trusted = [signer.public_key.line() for name, signer in cas.items() if name != "untrusted"]
    server = Sshd(tmp_path_factory.mktemp("sshd"), trusted_ca_keys=trusted,
                  principals={user: [PRINCIPAL]}, revoked_keys=_empty_krl(cas["ecdsa-p256"]))
    with server:
        yield server


@pytest.fixture(autouse=True)
def _clean_krl(sshd, cas):
    yield
    sshd.set_revoked_keys(_empty_krl(cas["ecdsa-p256"]))


def _certify(tmp_path, signer, user_key, *, principals=(PRINCIPAL,), start=None, duration=timedelta(hours=1),
             options=None, key_id=None):
    now = datetime.now(timezone.utc)
    valid_after, valid_before = validity(start or now, duration)
    spec = CertificateSpec(public_key=user_key.public, serial=new_serial(),
                           key_id=key_id or f"test:{new_serial()}", principals=tuple(principals),
                           valid_after=valid_after, valid_before=valid_before,
                           critical_options=options or {})
    certificate = sign_certificate(spec, signer)
    path = tmp_path / f"{user_key.private.name}-cert.pub"
    path.write_text(certificate.line() + "\n")
    return certificate, path


@pytest.mark.parametrize("ca_name", [t.value for t in CaKeyType] + ["file-ecdsa-p256"])
def test_valid_certificate_logs_in(tmp_path, sshd, cas, user_keys, ca_name):
    certificate, path = _certify(tmp_path, cas[ca_name], user_keys["ed25519"])
    result = sshd.login(user_keys["ed25519"].private, path)
    assert result.ok, result.sshd_log
    spec = certificate.spec
    assert f'Accepted certificate ID "{spec.key_id}" (serial {spec.serial})' in result.sshd_log


@pytest.mark.parametrize("subject", ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048"])
def test_other_subject_key_types_log_in(tmp_path, sshd, cas, user_keys, subject):
    _, path = _certify(tmp_path, cas["ecdsa-p256"], user_keys[subject])
    assert sshd.login(user_keys[subject].private, path).ok


def _refused(sshd, key, path):
    result = sshd.login(key.private, path)
    assert not result.ok
    return result.sshd_log


def test_expired_is_refused(tmp_path, sshd, cas, user_keys):
    key = user_keys["ed25519"]
    _, path = _certify(tmp_path, cas["ecdsa-p256"], key,
                       start=datetime.now(timezone.utc) - timedelta(hours=3))
    assert "Certificate invalid: expired" in _refused(sshd, key, path)


def test_not_yet_valid_is_refused(tmp_path, sshd, cas, user_keys):
    key = user_keys["ed25519"]
    _, path = _certify(tmp_path, cas["ecdsa-p256"], key,
                       start=datetime.now(timezone.utc) + timedelta(hours=1))
    assert "Certificate invalid: not yet valid" in _refused(sshd, key, path)


def test_wrong_principal_is_refused(tmp_path, sshd, cas, user_keys):
    key = user_keys["ed25519"]
    _, path = _certify(tmp_path, cas["ecdsa-p256"], key, principals=("postgres",))
    assert "Certificate does not contain an authorized principal" in _refused(sshd, key, path)


def test_other_ca_is_refused(tmp_path, sshd, cas, user_keys):
    key = user_keys["ed25519"]
    _, path = _certify(tmp_path, cas["untrusted"], key)
    log = _refused(sshd, key, path)
    assert f"CA ECDSA {cas['untrusted'].public_key.fingerprint}" in log
    assert "Accepted certificate" not in log


def test_source_address_mismatch_is_refused(tmp_path, sshd, cas, user_keys):
    key = user_keys["ed25519"]
    _, path = _certify(tmp_path, cas["ecdsa-p256"], key, options={"source-address": "10.0.0.0/8"})
    assert "not from a permitted source address" in _refused(sshd, key, path)
    _, path = _certify(tmp_path, cas["ecdsa-p256"], key, options={"source-address": "127.0.0.0/8"})
    assert sshd.login(key.private, path).ok


def _query(krl_path, cert_path) -> str:
    return run("ssh-keygen", "-Q", "-f", str(krl_path), str(cert_path), check=False).stdout


@pytest.mark.parametrize("kind", ["serial", "key_id", "public_key"])
def test_revoked_through_our_krl_is_refused(tmp_path, sshd, cas, user_keys, kind):
    signer, key, other = cas["ecdsa-p256"], user_keys["ed25519"], user_keys["ecdsa-p256"]
    certificate, path = _certify(tmp_path, signer, key)
    _, other_path = _certify(tmp_path, signer, other)
    assert sshd.login(key.private, path).ok
    revocations = {
        "serial": Revocations(serials=frozenset({certificate.spec.serial})),
        "key_id": Revocations(key_ids=frozenset({certificate.spec.key_id})),
        "public_key": Revocations(public_keys=frozenset({key.public.blob})),
    }[kind]
    krl = encode_krl(revocations, ca_key=signer.public_key.blob, version=2, generated_at=0)
    krl_path = tmp_path / "revoked.krl"
    krl_path.write_bytes(krl)
    assert "REVOKED" in _query(krl_path, path)
    assert "ok" in _query(krl_path, other_path)
    sshd.set_revoked_keys(krl)
    assert "revoked by file" in _refused(sshd, key, path)
    assert sshd.login(other.private, other_path).ok


def test_service_revocation_reaches_sshd(tmp_path, sshd, cas, user_keys):
    """The operator's path: sign through the service, revoke by serial, publish the KRL."""
    db = Database(f"sqlite:///{tmp_path / 'vouch.db'}")
    db.prepare()
    service = Access(SqlStore(db, AUDIT_KEY), cas["ecdsa-p256"])
    key = user_keys["ed25519"]
    certificate = issuing.sign_direct(service, public_key=key.public, principals=[PRINCIPAL], reason="test",
                                      duration=timedelta(minutes=10), actor="test")
    path = tmp_path / "cert.pub"
    path.write_text(certificate.line() + "\n")
    assert sshd.login(key.private, path).ok
    sshd.set_revoked_keys(revoking.krl(service).data)
    assert sshd.login(key.private, path).ok  # nothing revoked yet
    [revoked] = revoking.revoke(service, str(certificate.spec.serial), actor="test",
                                reason="laptop lost").certificates
    assert revoked.newly
    sshd.set_revoked_keys(revoking.krl(service).data)
    assert "revoked by file" in _refused(sshd, key, path)
