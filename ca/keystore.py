"""Where the CA key lives: a file path or a `pkcs11:` URI. Opens or creates it behind one call."""

from __future__ import annotations

from ca.cert import Signer
from ca.errors import BadInput
from ca.keys import PublicKey
from ca.pkcs11_uri import is_pkcs11_uri
from ca.signer import CaKeyType, FileSigner, create_file_key



def _token(reference: str, module: str | None, pin: str | None):
    from ca import pkcs11  # python-pkcs11 is loaded only for token-held keys

    uri = pkcs11.parse_pkcs11_uri(reference)
    module = uri.module_path or module
    if not module:
        raise BadInput("the PKCS#11 URI has no module-path and VOUCH_PKCS11_MODULE is not set "
                       "(e.g. /usr/lib/softhsm/libsofthsm2.so, or ykcs11's libykcs11.so)")
    return pkcs11, uri, module, uri.pin(pin)


def open_signer(reference: str, *, module: str | None = None, pin: str | None = None,
                passphrase: bytes | None = None) -> Signer:
    """Open the CA key named by `reference` (VOUCH_CA_KEY) for signing."""
    if is_pkcs11_uri(reference):
        pkcs11, uri, module, pin = _token(reference, module, pin)
        return pkcs11.Pkcs11Signer(uri, module=module, pin=pin)
    return FileSigner.load(reference, passphrase=passphrase)


def create_ca_key(reference: str, key_type: CaKeyType, *, force: bool = False,
                  module: str | None = None, pin: str | None = None,
                  passphrase: bytes | None = None) -> PublicKey:
    """Create the CA key (`vouch ca init`); refuses to replace an existing one unless `force`."""
    if is_pkcs11_uri(reference):
        pkcs11, uri, module, pin = _token(reference, module, pin)
        return pkcs11.create_token_key(uri, key_type, module=module, pin=pin, force=force)
    return create_file_key(reference, key_type, passphrase=passphrase, force=force).public_key
