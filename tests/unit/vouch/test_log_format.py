"""vouch.logs: one record is one line in either format, whatever its message or traceback holds."""

from __future__ import annotations

import json
import logging
import sys

from vouch.logs import JsonFormatter, Redactor, TextFormatter

BREAKS = "a\nb\rc\r\nd\x0be\x0cf\x1cg\x1dh\x1ei\x85j\u2028k\u2029l\x1b[2Jm\x00n"


def record(message: str, *args, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"bad {BREAKS}")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("vouch.test", logging.ERROR, __file__, 1, message, args, exc_info)


def test_text_escapes_every_line_break_and_control_character_in_message_and_traceback():
    line = TextFormatter().format(record("refused %s", BREAKS, exc=True))
    assert line.splitlines() == [line] and line.isprintable(), line
    assert r"refused a\nb\rc\r\nd\x0be\x0cf\x1cg\x1dh\x1ei\x85j\u2028k\u2029l\x1b[2Jm\x00n" in line
    assert r"\nTraceback (most recent call last):\n" in line
    assert r"ValueError: bad a\nb" in line


def test_json_is_one_line_and_decodes_to_the_original_text():
    line = JsonFormatter().format(record("refused %s", BREAKS, exc=True))
    assert line.splitlines() == [line] and line.isprintable(), line
    entry = json.loads(line)
    assert entry["message"] == f"refused {BREAKS}"
    assert entry["exception"].startswith("Traceback") and BREAKS in entry["exception"]


HOOKS = [
    "https://hooks.slack.com/commands/T0VOUCH/123456/AbC-d_e",
    "https://hooks.slack.com/actions/T0VOUCH/123/xyz",
    "https://hooks.slack-gov.com/workflows/T0A/B0/123/xyz",
    r"https:\/\/hooks.slack.com\/actions\/T0VOUCH\/123\/xyz",  # as Slack's JSON payloads write it
    "https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT0VOUCH%2F123%2Fxyz",  # in a form body
    "http://127.0.0.1:43927/response/T0VOUCH/497201973385/HnbLRm1nWPlg6Q7I23v5KWuo",
    "http%3A%2F%2F127.0.0.1%3A43927%2Fresponse%2FT0VOUCH%2F4972%2FHnbLRm1n",
]


def test_response_urls_tokens_and_known_secrets_are_redacted_in_both_formats():
    redact = Redactor(["e2e-signing-secret-8f2c1d", "1234"])
    text = ("posting to " + " and ".join(HOOKS) + " with xoxb-1-2-abc, xoxe.xoxp-1-x, xapp-1-A-2 "
            "signed by e2e-signing-secret-8f2c1d, PIN 1234")
    for formatter in (TextFormatter(redact), JsonFormatter(redact)):
        line = formatter.format(record("%s", text, exc=False))
        for secret in (*HOOKS, "hooks", "T0VOUCH", "xox", "xapp", "8f2c1d"):
            assert secret not in line, (secret, line)
        assert line.count("[response_url]") == len(HOOKS) and line.count("[token]") == 3, line
        assert "signed by [secret], PIN 1234" in line  # too short to redact without harm


def test_other_urls_stay():
    text = ("Slack refused (url: http://127.0.0.1:40537/api/users.info) and "
            "https://slack.com/api/chat.postMessage, https://example.com/actions/x")
    assert Redactor()(text) == text


def test_a_secret_in_a_traceback_is_redacted():
    try:
        raise RuntimeError("token xoxb-123-456-abc refused")
    except RuntimeError:
        entry = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "xoxb" not in TextFormatter().format(entry)
    assert "xoxb" not in JsonFormatter().format(entry)
