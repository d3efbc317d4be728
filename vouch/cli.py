"""The `vouch` command. Exit 0 on success, 2 on bad input or usage (one line on stderr), 1 otherwise."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ca.errors import BadInput, VouchError
from vouch import host_cli
from vouch.ca_cli import cmd_ca_init, cmd_ca_pubkey, cmd_ca_sign, cmd_krl, cmd_revoke
from vouch.host_setup import host_setup, public_url, target_principals
from vouch.settings import Settings, secret_value as _secret


PIN_WARNING = ("vouch: warning: the PKCS#11 URI on the command line holds its PIN (pin-value), "
               "which every user of this host can read (ps); give it with "
               "pin-source=file:PATH or VOUCH_PKCS11_PIN instead")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage blocks; the contract wants one line
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


class Context:
    """What commands need, built lazily from settings once per invocation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.actor = f"cli:{_os_user()}"

    def signer(self):
        from ca.keystore import open_signer

        s = self.settings
        passphrase = _secret(s.ca_key_passphrase)
        return open_signer(s.ca_key, module=s.pkcs11_module, pin=_secret(s.pkcs11_pin),
                           passphrase=passphrase.encode() if passphrase else None)

    def database(self, *, allow_init: bool = True):
        from storage.db import Database

        db = Database(self.settings.database_url)
        db.prepare(allow_init=allow_init)
        return db

    def audit_key(self, *, create: bool) -> bytes:
        from vouch.audit_key import load_audit_key

        return load_audit_key(self.settings, create=create)

    def access(self, *, writes: bool = True):
        """The use cases' context on the database and the CA key (no policy, no Slack). Only a
        command that writes to the audit log needs (and may create) the audit key."""
        from access.context import Access
        from storage.store import SqlStore

        key = self.audit_key(create=True) if writes else None
        return Access(SqlStore(self.database(), key), self.signer())


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


# --- commands -------------------------------------------------------------------------------

def cmd_policy_check(args, ctx: Context) -> int:
    from access.policy_file import PolicyError, check_policy_file

    path = args.file or ctx.settings.policy_file
    try:
        checked = check_policy_file(path)
    except PolicyError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        return 2
    for line in checked.lines():  # warnings: the policy loads, `serve` would run with it
        print(line, file=sys.stderr)
    policy = checked.policy
    breakglass = "break-glass on" if policy.breakglass else "no break-glass"
    print(f"{path}: ok ({len(policy.targets)} target(s): {', '.join(sorted(policy.targets))}; {breakglass})")
    return 0


def cmd_host_setup(args, ctx: Context) -> int:
    url = public_url(args.public_url, ctx.settings.public_url)
    principals = target_principals(ctx.settings.policy_file, args.target) if args.target else ()
    host_ca = host_cli.open_host_ca(ctx.settings).public_key if args.host_certs else None
    print(host_setup(ctx.signer().public_key.line(), url,
                     target=args.target, principals=principals, host_ca=host_ca), end="")
    return 0


def cmd_serve(args, ctx: Context) -> int:
    from vouch.serve import serve

    serve(ctx.settings, host=args.host, port=args.port)
    return 0


def cmd_sandbox(args, ctx: Context) -> int:
    from bot.sandbox.server import run_sandbox

    run_sandbox(port=args.port, host=args.host, workdir=Path(args.dir))
    return 0


def cmd_db_upgrade(args, ctx: Context) -> int:
    from storage.db import Database

    before, after = Database(ctx.settings.database_url).upgrade()
    if before == after:
        print(f"database already at migration {after}")
    else:
        print(f"database upgraded from {before or 'empty'} to {after}")
    return 0


