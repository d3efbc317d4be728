"""bot.payloads, bot.commands and bot.texts: Slack's dicts in, neutral values and sentences out."""

from datetime import timedelta

from access.errors import NotAnApprover, PolicyRefusal
from access.policy import People
from bot import commands, payloads, texts


def test_a_slash_command_payload():
    command = payloads.command({"user_id": "U0REQ", "team_id": "T0", "channel_id": "C0",
                                "response_url": "https://hooks/x", "trigger_id": "t.1",
                                "command": "/ssh-request", "text": "prod-db 2h why"})
    assert command.actor == payloads.Actor("U0REQ", "T0", "C0", "https://hooks/x", "t.1")
    assert commands.parse(command.name, command.text) == commands.AskAccess(
        target="prod-db", duration=timedelta(hours=2), reason="why")


def test_a_button_payload_reads_channel_from_the_container_when_needed():
    click = payloads.click({"user": {"id": "U0BOB", "team_id": "T0"},
                            "container": {"channel_id": "C0REQ"},
                            "actions": [{"action_id": "vouch_approve", "value": "req-1"}],
                            "message": {"ts": "1.2"}})
    assert (click.actor.user, click.actor.team, click.actor.channel) == ("U0BOB", "T0", "C0REQ")
    assert (click.action_id, click.value, click.message_ts) == ("vouch_approve", "req-1", "1.2")


def test_a_modal_submission_takes_typed_and_selected_values():
    form = payloads.submission({"user": {"id": "U0REQ"}, "team": {"id": "T0"}, "view": {
        "private_metadata": "C0REQ", "state": {"values": {
            "target": {"value": {"type": "static_select", "selected_option": {"value": "web"}}},
            "duration": {"value": {"type": "plain_text_input", "value": "30m"}},
            "reason": {"value": {"type": "plain_text_input", "value": None}}}}}})
    assert form.values == {"target": "web", "duration": "30m", "reason": ""}
    assert form.actor.channel is None and form.private_metadata == "C0REQ"  # a modal: no channel


def test_malformed_payloads_give_empty_values_not_errors():
    assert payloads.click({}).actor.user == "" and payloads.click({}).value == ""
    assert payloads.submission({}).values == {}
    assert isinstance(commands.parse("/ssh-request", "prod-db"), commands.Help)


def test_refusals_read_as_sentences_and_name_people_the_slack_way():
    assert texts.refusal(PolicyRefusal("you cannot do that")) == "You cannot do that"
    refusal = texts.refusal(NotAnApprover("prod-db", People(frozenset({"U0BOB"}),
                                                            frozenset({"@dba"}))))
    assert refusal == "You are not an approver for prod-db; its approvers are <@U0BOB>, @dba"


def test_kind_names_a_payload_without_what_was_typed():
    assert payloads.kind({"type": "block_actions", "actions": [
        {"action_id": "old_button", "value": "typed"}]}) == "block_actions old_button"
    assert payloads.kind({"type": "dialog_submission", "callback_id": "d",
                          "submission": {"note": "typed"}}) == "dialog_submission d"
    assert payloads.kind({"type": "event_callback", "event": {"type": "app_mention",
                                                              "text": "typed"}}) \
        == "event_callback app_mention"
    assert payloads.kind({"command": "/old", "text": "typed"}) == "/old"
    assert payloads.kind({"type": "view_submission", "view": {"callback_id": "v"}}) \
        == "view_submission v"
    assert payloads.kind({"actions": "not a list", "view": [], "event": None}) == "of no known kind"
