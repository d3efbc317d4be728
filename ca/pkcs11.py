"""A CA key in a PKCS#11 token (SoftHSM2, a YubiKey's PIV applet through ykcs11, a network HSM).

Keys are named by RFC 7512 `pkcs11:` URIs. One long-lived, logged-in session per signer is
shared by all threads behind a lock: PKCS#11 sessions carry one active operation at a time, and a
second `C_Login` in the same process fails. A session lost to a removed or reset token is reopened
once per signature. A refused PIN latches: no login is tried again until `reset()` (SIGHUP) or a
restart, because tokens lock after a few wrong PINs (a YubiKey after three).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from ca.errors import BadInput, SignerError, SignerUnavailable
from ca.keys import PublicKey, public_key_from_parts
from ca.pkcs11_uri import Pkcs11Uri, parse_pkcs11_uri  # noqa: F401 - callers import it from here
from ca.signer import CaKeyType, ed25519_signature, rsa_signature
from ca.wire import put_mpint, put_mpint_bytes, put_string

# DER-encoded CKA_EC_PARAMS (named-curve OIDs). SoftHSM2 wants exactly this OID for Ed25519;
# other modules may report the PrintableString "edwards25519".
_CURVE_PARAMS = {
    bytes.fromhex("06082a8648ce3d030107"): 256,
    bytes.fromhex("06052b81040022"): 384,
    bytes.fromhex("06052b81040023"): 521,
}
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), bytes.fromhex("130c656477617264733235353139"))
_PARAMS_FOR = {CaKeyType.ECDSA_P256: bytes.fromhex("06082a8648ce3d030107"),
               CaKeyType.ECDSA_P384: bytes.fromhex("06052b81040022")}

# Errors after which a fresh session may succeed: the token went away and came back, or the
# module lost our session or login. Anything else (wrong PIN, bad mechanism) is not retried.
_RECONNECT = (p11.SessionClosed, p11.SessionHandleInvalid, p11.DeviceRemoved, p11.DeviceError,
              p11.TokenNotPresent, p11.TokenNotRecognised, p11.UserNotLoggedIn,
              p11.ObjectHandleInvalid, p11.KeyHandleInvalid, p11.GeneralError, p11.FunctionFailed)
_PIN_REFUSED = (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange, p11.PinLocked, p11.PinExpired)


class PinRefused(SignerUnavailable):
    """The token refused the PIN (wrong, locked, expired)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_LIBRARIES: dict[str, pkcs11.lib] = {}
_LIBRARIES_LOCK = threading.Lock()


def load_module(path: str) -> pkcs11.lib:
    """One `pkcs11.lib` per module per process: C_Initialize twice in one process fails."""
    with _LIBRARIES_LOCK:
        if path not in _LIBRARIES:
            if not os.path.exists(path):
                raise SignerUnavailable(f"PKCS#11 module {path!r} does not exist "
                                        "(set module-path in the URI or VOUCH_PKCS11_MODULE)")
            try:
                _LIBRARIES[path] = pkcs11.lib(path)
            except p11.PKCS11Error as exc:
                raise SignerUnavailable(f"PKCS#11 module {path!r} cannot be loaded: "
                                        f"{_reason(exc)}") from None
        return _LIBRARIES[path]


def _reason(exc: BaseException) -> str:
    # python-pkcs11 exceptions carry the CKR_ name in their class; their text never holds a PIN.
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Connection:
    """An open, logged-in session on the token and the key's handles in it."""

    def __init__(self, uri: Pkcs11Uri, module: str, pin: str | None, *, rw: bool = False) -> None:
        self.token = _find_token(load_module(module), uri)
        try:
            self.session = self.token.open(rw=rw, user_pin=pin)
        except p11.UserAlreadyLoggedIn:
            # Login is per process: another session of ours is logged in, and this one shares it.
            self.session = self.token.open(rw=rw)
        except _PIN_REFUSED as exc:
            reason = type(exc).__name__
            raise PinRefused(f"PKCS#11 token {self.token.label!r} refused the PIN ({reason}); it "
                             "is not retried, to avoid locking the token", reason=reason) from None
        except p11.PKCS11Error as exc:
            raise SignerUnavailable(f"PKCS#11 token {self.token.label!r}: cannot open a session "
                                    f"({_reason(exc)})") from None

    def close(self) -> None:
        try:
            self.session.close()
        except p11.PKCS11Error:
            pass