# --- parser ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from vouch.audit_cli import cmd_audit_checkpoint, cmd_audit_export, cmd_audit_verify
    from vouch.client_cli import add_client_commands

    from ca.signer import CaKeyType

    parser = _Parser(prog="vouch", description="Short-lived OpenSSH certificates, vouched for in Slack.")
    parser.add_argument("--version", action="version", version=f"vouch {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the bot: Slack endpoint, web endpoints, jobs")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.set_defaults(func=cmd_serve)

    ca = commands.add_parser("ca", help="the certificate authority's key and direct signing")
    ca_commands = ca.add_subparsers(dest="ca_command", required=True, parser_class=_Parser)
    init = ca_commands.add_parser("init", help="create the CA key")
    init.add_argument("--type", choices=[t.value for t in CaKeyType], default="ecdsa-p256")
    init.add_argument("--key", metavar="FILE|PKCS11-URI", help="default: VOUCH_CA_KEY")
    init.add_argument("--force", action="store_true", help="replace an existing CA key")
    init.add_argument("--host", action="store_true",
                      help="the separate host CA instead (default key: VOUCH_HOST_CA_KEY)")
    init.set_defaults(func=cmd_ca_init)
    pubkey = ca_commands.add_parser("pubkey", help="print the CA public key (TrustedUserCAKeys)")
    pubkey.add_argument("--host", action="store_true", help="the host CA's (@cert-authority)")
    pubkey.set_defaults(func=cmd_ca_pubkey)
    sign = ca_commands.add_parser("sign", help="sign one user certificate directly")
    sign.add_argument("pubkey_file", metavar="PUBKEY_FILE", help="OpenSSH public key file, or - for stdin")
    sign.add_argument("--principal", action="append", required=True, metavar="P")
    sign.add_argument("--duration", required=True, metavar="D", help="e.g. 1h, 90m, 1h30m")
    sign.add_argument("--key-id", metavar="ID")
    sign.add_argument("--source-address", metavar="CIDR[,CIDR…]")
    sign.add_argument("--force-command", metavar="CMD")
    sign.add_argument("--out", metavar="FILE")
    sign.add_argument("--reason", required=True, metavar="TEXT",
                      help="why it is signed outside Slack; audited")
    sign.add_argument("--max-duration-override", action="store_true",
                      help="allow a duration over 24h")
    sign.add_argument("--no-record", action="store_true",
                      help="sign even when the database cannot record it (it then cannot be "
                           "revoked by serial)")
    sign.set_defaults(func=cmd_ca_sign)
    host_cli.add_commands(ca_commands, commands, _Parser)

    revoke = commands.add_parser("revoke", help="revoke a certificate or a request's certificates")
    revoke.add_argument("reference", metavar="serial|request-id")
    revoke.add_argument("--reason", metavar="TEXT")
    revoke.set_defaults(func=cmd_revoke)

    krl = commands.add_parser("krl", help="write the OpenSSH KRL of revoked certificates")
    krl.add_argument("--out", metavar="FILE")
    krl.set_defaults(func=cmd_krl)

    policy = commands.add_parser("policy", help="the policy file")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, parser_class=_Parser)
    check = policy_commands.add_parser("check", help="validate a policy file")
    check.add_argument("file", nargs="?", metavar="FILE", help="default: VOUCH_POLICY_FILE")
    check.set_defaults(func=cmd_policy_check)

    host = commands.add_parser("host-setup", help="print what a host needs to trust Vouch")
    host.add_argument("--target", metavar="NAME", help="also print the principals of this target")
    host.add_argument("--public-url", metavar="URL",
                      help="where hosts reach Vouch for /krl (default: VOUCH_PUBLIC_URL)")
    host.add_argument("--host-certs", action="store_true",
                      help="also enrol the host for host certificates and renew them daily")
    host.set_defaults(func=cmd_host_setup)

    sandbox = commands.add_parser("sandbox", help="the local Slack sandbox: the real bot and a "
                                  "page that plays Slack")
    sandbox.add_argument("--port", type=int, default=8080)
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--dir", default="sandbox", metavar="DIR",
                         help="its database, CA key, policy and demo key (default ./sandbox)")
    sandbox.set_defaults(func=cmd_sandbox)

    db = commands.add_parser("db", help="database migrations")
    db_commands = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    db_commands.add_parser("upgrade", help="apply database migrations").set_defaults(func=cmd_db_upgrade)

    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    verify = audit_commands.add_parser("verify", help="check the keyed chain and its checkpoints")
    verify.add_argument("--checkpoints", metavar="FILE",
                        help="signed checkpoints (default: VOUCH_AUDIT_CHECKPOINTS)")
    verify.set_defaults(func=cmd_audit_verify)
    audit_commands.add_parser("checkpoint", help="sign the chain's head now and append it to "
                              "VOUCH_AUDIT_CHECKPOINTS").set_defaults(func=cmd_audit_checkpoint)
    export = audit_commands.add_parser("export", help="events as JSON lines")
    export.add_argument("--since", metavar="ISO8601")
    export.add_argument("--until", metavar="ISO8601")
    export.set_defaults(func=cmd_audit_export)
    add_client_commands(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vouch")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _pin_arguments(argv: Sequence[str]) -> list[str]:
    """Arguments holding a `pkcs11:` URI with its PIN, even a malformed one: argv is public."""
    return [arg for arg in argv if "pkcs11:" in arg.lower() and "pin-value" in arg.lower()]


def _without_pins(message: str, pins: list[str]) -> str:
    for arg in pins:  # argparse quotes an unrecognised argument whole
        message = message.replace(arg, "pkcs11:… (PIN hidden)")
    if "pin-value" in message.lower():
        return "vouch: the command line is not valid (see `vouch --help`); not repeated here, " \
               "as it holds a PIN"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    from vouch.client_cli import split_ssh_args

    argv = sys.argv[1:] if argv is None else list(argv)
    pins = _pin_arguments(argv)
    if pins:
        print(PIN_WARNING, file=sys.stderr)
    try:
        argv, ssh_args = split_ssh_args(argv)
        args = build_parser().parse_args(argv)
        if ssh_args:
            args.ssh_args = [*args.ssh_args, *ssh_args]
        return _run(args.func, args)
    except UsageError as exc:
        print(_without_pins(str(exc), pins), file=sys.stderr)
        return 2


def _run(func: Callable, args) -> int:
    from pydantic import ValidationError

    try:
        settings = Settings.load()
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"vouch: bad setting VOUCH_{str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return 2
    try:
        return func(args, Context(settings))
    except BadInput as exc:
        lines = exc.lines() if hasattr(exc, "lines") else [f"vouch: {exc.message}"]
        for line in lines:  # a policy file's problems: every one, as FILE:LINE: message
            print(line, file=sys.stderr)
        return 2
    except VouchError as exc:
        print(f"vouch: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("VOUCH_DEBUG"):
            raise
        print(f"vouch: unexpected error ({type(exc).__name__}: {str(exc)[:200]}); "
              "rerun with VOUCH_DEBUG=1 for details", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
