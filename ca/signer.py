"""CA signers behind one narrow seam (`cert.Signer`): a key file, or a key in a PKCS#11 token.

Signature blobs: RFC 5656 section 3.1.2 (ECDSA: mpint r, mpint s), RFC 8709 section 6 (Ed25519),
RFC 8332 section 3 (RSA, always rsa-sha2-512: OpenSSH refuses SHA-1 `ssh-rsa` signatures).
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ca.cert import Signer
from ca.errors import BadInput, SignerError, SignerUnavailable
from ca.keys import PublicKey, parse_public_key
from ca.sshsig import BadSignature, verify_blob
from ca.wire import put_mpint, put_string


class CaKeyType(str, enum.Enum):
    """The CA key types `vouch ca init` creates. ECDSA P-256 is the default: every HSM and YubiKey has it."""

    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    ED25519 = "ed25519"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @property
    def rsa_bits(self) -> int:
        return int(self.value.split("-")[1])

    @property
    def curve(self) -> ec.EllipticCurve:
        return {"ecdsa-p256": ec.SECP256R1(), "ecdsa-p384": ec.SECP384R1()}[self.value]


RSA_SIGNATURE_ALGORITHM = "rsa-sha2-512"
PROBE_MESSAGE = b"vouch readiness probe: a test signature, never a certificate"

_ECDSA_HASHES = {256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512}


def ecdsa_signature(bits: int, r: int, s: int) -> bytes:
    """RFC 5656 section 3.1.2: the ECDSA signature blob for a key on nistp<bits>."""
    return put_string(f"ecdsa-sha2-nistp{bits}") + put_string(put_mpint(r) + put_mpint(s))


def ed25519_signature(raw: bytes) -> bytes:
    return put_string("ssh-ed25519") + put_string(raw)


def rsa_signature(raw: bytes) -> bytes:
    return put_string(RSA_SIGNATURE_ALGORITHM) + put_string(raw)


def ecdsa_hash(bits: int) -> hashes.HashAlgorithm:
    """The hash RFC 5656 section 6.2.1 pairs with each curve size."""
    return _ECDSA_HASHES[bits]()


def probe(signer: Signer) -> None:
    """Make a test signature and verify it against the signer's public key (`/readyz`): only a
    signature shows the key signs now (an attribute read does not), and that it is the CA's key."""
    signature = signer.sign(PROBE_MESSAGE)
    try:
        verify_blob(signer.public_key, PROBE_MESSAGE, signature)
    except BadSignature as exc:
        raise SignerError("the CA key's test signature does not verify against its public key",
                          detail=exc.detail) from None


class FileSigner:
    """A CA key held in a file (OpenSSH or PKCS#8 PEM). The embedded default; use an HSM in production."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                 | rsa.RSAPrivateKey, *, source: str = "CA key") -> None:
        self._key = private_key
        self.source = source
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if private_key.curve.key_size not in _ECDSA_HASHES:
                raise SignerError(f"{source}: unsupported curve {private_key.curve.name}")
            self._algorithm = ec.ECDSA(ecdsa_hash(private_key.curve.key_size))
        elif isinstance(private_key, rsa.RSAPrivateKey):
            if private_key.key_size < 2048:
                raise SignerError(f"{source}: RSA key of {private_key.key_size} bits is too short")
        elif not isinstance(private_key, ed25519.Ed25519PrivateKey):
            raise SignerError(f"{source}: unsupported key type (use ECDSA, Ed25519 or RSA)")
        line = private_key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        self.public_key: PublicKey = parse_public_key(line)

    @classmethod
    def load(cls, path: str | os.PathLike, *, passphrase: bytes | None = None) -> FileSigner:
        path = Path(path)
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except FileNotFoundError:
            raise SignerUnavailable(f"CA key file {str(path)!r} does not exist: create it with "
                                    "`vouch ca init` or set VOUCH_CA_KEY") from None
        except OSError as exc:
            raise SignerUnavailable(f"CA key file {str(path)!r} cannot be read: {exc.strerror}") from None
        if mode & 0o077:  # as ssh refuses a private key others can read
            raise BadInput(f"CA key file {str(path)!r} can be read by others (mode "
                           f"{mode & 0o777:o}): run `chmod 600 {path}`")
        return cls(_load_private_key(data, passphrase, str(path)), source=f"CA key file {str(path)!r}")

    def sign(self, data: bytes) -> bytes:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, self._algorithm))
            return ecdsa_signature(key.curve.key_size, r, s)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return ed25519_signature(key.sign(data))
        return rsa_signature(key.sign(data, padding.PKCS1v15(), hashes.SHA512()))

    def check(self) -> None:
        """A signer in memory is always able to sign."""

    def reset(self) -> bool:
        """Nothing to log in to again (SIGHUP): see Pkcs11Signer.reset."""
        return False

    def close(self) -> None:
        pass


def _load_private_key(data: bytes, passphrase: bytes | None, source: str):
    loader = (serialization.load_ssh_private_key if b"OPENSSH PRIVATE KEY" in data
              else serialization.load_pem_private_key)
    try:
        return loader(data, password=passphrase)
    except TypeError:
        # cryptography raises TypeError both for "encrypted but no password" and the reverse.
        if passphrase is None:
            raise SignerUnavailable(f"{source} is encrypted: set VOUCH_CA_KEY_PASSPHRASE") from None
        raise SignerUnavailable(f"{source} is not encrypted but a passphrase was given") from None
    except (ValueError, UnsupportedAlgorithm):
        if passphrase is not None:
            raise SignerUnavailable(f"{source} cannot be decrypted: wrong passphrase, "
                                    "or not an OpenSSH/PKCS#8 private key") from None
        raise SignerUnavailable(f"{source} is not an OpenSSH or PKCS#8 PEM private key") from None


def generate_private_key(key_type: CaKeyType):
    if key_type in (CaKeyType.ECDSA_P256, CaKeyType.ECDSA_P384):
        return ec.generate_private_key(key_type.curve)
    if key_type is CaKeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=key_type.rsa_bits)


def create_file_key(path: str | os.PathLike, key_type: CaKeyType, *, passphrase: bytes | None = None,
                    force: bool = False, comment: str = "vouch-ca") -> FileSigner:
    """Create a CA key file (OpenSSH format, mode 0600) and its `.pub` beside it."""
    path = Path(path)
    if path.exists() and not force:
        raise BadInput(f"{str(path)!r} already exists: refusing to overwrite a CA key "
                       "(use --force to replace it; certificates it signed stop being trusted)")
    key = generate_private_key(key_type)
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
    signer = FileSigner(key, source=f"CA key file {str(path)!r}")
    try:
        _write_private(path, pem)
        Path(f"{path}.pub").write_text(f"{signer.public_key.line()} {comment}\n")
    except OSError as exc:
        raise BadInput(f"cannot write the CA key to {str(path)!r}: {exc.strerror}") from None
    return signer


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