def _find_token(lib: pkcs11.lib, uri: Pkcs11Uri):
    try:
        slots = lib.get_slots(token_present=True)
    except p11.PKCS11Error as exc:
        raise SignerUnavailable(f"PKCS#11 module cannot list its slots ({_reason(exc)}); "
                                "for a YubiKey, is pcscd running?") from None
    seen = []
    for slot in slots:
        if uri.slot_id is not None and slot.slot_id != uri.slot_id:
            continue
        try:
            token = slot.get_token()
        except p11.PKCS11Error:
            continue
        seen.append(token.label)
        if uri.token is not None and token.label != uri.token:
            continue
        if uri.serial is not None and token.serial.decode(errors="replace").strip() != uri.serial:
            continue
        return token
    present = ", ".join(repr(label) for label in seen) or "none"
    raise SignerUnavailable(f"no PKCS#11 token matches {uri.describe()} (tokens present: {present})")


def _key_query(uri: Pkcs11Uri) -> dict:
    query = {}
    if uri.object is not None:
        query["label"] = uri.object
    if uri.id is not None:
        query["id"] = uri.id
    return query


class Pkcs11Signer:
    """Signs with a token-held private key. Thread-safe; the PIN lives only in this object."""

    def __init__(self, uri: Pkcs11Uri, *, module: str, pin: str | None) -> None:
        self.uri = uri
        self._module = module
        self._pin = pin
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._key = None
        self._refused: str | None = None  # the latch: why no login is tried until reset()
        with self._lock:
            self._connect()

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.uri.describe()})"

    @property
    def source(self) -> str:
        return f"PKCS#11 {self.uri.describe()}"

    def _connect(self) -> None:
        if self._conn is not None:
            # Close the failed session first: closing a logged-in session logs the whole
            # process out, which would strand a new session opened while it was still around.
            self._conn.close()
            self._conn = None
        conn = _Connection(self.uri, self._module, self._pin)
        try:
            private = conn.session.get_key(object_class=ObjectClass.PRIVATE_KEY, **_key_query(self.uri))
            public_key = _read_public_key(conn.session, private)
            always_authenticate = _attribute(private, Attribute.ALWAYS_AUTHENTICATE, False)
        except p11.NoSuchKey:
            conn.close()
            hint = ("; no PIN was given, and tokens show private keys only after login: set "
                    "VOUCH_PKCS11_PIN or pin-source= in the URI") if self._pin is None else ""
            raise SignerUnavailable(f"no private key matches {self.uri.describe()}{hint}") from None
        except p11.MultipleObjectsReturned:
            conn.close()
            raise SignerError(f"PKCS#11 token {conn.token.label!r} has several keys matching "
                              f"{self.uri.describe()}: add object= or id= to the URI") from None
        except p11.PKCS11Error as exc:
            conn.close()
            raise SignerUnavailable(f"PKCS#11 token {conn.token.label!r}: cannot read "
                                    f"{self.uri.describe()} ({_reason(exc)})") from None
        self._conn, self._key = conn, private
        self.public_key: PublicKey = public_key
        self._always_authenticate = bool(always_authenticate)
        if public_key.type.startswith("ecdsa-"):
            self._ec_hash = {256: hashlib.sha256, 384: hashlib.sha384, 521: hashlib.sha512}[public_key.bits]
            self._ec_prefix = put_string(public_key.type)

    def _reconnect(self) -> None:
        try:
            self._connect()
        except PinRefused as exc:
            raise self._refuse("PIN", exc.reason) from None

    def _refuse(self, what: str, reason: str) -> SignerUnavailable:
        """Latch a refused PIN. The token may keep the refused signature active on the session
        (SoftHSM2 does: every later C_SignInit fails), so the session is replaced by a fresh one
        opened without a login."""
        self._refused = (f"PKCS#11 {self.uri.describe()}: the {what} was refused ({reason}); "
                         "no login is tried again until vouch restarts or receives SIGHUP "
                         "(fix the PIN first: tokens lock after a few wrong PINs)")
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            try:
                self._conn = _Connection(self.uri, self._module, None)
            except SignerUnavailable:
                pass  # the token is gone too: reset() opens a session anyway
        return SignerUnavailable(self._refused)

    def _unless_refused(self) -> None:
        if self._refused is not None:
            raise SignerUnavailable(self._refused)

    def reset(self) -> bool:
        """Clear a refused-PIN latch (SIGHUP, once the PIN is fixed) and log in once more, with the
        PIN re-read if the URI names a pin-source. False if nothing was latched."""
        with self._lock:
            if self._refused is None:
                return False
            if self.uri.pin_source is not None:
                self._pin = self.uri.pin(None)
            self._refused = None
            self._reconnect()
            return True

    def sign(self, data: bytes) -> bytes:
        with self._lock:
            self._unless_refused()
            try:
                return self._sign(data)
            except _RECONNECT as first:
                try:
                    self._reconnect()
                    return self._sign(data)
                except SignerUnavailable:
                    raise
                except _PIN_REFUSED as exc:
                    raise self._refuse("per-signature PIN", type(exc).__name__) from None
                except p11.PKCS11Error as again:
                    raise SignerUnavailable(
                        f"PKCS#11 {self.uri.describe()} cannot sign: {_reason(first)}, and again "
                        f"after reopening the session: {_reason(again)}") from None
            except _PIN_REFUSED as exc:
                raise self._refuse("per-signature PIN", type(exc).__name__) from None
            except p11.PKCS11Error as exc:
                raise SignerUnavailable(f"PKCS#11 {self.uri.describe()} cannot sign: "
                                        f"{_reason(exc)}") from None

    def _sign(self, data: bytes) -> bytes:
        # Keys with CKA_ALWAYS_AUTHENTICATE (YubiKey PIV slot 9c) want the PIN before each signature.
        pin = self._pin if self._always_authenticate else None
        kind = self.public_key.type
        if kind == "ssh-ed25519":
            return ed25519_signature(self._key.sign(data, mechanism=Mechanism.EDDSA, pin=pin))
        if kind == "ssh-rsa":
            return rsa_signature(self._key.sign(data, mechanism=Mechanism.SHA512_RSA_PKCS, pin=pin))
        # SoftHSM2 has no CKM_ECDSA_SHA256/384: hash here and sign the digest with plain CKM_ECDSA.
        # The token answers r || s at fixed width; RFC 5656 wants mpint r, mpint s.
        raw = self._key.sign(self._ec_hash(data).digest(), mechanism=Mechanism.ECDSA, pin=pin)
        half = len(raw) // 2
        return self._ec_prefix + put_string(put_mpint_bytes(raw[:half]) + put_mpint_bytes(raw[half:]))

    def check(self) -> None:
        """Raise SignerUnavailable unless the token answers (for /readyz)."""
        with self._lock:
            self._unless_refused()
            try:
                self._key[Attribute.LABEL]
            except _RECONNECT:
                self._reconnect()
            except p11.PKCS11Error as exc:
                raise SignerUnavailable(f"PKCS#11 {self.uri.describe()}: {_reason(exc)}") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _attribute(obj, attribute: Attribute, default):
    try:
        return obj[attribute]
    except (p11.AttributeTypeInvalid, p11.AttributeSensitive):
        return default


