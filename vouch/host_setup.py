"""The text of `vouch host-setup`: the shell lines a host runs to trust Vouch's certificates."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ca.errors import BadInput

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
    parts = urlsplit(url)
    if (not _SAFE_URL.fullmatch(url) or parts.scheme not in ("http", "https") or not parts.hostname
            or parts.query or parts.fragment):
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


def host_setup(ca_line: str, url: str, *, target: str | None, principals: tuple[str, ...]) -> str:
    fetch = (f"curl -fsS {url}/krl -o /etc/ssh/vouch_revoked.krl.new && "
             "mv /etc/ssh/vouch_revoked.krl.new /etc/ssh/vouch_revoked.krl")
    lines = [
        "# Vouch host set-up: run as root on each host that should accept Vouch certificates.",
        "",
        "# 1. Trust Vouch's CA for user certificates.",
        "cat > /etc/ssh/vouch_ca.pub <<'EOF'",
        f"{ca_line} vouch-ca",
        "EOF",
        "",
        "# 2. Fetch the revocation list now and every 5 minutes. sshd refuses every certificate",
        "#    while the file is missing or corrupt, so it is replaced atomically (mv).",
        fetch,
        f"echo '*/5 * * * * root {fetch}' > /etc/cron.d/vouch-krl",
        "",
        "# 3. Map certificate principals to login accounts (one principal per line).",
        "mkdir -p /etc/ssh/auth_principals",
    ]
    if principals:
        lines.append(f"#    Target {target}: principals {', '.join(principals)}.")
        lines += [f"echo {p} > /etc/ssh/auth_principals/{p}" for p in principals]
    else:
        lines.append("#    For each login account: echo <principal> > /etc/ssh/auth_principals/<account>")
        lines.append("#    (`vouch host-setup --target NAME` prints the lines for a policy target).")
    lines += [
        "",
        "# 4. Tell sshd, check the configuration, and reload.",
        "cat > /etc/ssh/sshd_config.d/vouch.conf <<'EOF'",
        "TrustedUserCAKeys /etc/ssh/vouch_ca.pub",
        "RevokedKeys /etc/ssh/vouch_revoked.krl",
        "AuthorizedPrincipalsFile /etc/ssh/auth_principals/%u",
        "EOF",
        "sshd -t && systemctl reload ssh",
    ]
    return "\n".join(lines) + "\n"
