"""The plain sentences Vouch says to people: replies to the person who acted (ephemeral), direct
messages, and thread notes. Block Kit messages are in bot.views."""

from __future__ import annotations

from datetime import datetime

from access.durations import format_duration
from access.errors import NotAnApprover, VouchError
from access.ports import RegisteredKey, StoredCertificate
from access.requests import Request
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


# --- requests and votes ------------------------------------------------------------------

def request_stored(request: Request, channel: str) -> str:
    return (f"Request `{request.id}` for *{request.target}* ({format_duration(request.duration)}) "
            f"is stored and goes to <#{channel}> for approval. You'll get the certificate by DM "
            "once it is approved.")


ALREADY_VOTED = "You have already voted on this request; your vote counts once."


def nothing_to_do(error: VouchError) -> str:
    return f"Nothing to do: {error.message}."


def vote_note(approver: str, approve: bool, request: Request, approvals_required: int) -> str:
    if not approve:
        return f"{mention(approver)} denied this request."
    return f"{mention(approver)} approved ({len(request.approvers)} of {approvals_required})."


def issued_note(serial: int, valid_before: datetime) -> str:
    return f"Certificate issued, serial {serial}, valid until {slack_date(valid_before)}."


def denied_dm(request: Request, by: str) -> str:
    return f"Your request `{request.id}` for {request.target} was denied by {mention(by)}."


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


def revoked_reply(serials: list[int]) -> str:
    return (f"Revoked certificate serial {', '.join(str(s) for s in serials)}. Hosts refuse it "
            "from their next revocation-list refresh.")


def status(pending: list[Request], live: list[StoredCertificate], tz: str | None) -> str:
    lines = [f"• `{r.id}` {r.target} for {format_duration(r.duration)} — pending" for r in pending]
    lines += [f"• serial {c.serial}: {', '.join(c.principals)} until "
              f"{local_time(c.valid_before, tz)}" for c in live]
    if not lines:
        return "You have no pending requests and no live certificates."
    return "\n".join(["Your pending requests and live certificates:", *lines])


def reminder_dm(target: str | None, serial: int, valid_before: datetime, tz: str | None) -> str:
    hint = f"for {target} " if target else ""
    return (f"⏰ Your certificate {hint}(serial {serial}) expires at "
            f"{local_time(valid_before, tz)}. Ask again with /ssh-request if you still need access.")


# --- break-glass -------------------------------------------------------------------------

def breakglass_done(request: Request) -> str:
    return (f"Break-glass certificate for *{request.target}* sent by DM. The security channel is "
            "alerted and an admin will review this use.")


def reviewed_reply(request: Request) -> str:
    return f"Marked break-glass use `{request.id}` as reviewed."


def escalation(request: Request, review_within: str, admins: list[str]) -> str:
    who = " ".join(mention(a) for a in admins)
    return (f"⚠️ Break-glass use `{request.id}` by {mention(request.requester)} on "
            f"{request.target} is still unreviewed after {review_within}. {who}").rstrip()


# --- the request form --------------------------------------------------------------------

FORM_NO_REASON = "Say why you need access: approvers see it."
FORM_NO_TARGET = "Choose a target."
