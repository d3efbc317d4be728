"""What Slack shows, rendered from state. One function per message; no listener builds blocks.

Every message also has a plain `text` with the same facts: it is what notifications, screen
readers and API consumers see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from access.durations import format_duration
from access.policy import Policy, Target
from access.ports import StoredCertificate
from access.requests import Kind, Request, State
from access.template import Template
from ca.cert import Certificate

APPROVE = "vouch_approve"
DENY = "vouch_deny"
REVIEW = "vouch_review"
REQUEST_FORM = "vouch_request_form"

_STATE_LINE = {
    State.PENDING: "⏳ Pending",
    State.APPROVED: "✅ Approved",
    State.ISSUED: "✅ Approved — certificate issued",
    State.DENIED: "❌ Denied",
    State.EXPIRED: "⌛ Expired — this request expired with no decision",
    State.CANCELLED: "🚫 Cancelled",
    State.REVOKED: "⛔ Revoked",
}

_CERT_FILE = {
    "ssh-ed25519": "id_ed25519", "ssh-rsa": "id_rsa", "ecdsa-sha2-nistp256": "id_ecdsa",
    "ecdsa-sha2-nistp384": "id_ecdsa", "ecdsa-sha2-nistp521": "id_ecdsa",
    "sk-ssh-ed25519@openssh.com": "id_ed25519_sk", "sk-ecdsa-sha2-nistp256@openssh.com": "id_ecdsa_sk",
}


@dataclass(frozen=True)
class Rendered:
    text: str
    blocks: list[dict]


def mention(user: str) -> str:
    return f"<@{user}>"


def escape(text: str) -> str:
    """User-typed text for a mrkdwn string: Slack's three escapes, so it can neither ping
    (`<!channel>`), mention, nor hide a link (`<https://evil|docs>`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> dict:
    """What a person typed, as plain_text: shown exactly, with no formatting, mention or link
    of its own (mrkdwn would let `<!channel>` ping and `*x*` pose as Vouch's own emphasis)."""
    return {"type": "section", "text": {"type": "plain_text", "text": text, "emoji": False}}


def _user_text(label: str, text: str) -> list[dict]:
    return [_context(f"*{label}*"), _plain(text)]


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _button(label: str, action_id: str, value: str, style: str | None = None) -> dict:
    button = {"type": "button", "text": {"type": "plain_text", "text": label},
              "action_id": action_id, "value": value}
    if style:
        button["style"] = style
    return button


def local_time(moment: datetime, tz: str | None) -> str:
    """`2026-11-22 14:30 CET` in the user's zone (users.info), UTC if unknown."""
    try:
        zone = ZoneInfo(tz) if tz else timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        zone = timezone.utc
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def slack_date(moment: datetime) -> str:
    # Slack renders this in each reader's own time zone; the fallback is UTC.
    epoch = int(moment.timestamp())
    return f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{moment:%Y-%m-%d %H:%M} UTC>"


def request_message(request: Request, certificate: StoredCertificate | None, *,
                    template: Template, approvals_required: int) -> Rendered:
    """The request as approvers see it: exactly what will be signed, and where it stands."""
    duration = format_duration(request.duration)
    principals = template.principals
    restrictions = ", ".join(f"{name} {value}" for name, value in template.critical_options)
    extensions = ", ".join(template.extensions) or "none"
    approvers = request.approvers
    tally = f"{len(approvers)} of {approvals_required}"
    if approvers:
        tally += " — " + ", ".join(mention(a) for a in approvers)
    state = _STATE_LINE[request.state]
    if request.state is State.PENDING:
        state += f" — expires {slack_date(request.expires_at)}"
    elif request.state is State.DENIED and request.denied_by:
        state += f" by {mention(request.denied_by)}"
    elif request.state is State.ISSUED and certificate is not None:
        state += f", serial {certificate.serial}, valid until {slack_date(certificate.valid_before)}"
    elif request.state is State.APPROVED and request.issue_error:
        state += " — signing failed, Vouch will retry"
    elif request.state is State.EXPIRED and request.issue_error:
        state = "⌛ Expired — approved, but no certificate could be issued in time"
    elif request.state is State.CANCELLED and request.issue_error:
        state += f" — approved, but not signed: {escape(request.issue_error)}"
    blocks = [
        _section(f"{mention(request.requester)} requests access to *{request.target}* for *{duration}*"),
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Target*\n{request.target}"},
            {"type": "mrkdwn", "text": f"*Principals*\n{', '.join(principals)}"},
            {"type": "mrkdwn", "text": f"*Duration*\n{duration}"},
            {"type": "mrkdwn", "text": f"*Approvals*\n{tally}"},
            {"type": "mrkdwn", "text": f"*Key*\n`{request.key_fingerprint}`"},
            {"type": "mrkdwn", "text": f"*Request*\n`{request.id}`"},
            {"type": "mrkdwn", "text": f"*Restrictions*\n{restrictions or 'none'}"},
            {"type": "mrkdwn", "text": f"*Extensions*\n{extensions}"},
        ]},
        *_user_text("Reason", request.reason),
        _context(state),
    ]
    if request.state is State.PENDING:
        blocks.append({"type": "actions", "block_id": f"vote:{request.id}", "elements": [
            _button("Approve", APPROVE, request.id, "primary"),
            _button("Deny", DENY, request.id, "danger"),
        ]})
    text = (f"Access request {request.id}: {mention(request.requester)} asks for {request.target} "
            f"(principals {', '.join(principals)}; restrictions {restrictions or 'none'}; "
            f"extensions {extensions}) for {duration}. Reason: {escape(request.reason)}. "
            f"Key {request.key_fingerprint}. Approvals {len(approvers)} of {approvals_required}. "
            f"{_STATE_LINE[request.state]}.")
    return Rendered(text, blocks)


