"""What every use case works with: the store, the CA signer, the policy, the group directory and
the clock. Built once by the composition root (`vouch serve`, the CLI) and passed in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from typing import Any

from access.errors import BadInput, PolicyRefusal
from access.policy import Directory, NoDirectory, People, Person, Policy, find_person
from access.ports import Store, Unit
from ca.cert import Signer

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Access:
    def __init__(self, store: Store | None, signer: Signer, *,
                 policy: Callable[[], Policy] | None = None, directory: Directory | None = None,
                 clock: Clock = utcnow) -> None:
        self.store = store
        self.signer = signer
        self._policy = policy
        self.directory = directory or NoDirectory()
        self.clock = clock

    @property
    def policy(self) -> Policy:
        """The policy now (it may be reloaded between calls: read it once per use case)."""
        if self._policy is None:
            raise BadInput("this needs the policy file (VOUCH_POLICY_FILE)")
        return self._policy()

    def unit(self, *, read_only: bool = False) -> AbstractContextManager[Unit]:
        if self.store is None:
            raise BadInput("this needs the database (VOUCH_DATABASE_URL)")
        return self.store.unit(read_only=read_only)

    def person(self, user: str, *lists: People) -> Person:
        """`user` as far as `lists` care. Looking groups up may call Slack: call this before a
        unit opens, never inside one."""
        return find_person(user, self.directory, *lists)

    def record(self, *, actor: str, action: str, subject: str,
               details: dict[str, Any] | None = None) -> None:
        """An audit event on its own (a policy reload, a refusal)."""
        with self.unit() as unit:
            unit.audit.record(actor=actor, action=action, subject=subject, now=self.clock(),
                              details=details)

    @contextmanager
    def refusals_audited(self, *, actor: str, action: str, subject: str) -> Iterator[None]:
        """Audit a policy refusal inside the block as `<action>.refused` (in a unit of its own:
        the refused one rolled back), then let it go on to the person who acted."""
        try:
            yield
        except PolicyRefusal as exc:
            self.record(actor=actor, action=f"{action}.refused", subject=subject,
                        details={"reason": exc.message})
            raise
