import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from ca.errors import BadInput, SignerError, SignerUnavailable
from ca.signer import CaKeyType, FileSigner, create_file_key, probe

PASSPHRASE = b"correct horse 7734"


@pytest.mark.parametrize("key_type", list(CaKeyType))
def test_create_file_key_then_load_it(tmp_path, key_type):
    path = tmp_path / "ca_key"
    created = create_file_key(path, key_type)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = FileSigner.load(path)
    assert loaded.public_key == created.public_key
    assert (tmp_path / "ca_key.pub").read_text().startswith(created.public_key.line())


def test_create_refuses_to_overwrite(tmp_path):
    path = tmp_path / "ca_key"
    create_file_key(path, CaKeyType.ED25519)
    before = path.read_bytes()
    with pytest.raises(BadInput, match="already exists"):
        create_file_key(path, CaKeyType.ED25519)
    assert path.read_bytes() == before
    create_file_key(path, CaKeyType.ED25519, force=True)
    assert path.read_bytes() != before


def test_passphrase_protected_openssh_key(tmp_path):
    path = tmp_path / "ca_key"
    create_file_key(path, CaKeyType.ECDSA_P256, passphrase=PASSPHRASE)
    assert FileSigner.load(path, passphrase=PASSPHRASE).public_key.type == "ecdsa-sha2-nistp256"
    with pytest.raises(SignerUnavailable, match="encrypted: set VOUCH_CA_KEY_PASSPHRASE"):
        FileSigner.load(path)
    with pytest.raises(SignerUnavailable, match="wrong passphrase") as err:
        FileSigner.load(path, passphrase=b"nope-nope")
    assert "nope-nope" not in str(err.value)


def test_pkcs8_pem_with_and_without_passphrase(tmp_path):
    key = ec.generate_private_key(ec.SECP384R1())
    plain = tmp_path / "plain.pem"
    plain.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    plain.chmod(0o600)  # a CA key others can read is refused (below)
    assert FileSigner.load(plain).public_key.type == "ecdsa-sha2-nistp384"
    locked = tmp_path / "locked.pem"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(PASSPHRASE)))
    locked.chmod(0o600)
    assert FileSigner.load(locked, passphrase=PASSPHRASE).public_key == FileSigner.load(plain).public_key
    with pytest.raises(SignerUnavailable, match="not encrypted but a passphrase"):
        FileSigner.load(plain, passphrase=PASSPHRASE)


def test_missing_garbage_and_unsupported_keys(tmp_path):
    with pytest.raises(SignerUnavailable, match="does not exist: create it with `vouch ca init`"):
        FileSigner.load(tmp_path / "absent")
    garbage = tmp_path / "garbage"
    garbage.write_text("hello")
    garbage.chmod(0o600)
    with pytest.raises(SignerUnavailable, match="not an OpenSSH or PKCS#8"):
        FileSigner.load(garbage)
    with pytest.raises(SignerError, match="unsupported key type"):
        FileSigner(dsa.generate_private_key(key_size=2048))
    with pytest.raises(SignerError, match="too short"):
        FileSigner(rsa.generate_private_key(public_exponent=65537, key_size=1024))


def test_a_key_file_others_can_read_is_refused_saying_how_to_fix_it(tmp_path):
    path = tmp_path / "ca_key"
    create_file_key(path, CaKeyType.ED25519)
    for mode in (0o644, 0o640, 0o604):
        path.chmod(mode)
        with pytest.raises(BadInput, match=f"can be read by others .mode {mode:o}.: run `chmod 600"):
            FileSigner.load(path)
    path.chmod(0o600)
    assert FileSigner.load(path).public_key.type == "ssh-ed25519"


def test_file_signer_has_nothing_to_reset(tmp_path):
    """SIGHUP resets every signer; a key in memory has no login to retry."""
    assert create_file_key(tmp_path / "ca_key", CaKeyType.ED25519).reset() is False


class _Impostor:
    """Signs with one key while claiming another's public half (a swapped or corrupted key)."""

    def __init__(self, signs_with: FileSigner, claims: FileSigner) -> None:
        self._signs_with, self.public_key = signs_with, claims.public_key

    def sign(self, data: bytes) -> bytes:
        return self._signs_with.sign(data)


class _Unplugged:
    public_key = None

    def sign(self, data: bytes) -> bytes:
        raise SignerUnavailable("the token is unplugged")


@pytest.mark.parametrize("key_type", list(CaKeyType))
def test_probe_signs_and_verifies(tmp_path, key_type):
    assert probe(create_file_key(tmp_path / "ca_key", key_type)) is None


def test_probe_refuses_a_signature_its_public_key_does_not_verify(tmp_path):
    one = create_file_key(tmp_path / "one", CaKeyType.ECDSA_P256)
    other = create_file_key(tmp_path / "other", CaKeyType.ECDSA_P256)
    with pytest.raises(SignerError, match="test signature does not verify against its public key"):
        probe(_Impostor(signs_with=one, claims=other))


def test_probe_passes_on_why_the_signer_cannot_sign():
    with pytest.raises(SignerUnavailable, match="the token is unplugged"):
        probe(_Unplugged())
