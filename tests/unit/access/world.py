"""What the use-case tests share: a policy, people, a clock, a CA key, user keys, and an Access
on the in-memory store whose directory and signer check that no unit is open while they work."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from access.context import Access
from access.policy_file import parse_policy
from ca.signer import CaKeyType, FileSigner, generate_private_key
from memory import MemoryStore

POLICY = parse_policy("""
security_channel: C0SEC
request_ttl: 30m
reminder_before: 15m
admins: [U0ADMIN]
targets:
  prod-db:
    principals: [postgres]
    max_duration: 4h
    approvers: [U0BOB, U0REQ, "@dba"]
    approvals_required: 2
  web:
    principals: [www]
    max_duration: 1h
    approvers: [U0BOB]
breakglass:
  users: ["@oncall"]
  max_duration: 1h
  targets: [web]
  review_within: 4h
""")
GROUPS = {"@dba": {"U0DAVE"}, "@oncall": {"U0GLASS", "U0ADMIN"}}
START = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
_CA = generate_private_key(CaKeyType.ECDSA_P256)


def user_key() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH).decode() + " laptop"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs) -> None:
        self.now += timedelta(**kwargs)


class Directory:
    """Group members as Slack would answer; a lookup inside a unit fails the test."""

    def __init__(self, store: MemoryStore) -> None:
        self.store, self.asked = store, []

    def members(self, handle: str) -> frozenset[str]:
        assert self.store.open_units == 0, f"{handle} looked up inside a transaction"
        self.asked.append(handle)
        return frozenset(GROUPS.get(handle, ()))


class Signer:
    """The CA key; a signature inside a unit fails the test, and `down` fails it like an
    unplugged token."""

    def __init__(self, store: MemoryStore) -> None:
        self.store, self.inner, self.down, self.signed = store, FileSigner(_CA), None, 0
        self.public_key = self.inner.public_key

    def sign(self, data: bytes) -> bytes:
        assert self.store.open_units == 0, "signed inside a transaction"
        if self.down is not None:
            raise self.down
        self.signed += 1
        return self.inner.sign(data)


class World:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.clock = Clock()
        self.directory = Directory(self.store)
        self.signer = Signer(self.store)
        self.policy = POLICY
        self.access = Access(self.store, self.signer, policy=lambda: self.policy,
                             directory=self.directory, clock=self.clock)
