"""The plain sentences Vouch says to people: replies to the person who acted (ephemeral), direct
messages, and thread notes. Block Kit messages are in bot.views."""

from __future__ import annotations

from datetime import datetime

from access.durations import format_duration
from access.errors import NotAnApprover, VouchError
from access.lookup import Overview
from access.ports import RegisteredKey
from access.requests import Request
from access.revoking import Revoked
from bot.views import escape, local_time, mention, slack_date
from ca.keys import PublicKey

# --- who may use Vouch at all ------------------------------------------------------------

OTHER_WORKSPACE = "Vouch serves only its own workspace."
BOT_USER = "Bots cannot use Vouch."
DEACTIVATED = "Deactivated accounts cannot use Vouch."
GUEST = "Guests cannot request, approve or revoke access with Vouch."


def refusal(error: VouchError) -> str:
    """A refusal as the person who acted reads it: the user message, capitalised, with people
    named the Slack way."""
    if isinstance(error, NotAnApprover):
        message = error.describe(mention)
    else:  # it may quote what the person typed
        message = escape(error.message)
    return message[:1].upper() + message[1:]


def internal_error(ref: str) -> str:
    return (f"Something went wrong on Vouch's side (ref `{ref}`). "
            "Try again, or ask an admin to look up the reference.")


# --- keys --------------------------------------------------------------------------------

def key_added(key: PublicKey, newly: bool) -> str:
    verb = "Registered" if newly else "Already registered:"
    return (f"{verb} {escape(key.describe())}. Certificates are issued for your newest key "
            "unless you choose another in the /ssh-request form.")


def key_removed(key: RegisteredKey) -> str:
    return (f"Removed key `{key.fingerprint}`. Certificates already issued for it stay valid "
            "until they expire; revoke them with /ssh-revoke.")


def key_list(keys: list[RegisteredKey]) -> str:
    if not keys:
        return "You have no registered keys. Add one with `/ssh-key add <public key>`."
    lines = [f"• `{k.fingerprint}` {k.key_type} {escape(k.comment)} (added {k.added_at:%Y-%m-%d})"
             + (" — used by default" if i == 0 else "") for i, k in enumerate(keys)]
    return "Your keys, newest first:\n" + "\n".join(lines)


NO_KEY_FOR_FORM = ("you have no registered SSH public key: add one with "
                   "`/ssh-key add ssh-ed25519 AAAA…` first")
NO_TARGET_FOR_FORM = "the policy lets you request no target"
NO_CHANNEL = "there is no channel to post the request in: set requests_channel in the policy"


def not_your_request(request_id: str) -> str:
    return f"you have no request {request_id[:64]!r}"


# --- requests and votes ------------------------------------------------------------------

def request_stored(request: Request, channel: str) -> str:
    return (f"Request `{request.id}` for *{request.target}* ({format_duration(request.duration)}) "
            f"is stored and goes to <#{channel}> for approval. You'll get the certificate by DM "
            "once it is approved.")


ALREADY_VOTED = "You have already voted on this request; your vote counts once."


def nothing_to_do(error: VouchError) -> str:
    return f"Nothing to do: {error.message}."


def vote_note(approver: str, approve: bool, request: Request, approvals_required: int) -> str:
    comment = next((v.comment for v in request.votes if v.approver == approver), None)
    said = f": {escape(comment)}" if comment else "."
    if not approve:
        return f"{mention(approver)} denied this request{said}"
    return (f"{mention(approver)} approved ({len(request.approvers)} of {approvals_required})"
            f"{said}")


def cancelled_note(request: Request) -> str:
    return f"Request cancelled by {mention(request.cancelled_by or request.requester)}."


def cancelled_reply(request: Request) -> str:
    return f"Request `{request.id}` for {request.target} is cancelled."


def issued_note(serial: int, valid_before: datetime) -> str:
    return f"Certificate issued, serial {serial}, valid until {slack_date(valid_before)}."


def denied_dm(request: Request, by: str) -> str:
    reason = f": {escape(request.deny_reason)}" if request.deny_reason else "."
    return f"Your request `{request.id}` for {request.target} was denied by {mention(by)}{reason}"


