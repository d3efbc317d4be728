"""The text of `vouch host-setup`: the shell lines a host runs to trust Vouch's certificates."""

from __future__ import annotations

from ca.errors import BadInput


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
