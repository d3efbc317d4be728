"""The KRL fetcher `vouch host-setup` installs on each host, and what runs it every 5 minutes.

A POSIX sh script: hosts have curl and ssh-keygen, not Python. Its paths are variables at the
top, overridable from the environment, so tests run it against a temporary directory.
"""

from __future__ import annotations

FETCHER = "/usr/local/sbin/vouch-krl-fetch"
KRL = "/etc/ssh/vouch_revoked.krl"
UNIT = "vouch-krl-fetch"

_SCRIPT = r"""#!/bin/sh
# vouch-krl-fetch: keep sshd's RevokedKeys file in step with Vouch's /krl (installed by
# `vouch host-setup`). Exit 0 when the KRL is current, 1 when it could not be refreshed; the
# KRL in place is never touched then, since a missing or corrupt one makes sshd refuse every key.
set -u

URL=${VOUCH_KRL_URL:-'@URL@/krl'}
KRL=${VOUCH_KRL_FILE:-@KRL@}
ETAG=${VOUCH_KRL_ETAG_FILE:-$KRL.etag}  # the ETag of the KRL in place, for If-None-Match
SSH_KEYGEN=${VOUCH_SSH_KEYGEN:-ssh-keygen}

say() { echo "vouch-krl-fetch: $*" >&2; }

# Temporary files beside the KRL: mv within one directory is an atomic rename.
dir=$(dirname "$KRL")
new=$(mktemp "$dir/.vouch-krl.XXXXXX") || { say "cannot write in $dir"; exit 1; }
headers=$new.headers
trap 'rm -f "$new" "$headers" "$new.etag"' EXIT
trap 'exit 1' HUP INT TERM

# Ask "changed since?" only when there is a KRL to keep: a deleted one must come back.
set --
if [ -s "$KRL" ] && [ -s "$ETAG" ]; then
    set -- -H "If-None-Match: $(head -n 1 "$ETAG")"
fi
# By headers, not curl's --etag-save/--etag-compare: those need curl 7.68 (RHEL 8 has 7.61).
code=$(curl -sS --connect-timeout 10 --max-time 120 --max-filesize 67108864 \
    -o "$new" -D "$headers" -w '%{http_code}' "$@" "$URL") || {
    say "cannot fetch $URL; keeping $KRL"; exit 1; }
case $code in
    304) exit 0 ;;
    200) ;;
    *) say "$URL answered HTTP $code; keeping $KRL"; exit 1 ;;
esac

# `ssh-keygen -Q -l` lists a KRL and fails on anything else (OpenSSH 9.2: an empty, truncated
# or HTML file, or a plain list of keys). sshd itself would read a non-KRL as a list of keys
# and so revoke nothing: only a real KRL may replace the one in place.
if ! "$SSH_KEYGEN" -Q -l -f "$new" >/dev/null 2>&1; then
    say "$URL did not send a valid KRL; keeping $KRL"; exit 1
fi
chmod 644 "$new"
mv -f "$new" "$KRL" || { say "cannot replace $KRL"; exit 1; }
# No reload: sshd reads RevokedKeys afresh for every key it checks.
tr -d '\r' < "$headers" | sed -n 's/^[Ee][Tt][Aa][Gg]:[[:space:]]*//p' | tail -n 1 > "$new.etag"
mv -f "$new.etag" "$ETAG"
say "installed a new KRL from $URL"
"""

_SERVICE = f"""[Unit]
Description=Fetch Vouch's certificate revocation list for sshd
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={FETCHER}
"""

# RandomizedDelaySec: hosts set up together must not all ask at the same second.
_TIMER = """[Unit]
Description=Fetch Vouch's certificate revocation list every 5 minutes

[Timer]
OnBootSec=1min
OnUnitActiveSec=5min
RandomizedDelaySec=1min

[Install]
WantedBy=timers.target
"""


def fetch_script(url: str, krl: str = KRL) -> str:
    """The fetcher for a Vouch reached at `url` (already checked: no shell-special characters)."""
    return _SCRIPT.replace("@URL@", url).replace("@KRL@", krl)


def service_unit() -> str:
    return _SERVICE


def timer_unit() -> str:
    return _TIMER
