"""Users' registered public keys and the users themselves (access.ports.Keys, Users)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from access.ports import RegisteredKey
from ca.keys import PublicKey
from storage.models import User, UserKey


def _registered(key: UserKey) -> RegisteredKey:
    return RegisteredKey(user=key.user_id, key_type=key.key_type, public_key=key.public_key,
                         fingerprint=key.fingerprint, comment=key.comment, added_at=key.added_at)


class SqlKeys:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, user: str, key: PublicKey, at: datetime) -> tuple[RegisteredKey, bool]:
        existing = self.session.scalars(select(UserKey).where(
            UserKey.user_id == user, UserKey.fingerprint == key.fingerprint)).first()
        if existing is not None:
            if existing.removed_at is None:
                return _registered(existing), False
            existing.removed_at, existing.added_at = None, at
            existing.comment = key.comment[:200]
        else:
            existing = UserKey(user_id=user, key_type=key.type,
                               public_key=PublicKey(key.type, key.blob, key.bits).line(),
                               fingerprint=key.fingerprint, comment=key.comment[:200], added_at=at)
            self.session.add(existing)
        self.session.flush()
        return _registered(existing), True

    def active(self, user: str) -> list[RegisteredKey]:
        return [_registered(key) for key in self.session.scalars(select(UserKey).where(
            UserKey.user_id == user, UserKey.removed_at.is_(None))
            .order_by(UserKey.added_at.desc(), UserKey.id.desc()))]

    def remove(self, user: str, fingerprint: str, at: datetime) -> RegisteredKey | None:
        key = self.session.scalars(select(UserKey).where(
            UserKey.user_id == user, UserKey.fingerprint == fingerprint,
            UserKey.removed_at.is_(None))).first()
        if key is None:
            return None
        key.removed_at = at
        self.session.flush()
        return _registered(key)


class SqlUsers:
    def __init__(self, session: Session) -> None:
        self.session = session

    def remember(self, user: str, *, name: str, tz: str | None, at: datetime) -> None:
        known = self.session.get(User, user)
        if known is None:
            self.session.add(User(id=user, name=name, tz=tz, updated_at=at))
        else:
            known.name, known.tz, known.updated_at = name, tz, at
        self.session.flush()
