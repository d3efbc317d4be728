"""The modals (`views.open`): the request form, and the notes a decision needs (a deny's reason,
an approval's comment, a revocation's reason, a break-glass review's note). Each carries what it
is about in `private_metadata` as JSON, read back by `Modal.read`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from access.durations import format_duration
from access.policy import Policy
from access.requests import MAX_REASON_LENGTH, MIN_NOTE_LENGTH, Request

REQUEST_FORM = "vouch_request_form"
DENY_FORM = "vouch_deny_form"
APPROVE_FORM = "vouch_approve_form"
REVOKE_FORM = "vouch_revoke_form"
REVIEW_FORM = "vouch_review_form"
NOTE = "note"  # the block id of every modal's note field


@dataclass(frozen=True)
class Modal:
    """What a modal is about, and where it was opened from (the message, if any)."""

    request: str | None = None
    channel: str | None = None  # the request form: where to post; others: the clicked message's
    ts: str | None = None
    extends: str | None = None  # the request form, opened by Extend

    def dump(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def read(cls, metadata: str) -> Modal:
        """Also the request forms of earlier versions, whose metadata was the bare channel id."""
        if not metadata.startswith("{"):
            return cls(channel=metadata or None)
        try:
            data = json.loads(metadata)
        except ValueError:
            return cls()
        return cls(**{k: str(v) for k, v in data.items() if k in cls.__dataclass_fields__})


def _option(label: str, value: str) -> dict:
    return {"text": {"type": "plain_text", "text": label[:75]}, "value": value}


def _plain(text: str) -> dict:
    return {"type": "plain_text", "text": text[:150] if len(text) > 150 else text}


def request_form(policy: Policy, targets: list[str], keys: list[tuple[str, str]], about: Modal,
                 *, prefill: Request | None = None) -> dict:
    """The /ssh-request modal: target, duration, reason, and which key to certify; prefilled
    from an earlier request by Extend and Request again."""
    target_select = {"type": "static_select", "action_id": "value",
                     "options": [_option(f"{t} (max {format_duration(policy.targets[t].max_duration)})", t)
                                 for t in targets]}
    duration = {"type": "plain_text_input", "action_id": "value",
                "placeholder": {"type": "plain_text", "text": "2h"}}
    reason = {"type": "plain_text_input", "action_id": "value", "multiline": True,
              "max_length": MAX_REASON_LENGTH}
    if prefill is not None:
        if prefill.target in targets:
            target_select["initial_option"] = next(o for o in target_select["options"]
                                                   if o["value"] == prefill.target)
        duration["initial_value"] = format_duration(prefill.duration)
        reason["initial_value"] = prefill.reason
    blocks = [
        {"type": "input", "block_id": "target", "label": _plain("Target"), "element": target_select},
        {"type": "input", "block_id": "duration", "label": _plain("Duration"),
         "hint": _plain("e.g. 45m, 2h, 1h30m"), "element": duration},
        {"type": "input", "block_id": "reason", "label": _plain("Reason"), "element": reason},
    ]
    if keys:
        chosen = next((k for k in keys if prefill and k[1] == prefill.key_fingerprint), keys[0])
        blocks.append({"type": "input", "block_id": "key", "optional": True,
                       "label": _plain("Key to certify"),
                       "element": {"type": "static_select", "action_id": "value",
                                   "initial_option": _option(*chosen),
                                   "options": [_option(label, fp) for label, fp in keys]}})
    if about.extends:
        blocks.insert(0, {"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"Extends request `{about.extends}`: approvers decide "
                                       "again, as for any request."}]})
    return _modal(REQUEST_FORM, "Request SSH access", "Request", about, blocks)


def deny_form(request: Request, about: Modal) -> dict:
    return _note_modal(DENY_FORM, "Deny request", "Deny", about, request,
                       label="Why is it denied?", required=True,
                       hint="The requester, the request's thread and the audit log see it.")


def approve_form(request: Request, about: Modal) -> dict:
    return _note_modal(APPROVE_FORM, "Approve request", "Approve", about, request,
                       label="Comment (optional)", required=False,
                       hint="Shown in the request's thread and kept in the audit log.")


def revoke_form(request: Request, about: Modal) -> dict:
    return _note_modal(REVOKE_FORM, "Revoke certificate", "Revoke", about, request,
                       label="Why is it revoked?", required=True,
                       hint="The holder, the request's thread and the audit log see it. Hosts "
                            "refuse the certificate from their next revocation-list refresh.")


def review_form(request: Request, about: Modal) -> dict:
    return _note_modal(REVIEW_FORM, "Review break-glass use", "Mark reviewed", about, request,
                       label="What did the review find?", required=True,
                       hint="Shown on the alert and kept in the audit log.")


def note_errors(values: dict[str, str], *, required: bool) -> dict[str, str]:
    """A note's problem, as Slack shows it under the field (the same rule as access.requests)."""
    note = " ".join((values.get(NOTE) or "").split())
    if (required or note) and len(note) < MIN_NOTE_LENGTH:
        return {NOTE: f"Write at least {MIN_NOTE_LENGTH} characters."}
    if len(note) > MAX_REASON_LENGTH:
        return {NOTE: f"Keep it under {MAX_REASON_LENGTH} characters."}
    return {}


def _note_modal(callback_id: str, title: str, submit: str, about: Modal, request: Request, *,
                label: str, required: bool, hint: str) -> dict:
    summary = (f"`{request.id}`: <@{request.requester}> on *{request.target}* for "
               f"{format_duration(request.duration)}")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": summary}},
              {"type": "input", "block_id": NOTE, "optional": not required, "label": _plain(label),
               "hint": _plain(hint),
               "element": {"type": "plain_text_input", "action_id": "value", "multiline": True,
                           "min_length": MIN_NOTE_LENGTH if required else 0,
                           "max_length": MAX_REASON_LENGTH}}]
    return _modal(callback_id, title, submit, about, blocks)


def _modal(callback_id: str, title: str, submit: str, about: Modal, blocks: list[dict]) -> dict:
    return {"type": "modal", "callback_id": callback_id, "private_metadata": about.dump(),
            "title": _plain(title), "submit": _plain(submit), "close": _plain("Cancel"),
            "blocks": blocks}
