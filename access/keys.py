"""Registering, listing and removing a user's SSH public keys (`/ssh-key`)."""

from __future__ import annotations

from access.context import Access
from access.errors import BadInput, PolicyRefusal
from access.ports import Duplicate, RegisteredKey, Unit
from ca.keys import PublicKey, parse_public_key


_TAKEN = ("this key is registered by another Slack user: a key belongs to one person. Make one "
          "of your own (`ssh-keygen -t ed25519`) and add its .pub")


def add_key(access: Access, user: str, line: str) -> tuple[PublicKey, bool]:
    """Register `line` for `user`; (the key, True when it was not registered before). A key
    another user registered is refused: a signature by it must name one person."""
    key = parse_public_key(line)
    now = access.clock()
    try:
        with access.refusals_audited(actor=user, action="key.add", subject=f"user:{user}"):
            with access.unit() as unit:
                holder = unit.keys.holder(key.fingerprint)
                if holder is not None and holder != user:
                    raise PolicyRefusal(_TAKEN)
                _, newly = unit.keys.add(user, key, now)
                if newly:
                    unit.audit.record(actor=user, action="key.added", subject=f"user:{user}",
                                      now=now,
                                      details={"fingerprint": key.fingerprint, "type": key.type})
    except Duplicate:  # registered by the other user between our check and our write
        raise PolicyRefusal(_TAKEN) from None
    return key, newly


def list_keys(access: Access, user: str) -> list[RegisteredKey]:
    with access.unit(read_only=True) as unit:
        return unit.keys.active(user)


def remove_key(access: Access, user: str, fingerprint: str) -> RegisteredKey:
    fingerprint = fingerprint.strip()
    now = access.clock()
    with access.unit() as unit:
        key = unit.keys.remove(user, fingerprint, now)
        if key is None:
            raise BadInput(f"you have no registered key {fingerprint[:60]!r}; "
                           "/ssh-key list shows yours")
        unit.audit.record(actor=user, action="key.removed", subject=f"user:{user}", now=now,
                          details={"fingerprint": key.fingerprint})
    return key


def choose_key(unit: Unit, user: str, fingerprint: str | None) -> RegisteredKey:
    """The key to certify: the one named, else the newest."""
    keys = unit.keys.active(user)
    if not keys:
        raise PolicyRefusal("you have no registered SSH public key: add one with "
                            "`/ssh-key add ssh-ed25519 AAAA…` (the contents of ~/.ssh/id_ed25519.pub)")
    if fingerprint is None:
        return keys[0]
    for key in keys:
        if key.fingerprint == fingerprint:
            return key
    raise BadInput(f"you have no registered key {fingerprint[:60]!r}; /ssh-key list shows yours")
