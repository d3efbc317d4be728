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

# Buttons' action ids: what a click asks for (CONTRACT "Lifecycle" names the labels).
APPROVE = "vouch_approve"
APPROVE_WITH_COMMENT = "vouch_approve_comment"
DENY = "vouch_deny"
CANCEL = "vouch_cancel"
REVOKE = "vouch_revoke"
REVIEW = "vouch_review"
REVOKE_NOW = "vouch_revoke_now"
EXTEND = "vouch_extend"
REQUEST_AGAIN = "vouch_request_again"

_STATE_LINE = {
    State.PENDING: "⏳ Pending",
    State.APPROVED: "✅ Approved",
    State.ISSUED: "✅ Approved — certificate issued",
    State.DENIED: "❌ Denied",
    State.EXPIRED: "⌛ Expired — this request expired with no decision",
    State.CANCELLED: "🚫 Request cancelled",
    State.REVOKED: "⛔ Revoked",
}

_CERT_FILE = {
    "ssh-ed25519": "id_ed25519", "ssh-rsa": "id_rsa", "ecdsa-sha2-nistp256": "id_ecdsa",
    "ecdsa-sha2-nistp384": "id_ecdsa", "ecdsa-sha2-nistp521": "id_ecdsa",
    "sk-ssh-ed25519@openssh.com": "id_ed25519_sk", "sk-ecdsa-sha2-nistp256@openssh.com": "id_ecdsa_sk",
}


# A request made with `vouch request`/`vouch ssh`: the call was signed by the very key to certify.
KEY_PROVEN = "💻 from the terminal, key proven"


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


def plain(text: str) -> dict:
    """What a person typed, as plain_text: shown exactly, with no formatting, mention or link
    of its own (mrkdwn would let `<!channel>` ping and `*x*` pose as Vouch's own emphasis)."""
    return {"type": "section", "text": {"type": "plain_text", "text": text, "emoji": False}}


def _user_text(label: str, text: str) -> list[dict]:
    return [context(f"*{label}*"), plain(text)]


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def button(label: str, action_id: str, value: str, style: str | None = None) -> dict:
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
    state, said = _decision(request, certificate)
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
        context(state),
        *([plain(said)] if said else []),
    ]
    if request.extends:
        blocks.insert(1, context(f"Extends request `{request.extends}`"))
    if request.key_proven:
        blocks.insert(1, context(KEY_PROVEN))
    if request.state is State.PENDING:
        blocks.append({"type": "actions", "block_id": f"vote:{request.id}", "elements": [
            button("Approve", APPROVE, request.id, "primary"),
            button("Deny", DENY, request.id, "danger"),
            button("Cancel", CANCEL, request.id),
        ]})
    elif request.state is State.ISSUED and certificate is not None and not certificate.revoked_at:
        blocks.append({"type": "actions", "block_id": f"issued:{request.id}", "elements": [
            button("Revoke", REVOKE, request.id, "danger")]})
    text = (f"Access request {request.id}: {mention(request.requester)} asks for {request.target} "
            f"(principals {', '.join(principals)}; restrictions {restrictions or 'none'}; "
            f"extensions {extensions}) for {duration}. Reason: {escape(request.reason)}. "
            f"Key {request.key_fingerprint}"
            f"{' (' + KEY_PROVEN + ')' if request.key_proven else ''}. "
            f"Approvals {len(approvers)} of {approvals_required}. "
            f"{state}{': ' + escape(said) if said else ''}.")
    return Rendered(text, blocks)


