"""Where the CA key lives: a file path or a `pkcs11:` URI. Opens or creates it behind one call."""

from __future__ import annotations

import os

from ca.cert import HostCa, Signer
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
                  passphrase: bytes | None = None, comment: str = "vouch-ca") -> PublicKey:
    """Create the CA key (`vouch ca init`); refuses to replace an existing one unless `force`.
    `comment` ends the line of the `.pub` file written beside a key file."""
    if is_pkcs11_uri(reference):
        pkcs11, uri, module, pin = _token(reference, module, pin)
        return pkcs11.create_token_key(uri, key_type, module=module, pin=pin, force=force)
    return create_file_key(reference, key_type, passphrase=passphrase, force=force,
                           comment=comment).public_key


def open_host_ca(reference: str, *, user_ca: Signer | None, module: str | None = None,
                 pin: str | None = None, passphrase: bytes | None = None) -> HostCa | None:
    """The host CA named by `reference` (VOUCH_HOST_CA_KEY), or None while no key file exists
    there (host certificates are then off). Refused when it is the user CA's own key: a host CA
    compromise must not let anyone log in."""
    if not is_pkcs11_uri(reference) and not os.path.exists(reference):
        return None
    signer = open_signer(reference, module=module, pin=pin, passphrase=passphrase)
    if user_ca is not None and signer.public_key.blob == user_ca.public_key.blob:
        raise BadInput("VOUCH_HOST_CA_KEY is the user CA's key (VOUCH_CA_KEY): the host CA must "
                       "be a key of its own; create one with `vouch ca init --host`")
    return HostCa(signer)
