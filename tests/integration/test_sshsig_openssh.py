"""ca.sshsig against OpenSSH itself: what Vouch signs (file keys and SoftHSM2 keys of every CA
type) `ssh-keygen -Y check-novalidate` accepts, and what `ssh-keygen -Y sign` makes (every user
key type it can hold) Vouch accepts; any change to the message, namespace or signature refuses."""

from __future__ import annotations

import pytest

from ca import sshsig
from ca.pkcs11 import Pkcs11Signer, create_token_key, parse_pkcs11_uri
from ca.signer import CaKeyType, FileSigner, generate_private_key
from conftest import run

MESSAGE = b"vouch-audit-checkpoint v1\n42\n" + bytes(range(256))
NAMESPACE = "vouch-test"


@pytest.fixture(scope="module")
def signers(softhsm):
    made = {}
    for key_type in CaKeyType:
        made[f"file-{key_type.value}"] = FileSigner(generate_private_key(key_type))
        uri = parse_pkcs11_uri(softhsm.uri(f"sshsig-{key_type.value}"))
        create_token_key(uri, key_type, module=softhsm.module, pin=softhsm.pin, force=True)
        made[f"pkcs11-{key_type.value}"] = Pkcs11Signer(uri, module=softhsm.module, pin=softhsm.pin)
    yield made
    for signer in made.values():
        signer.close()


def openssh_accepts(tmp_path, armored: str, message: bytes, namespace: str) -> bool:
    (tmp_path / "sig").write_text(armored)
    (tmp_path / "msg").write_bytes(message)
    with open(tmp_path / "msg", "rb") as stdin:
        result = run("ssh-keygen", "-Y", "check-novalidate", "-n", namespace, "-s",
                     str(tmp_path / "sig"), check=False, stdin=stdin)
    return result.returncode == 0


@pytest.mark.parametrize("name", [f"{backend}-{t.value}" for backend in ("file", "pkcs11")
                                  for t in CaKeyType])
def test_openssh_checks_what_vouch_signs(tmp_path, signers, name):
    signer = signers[name]
    armored = sshsig.sign(signer, MESSAGE, NAMESPACE)
    assert openssh_accepts(tmp_path, armored, MESSAGE, NAMESPACE)
    assert not openssh_accepts(tmp_path, armored, MESSAGE + b"x", NAMESPACE)
    assert not openssh_accepts(tmp_path, armored, MESSAGE, "vouch-other")
    assert sshsig.verify(armored, MESSAGE, NAMESPACE) == signer.public_key


@pytest.mark.parametrize("key", ["ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048"])
def test_vouch_checks_what_openssh_signs(tmp_path, user_keys, key):
    (tmp_path / "msg").write_bytes(MESSAGE)
    run("ssh-keygen", "-q", "-Y", "sign", "-n", NAMESPACE, "-f", str(user_keys[key].private),
        str(tmp_path / "msg"))
    armored = (tmp_path / "msg.sig").read_text()
    assert sshsig.verify(armored, MESSAGE, NAMESPACE) == user_keys[key].public
    with pytest.raises(sshsig.BadSignature):
        sshsig.verify(armored, MESSAGE[:-1], NAMESPACE)
    with pytest.raises(sshsig.BadSignature, match="'vouch-test', not 'vouch-api'"):
        sshsig.verify(armored, MESSAGE, "vouch-api")


def test_a_damaged_signature_is_refused_never_a_crash(signers):
    armored = sshsig.sign(signers["file-ecdsa-p256"], MESSAGE, NAMESPACE)
    lines = armored.splitlines()
    body = "".join(lines[1:-1])
    refused = 0
    for cut in range(0, len(body), 3):  # every truncation, and a flipped character at each place
        for damaged in (body[:cut], body[:cut] + ("A" if body[cut] != "A" else "B") + body[cut + 1:]):
            text = "\n".join([lines[0], damaged, lines[-1]])
            try:
                sshsig.verify(text, MESSAGE, NAMESPACE)
            except sshsig.BadSignature:
                refused += 1
    assert refused >= 2 * len(range(0, len(body), 3)) - 2  # base64 padding may absorb a flip
    with pytest.raises(sshsig.BadSignature, match="not an SSH signature"):
        sshsig.verify("hello", MESSAGE, NAMESPACE)


@pytest.mark.parametrize("key", ["sk-ed25519", "sk-ecdsa-p256"])
def test_security_key_signatures_are_checked_as_openssh_checks_them(tmp_path, user_keys, key):
    from support import fido

    base = user_keys[key.removeprefix("sk-")]
    sk_key = user_keys[key].public
    armored = fido.sign(base.private, sk_key, MESSAGE, NAMESPACE)
    assert openssh_accepts(tmp_path, armored, MESSAGE, NAMESPACE)
    assert sshsig.verify(armored, MESSAGE, NAMESPACE) == sk_key
    with pytest.raises(sshsig.BadSignature):
        sshsig.verify(armored, MESSAGE + b"x", NAMESPACE)
    # Signed for another application (another relying party's key handle): not this key's.
    other = fido.sign(base.private, sk_key, MESSAGE, NAMESPACE, application=b"ssh:other")
    assert not openssh_accepts(tmp_path, other, MESSAGE, NAMESPACE)
    with pytest.raises(sshsig.BadSignature):
        sshsig.verify(other, MESSAGE, NAMESPACE)
    # No touch: the authenticator signed without anyone present.
    untouched = fido.sign(base.private, sk_key, MESSAGE, NAMESPACE, flags=0)
    with pytest.raises(sshsig.BadSignature, match="not touched"):
        sshsig.verify(untouched, MESSAGE, NAMESPACE)