def _decision(request: Request, certificate: StoredCertificate | None) -> tuple[str, str | None]:
    """Where the request stands, in Vouch's words (mrkdwn), and what a person wrote about it
    (a deny's or a revocation's reason), shown apart as plain text."""
    state = request.state
    if state is State.PENDING:
        return f"⏳ Pending — expires {slack_date(request.expires_at)}", None
    if state is State.DENIED:
        return f"❌ Denied by {mention(request.denied_by or 'someone')}:", request.deny_reason
    if state is State.ISSUED and certificate is not None:
        return (f"✅ Approved — certificate issued, serial {certificate.serial}, valid until "
                f"{slack_date(certificate.valid_before)}"), None
    if state is State.REVOKED and certificate is not None and certificate.revoked_at:
        by = mention(certificate.revoked_by) if certificate.revoked_by else "an operator"
        said = certificate.revoke_reason
        return (f"⛔ Revoked by {by} at {slack_date(certificate.revoked_at)}, serial "
                f"{certificate.serial}" + (":" if said else ""), said)
    if state is State.APPROVED and request.issue_error:
        return "✅ Approved — signing failed, Vouch will retry", None
    if state is State.EXPIRED and request.issue_error:
        return "⌛ Expired — approved, but no certificate could be issued in time", None
    if state is State.CANCELLED and request.cancelled_by == "vouch" and request.issue_error:
        return "🚫 Approved, but not signed and cancelled:", request.issue_error
    if state is State.CANCELLED and request.cancelled_by:
        return f"🚫 Request cancelled by {mention(request.cancelled_by)}", None
    return _STATE_LINE[state], None


def approvers_note(request: Request, target: Target, group_mentions: dict[str, str]) -> Rendered:
    """The thread reply that calls the approvers in, with Approve with comment (the card keeps
    its buttons to the contract's Approve, Deny and Cancel)."""
    who = [mention(u) for u in sorted(target.approvers.users)]
    who += [group_mentions.get(g, g) for g in sorted(target.approvers.groups)]
    needed = target.approvals_required
    text = (f"Approvers: {' '.join(who)} — {needed} approval{'s' if needed > 1 else ''} needed. "
            "The requester cannot approve their own request.")
    return Rendered(text, [_section(text), {"type": "actions", "block_id": f"comment:{request.id}",
                                           "elements": [button("Approve with comment",
                                                               APPROVE_WITH_COMMENT, request.id)]}])


def revoked_note(serial: int, by: str, reason: str | None) -> Rendered:
    """The thread reply when a certificate is revoked; the reason as typed, in plain text."""
    said = f"Certificate serial {serial} revoked by {mention(by)}"
    text = said + (f": {escape(reason)}" if reason else ".")
    blocks = [_section(said + (":" if reason else "."))] + ([plain(reason)] if reason else [])
    return Rendered(text, blocks)


def cancelled_unissued_note(by: str, reason: str | None) -> Rendered:
    """The thread reply when an approved request is revoked before its certificate exists."""
    said = f"Revoked by {mention(by)} before its certificate was issued: the request is cancelled"
    text = said + (f": {escape(reason)}" if reason else ".")
    blocks = [_section(said + (":" if reason else "."))] + ([plain(reason)] if reason else [])
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
        context(f"Request `{request.id}` · key `{spec.public_key.fingerprint}` · "
                 f"revoke early with `/ssh-revoke {spec.serial}`"),
        *_again_buttons(request),
    ]
    return Rendered(text, blocks)


def reminder_dm(request: Request | None, certificate: StoredCertificate, *,
                tz: str | None) -> Rendered:
    """The expiry reminder, with Extend and Request again for a request's certificate."""
    hint = f"for {request.target} " if request else ""
    text = (f"⏰ Your certificate {hint}(serial {certificate.serial}) expires at "
            f"{local_time(certificate.valid_before, tz)}. Extend it, or ask again, if you still "
            "need access.")
    return Rendered(text, [_section(text), *(_again_buttons(request) if request else [])])


def _again_buttons(request: Request) -> list[dict]:
    """Extend and Request again: the request form, prefilled from `request` (approvers decide
    again, as for any request). Break-glass has no such shortcut."""
    if request.kind is not Kind.REQUEST:
        return []
    return [{"type": "actions", "block_id": f"again:{request.id}", "elements": [
        button("Extend", EXTEND, request.id, "primary"),
        button("Request again", REQUEST_AGAIN, request.id)]}]


