"""The host-certificate commands: `vouch ca init --host`, `ca pubkey --host`, `ca sign-host` and
`host token` (cli.py wires them into its parser)."""

from __future__ import annotations

import sys
from pathlib import Path

from ca.errors import BadInput
from vouch.settings import secret_value as _secret

HOST_CA_COMMENT = "vouch-host-ca"


def _passphrase(settings) -> bytes | None:
    passphrase = _secret(settings.host_ca_key_passphrase)
    return passphrase.encode() if passphrase else None


def open_host_ca(settings, *, user_ca=None, required: bool = True):
    """The host CA (VOUCH_HOST_CA_KEY) as a ca.cert.HostCa; None when it does not exist yet and
    is not `required` (NoHostCa, exit 1, when it is)."""
    from access.hosts import require
    from ca.keystore import open_host_ca as open_key

    if _same_key(settings.host_ca_key, settings.ca_key):
        raise BadInput("VOUCH_HOST_CA_KEY names the user CA key (VOUCH_CA_KEY): the host CA must "
                       "be a key of its own; create one with `vouch ca init --host`")
    host_ca = open_key(settings.host_ca_key, user_ca=user_ca, module=settings.pkcs11_module,
                       pin=_secret(settings.pkcs11_pin), passphrase=_passphrase(settings))
    return require(host_ca) if required else host_ca


def _same_key(one: str, other: str) -> bool:
    from ca.pkcs11_uri import is_pkcs11_uri

    if is_pkcs11_uri(one) or is_pkcs11_uri(other):
        return one.strip() == other.strip()
    return Path(one).resolve() == Path(other).resolve()


def cmd_ca_init_host(args, ctx) -> int:
    from ca.keystore import create_ca_key
    from ca.pkcs11_uri import is_pkcs11_uri
    from ca.signer import CaKeyType

    s = ctx.settings
    reference = args.key or s.host_ca_key
    if _same_key(reference, s.ca_key):
        raise BadInput(f"{reference!r} is the user CA key (VOUCH_CA_KEY): the host CA must be a "
                       "key of its own (set VOUCH_HOST_CA_KEY, or give --key)")
    public = create_ca_key(reference, CaKeyType(args.type), force=args.force,
                           module=s.pkcs11_module, pin=_secret(s.pkcs11_pin),
                           passphrase=_passphrase(s), comment=HOST_CA_COMMENT)
    where = "token" if is_pkcs11_uri(reference) else f"file {reference}"
    print(f"created {args.type} host CA key in {where}: {public.fingerprint}", file=sys.stderr)
    print(f"{public.line()} {HOST_CA_COMMENT}")
    return 0


def cmd_ca_pubkey_host(args, ctx) -> int:
    print(f"{open_host_ca(ctx.settings).public_key.line()} {HOST_CA_COMMENT}")
    return 0


def cmd_ca_sign_host(args, ctx) -> int:
    from access import host_input, hosts
    from access.context import Access
    from storage.store import SqlStore
    from vouch.ca_cli import _check_writable, deliver, read_key_file, required_reason

    public_key = host_input.host_key(read_key_file(args.pubkey_file, "host public key file"))
    names = host_input.hostnames(args.hostname)
    duration = host_input.duration(args.duration, what="--duration",
                                   longest=hosts.MAX_HOST_VALIDITY)
    reason = required_reason(args.reason, "this host certificate is signed by hand")
    if args.out:
        _check_writable(args.out)
    host_ca = open_host_ca(ctx.settings)
    # The host commands sign with host_ca alone; Access's signer is only ever asked to sign
    # user certificates, which a HostCa refuses.
    access = Access(SqlStore(ctx.database(), ctx.audit_key(create=True)), host_ca)
    certificate = hosts.sign_host(access, host_ca, public_key=public_key, names=names,
                                  duration=duration, actor=ctx.actor, reason=reason)
    deliver(certificate, args.out)
    return 0


def cmd_host_token(args, ctx) -> int:
    from access import hosts
    from access.context import Access
    from access.durations import parse_duration
    from storage.store import SqlStore

    ttl = parse_duration(args.ttl)
    # No CA is needed to make a token: only its hash goes into the database.
    access = Access(SqlStore(ctx.database(), ctx.audit_key(create=True)), None)
    token, record = hosts.create_token(access, names=args.hostname, ttl=ttl, actor=ctx.actor)
    print(f"host token for {', '.join(record.hostnames)}: one use, until "
          f"{record.expires_at:%Y-%m-%d %H:%M:%S} UTC. On the host, as root: "
          "VOUCH_HOST_TOKEN=<token> sh vouch-host-setup.sh", file=sys.stderr)
    print(token)
    return 0


def add_commands(ca_commands, commands, parser_class) -> None:
    """`ca sign-host` and `host token`, in cli.py's parser."""
    sign = ca_commands.add_parser("sign-host", help="sign one host certificate with the host CA")
    sign.add_argument("pubkey_file", metavar="HOST_PUBKEY",
                      help="the host's public key file (ssh_host_*_key.pub), or - for stdin")
    sign.add_argument("--hostname", action="append", required=True, metavar="NAME",
                      help="a name users reach the host by (repeat for aliases)")
    sign.add_argument("--duration", default="30d", metavar="D", help="default 30d, at most 366d")
    sign.add_argument("--reason", required=True, metavar="TEXT", help="why; audited")
    sign.add_argument("--out", metavar="FILE")
    sign.set_defaults(func=cmd_ca_sign_host)

    host = commands.add_parser("host", help="host certificates: enrolment tokens")
    host_commands = host.add_subparsers(dest="host_command", required=True,
                                        parser_class=parser_class)
    token = host_commands.add_parser("token", help="print a one-time host enrolment token")
    token.add_argument("--hostname", action="append", required=True, metavar="NAME",
                       help="a name the host's certificates will carry (repeat for aliases)")
    token.add_argument("--ttl", default="1h", metavar="D", help="how long it can be used "
                       "(default 1h, at most 7d)")
    token.set_defaults(func=cmd_host_token)
