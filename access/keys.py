"""Registering, listing and removing a user's SSH public keys (`/ssh-key`)."""

from __future__ import annotations

from access.context import Access
from access.errors import BadInput, PolicyRefusal
from access.ports import RegisteredKey, Unit
from ca.keys import PublicKey, parse_public_key


def add_key(access: Access, user: str, line: str) -> tuple[PublicKey, bool]:
    """Register `line` for `user`; (the key, True when it was not registered before)."""
    key = parse_public_key(line)
    now = access.clock()
    with access.unit() as unit:
        _, newly = unit.keys.add(user, key, now)
        if newly:
            unit.audit.record(actor=user, action="key.added", subject=f"user:{user}", now=now,
                              details={"fingerprint": key.fingerprint, "type": key.type})
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