def breakglass_alert(request: Request, certificate: StoredCertificate | None, *,
                     review_within: str) -> Rendered:
    duration = format_duration(request.duration)
    serial = ""
    if certificate is not None:
        serial = (f" Certificate serial {certificate.serial}, valid until "
                  f"{slack_date(certificate.valid_before)}.")
        if certificate.revoked_at:
            by = mention(certificate.revoked_by) if certificate.revoked_by else "an operator"
            serial += f" Revoked by {by} at {slack_date(certificate.revoked_at)}."
    if request.reviewed_by:
        when = f" at {slack_date(request.reviewed_at)}" if request.reviewed_at else ""
        reviewed = f"Reviewed by {mention(request.reviewed_by)}{when}" + \
            (":" if request.review_note else ".")
    else:
        reviewed = f"An admin must review this within {review_within}."
    text = (f"🚨 BREAK-GLASS: {mention(request.requester)} took {request.target} for {duration} "
            f"with no approver. Reason: {escape(request.reason)}.{serial} {reviewed}"
            + (f" {escape(request.review_note)}" if request.review_note else ""))
    blocks = [_section(f"🚨 *BREAK-GLASS* — {mention(request.requester)} took *{request.target}* "
                       f"for *{duration}* with no approver."),
              *_user_text("Reason", request.reason),
              context(f"Request `{request.id}`.{serial} {reviewed}"),
              *([plain(request.review_note)] if request.review_note else [])]
    buttons = []
    if not request.reviewed_by:
        buttons.append(button("Mark reviewed", REVIEW, request.id, "primary"))
    if certificate is not None and not certificate.revoked_at:
        buttons.append(button("Revoke now", REVOKE_NOW, request.id, "danger"))
    if buttons:
        blocks.append({"type": "actions", "block_id": f"review:{request.id}", "elements": buttons})
    return Rendered(text, blocks)


def breakglass_refused(user: str, target: str, why: str) -> Rendered:
    """To the security channel: someone tried to break glass and was refused."""
    said = f"⚠️ Refused break-glass attempt by {mention(user)} on *{escape(target[:64])}*:"
    return Rendered(f"{said} {escape(why)}", [_section(said), plain(why)])


def revocation_dm(certificate: StoredCertificate, target: str | None) -> Rendered:
    """To the holder: their certificate no longer opens anything."""
    by = mention(certificate.revoked_by) if certificate.revoked_by else "an operator"
    hint = f" for {target}" if target else ""
    said = (f"⛔ Your certificate{hint} (serial {certificate.serial}) was revoked by {by}; hosts "
            "refuse it from their next revocation-list refresh")
    reason = certificate.revoke_reason
    return Rendered(said + (f": {escape(reason)}" if reason else "."),
                    [_section(said + (":" if reason else "."))] + ([plain(reason)] if reason else []))


def offboarded(done) -> Rendered:
    """To the security channel: a deactivated user lost everything (access.offboarding)."""
    lost = []
    if done.revoked:
        lost.append("certificates revoked: serial " + ", ".join(str(r.serial) for r in done.revoked))
    if done.cancelled:
        lost.append("requests cancelled: " + ", ".join(f"`{r.id}`" for r in done.cancelled))
    if done.keys:
        lost.append(f"{len(done.keys)} registered key{'s' if len(done.keys) > 1 else ''} "
                    "disabled")
    text = f"🔒 Offboarded {mention(done.user)} ({done.why}): " + "; ".join(lost) + "."
    return Rendered(text, [_section(text)])


def digest(activity, slot: datetime) -> Rendered:
    """The daily digest (access.ports.Activity): the 24 hours up to `slot`."""
    def counts(title: str, per_target: dict[str, int]) -> str:
        total = sum(per_target.values())
        detail = ", ".join(f"{target} {n}" for target, n in sorted(per_target.items()))
        return f"*{title}:* {total}" + (f" ({detail})" if detail else "")

    uses = activity.breakglass
    unreviewed = [r for r in uses if not r.reviewed_by]
    lines = [f"📋 *Vouch daily digest* — the 24 hours to {slot:%Y-%m-%d %H:%M} UTC",
             counts("Certificates issued", activity.issued),
             f"*Break-glass uses:* {len(uses)}"
             + (f", {len(unreviewed)} unreviewed" if uses else ""),
             *(f"• `{r.id}` {mention(r.requester)} on {r.target} — "
               + (f"reviewed by {mention(r.reviewed_by)}" if r.reviewed_by else "*not reviewed*")
               for r in uses[:20]),
             counts("Denied", activity.denied), counts("Expired", activity.expired),
             counts("Revoked", activity.revoked)]
    text = "\n".join(lines)
    return Rendered(text, [_section(text)])
