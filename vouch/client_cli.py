"""`vouch request` and `vouch ssh` on the command line (the flow itself is vouch.client)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from access.durations import parse_duration
from ca.errors import BadInput
from vouch import client_keys
from vouch.client import (Client, install, request_access, reusable, seconds_left, server_url,
                          trust_host_ca)

DEFAULT_DURATION = "1h"


def add_client_commands(commands) -> None:
    request = commands.add_parser("request", help="ask for access from the terminal, signed "
                                  "with your SSH key; wait for the decision")
    request.add_argument("target", metavar="TARGET")
    request.add_argument("duration", metavar="DURATION", help="e.g. 30m, 2h")
    request.add_argument("reason", metavar="REASON", nargs="+")
    _common(request)
    request.set_defaults(func=cmd_request)

    ssh = commands.add_parser("ssh", help="request (or reuse) a certificate, then ssh with it")
    ssh.add_argument("target", metavar="TARGET")
    ssh.add_argument("--duration", default=DEFAULT_DURATION, metavar="D",
                     help=f"default {DEFAULT_DURATION}")
    ssh.add_argument("--reason", metavar="TEXT", help="asked for when not given")
    _common(ssh)
    ssh.add_argument("ssh_args", nargs="*", metavar="-- SSH ARGS",
                     help="what to give ssh, e.g. -- postgres@db1.internal")
    ssh.set_defaults(func=cmd_ssh)


def split_ssh_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """`vouch ssh … -- SSH ARGS`: what follows `--` is ssh's, untouched (argparse's own `--`
    handling does not reach into a subcommand)."""
    if argv[:1] == ["ssh"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def _common(parser) -> None:
    parser.add_argument("--key", metavar="PATH", help="your SSH key (default: ~/.ssh/id_ed25519, "
                        "id_ecdsa, … whichever exists first)")
    parser.add_argument("--url", metavar="URL", help="the Vouch server (default: VOUCH_URL)")


def _client(args, settings) -> Client:
    return Client(server_url(args.url or settings.url), client_keys.find_key(args.key))


def cmd_request(args, ctx) -> int:
    parse_duration(args.duration)  # bad input fails here, before any signing or touch
    client = _client(args, ctx.settings)
    request = request_access(client, args.target, args.duration, " ".join(args.reason))
    print(install(client, request))
    return 0


def cmd_ssh(args, ctx) -> int:
    ssh_args = args.ssh_args
    if not ssh_args:
        raise BadInput(f"say where to log in: vouch ssh {args.target} -- user@host")
    parse_duration(args.duration)
    client = _client(args, ctx.settings)
    request = reusable(client, args.target)
    if request is not None:
        print(f"reusing the certificate of {request['id']} for {args.target} "
              f"({seconds_left(request) // 60} min left)", file=sys.stderr)
    else:
        reason = args.reason or _ask_reason(args.target)
        request = request_access(client, args.target, args.duration, reason)
        install(client, request)
    try:
        if trust_host_ca(client.url):
            print(f"added Vouch's host CA to ~/.ssh/known_hosts (from {client.url}/known_hosts)",
                  file=sys.stderr)
    except OSError as exc:  # a read-only known_hosts: log in anyway, as ssh itself would
        print(f"could not add Vouch's host CA to ~/.ssh/known_hosts: {exc.strerror}",
              file=sys.stderr)
    identity = client.key.private if client.key.private.exists() else \
        Path(f"{client.key.private}.pub")
    argv = ["ssh", "-i", str(identity), "-o", f"CertificateFile={client.key.certificate_path}",
            *ssh_args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("ssh", argv)
    return 1  # not reached


def _ask_reason(target: str) -> str:
    if not sys.stdin.isatty():
        raise BadInput("--reason is required (why you need this access; approvers read it)")
    reason = input(f"Why do you need {target}? ").strip()
    if not reason:
        raise BadInput("a reason is required: approvers read it")
    return reason
