"""The whole life of an access (issue 13), through `vouch serve` and the fake Slack as people
drive it: Cancel, Deny with a reason, Approve with a comment, Revoke with a reason (from the card,
`/ssh-revoke` and `vouch revoke`), Extend, the break-glass alert's Mark reviewed and Revoke now,
the App Home and `/ssh-status`; and who may not do each."""

from __future__ import annotations

import signal

import pytest

from e2e_support import (ADMIN, BOB, CAROL, DAN, GLASS, REQUESTER, Server, make_fake, policy_yaml,
                         settle)
from test_bot import (REQUESTS, SECURITY, Since, ask, buttons, certificates_of, dm_messages, ok,
                      register_key, shown, state, wait_dm, wait_state)


@pytest.fixture(scope="module")
def server(tmp_path_factory, user_keys):
    fake = make_fake()
    srv = Server(tmp_path_factory.mktemp("vouch-lifecycle"), fake, policy_yaml())
    srv.start()
    for user, name in ((REQUESTER, "ed25519"), (DAN, "ecdsa-p256"), (GLASS, "ecdsa-p384")):
        register_key(srv, user, user_keys[name])
    settle(fake)
    yield srv
    srv.stop()
    fake.stop()
    assert srv.proc.returncode in (0, -signal.SIGTERM)


def open_modal(server: Server, user: str, click) -> dict:
    """Click (a callable doing it) and return the modal Slack then shows `user`."""
    fake = server.fake
    opened = len([v for v in fake.views(user) if v["method"] == "views.open"])
    ok(click())
    return fake.wait_for(lambda: [v for v in fake.views(user)
                                  if v["method"] == "views.open"][opened:])[-1]


def submit_note(server: Server, user: str, view: dict, note: str):
    return server.driver.submit_view(user, view, {
        "note": {"value": {"type": "plain_text_input", "value": note}}})


def issued(server: Server, user: str, reason: str):
    request_id, message = ask(server, user, "prod-db", "1h", reason)
    ok(server.driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
    wait_state(server, request_id, "issued")
    settle(server.fake)
    return request_id, server.fake.message(REQUESTS, message.ts)


def test_cancel_by_button_and_command_only_by_the_requester(server):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, REQUESTER, "prod-db", "1h", "cancel me by button")
    since = Since(fake)
    ok(driver.click_button(DAN, channel=REQUESTS, ts=message.ts, label="Cancel"))
    assert "only the requester" in since.ephemeral(DAN).lower()
    assert state(server, request_id) == "pending"
    ok(driver.click_button(REQUESTER, channel=REQUESTS, ts=message.ts, label="Cancel"))
    wait_state(server, request_id, "cancelled")
    card = fake.wait_for(lambda: (m := fake.message(REQUESTS, message.ts)) and
                         "cancelled" in shown(m) and m)
    assert f"cancelled by <@{REQUESTER}>" in shown(card) and buttons(card) == []
    fake.wait_for(lambda: [m for m in fake.replies(REQUESTS, message.ts)
                           if "cancelled by" in m.text and f"<@{REQUESTER}>" in m.text])

    other_id, other = ask(server, REQUESTER, "prod-db", "1h", "cancel me by command")
    since = Since(fake)
    ok(driver.command(DAN, "/ssh-request", f"cancel {other_id}"))
    assert "only the requester" in since.ephemeral(DAN).lower()
    ok(driver.command(REQUESTER, "/ssh-request", f"cancel {other_id}"))
    wait_state(server, other_id, "cancelled")
    fake.wait_for(lambda: "cancelled" in shown(fake.message(REQUESTS, other.ts)))
    audit = server.query("SELECT actor FROM audit_events WHERE action = 'request.cancelled' "
                         "AND subject = ?", f"request:{other_id}")
    assert audit == [(REQUESTER,)]


def test_deny_needs_a_reason_and_an_approver(server):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, DAN, "prod-db", "1h", "deny me with a reason")
    view = open_modal(server, BOB, lambda: driver.click_button(BOB, channel=REQUESTS,
                                                               ts=message.ts, label="Deny"))
    assert view["callback_id"] == "vouch_deny_form" and request_id in str(view["blocks"])
    too_short = submit_note(server, BOB, view, "no")
    assert too_short.json()["response_action"] == "errors" and "note" in too_short.json()["errors"]
    assert state(server, request_id) == "pending"
    # a stranger submitting the same modal is refused by the policy, not by the modal
    since = Since(fake)
    ok(submit_note(server, DAN, view, "my own request, denied by me"))
    assert "cannot approve or deny your own request" in since.ephemeral(DAN).lower()
    ok(submit_note(server, BOB, view, "not during the release freeze"))
    wait_state(server, request_id, "denied")
    dm = wait_dm(fake, DAN, request_id)
    assert "not during the release freeze" in dm.text and f"<@{BOB}>" in dm.text
    card = fake.wait_for(lambda: (m := fake.message(REQUESTS, message.ts)) and
                         "Denied by" in shown(m) and m)
    assert "not during the release freeze" in shown(card) and buttons(card) == []