def approvers_note(target: Target, group_mentions: dict[str, str]) -> str:
    """The thread reply that calls the approvers in."""
    who = [mention(u) for u in sorted(target.approvers.users)]
    who += [group_mentions.get(g, g) for g in sorted(target.approvers.groups)]
    needed = target.approvals_required
    return (f"Approvers: {' '.join(who)} — {needed} approval{'s' if needed > 1 else ''} needed. "
            "The requester cannot approve their own request.")


def revoked_note(serial: int, by: str, reason: str | None) -> Rendered:
    """The thread reply when a certificate is revoked; the reason as typed, in plain text."""
    said = f"Certificate serial {serial} revoked by {mention(by)}"
    text = said + (f": {escape(reason)}" if reason else ".")
    blocks = [_section(said + (":" if reason else "."))] + ([_plain(reason)] if reason else [])
    return Rendered(text, blocks)


def cancelled_unissued_note(by: str, reason: str | None) -> Rendered:
    """The thread reply when an approved request is revoked before its certificate exists."""
    said = f"Revoked by {mention(by)} before its certificate was issued: the request is cancelled"
    text = said + (f": {escape(reason)}" if reason else ".")
    blocks = [_section(said + (":" if reason else "."))] + ([_plain(reason)] if reason else [])
    return Rendered(text, blocks)


def certificate_dm(certificate: Certificate, request: Request, *, tz: str | None) -> Rendered:
    """The certificate, its facts, and how to install it next to the key it certifies."""
    spec = certificate.spec
    line = certificate.line()
    name = _CERT_FILE.get(spec.public_key.type, "id_ed25519")
    install = f"cat > ~/.ssh/{name}-cert.pub <<'EOF'\n{line}\nEOF"
    until = local_time(spec.valid_before, tz)
    principals = ", ".join(spec.principals)
    what = "Break-glass certificate" if request.kind is Kind.BREAKGLASS else "Your certificate"
    text = (f"{what} for {request.target} (request {request.id}): serial {spec.serial}, "
            f"principals {principals}, valid until {until}.\n{line}\n"
            f"Install it next to your key:\n{install}")
    blocks = [
        _section(f"*{what} for {request.target}* is ready.\n"
                 f"Serial `{spec.serial}` · principals *{principals}* · valid until *{until}*"),
        _section(f"```{line}```"),
        _section(f"Install it next to your key (`~/.ssh/{name}`):\n```{install}```\n"
                 f"then `ssh {spec.principals[0]}@<host>`."),
        _context(f"Request `{request.id}` · key `{spec.public_key.fingerprint}` · "
                 f"revoke early with `/ssh-revoke {spec.serial}`"),
    ]
    return Rendered(text, blocks)


def breakglass_alert(request: Request, certificate: StoredCertificate | None, *,
                     review_within: str) -> Rendered:
    duration = format_duration(request.duration)
    serial = (f" Certificate serial {certificate.serial}, valid until "
              f"{slack_date(certificate.valid_before)}." if certificate else "")
    reviewed = (f"Reviewed by {mention(request.reviewed_by)}." if request.reviewed_by
                else f"An admin must review this within {review_within}.")
    text = (f"🚨 BREAK-GLASS: {mention(request.requester)} took {request.target} for {duration} "
            f"with no approver. Reason: {escape(request.reason)}.{serial} {reviewed}")
    blocks = [_section(f"🚨 *BREAK-GLASS* — {mention(request.requester)} took *{request.target}* "
                       f"for *{duration}* with no approver."),
              *_user_text("Reason", request.reason),
              _context(f"Request `{request.id}`.{serial} {reviewed}")]
    if not request.reviewed_by:
        blocks.append({"type": "actions", "block_id": f"review:{request.id}",
                       "elements": [_button("Mark reviewed", REVIEW, request.id, "primary")]})
    return Rendered(text, blocks)


def request_form(policy: Policy, targets: list[str], keys: list[tuple[str, str]], channel: str) -> dict:
    """The /ssh-request modal: target, duration, reason, and which key to certify."""
    def option(label: str, value: str) -> dict:
        return {"text": {"type": "plain_text", "text": label[:75]}, "value": value}

    blocks = [
        {"type": "input", "block_id": "target", "label": {"type": "plain_text", "text": "Target"},
         "element": {"type": "static_select", "action_id": "value",
                     "options": [option(f"{t} (max {format_duration(policy.targets[t].max_duration)})", t)
                                 for t in targets]}},
        {"type": "input", "block_id": "duration", "label": {"type": "plain_text", "text": "Duration"},
         "hint": {"type": "plain_text", "text": "e.g. 45m, 2h, 1h30m"},
         "element": {"type": "plain_text_input", "action_id": "value",
                     "placeholder": {"type": "plain_text", "text": "2h"}}},
        {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Reason"},
         "element": {"type": "plain_text_input", "action_id": "value", "multiline": True}},
    ]
    if keys:
        blocks.append({"type": "input", "block_id": "key", "optional": True,
                       "label": {"type": "plain_text", "text": "Key to certify"},
                       "element": {"type": "static_select", "action_id": "value",
                                   "initial_option": option(*keys[0]),
                                   "options": [option(label, fp) for label, fp in keys]}})
    return {"type": "modal", "callback_id": REQUEST_FORM, "private_metadata": channel,
            "title": {"type": "plain_text", "text": "Request SSH access"},
            "submit": {"type": "plain_text", "text": "Request"},
            "close": {"type": "plain_text", "text": "Cancel"}, "blocks": blocks}
