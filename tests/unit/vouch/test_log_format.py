"""vouch.logs: one record is one line in either format, whatever its message or traceback holds."""

from __future__ import annotations

import json
import logging
import sys

from vouch.logs import JsonFormatter, TextFormatter

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