def test_approve_with_a_comment_from_the_thread(server):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, REQUESTER, "prod-db", "1h", "approve me with a comment")
    [note] = [m for m in fake.replies(REQUESTS, message.ts) if "Approvers:" in m.text]
    view = open_modal(server, BOB, lambda: driver.click_button(
        BOB, channel=REQUESTS, ts=note.ts, label="Approve with comment"))
    assert view["callback_id"] == "vouch_approve_form"
    ok(submit_note(server, BOB, view, "go ahead, ping me when done"))
    wait_state(server, request_id, "issued")
    fake.wait_for(lambda: [m for m in fake.replies(REQUESTS, message.ts)
                           if "go ahead, ping me when done" in m.text])


def test_revoke_from_the_card_reaches_the_card_the_thread_the_holder_and_the_krl(server):
    fake, driver = server.fake, server.driver
    request_id, card = issued(server, REQUESTER, "revoke me from the card")
    assert buttons(card) == ["Revoke"]
    [(serial, _, _)] = certificates_of(server, request_id)
    since = Since(fake)
    ok(driver.click_button(DAN, channel=REQUESTS, ts=card.ts, label="Revoke"))
    view = fake.wait_for(lambda: [v for v in fake.views(DAN) if v["method"] == "views.open"])[-1]
    ok(submit_note(server, DAN, view, "not mine but I try"))
    assert "only your own" in since.ephemeral(DAN).lower()
    assert state(server, request_id) == "issued"

    view = open_modal(server, REQUESTER, lambda: driver.click_button(
        REQUESTER, channel=REQUESTS, ts=card.ts, label="Revoke"))
    assert view["callback_id"] == "vouch_revoke_form"
    ok(submit_note(server, REQUESTER, view, "laptop stolen"))
    wait_state(server, request_id, "revoked")
    final = fake.wait_for(lambda: (m := fake.message(REQUESTS, card.ts)) and
                          "Revoked by" in shown(m) and m)
    assert f"Revoked by <@{REQUESTER}>" in shown(final) and "laptop stolen" in shown(final)
    assert buttons(final) == []
    fake.wait_for(lambda: [m for m in fake.replies(REQUESTS, card.ts) if "laptop stolen" in m.text])
    told = wait_dm(fake, REQUESTER, f"(serial {serial}) was revoked")
    assert "revoked" in told.text and "laptop stolen" in told.text
    # twice: "already revoked", everywhere
    since = Since(fake)
    ok(driver.command(REQUESTER, "/ssh-revoke", f"{serial} again"))
    assert "already revoked" in since.ephemeral(REQUESTER)
    cli = server.vouch("revoke", str(serial))
    assert "already revoked" in cli.stdout


def test_a_revocation_made_with_the_cli_reaches_slack_too(server):
    fake = server.fake
    request_id, card = issued(server, DAN, "revoked by an operator")
    [(serial, _, _)] = certificates_of(server, request_id)
    server.vouch("revoke", str(serial), "--reason", "incident 42")
    final = fake.wait_for(lambda: (m := fake.message(REQUESTS, card.ts)) and
                          "Revoked by" in shown(m) and m, timeout=8)
    assert "incident 42" in shown(final)
    told = wait_dm(fake, DAN, f"(serial {serial}) was revoked")
    assert "incident 42" in told.text
    settle(fake)  # announced once, however many sweeps ran
    assert len([m for m in dm_messages(fake, DAN) if f"serial {serial}" in m.text
                and "revoked" in m.text]) == 1


