"""Calls signed with an SSH key (CONTRACT "Client API authentication"): the client API signs
with a user's registered key (namespace vouch-api), a host renews its certificate with its own
host key (vouch-host).

The signature covers `v1\\n<unix time>\\n<METHOD>\\n<path and query>\\n<sha256 hex of body>`.
A call is refused when its time is more than MAX_SKEW off, or when the same key already signed
the same message: the replay key is the signed message, not the signature, because ECDSA
signatures are malleable (s and n-s both verify), so a replayed call may carry other bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from access.errors import VouchError
from access.ports import Unit
from ca.keys import PublicKey
from ca.sshsig import BadSignature, verify

API = "vouch-api"
HOST = "vouch-host"
SCHEME = "Vouch-SSHSIG"
MAX_SKEW = timedelta(seconds=300)
_TIMESTAMP = re.compile(r"[0-9]{1,10}")  # up to the year 2286; more overflows datetime
_MAX_SIGNATURE = 16 * 1024  # armored; an RSA-16384 signature is under 5 KB


class Unauthorized(VouchError):
    """The call is not signed by a key Vouch trusts for it: HTTP 401."""


@dataclass(frozen=True)
class SignedCall:
    key: PublicKey
    fingerprint: str
    replay_key: str  # sha256 hex of the key and the signed message
    at: datetime  # the time the client signed


def message(timestamp: str, method: str, target: str, body: bytes) -> bytes:
    """What the client signs: `target` is the path and query as sent."""
    return f"v1\n{timestamp}\n{method}\n{target}\n{hashlib.sha256(body).hexdigest()}".encode()


def check(*, authorization: str | None, timestamp: str | None, method: str, target: str,
          body: bytes, namespace: str, now: datetime) -> SignedCall:
    """The key that signed this call, or Unauthorized saying what is wrong with it. Whether
    that key may act, and whether the call was seen before, is the caller's to ask."""
    if not authorization:
        raise Unauthorized(f"no signature: send 'Authorization: {SCHEME} <base64 of the armored "
                           f"SSHSIG>' signed with namespace {namespace}")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme != SCHEME or not encoded:
        raise Unauthorized(f"unknown authorization scheme: expected '{SCHEME} <signature>'")
    if not timestamp or not _TIMESTAMP.fullmatch(timestamp.strip()):
        raise Unauthorized("X-Vouch-Timestamp must be the signing time in unix seconds")
    timestamp = timestamp.strip()
    at = datetime.fromtimestamp(int(timestamp), timezone.utc)
    if abs(at - now) > MAX_SKEW:
        raise Unauthorized(f"the signature's time is {int(abs((at - now).total_seconds()))} s "
                           f"off the server's; at most {int(MAX_SKEW.total_seconds())} s are "
                           "allowed (check the clock)")
    if len(encoded) > _MAX_SIGNATURE:
        raise Unauthorized("the signature is too long")
    try:
        armored = base64.b64decode(encoded.strip(), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("the Authorization header is not base64 of an armored SSH "
                           "signature") from None
    signed = message(timestamp, method, target, body)
    try:
        key = verify(armored, signed, namespace)
    except BadSignature as exc:
        raise Unauthorized(f"bad signature: {exc.message}", detail=exc.detail) from None
    replay_key = hashlib.sha256(key.blob + b"\0" + signed).hexdigest()
    return SignedCall(key=key, fingerprint=key.fingerprint, replay_key=replay_key, at=at)


def first_use(unit: Unit, call: SignedCall, now: datetime) -> None:
    """Record the call as used (in `unit`, so every replica sees it); Unauthorized if it was.
    Entries older than twice the allowed skew (and a minute for replicas' clocks to differ)
    can never match a fresh call and are forgotten."""
    forget_before = now - 2 * MAX_SKEW - timedelta(minutes=1)
    if not unit.signatures.first_use(call.replay_key, at=now, forget_before=forget_before):
        raise Unauthorized("this signature was already used (a replay); sign every call anew")
