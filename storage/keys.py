"""Repository for users' registered public keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from storage.models import User, UserKey


def add_key(*, session: Session, user_id: str, key_type: str, public_key: str, fingerprint: str,
            comment: str, at: datetime) -> tuple[UserKey, bool]:
    """Register a key; re-adding a removed key restores it. Returns (key, newly_added)."""
    existing = session.scalars(select(UserKey).where(
        UserKey.user_id == user_id, UserKey.fingerprint == fingerprint)).first()
    if existing is not None:
        if existing.removed_at is None:
            return existing, False
        existing.removed_at, existing.added_at, existing.comment = None, at, comment
        session.flush()
        return existing, True
    key = UserKey(user_id=user_id, key_type=key_type, public_key=public_key, fingerprint=fingerprint,
                  comment=comment, added_at=at)
    session.add(key)
    session.flush()
    return key, True


def active_keys(*, session: Session, user_id: str) -> list[UserKey]:
    """The user's keys, newest first."""
    return list(session.scalars(select(UserKey).where(
        UserKey.user_id == user_id, UserKey.removed_at.is_(None))
        .order_by(UserKey.added_at.desc(), UserKey.id.desc())))


def remove_key(*, session: Session, user_id: str, fingerprint: str, at: datetime) -> UserKey | None:
    key = session.scalars(select(UserKey).where(
        UserKey.user_id == user_id, UserKey.fingerprint == fingerprint,
        UserKey.removed_at.is_(None))).first()
    if key is not None:
        key.removed_at = at
        session.flush()
    return key


def upsert_user(*, session: Session, user_id: str, name: str, tz: str | None, at: datetime) -> None:
    user = session.get(User, user_id)
    if user is None:
        session.add(User(id=user_id, name=name, tz=tz, updated_at=at))
    else:
        user.name, user.tz, user.updated_at = name, tz, at
    session.flush()


def get_user(*, session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


