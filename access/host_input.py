"""What hosts and operators hand in for host certificates, checked: host names, host keys,
enrolment tokens, and the known_hosts pattern (VOUCH_HOST_PATTERN)."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta

from access.durations import format_duration, parse_duration
from access.errors import BadInput
from access.signed_calls import Unauthorized
from ca.keys import PublicKey, parse_public_key

MAX_HOSTNAMES = 32
MAX_HOST_KEYS = 8  # a host has one key per type; a few more for a rotation
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521", "ssh-rsa")
TOKEN_PREFIX = "vht_"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_TOKEN = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}")
# ssh_config patterns: names, wildcards, negation, lists; nothing a line could be broken with.
_PATTERN = re.compile(r"[A-Za-z0-9.*?!,:\[\]_-]{1,1000}")


def hostnames(names: Iterable[str]) -> tuple[str, ...]:
    """Host names for a certificate's principals: DNS names or IP addresses, lowercased (ssh
    compares them lowercased), each once. Wildcards are refused: ssh would accept a
    certificate for `*` as any host at all."""
    checked: list[str] = []
    for raw in names:
        if not isinstance(raw, str):
            raise BadInput("host names must be strings")
        name = raw.strip().lower()
        if not name:
            raise BadInput("a host name is empty")
        if not _is_address(name) and (len(name) > 253 or not _HOSTNAME.fullmatch(name)):
            raise BadInput(f"{raw[:80]!r} is not a host name (letters, digits, '-' and dots, "
                           "or an IP address; no wildcards)")
        if name not in checked:
            checked.append(name)
    if not checked:
        raise BadInput("give at least one host name (--hostname NAME)")
    if len(checked) > MAX_HOSTNAMES:
        raise BadInput(f"{len(checked)} host names: at most {MAX_HOSTNAMES} are allowed")
    return tuple(checked)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_key(line: str) -> PublicKey:
    """A host's public key (ssh_host_*_key.pub), refused like user keys (DSA, short RSA,
    certificates, garbage); security-key types are user keys only."""
    if not isinstance(line, str):
        raise BadInput("a public key must be an OpenSSH public key line")
    words = line.split(None, 1)
    kind = words[0] if words else ""
    # DSA, certificates and PEM files get parse_public_key's own explanations.
    if kind and kind not in HOST_KEY_TYPES and not kind.startswith(("ssh-dss", "-")) \
            and not kind.endswith("-cert-v01@openssh.com"):
        raise BadInput(f"{kind[:40]!r} is not a host key type: accepted are "
                       + ", ".join(HOST_KEY_TYPES))
    return parse_public_key(line)


def host_keys(lines: Iterable[str]) -> tuple[PublicKey, ...]:
    """Several host keys, each once (by fingerprint)."""
    keys: dict[str, PublicKey] = {}
    for line in lines:
        key = host_key(line)
        keys.setdefault(key.fingerprint, key)
    if not keys:
        raise BadInput("no public keys: send the host's /etc/ssh/ssh_host_*_key.pub lines")
    if len(keys) > MAX_HOST_KEYS:
        raise BadInput(f"{len(keys)} host keys: at most {MAX_HOST_KEYS} are allowed")
    return tuple(keys.values())


def new_token() -> str:
    """A one-time enrolment token: 32 random bytes, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What is stored of a token: its sha256. Unauthorized for anything not shaped like one."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token.strip()):
        raise Unauthorized("that is not a Vouch host token (vht_…): make one with "
                           "`vouch host token --hostname NAME`")
    return hashlib.sha256(token.strip().encode()).hexdigest()


def token_id(digest: str) -> str:
    """How logs and the audit name a token: a prefix of its hash, useless for enrolling."""
    return digest[:12]


def host_pattern(pattern: str) -> str:
    """VOUCH_HOST_PATTERN, for `@cert-authority <pattern> …`: an ssh_config host pattern list."""
    pattern = pattern.strip()
    if not _PATTERN.fullmatch(pattern):
        raise BadInput(f"VOUCH_HOST_PATTERN {pattern[:80]!r} is not a host pattern list "
                       "such as * or *.example.com,10.0.0.*")
    return pattern


def duration(text: str, *, what: str, longest: timedelta) -> timedelta:
    """A duration as the contract writes them (`30d`, `1h`), no longer than `longest`; the
    refusal names the cap."""
    value = parse_duration(text)
    if value > longest:
        raise BadInput(f"{what} {text.strip()} is too long: at most {format_duration(longest)}")
    return value