def test_extend_opens_a_prefilled_request_that_needs_approval(server):
    fake, driver = server.fake, server.driver
    request_id, _ = issued(server, REQUESTER, "extend me later")
    dm = wait_dm(fake, REQUESTER, request_id)
    assert {"Extend", "Request again"} <= set(buttons(dm))
    view = open_modal(server, REQUESTER, lambda: driver.click_button(
        REQUESTER, channel=fake.dm_channel(REQUESTER), ts=dm.ts, label="Extend"))
    assert view["callback_id"] == "vouch_request_form" and request_id in str(view["blocks"])
    values = {}
    for block in view["blocks"]:
        element = block.get("element") or {}
        if "initial_option" in element:
            values[block["block_id"]] = {"value": {"type": "static_select",
                                                   "selected_option": element["initial_option"]}}
        elif "initial_value" in element:
            values[block["block_id"]] = {"value": {"type": "plain_text_input",
                                                   "value": element["initial_value"]}}
    assert values["reason"]["value"]["value"] == "extend me later"
    assert values["target"]["value"]["selected_option"]["value"] == "prod-db"
    ok(driver.submit_view(REQUESTER, view, values))
    extension = fake.wait_for(lambda: server.scalar(
        "SELECT id FROM requests WHERE extends = ?", request_id))
    assert state(server, extension) == "pending"  # approvers decide again
    ts = fake.wait_for(lambda: server.scalar("SELECT ts FROM slack_messages WHERE request_id = ?",
                                             extension))
    assert f"Extends request `{request_id}`" in shown(fake.message(REQUESTS, ts))
    # someone else's Extend (a forged click on another's DM) opens nothing
    opened, since = len(fake.views(DAN)), Since(fake)
    ok(driver.click_button(DAN, channel=fake.dm_channel(REQUESTER), ts=dm.ts, label="Extend"))
    assert "only your own" in since.ephemeral(DAN)
    assert len(fake.views(DAN)) == opened


def test_breakglass_review_note_and_revoke_now_are_for_admins(server):
    fake, driver = server.fake, server.driver
    ok(driver.command(GLASS, "/ssh-breakglass", "prod-db 30m disk full"))
    alert = fake.wait_for(lambda: [m for m in fake.messages(SECURITY) if "disk full" in m.text
                                   and "serial" in m.text])[-1]
    assert buttons(alert) == ["Mark reviewed", "Revoke now"]
    request_id = server.scalar("SELECT id FROM requests WHERE reason = 'disk full'")
    since = Since(fake)
    ok(driver.click_button(BOB, channel=SECURITY, ts=alert.ts, label="Mark reviewed"))
    assert "only admins" in since.ephemeral(BOB).lower()
    ok(driver.click_button(GLASS, channel=SECURITY, ts=alert.ts, label="Revoke now"))
    assert "only admins" in since.ephemeral(GLASS, containing="nly admins").lower()
    view = open_modal(server, ADMIN, lambda: driver.click_button(
        ADMIN, channel=SECURITY, ts=alert.ts, label="Mark reviewed"))
    ok(submit_note(server, ADMIN, view, "cleared the disk with them"))
    fake.wait_for(lambda: "cleared the disk with them" in shown(fake.message(SECURITY, alert.ts)))
    assert f"Reviewed by <@{ADMIN}>" in shown(fake.message(SECURITY, alert.ts))
    ok(driver.click_button(ADMIN, channel=SECURITY, ts=alert.ts, label="Revoke now"))
    wait_state(server, request_id, "revoked")
    fake.wait_for(lambda: buttons(fake.message(SECURITY, alert.ts)) == [])
    assert server.scalar("SELECT revoked_by FROM certificates WHERE request_id = ?",
                         request_id) == ADMIN


def test_app_home_and_status_show_what_concerns_each_user(server):
    fake, driver = server.fake, server.driver
    mine, _ = ask(server, DAN, "prod-db", "1h", "shown in two homes")
    ok(driver.open_home(DAN))
    home = fake.wait_for(lambda: fake.home(DAN))
    assert mine in str(home["blocks"])
    ok(driver.open_home(CAROL))  # an approver through @db-owners
    fake.wait_for(lambda: mine in str((fake.home(CAROL) or {}).get("blocks")))
    since = Since(fake)
    ok(driver.command(CAROL, "/ssh-status"))
    status = since.ephemeral(CAROL)
    assert "Waiting for your approval" in status and mine in status
    # Approve in the Home works as in the channel, and both homes are republished
    ok(driver.click_in_home(CAROL, label="Approve", value=mine))
    wait_state(server, mine, "issued")
    fake.wait_for(lambda: mine not in str(fake.home(CAROL)["blocks"]))
    fake.wait_for(lambda: "Revoke" in str(fake.home(DAN)["blocks"]))


def test_a_note_the_modal_refuses_gets_no_second_answer(server):
    fake, driver = server.fake, server.driver
    request_id, message = ask(server, DAN, "prod-db", "1h", "refused note, said once")
    view = open_modal(server, BOB, lambda: driver.click_button(BOB, channel=REQUESTS,
                                                               ts=message.ts, label="Deny"))
    since = Since(fake)
    assert submit_note(server, BOB, view, "x").json()["response_action"] == "errors"
    settle(fake)
    assert since.ephemerals(BOB) == [] and state(server, request_id) == "pending"
