"""The text of `vouch host-setup`: the shell lines a host runs to trust Vouch's certificates."""

from __future__ import annotations

import re
from shlex import quote
from urllib.parse import urlsplit

from ca.errors import BadInput
from ca.keys import PublicKey
from vouch.host_cert_script import SCRIPT as HOST_SCRIPT
from vouch.host_cert_script import UNIT as HOST_UNIT
from vouch.host_cert_script import host_cert_script
from vouch.host_cert_script import service_unit as host_service_unit
from vouch.host_cert_script import timer_unit as host_timer_unit
from vouch.krl_fetch import FETCHER, KRL, UNIT, fetch_script, service_unit, timer_unit

# The URL goes into a shell script: letters, digits and the few marks a URL to /krl needs, so
# nothing in it can be read by the shell as a quote, a substitution or a word break.
_SAFE_URL = re.compile(r"[A-Za-z0-9.:/_~%+\[\]-]+")


def public_url(option: str | None, setting: str | None) -> str:
    """Where hosts reach Vouch: --public-url, else VOUCH_PUBLIC_URL; no trailing slash.

    Refused (BadInput) when neither is given, or when it is not http(s) with a host: a host that
    fetches its KRL from a placeholder keeps accepting revoked certificates without a word."""
    if option:
        url, source = option, "--public-url"
    elif setting:
        url, source = setting, "VOUCH_PUBLIC_URL"
    else:
        raise BadInput("no public URL: give --public-url URL or set VOUCH_PUBLIC_URL to where "
                       "hosts reach Vouch (they fetch its /krl from there)")
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[::1": an IPv6 host with no closing bracket
        parts = None
    if (parts is None or not _SAFE_URL.fullmatch(url) or parts.scheme not in ("http", "https")
            or not parts.hostname or parts.query or parts.fragment):
        raise BadInput(f"{source} {url!r} is not an http(s) URL with a host and no query, "
                       "e.g. https://vouch.example.com")
    return url.rstrip("/")


def target_principals(policy_file: str, name: str) -> tuple[str, ...]:
    """The principals of policy target `name`, for the host's auth_principals files."""
    from access.policy_file import load_policy

    policy = load_policy(policy_file)
    target = policy.target(name)
    if target is None:
        raise BadInput(f"unknown target {name!r}; targets: {', '.join(sorted(policy.targets))}")
    return target.principals


def host_setup(ca_line: str, url: str, *, target: str | None, principals: tuple[str, ...],
               host_ca: PublicKey | None = None) -> str:
    """The set-up script: it stops at the first failure, and before sshd's configuration changes
    unless the KRL is in place (sshd refuses every public key while RevokedKeys is missing).
    With `host_ca`, it also enrols the host for host certificates and renews them daily."""
    about = f" for target {target}" if target else ""
    return "\n".join([
        "#!/bin/sh",
        f"# Vouch host set-up{about}: run as root on each host to accept Vouch certificates.",
        *(_token_usage() if host_ca else []),
        "set -eu",
        *(_token() if host_ca else []),
        "",
        "# 1. Trust Vouch's CA for user certificates.",
        f"cat > /etc/ssh/vouch_ca.pub <<'EOF'\n{ca_line} vouch-ca\nEOF",
        "",
        *_principals(target, principals),
        "",
        "# 3. The KRL fetcher, and a first fetch: sshd must not hear of a KRL it cannot read.",
        f"cat > {FETCHER} <<'VOUCH_KRL_FETCH'\n{fetch_script(url)}VOUCH_KRL_FETCH",
        f"chmod 755 {FETCHER}",
        FETCHER,
        "",
        *_schedule(),
        "",
        *_sshd_config(principals),
        *(_host_certificates(url, host_ca) if host_ca else []),
    ]) + "\n"


def _token_usage() -> list[str]:
    return ["# With host certificates: VOUCH_HOST_TOKEN=<token> sh this-script, or sh this-script",
            "# <token>, the one-time token from `vouch host token --hostname NAME`."]


def _token() -> list[str]:
    # Asked for first, so a missing token changes nothing on the host.
    return ['VOUCH_HOST_TOKEN=${VOUCH_HOST_TOKEN:-${1:-}}',
            '[ -n "$VOUCH_HOST_TOKEN" ] || { echo "give the one-time host token: '
            'VOUCH_HOST_TOKEN=<token> sh $0, or sh $0 <token>" >&2; exit 2; }']


def _host_certificates(url: str, host_ca: PublicKey) -> list[str]:
    conf = "/etc/ssh/sshd_config.d/vouch-host.conf"
    unit = f"/etc/systemd/system/{HOST_UNIT}"
    return [
        "",
        "# 7. Host certificates from Vouch's host CA: users' ssh trusts this host through the",
        "#    @cert-authority line of Vouch's /known_hosts, with no prompt. Enrol with the token,",
        "#    tell sshd (HostCertificate for each host key), and renew daily from a week before",
        "#    expiry, with a signature by the host's own key (no secret is kept here).",
        f"cat > {HOST_SCRIPT} <<'VOUCH_HOST_CERT'\n"
        f"{host_cert_script(url, host_ca.fingerprint)}VOUCH_HOST_CERT",
        f"chmod 755 {HOST_SCRIPT}",
        f"VOUCH_HOST_TOKEN=$VOUCH_HOST_TOKEN {HOST_SCRIPT} enrol",
        "for cert in /etc/ssh/ssh_host_*_key-cert.pub; do",
        '    if [ -s "$cert" ]; then echo "HostCertificate $cert"; fi',
        f"done > {conf}",
        f"/usr/sbin/sshd -t || {{ rm -f {conf}; echo 'sshd -t failed: {conf} removed' >&2;",
        "    exit 1; }",
        "systemctl reload ssh 2>/dev/null || systemctl reload sshd 2>/dev/null ||",
        "    kill -HUP \"$(cat \"$(/usr/sbin/sshd -T | sed -n 's/^pidfile //p')\")\" || {",
        "    echo 'sshd was not reloaded: reload it to present the host certificates' >&2;",
        "    exit 1; }",
        "if [ -d /run/systemd/system ]; then",
        f"    cat > {unit}.service <<'EOF'\n{host_service_unit()}EOF",
        f"    cat > {unit}.timer <<'EOF'\n{host_timer_unit()}EOF",
        "    systemctl daemon-reload",
        f"    systemctl enable --now {HOST_UNIT}.timer",
        "else",
        "    # An hour and minute picked per host, so that hosts set up together ask apart.",
        "    minute=$(( $(od -An -N1 -tu1 /dev/urandom) % 60 ))",
        "    hour=$(( $(od -An -N1 -tu1 /dev/urandom) % 24 ))",
        f"    echo \"$minute $hour * * * root {HOST_SCRIPT} renew\" > /etc/cron.d/{HOST_UNIT}",
        "fi",
    ]


def _principals(target: str | None, principals: tuple[str, ...]) -> list[str]:
    lines = ["# 2. Map certificate principals to login accounts (one principal per line).",
             "mkdir -p /etc/ssh/auth_principals"]
    if not principals:
        return lines + [
            "#    For each login account: echo <principal> > /etc/ssh/auth_principals/<account>",
            "#    (`vouch host-setup --target NAME` prints the lines for a policy target)."]
    return lines + [f"#    Target {target}: principals {', '.join(principals)}.",
                    *(f"echo {quote(p)} > {quote('/etc/ssh/auth_principals/' + p)}"
                      for p in principals)]


def _schedule() -> list[str]:
    unit = f"/etc/systemd/system/{UNIT}"
    return [
        "# 4. Fetch it every 5 minutes: a systemd timer where systemd runs, else cron. (Asked",
        "#    of /run/systemd/system as sd_booted(3) does: containers may have systemctl alone.)",
        "if [ -d /run/systemd/system ]; then",
        f"    cat > {unit}.service <<'EOF'\n{service_unit()}EOF",
        f"    cat > {unit}.timer <<'EOF'\n{timer_unit()}EOF",
        "    systemctl daemon-reload",
        f"    systemctl enable --now {UNIT}.timer",
        "else",
        "    # A minute of the five picked per host, so that hosts set up together ask apart.",
        "    minute=$(( $(od -An -N1 -tu1 /dev/urandom) % 5 ))",
        f"    echo \"$minute-59/5 * * * * root {FETCHER}\" > /etc/cron.d/vouch-krl",
        "fi",
    ]


def _sshd_config(principals: tuple[str, ...]) -> list[str]:
    conf = "/etc/ssh/sshd_config.d/vouch.conf"
    if principals:
        only = [
            "# Certificate-only accounts: this target's principals. sshd ignores their",
            "# authorized_keys, so no key left there outlives an approval; others keep theirs.",
            f"Match User {','.join(principals)}",
            "    AuthorizedKeysFile none",
        ]
    else:
        only = [
            "# Certificate-only accounts: not chosen for you, as `none` for every account would",
            "# also lock out the key you may be logged in with. For accounts only Vouch opens:",
            "# Match User <account>[,<account>...]",
            "#     AuthorizedKeysFile none",
        ]
    return [
        "# 5. Tell sshd, through the Include at the top of sshd_config (first value wins there).",
        "grep -Eqi '^[[:space:]]*Include[[:space:]].*sshd_config\\.d' /etc/ssh/sshd_config || {",
        ("    echo \"add 'Include /etc/ssh/sshd_config.d/*.conf' at the top of "
         "/etc/ssh/sshd_config, then run this again\" >&2"),
        "    exit 1; }",
        "mkdir -p /etc/ssh/sshd_config.d",
        f"cat > {conf} <<'EOF'",
        "TrustedUserCAKeys /etc/ssh/vouch_ca.pub",
        f"RevokedKeys {KRL}",
        "AuthorizedPrincipalsFile /etc/ssh/auth_principals/%u",
        *only,
        "EOF",
        "",
        "# 6. Check, then reload sshd once for its configuration; the KRL needs no reload, as sshd",
        "#    reads RevokedKeys for every key it checks. The unit is ssh on Debian/Ubuntu, sshd on",
        "#    RHEL; without systemd, HUP the listener by its PID file (HUP to every sshd process",
        "#    would end the open sessions, yours too).",
        f"/usr/sbin/sshd -t || {{ rm -f {conf}; echo 'sshd -t failed: {conf} removed' >&2;",
        "    exit 1; }",
        "systemctl reload ssh 2>/dev/null || systemctl reload sshd 2>/dev/null ||",
        "    kill -HUP \"$(cat \"$(/usr/sbin/sshd -T | sed -n 's/^pidfile //p')\")\" || {",
        "    echo 'sshd was not reloaded: reload it to use Vouch certificates' >&2; exit 1; }",
    ]
