"""`vouch ca init|pubkey|sign`, `vouch revoke` and `vouch krl`: the operator's CA commands
(the host CA's are vouch.host_cli)."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

from ca.errors import BadInput, VouchError
from vouch import host_cli
from vouch.settings import secret_value as _secret

# `vouch ca sign` skips the approval: longer than this needs --max-duration-override.
MAX_DIRECT = timedelta(hours=24)


def cmd_ca_init(args, ctx) -> int:
    if args.host:
        return host_cli.cmd_ca_init_host(args, ctx)
    from ca.keystore import create_ca_key
    from ca.pkcs11_uri import is_pkcs11_uri
    from ca.signer import CaKeyType

    s = ctx.settings
    reference = args.key or s.ca_key
    passphrase = _secret(s.ca_key_passphrase)
    public = create_ca_key(reference, CaKeyType(args.type), force=args.force,
                           module=s.pkcs11_module, pin=_secret(s.pkcs11_pin),
                           passphrase=passphrase.encode() if passphrase else None)
    where = "token" if is_pkcs11_uri(reference) else f"file {reference}"
    print(f"created {args.type} CA key in {where}: {public.fingerprint}", file=sys.stderr)
    ctx.audit_key(create=True)  # beside it, if there is none yet (never printed)
    print(public.line() + " vouch-ca")
    return 0


def cmd_ca_pubkey(args, ctx) -> int:
    if args.host:
        return host_cli.cmd_ca_pubkey_host(args, ctx)
    print(ctx.signer().public_key.line() + " vouch-ca")
    return 0


def cmd_ca_sign(args, ctx) -> int:
    from access.context import Access
    from access.durations import parse_duration
    from access.issuing import sign_direct
    from ca.cert import parse_source_addresses
    from ca.keys import parse_public_key
    from storage.db import StorageUnavailable
    from storage.store import SqlStore

    public_key = parse_public_key(read_key_file(args.pubkey_file, "public key file"))
    duration = parse_duration(args.duration)
    if duration > MAX_DIRECT and not args.max_duration_override:
        raise BadInput(f"--duration {args.duration} is longer than 24h: add "
                       "--max-duration-override if this is really meant")
    reason = required_reason(args.reason, "this certificate is signed outside Slack")
    # An empty value is a mistake, not "no restriction": refuse it rather than sign without it.
    source = parse_source_addresses(args.source_address) if args.source_address is not None else None
    if args.force_command is not None and not args.force_command.strip():
        raise BadInput("--force-command is empty: give the command, or leave the option out")
    if args.key_id is not None and not args.key_id.strip():
        raise BadInput("--key-id is empty: give an ID, or leave the option out for the default")
    if args.out:
        _check_writable(args.out)  # before signing: a certificate nobody receives is not recorded
    signer = ctx.signer()
    store = None
    if args.no_record:
        # The operator's last resort when the database is gone: said plainly, every time.
        print("vouch: warning: --no-record: this certificate is in no audit log and cannot be "
              "revoked by its serial (revoke the key instead)", file=sys.stderr)
    else:
        try:
            store = SqlStore(ctx.database(), ctx.audit_key(create=True))
        except StorageUnavailable as exc:
            raise VouchError(f"not signed: the certificate could not be recorded ({exc.message}); "
                             "--no-record signs it anyway, unrecorded") from None
    certificate = sign_direct(
        Access(store, signer), public_key=public_key, principals=args.principal,
        duration=duration, actor=ctx.actor, reason=reason, key_id=args.key_id,
        source_address=source, force_command=args.force_command)
    deliver(certificate, args.out)
    return 0


def cmd_revoke(args, ctx) -> int:
    from access.revoking import revoke

    done = revoke(ctx.access(), args.reference, actor=ctx.actor, reason=args.reason)
    if done.cancelled is not None:
        print(f"cancelled: request {done.cancelled.id} (approved, no certificate yet; "
              "none will be issued)")
    for item in done.certificates:
        state = "revoked" if item.newly else "already revoked"
        print(f"{state}: serial {item.serial}")
    return 0


def cmd_krl(args, ctx) -> int:
    from access.revoking import krl

    data = krl(ctx.access(writes=False)).data
    if args.out:
        _write_file(args.out, data, mode=0o644)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


# --- shared with the host CA's `ca sign-host` (vouch.host_cli) --------------------------------

def read_key_file(path: str, what: str) -> str:
    """A public key file's text, or stdin for `-`."""
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {what} {path!r}: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None


def required_reason(text: str, why: str) -> str:
    reason = " ".join(text.split())
    if not reason:
        raise BadInput(f"--reason is empty: say why {why} (it goes into the audit log)")
    return reason


def deliver(certificate, out: str | None) -> None:
    """The certificate line to `out` (0644, saying what it is on stderr) or to stdout."""
    line = certificate.line() + "\n"
    if out:
        _write_file(out, line.encode(), mode=0o644)
        print(f"wrote {out}: serial {certificate.spec.serial}, valid until "
              f"{certificate.spec.valid_before:%Y-%m-%d %H:%M:%S} UTC", file=sys.stderr)
    else:
        sys.stdout.write(line)


def _check_writable(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BadInput(f"cannot write {path!r}: the directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise BadInput(f"cannot write {path!r}: no permission to write in {directory!r}")


def _write_file(path: str, data: bytes, *, mode: int) -> None:
    try:
        from ca.krl import write_atomic

        write_atomic(path, data)
        os.chmod(path, mode)
    except OSError as exc:
        raise BadInput(f"cannot write {path!r}: {exc.strerror}") from None
