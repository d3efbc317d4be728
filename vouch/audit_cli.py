"""`vouch audit …`: verify the keyed chain against its signed checkpoints, write a checkpoint,
export events for a SIEM."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from ca.errors import BadInput


def cmd_audit_verify(args, ctx) -> int:
    from storage import audit, checkpoints

    path = args.checkpoints or ctx.settings.audit_checkpoints
    signed: list = []
    if args.checkpoints is not None or Path(path).exists():
        signed = checkpoints.read(path)  # BadInput (exit 2) for a missing or garbled file
        forged = checkpoints.unsigned(signed, ctx.signer().public_key)
        if forged:
            print(f"audit checkpoints broken: {forged}", file=sys.stderr)
            return 1
    with ctx.database().session() as session:
        # An empty chain needs no key; any other does (this raises, saying where it looked).
        key = ctx.audit_key(create=False) if audit.head(session)[0] else b""
        result = audit.verify(session, key, checkpoints=[(c.seq, c.hash, c.at) for c in signed])
    if not result.ok:
        print(f"audit chain broken at event {result.first_bad}: {result.problem}", file=sys.stderr)
        return 1
    if signed:
        newest = max(signed, key=lambda c: c.seq)
        print(f"audit chain intact: {result.events} events; {len(signed)} signed checkpoints "
              f"match (the newest, event {newest.seq} at {newest.at}, in {path})")
    else:
        print(f"audit chain intact: {result.events} events; no signed checkpoints yet ({path} "
              "does not exist), so deleted newest events could go unnoticed")
    return 0


def cmd_audit_checkpoint(args, ctx) -> int:
    from storage.checkpoints import Checkpointer

    checkpoint = Checkpointer(ctx.database(), ctx.signer(), ctx.settings.audit_checkpoints).now()
    print(f"checkpoint of event {checkpoint.seq} ({checkpoint.hash}) signed by the CA and "
          f"appended to {ctx.settings.audit_checkpoints}")
    return 0


def cmd_audit_export(args, ctx) -> int:
    from storage import audit

    since, until = _iso(args.since, "--since"), _iso(args.until, "--until")
    out = sys.stdout
    with ctx.database().session() as session:
        for event in audit.export(session, since=since, until=until):
            out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
    return 0


def _iso(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise BadInput(f"{flag} {text!r} is not an ISO 8601 time, e.g. 2026-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        raise BadInput(f"{flag} {text!r} has no time zone: add Z or an offset such as +02:00")
    return moment.astimezone(timezone.utc)
