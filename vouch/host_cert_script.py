"""The host-certificate script `vouch host-setup --host-certs` installs on each host, and the daily
timer that renews its certificates.

A POSIX sh script (hosts have curl and ssh-keygen, not Python). It enrols once with a one-time
token, then renews with an SSHSIG made by the host's own key over the call (access.signed_calls'
message), so no long-lived secret lives on the host. Every certificate is checked before it
replaces the one in place: a host certificate, of this host's key, from the pinned host CA. Paths
are variables at the top, overridable from the environment, so tests run it in a temp directory.
"""

from __future__ import annotations

SCRIPT = "/usr/local/sbin/vouch-host-cert"
UNIT = "vouch-host-cert"

_SCRIPT = r"""#!/bin/sh
# vouch-host-cert: this host's SSH host certificates from Vouch (installed by
# `vouch host-setup --host-certs`).
#   vouch-host-cert enrol [TOKEN]  first certificates, with a one-time token (or VOUCH_HOST_TOKEN)
#   vouch-host-cert renew          new certificates for the same keys and names, signed with the
#                                  host's own key, once one expires within RENEW_DAYS days
# Exit 0 when the certificates are current, 1 when they could not be had, 2 for bad usage. The
# certificates in place are never touched on a failure.
set -u

URL=${VOUCH_HOST_CERT_URL:-'@URL@'}
SSH_DIR=${VOUCH_SSH_DIR:-/etc/ssh}
CA_FINGERPRINT=${VOUCH_HOST_CA_FINGERPRINT:-'@CA_FINGERPRINT@'}
RENEW_DAYS=${VOUCH_RENEW_DAYS:-7}
RELOAD=${VOUCH_SSHD_RELOAD:-reload_sshd}
SSH_KEYGEN=${VOUCH_SSH_KEYGEN:-ssh-keygen}
API=/api/v1/hosts/certificate

say() { echo "vouch-host-cert: $*" >&2; }

reload_sshd() {
    # sshd reads HostCertificate files when it starts or reloads.
    systemctl reload ssh 2>/dev/null || systemctl reload sshd 2>/dev/null ||
        kill -HUP "$(cat "$(/usr/sbin/sshd -T | sed -n 's/^pidfile //p')")"
}

work=$(mktemp -d "$SSH_DIR/.vouch-host-cert.XXXXXX") || { say "cannot write in $SSH_DIR"; exit 1; }
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

# The host keys Vouch certifies, Ed25519 first (it signs renewals); DSA is not accepted.
keys() {
    for type in ed25519 ecdsa rsa; do
        if [ -s "$SSH_DIR/ssh_host_${type}_key.pub" ]; then
            echo "$SSH_DIR/ssh_host_${type}_key.pub"
        fi
    done
}

# The keys that hold a certificate now: renewal certifies exactly these.
certified() {
    for pub in $(keys); do
        if [ -s "${pub%.pub}-cert.pub" ]; then echo "$pub"; fi
    done
}

body() {  # $1: the token, or empty for a renewal; then the public key files
    token=$1; shift
    printf '{'
    if [ -n "$token" ]; then printf '"token": "%s", ' "$token"; fi
    printf '"public_keys": ['
    sep=
    for pub in "$@"; do
        printf '%s"%s"' "$sep" "$(cut -d ' ' -f 1,2 "$pub")"
        sep=', '
    done
    printf ']}'
}

post() {  # $1: the body file; then more curl arguments (headers)
    data=$1; shift
    code=$(curl -sS --connect-timeout 10 --max-time 60 --max-filesize 1048576 \
        -o "$work/answer" -w '%{http_code}' -H 'Content-Type: application/json' "$@" \
        --data-binary "@$data" "$URL$API") || { say "cannot reach $URL$API"; return 1; }
    if [ "$code" != 200 ]; then
        say "$URL$API answered HTTP $code: $(head -c 300 "$work/answer")"; return 1
    fi
}

# Each key's certificate from the answer, checked (a host certificate of that very key, signed by
# Vouch's host CA), then all moved into place, or none.
install_certs() {
    grep -o '[a-z0-9-]*-cert-v01@openssh\.com [A-Za-z0-9+/=]*' "$work/answer" > "$work/certs"
    for pub in "$@"; do
        want=$("$SSH_KEYGEN" -l -f "$pub" | cut -d ' ' -f 2)
        name=$(basename "${pub%.pub}")-cert.pub
        while IFS= read -r line; do
            printf '%s\n' "$line" > "$work/candidate"
            shown=$("$SSH_KEYGEN" -L -f "$work/candidate" 2>/dev/null) || continue
            printf '%s\n' "$shown" | grep -q 'Type: .* host certificate$' || continue
            key=$(printf '%s\n' "$shown" | sed -n 's/^[[:space:]]*Public key: [^ ]* //p')
            ca=$(printf '%s\n' "$shown" |
                sed -n 's/^[[:space:]]*Signing CA: [^ ]* \([^ ]*\).*/\1/p')
            [ "$key" = "$want" ] && [ "$ca" = "$CA_FINGERPRINT" ] || continue
            mv "$work/candidate" "$work/$name"
            break
        done < "$work/certs"
        [ -s "$work/$name" ] || { say "the answer has no host certificate for $pub"; return 1; }
    done
    for pub in "$@"; do
        name=$(basename "${pub%.pub}")-cert.pub
        chmod 644 "$work/$name"
        mv -f "$work/$name" "$SSH_DIR/$name" || { say "cannot write $SSH_DIR/$name"; return 1; }
    done
    say "installed host certificates for $*"
}

enrol() {
    token=${1:-${VOUCH_HOST_TOKEN:-}}
    case $token in
        vht_*) ;;
        *) say "give the one-time token from \`vouch host token\`" \
               "(VOUCH_HOST_TOKEN or the argument)"
           exit 2 ;;
    esac
    case $token in *[!A-Za-z0-9_-]*) say "that is not a Vouch host token"; exit 2 ;; esac
    [ -n "$(keys)" ] || { say "no host keys in $SSH_DIR (ssh-keygen -A makes them)"; exit 1; }
    (umask 077; body "$token" $(keys) > "$work/body")
    post "$work/body" || exit 1
    install_certs $(keys) || exit 1
}

due() {  # true when a certificate expires within RENEW_DAYS days (or cannot be read)
    now=$(date +%s)
    for pub in "$@"; do
        to=$("$SSH_KEYGEN" -L -f "${pub%.pub}-cert.pub" 2>/dev/null |
            sed -n 's/^[[:space:]]*Valid: from .* to //p' | tr T ' ')
        end=$(date -d "$to" +%s 2>/dev/null) || return 0
        [ "$((end - now))" -gt "$((RENEW_DAYS * 86400))" ] || return 0
    done
    return 1
}

renew() {
    set -- $(certified)
    if [ "$#" -eq 0 ]; then
        say "no certificates to renew: enrol first (vouch-host-cert enrol)"; exit 1
    fi
    due "$@" || exit 0
    (umask 077; body "" "$@" > "$work/body")
    # The signed call: v1, the time, the method, the path, the body's sha256 (CONTRACT).
    now=$(date +%s)
    path=$(printf '%s' "$URL" | sed 's#^[a-z]*://[^/]*##')$API
    digest=$(sha256sum < "$work/body" | cut -d ' ' -f 1)
    printf 'v1\n%s\nPOST\n%s\n%s' "$now" "$path" "$digest" > "$work/call"
    "$SSH_KEYGEN" -q -Y sign -n vouch-host -f "${1%.pub}" "$work/call" 2>"$work/sign.err" || {
        say "cannot sign with ${1%.pub}: $(cat "$work/sign.err")"; exit 1; }
    signature=$(base64 < "$work/call.sig" | tr -d '\n')
    post "$work/body" -H "Authorization: Vouch-SSHSIG $signature" \
        -H "X-Vouch-Timestamp: $now" || exit 1
    install_certs "$@" || exit 1
    $RELOAD || { say "sshd was not reloaded: it presents the new certificates once it is"; exit 1; }
}

case ${1:-} in
    enrol) shift; enrol "$@" ;;
    renew) renew ;;
    *) say "usage: vouch-host-cert enrol [TOKEN] | renew"; exit 2 ;;
esac
"""

_SERVICE = f"""[Unit]
Description=Renew this host's SSH certificates from Vouch
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={SCRIPT} renew
"""

# Daily, at a random hour per host; it renews only within a week of expiry, so a few failed days
# in a row still leave time. Persistent: a host that was off catches up when it boots.
_TIMER = """[Unit]
Description=Renew this host's SSH certificates from Vouch, daily

[Timer]
OnCalendar=daily
RandomizedDelaySec=4h
Persistent=true

[Install]
WantedBy=timers.target
"""


def host_cert_script(url: str, ca_fingerprint: str) -> str:
    """The script for a Vouch reached at `url` (already checked: no shell-special characters),
    accepting certificates from the host CA with this fingerprint only."""
    return _SCRIPT.replace("@URL@", url).replace("@CA_FINGERPRINT@", ca_fingerprint)


def service_unit() -> str:
    return _SERVICE


def timer_unit() -> str:
    return _TIMER
