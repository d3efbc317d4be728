"""Offboarding: when Slack says a user was deactivated or made a guest, everything they could
use goes at once (CONTRACT "Lifecycle"): live certificates revoked (hosts refuse them from the
next KRL), pending and approved requests cancelled, registered keys disabled. Nobody has to
remember; the security channel is told (bot.notifier)."""

from __future__ import annotations

from dataclasses import dataclass, field

from access import requests as rules
from access.context import Access
from access.ports import RegisteredKey
from access.requests import Request
from access.revoking import Revoked, revoke_in


@dataclass(frozen=True)
class Offboarded:
    user: str
    why: str
    revoked: list[Revoked] = field(default_factory=list)
    cancelled: list[Request] = field(default_factory=list)
    keys: list[RegisteredKey] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(self.revoked or self.cancelled or self.keys)


def offboard(access: Access, user: str, *, why: str) -> Offboarded:
    """Take away everything `user` holds, in one unit; nothing to do is no error (the event
    and the sweep may both find the same person)."""
    now = access.clock()
    with access.unit() as unit:
        revoked = [revoke_in(unit, certificate, actor="vouch", reason=f"offboarded: {why}",
                             now=now) for certificate in unit.certificates.live_of(user, now)]
        cancelled = []
        for request in unit.requests.open_of(user):
            after = rules.cancel_unissued(request, by="vouch", now=now) \
                if request.state is rules.State.APPROVED else \
                rules.withdraw(request, by="vouch", now=now)
            if unit.requests.move(request, after):
                cancelled.append(after)
        keys = [key for key in (unit.keys.remove(user, key.fingerprint, now)
                                for key in unit.keys.active(user)) if key is not None]
        done = Offboarded(user, why, revoked, cancelled, keys)
        if done.anything:
            unit.audit.record(actor="vouch", action="user.offboarded", subject=f"user:{user}",
                              now=now, details={
                                  "why": why, "revoked": [str(r.serial) for r in revoked],
                                  "cancelled": [r.id for r in cancelled],
                                  "keys": [k.fingerprint for k in keys]})
    return done


def offboarding_candidates(access: Access) -> list[str]:
    """Everyone who holds something offboarding would take away: the periodic sweep asks
    Slack about each."""
    now = access.clock()
    with access.unit(read_only=True) as unit:
        return sorted(set(unit.keys.holders()) | set(unit.certificates.live_holders(now)))
