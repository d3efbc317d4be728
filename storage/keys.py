"""Users' registered public keys and the users themselves (access.ports.Keys, Users)."""

from __future__ import annotations

from datetime import datetime

from collections.abc import Collection

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from access.ports import RegisteredKey
from ca.keys import PublicKey
from storage.db import unique
from storage.models import User, UserKey
from storage.types import UTCDateTime

_KEYS = UserKey.__table__
_K = _KEYS.c
_USERS = User.__table__

_FIND = select(_KEYS).where(_K.user_id == bindparam("user"), _K.fingerprint == bindparam("fp"))
_ACTIVE = (select(_KEYS).where(_K.user_id == bindparam("user"), _K.removed_at.is_(None))
           .order_by(_K.added_at.desc(), _K.id.desc()))
# ix_user_keys_active_fingerprint holds exactly the active keys
_HOLDERS = select(_K.user_id).where(_K.removed_at.is_(None)).distinct()
_HOLDER = select(_K.user_id).where(_K.fingerprint == bindparam("fp"), _K.removed_at.is_(None))
_RESTORE = (update(_KEYS).where(_K.id == bindparam("key_id"))
            .values(removed_at=None, added_at=bindparam("at", type_=UTCDateTime()),
                    comment=bindparam("new_comment")))
_REMOVE = (update(_KEYS).where(_K.id == bindparam("key_id"))
           .values(removed_at=bindparam("at", type_=UTCDateTime())))
# (An UPDATE's parameters may not be named like the table's columns.)
_UPDATE_USER = (update(_USERS).where(_USERS.c.id == bindparam("user"))
                .values(name=bindparam("new_name"), tz=bindparam("new_tz"),
                        updated_at=bindparam("at", type_=UTCDateTime())))
_OPENED_HOME = (update(_USERS).where(_USERS.c.id == bindparam("user"))
                .values(home_opened_at=bindparam("at", type_=UTCDateTime())))


def _registered(row) -> RegisteredKey:
    return RegisteredKey(user=row.user_id, key_type=row.key_type, public_key=row.public_key,
                         fingerprint=row.fingerprint, comment=row.comment, added_at=row.added_at)


class SqlKeys:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def add(self, user: str, key: PublicKey, at: datetime) -> tuple[RegisteredKey, bool]:
        comment = key.comment[:200]
        known = self.connection.execute(_FIND, {"user": user, "fp": key.fingerprint}).first()
        if known is not None and known.removed_at is None:
            return _registered(known), False
        with unique("key"):  # another user's active key: ix_user_keys_active_fingerprint
            if known is not None:
                self.connection.execute(_RESTORE, {"key_id": known.id, "at": at,
                                                   "new_comment": comment})
            else:
                self.connection.execute(_KEYS.insert(), {
                    "user_id": user, "key_type": key.type, "fingerprint": key.fingerprint,
                    "public_key": PublicKey(key.type, key.blob, key.bits).line(),
                    "comment": comment, "added_at": at})
        return _registered(self.connection.execute(
            _FIND, {"user": user, "fp": key.fingerprint}).one()), True

    def holder(self, fingerprint: str) -> str | None:
        return self.connection.execute(_HOLDER, {"fp": fingerprint}).scalar()

    def active(self, user: str) -> list[RegisteredKey]:
        return [_registered(row) for row in self.connection.execute(_ACTIVE, {"user": user})]

    def holders(self) -> list[str]:
        return list(self.connection.execute(_HOLDERS).scalars())

    def remove(self, user: str, fingerprint: str, at: datetime) -> RegisteredKey | None:
        key = next((k for k in self.connection.execute(_ACTIVE, {"user": user})
                    if k.fingerprint == fingerprint), None)
        if key is None:
            return None
        self.connection.execute(_REMOVE, {"key_id": key.id, "at": at})
        return _registered(key)


class SqlUsers:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def remember(self, user: str, *, name: str, tz: str | None, at: datetime) -> None:
        values = {"user": user, "new_name": name, "new_tz": tz, "at": at}
        if self.connection.execute(_UPDATE_USER, values).rowcount == 0:
            self.connection.execute(_USERS.insert(), {"id": user, "name": name, "tz": tz,
                                                      "updated_at": at})

    def opened_home(self, user: str, at: datetime) -> None:
        if self.connection.execute(_OPENED_HOME, {"user": user, "at": at}).rowcount == 0:
            self.connection.execute(_USERS.insert(), {"id": user, "name": "", "updated_at": at,
                                                      "home_opened_at": at})

    def home_viewers(self, since: datetime, among: Collection[str] | None = None) -> list[str]:
        query = select(_USERS.c.id).where(_USERS.c.home_opened_at >= since)
        if among is not None:
            query = query.where(_USERS.c.id.in_(list(among)))
        return list(self.connection.execute(query).scalars())