def signing_failed_dm(request: Request) -> str:
    return (f"Your request `{request.id}` for {request.target} is approved, but the CA could not "
            "sign right now. Vouch retries automatically and sends the certificate here.")


SIGNING_FAILED_NOTE = "Approved, but signing failed; Vouch will retry."


def issue_refused_dm(request: Request) -> str:
    return (f"Your request `{request.id}` for {request.target} was approved, but nothing was "
            f"signed: {request.issue_error}. Ask again with /ssh-request if you still need access.")


def issue_refused_note(request: Request) -> str:
    return f"Approved, but not signed: {request.issue_error}. The request is cancelled."


def expired_dm(request: Request) -> str:
    if request.issue_error:
        return (f"Your request `{request.id}` for {request.target} was approved, but no "
                f"certificate could be issued in time ({request.issue_error}); it expired. "
                "Ask again with /ssh-request if you still need access.")
    return (f"Your request `{request.id}` for {request.target} expired: nobody decided in time. "
            "Ask again with /ssh-request if you still need access.")


# --- certificates ------------------------------------------------------------------------

def cancelled_unissued_reply(request: Request) -> str:
    return (f"Request `{request.id}` was approved but had no certificate yet: it is cancelled, "
            "and none will be issued.")


def revoked_reply(done: list[Revoked]) -> str:
    """Revoking twice is no error: it says "already revoked"."""
    newly = [str(item.serial) for item in done if item.newly]
    before = [str(item.serial) for item in done if not item.newly]
    said = []
    if newly:
        said.append(f"Revoked certificate serial {', '.join(newly)}. Hosts refuse it from their "
                    "next revocation-list refresh.")
    if before:
        said.append(f"Certificate serial {', '.join(before)} was already revoked.")
    return " ".join(said)


def status(overview: Overview, tz: str | None) -> str:
    """The App Home's lists, as text."""
    lines = []
    if overview.pending:
        lines.append("*Your pending requests*")
        lines += [f"• `{r.id}` {r.target} for {format_duration(r.duration)} — pending "
                  f"(cancel: `/ssh-request cancel {r.id}`)" for r in overview.pending]
    if overview.live:
        lines.append("*Your certificates*")
        lines += [f"• serial {c.serial}{' for ' + r.target if r else ''}: {', '.join(c.principals)} "
                  f"until {local_time(c.valid_before, tz)}" for c, r in overview.live]
    if overview.awaiting:
        lines.append("*Waiting for your approval*")
        lines += [f"• `{r.id}` {mention(r.requester)} on {r.target} for "
                  f"{format_duration(r.duration)}" for r in overview.awaiting]
    if overview.unreviewed:
        lines.append("*Break-glass uses awaiting review*")
        lines += [f"• `{r.id}` {mention(r.requester)} on {r.target}" for r in overview.unreviewed]
    if not lines:
        return "You have no pending requests, no live certificates and nothing to approve."
    return "\n".join(lines)


def offboarding_reason(user) -> str | None:
    """Why Slack's account means the user must lose their access (a bot.slack.SlackUser)."""
    if user.deleted:
        return "deactivated in Slack"
    if user.restricted:
        return "made a guest in Slack"
    return None


# --- break-glass -------------------------------------------------------------------------

def breakglass_done(request: Request) -> str:
    return (f"Break-glass certificate for *{request.target}* sent by DM. The security channel is "
            "alerted and an admin will review this use.")


def reviewed_reply(request: Request) -> str:
    return f"Marked break-glass use `{request.id}` as reviewed."


ONLY_ADMINS_REVIEW = "only admins can review break-glass use"
ONLY_ADMINS_REVOKE_NOW = "only admins can revoke a break-glass certificate from its alert"
NOT_YOURS_TO_EXTEND = "you can extend or repeat only your own requests"


def escalation(request: Request, review_within: str, admins: list[str]) -> str:
    who = " ".join(mention(a) for a in admins)
    return (f"⚠️ Break-glass use `{request.id}` by {mention(request.requester)} on "
            f"{request.target} is still unreviewed after {review_within}. {who}").rstrip()


# --- the request form --------------------------------------------------------------------

FORM_NO_REASON = "Say why you need access: approvers see it."
FORM_NO_TARGET = "Choose a target."
