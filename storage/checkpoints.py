"""Signed checkpoints of the audit chain, kept outside the database.

A keyed chain cannot be rewritten without the audit key, but its newest events can be deleted
and the head moved back: what remains is still a valid chain. So the head (seq, hash, time) is
signed by the CA signer, as an SSHSIG (namespace `vouch-audit`, checkable with `ssh-keygen -Y
check-novalidate`), and appended to a file of its own (VOUCH_AUDIT_CHECKPOINTS) and to the log:
at least every 100 events, every hour, and on `vouch audit checkpoint`. `vouch audit verify`
then refuses a chain that no longer reaches, or no longer matches, a checkpoint.

One JSON object per line: {"seq", "hash", "at", "signature"}; the signed message is
"vouch audit checkpoint v1\\nseq <seq>\\nhash <hash>\\nat <at>\\n".
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from ca import sshsig
from ca.cert import Signer
from ca.errors import BadInput, VouchError
from ca.keys import PublicKey
from storage import audit
from storage.db import Database

log = logging.getLogger("vouch.audit")

NAMESPACE = "vouch-audit"
EVERY_EVENTS = 100
EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str  # storage.audit.format_time
    signature: str  # armored SSHSIG over message()

    def message(self) -> bytes:
        return f"vouch audit checkpoint v1\nseq {self.seq}\nhash {self.hash}\nat {self.at}\n".encode()

    def line(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash, "at": self.at,
                           "signature": self.signature}, separators=(",", ":"))


def sign(signer: Signer, seq: int, hash_: str, at: datetime) -> Checkpoint:
    unsigned = Checkpoint(seq, hash_, audit.format_time(at), "")
    return Checkpoint(seq, hash_, unsigned.at, sshsig.sign(signer, unsigned.message(), NAMESPACE))


def append(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """One line, appended and synced; the file is created 0600. O_APPEND keeps lines from two
    writers whole."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, (checkpoint.line() + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read(path: str | os.PathLike) -> list[Checkpoint]:
    """Every checkpoint in the file; BadInput naming the first line that is not one."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise BadInput(f"checkpoint file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"checkpoint file {str(path)!r} cannot be read: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None
    checkpoints = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            checkpoints.append(Checkpoint(seq=int(data["seq"]), hash=str(data["hash"]),
                                          at=str(data["at"]), signature=str(data["signature"])))
        except (ValueError, KeyError, TypeError):
            raise BadInput(f"{path}:{number}: not a checkpoint line") from None
    return checkpoints


def unsigned(checkpoints: list[Checkpoint], ca: PublicKey) -> str | None:
    """The first checkpoint not signed by the CA key `ca`, described; None when all are."""
    for checkpoint in checkpoints:
        try:
            signer = sshsig.verify(checkpoint.signature, checkpoint.message(), NAMESPACE)
        except sshsig.BadSignature as exc:
            return f"the checkpoint of event {checkpoint.seq} at {checkpoint.at} is forged " \
                   f"({exc.message})"
        if signer.blob != ca.blob:
            return (f"the checkpoint of event {checkpoint.seq} at {checkpoint.at} is signed by "
                    f"{signer.fingerprint}, not by this CA ({ca.fingerprint})")
    return None


class Checkpointer:
    """Writes a checkpoint when the chain has grown by EVERY_EVENTS since the last one, or
    EVERY_SECONDS have passed (`vouch serve` asks after each write and on its schedule)."""

    def __init__(self, db: Database, signer: Signer, path: str | os.PathLike, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.db, self.signer, self.path, self.clock = db, signer, path, clock
        self._lock = threading.Lock()
        self._last_seq, self._last_time = 0, 0.0
        if Path(path).exists():
            written = read(path)
            if written:
                self._last_seq, self._last_time = written[-1].seq, time.monotonic()

    def maybe(self, seq: int | None = None) -> Checkpoint | None:
        """A checkpoint if one is due; `seq`, the head just written, saves a read when not.
        A failure is logged, never raised: what was recorded stands, and the next try may work."""
        if seq is not None and seq < self._last_seq + EVERY_EVENTS:
            return None
        try:
            with self._lock:
                with self.db.transaction(read_only=True) as connection:
                    head_seq, head_hash = audit.head(connection)
                due = (head_seq >= self._last_seq + EVERY_EVENTS
                       or (head_seq != self._last_seq
                           and time.monotonic() - self._last_time >= EVERY_SECONDS))
                return self._write(head_seq, head_hash) if due else None
        except (VouchError, OSError, SQLAlchemyError) as exc:
            log.error("audit checkpoint not written to %s: %s", self.path,
                      getattr(exc, "detail", None) or exc)
            return None

    def now(self) -> Checkpoint:
        """A checkpoint of the head as it is (`vouch audit checkpoint`)."""
        with self._lock:
            with self.db.transaction(read_only=True) as connection:
                head_seq, head_hash = audit.head(connection)
            return self._write(head_seq, head_hash)

    def _write(self, seq: int, hash_: str) -> Checkpoint:
        checkpoint = sign(self.signer, seq, hash_, self.clock())
        append(self.path, checkpoint)
        log.info("audit checkpoint %s", checkpoint.line())
        self._last_seq, self._last_time = seq, time.monotonic()
        return checkpoint
