"""The audit chain's key (storage.chain): from VOUCH_AUDIT_KEY, else the file `audit_key` in
VOUCH_SECRETS_DIR, else the file `audit_key` in the working directory, which the commands that
write to the audit log create (mode 0600, 256 random bits) when it is missing. It never goes
into the database, a log line or an error message."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ca.errors import BadInput
from vouch.settings import Settings

FILE_NAME = "audit_key"
MIN_LENGTH = 32


def load_audit_key(settings: Settings, *, create: bool) -> bytes:
    """The key as bytes; BadInput naming where it was looked for when it is missing or short."""
    if settings.audit_key is not None:
        return _checked(settings.audit_key.get_secret_value(), "VOUCH_AUDIT_KEY")
    if settings.secrets_dir:
        kept = Path(settings.secrets_dir) / FILE_NAME
        if kept.exists():
            return _checked(_read(kept), str(kept))
    local = Path(FILE_NAME)
    if local.exists():
        return _checked(_read(local), str(local.absolute()))
    if not create:
        raise BadInput("no audit key: set VOUCH_AUDIT_KEY, put a file audit_key in "
                       "VOUCH_SECRETS_DIR, or run this where `vouch serve` keeps ./audit_key")
    return _create(local)


def _checked(value: str, where: str) -> bytes:
    value = value.strip()
    if len(value) < MIN_LENGTH:
        raise BadInput(f"the audit key in {where} is {len(value)} characters long; it needs at "
                       f"least {MIN_LENGTH} (e.g. `openssl rand -hex 32`)")
    return value.encode()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"the audit key file {path} cannot be read: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None


def _create(path: Path) -> bytes:
    """Written whole to a temporary file, then linked into place: two commands starting at once
    in one directory end up with one key, and nobody reads a half-written one."""
    key = secrets.token_hex(32)
    directory = path.absolute().parent
    temporary = directory / f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:  # another process made it first: theirs stands
        return _checked(_read(path), str(path.absolute()))
    except OSError as exc:
        raise BadInput(f"cannot create the audit key file {path.absolute()}: {exc.strerror}") \
            from None
    finally:
        temporary.unlink(missing_ok=True)
    return key.encode()