def _read_public_key(session, private) -> PublicKey:
    key_type = private.key_type
    if key_type == KeyType.RSA:
        modulus = _attribute(private, Attribute.MODULUS, None)
        exponent = _attribute(private, Attribute.PUBLIC_EXPONENT, None)
        if modulus is None or exponent is None:
            public = _public_object(session, private)
            modulus, exponent = public[Attribute.MODULUS], public[Attribute.PUBLIC_EXPONENT]
        return public_key_from_parts("ssh-rsa", put_mpint(int.from_bytes(exponent, "big")),
                                     put_mpint(int.from_bytes(modulus, "big")))
    public = _public_object(session, private)
    params = public[Attribute.EC_PARAMS]
    point = public[Attribute.EC_POINT]
    if key_type == KeyType.EC_EDWARDS or params in _ED25519_PARAMS:
        return public_key_from_parts("ssh-ed25519", put_string(_unwrap_point(point, 32)))
    if key_type == KeyType.EC and params in _CURVE_PARAMS:
        bits = _CURVE_PARAMS[params]
        size = 2 * ((bits + 7) // 8) + 1
        return public_key_from_parts(f"ecdsa-sha2-nistp{bits}", put_string(f"nistp{bits}"),
                                     put_string(_unwrap_point(point, size)))
    raise SignerError(f"unsupported key in token (type {key_type!r}): use ECDSA P-256/P-384, "
                      "Ed25519 or RSA")


def _public_object(session, private):
    query = {"id": private[Attribute.ID]} if _attribute(private, Attribute.ID, b"") else \
        {"label": private[Attribute.LABEL]}
    try:
        return session.get_key(object_class=ObjectClass.PUBLIC_KEY, **query)
    except p11.NoSuchKey:
        raise SignerError("the token holds the private key but no public key object beside it "
                          "(same id/label); import the public key into the token") from None


def _unwrap_point(point: bytes, size: int) -> bytes:
    """CKA_EC_POINT should be a DER OCTET STRING, but some modules return the raw point."""
    if len(point) == size:
        return point
    if point[:1] != b"\x04":
        raise SignerError("the token's EC point is not a DER OCTET STRING")
    length, offset = point[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(point[2:2 + count], "big"), 2 + count
    raw = point[offset:offset + length]
    if len(raw) != size:
        raise SignerError(f"the token's EC point has {len(raw)} bytes, expected {size}")
    return raw


def create_token_key(uri: Pkcs11Uri, key_type: CaKeyType, *, module: str, pin: str | None,
                     force: bool = False, always_authenticate: bool = False) -> PublicKey:
    """Generate a non-extractable CA key pair in the token named by `uri` (label = object=)."""
    if not uri.object:
        raise BadInput("to create a key in a token the URI needs object=LABEL (e.g. object=vouch-ca)")
    conn = _Connection(uri, module, pin, rw=True)
    try:
        session = conn.session
        existing = [*session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                          Attribute.LABEL: uri.object})]
        if existing and not force:
            raise BadInput(f"token {conn.token.label!r} already has a key labelled {uri.object!r}: "
                           "refusing to overwrite a CA key (use --force to replace it)")
        for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            for obj in session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: uri.object}):
                obj.destroy()
        key_id = uri.id or secrets.token_bytes(8)
        # Sign and verify only: python-pkcs11's defaults would let an RSA key decrypt and unwrap
        # and an EC key derive, turning the CA key into an oracle for anyone with a session.
        private_template = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                            Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                            Attribute.DECRYPT: False, Attribute.UNWRAP: False, Attribute.DERIVE: False}
        if always_authenticate:
            private_template[Attribute.ALWAYS_AUTHENTICATE] = True
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True, Attribute.ENCRYPT: False,
                           Attribute.WRAP: False}
        common = dict(id=key_id, label=uri.object, store=True,
                      public_template=public_template, private_template=private_template)
        if key_type in (CaKeyType.RSA_3072, CaKeyType.RSA_4096):
            _, private = session.generate_keypair(KeyType.RSA, key_type.rsa_bits, **common)
        elif key_type is CaKeyType.ED25519:
            params = session.create_domain_parameters(
                KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: _ED25519_PARAMS[0]}, local=True)
            _, private = params.generate_keypair(mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, **common)
        else:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: _PARAMS_FOR[key_type]}, local=True)
            _, private = params.generate_keypair(**common)
        return _read_public_key(session, private)
    except p11.PKCS11Error as exc:
        raise SignerUnavailable(f"cannot create {key_type.value} key in token "
                                f"{conn.token.label!r}: {_reason(exc)}") from None
    finally:
        conn.close()
