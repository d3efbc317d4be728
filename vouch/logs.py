"""Logging as VOUCH_LOG_FORMAT asks: readable text, or one JSON object a line for a collector.
Either way one record is one line, whatever a person typed into it: the formatters below apply to
every logger (ours, bolt's, slack_sdk's, uvicorn's) through the root handler."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

# Control characters written as escapes. str.splitlines() (and many log tools) also break lines
# at \x1c-\x1e, \x85, \u2028 and \u2029, and ESC drives terminals.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                 0x2028: "\\u2028", 0x2029: "\\u2029"})
# json.dumps escapes only below 0x20; these are the rest, as JSON escapes (they occur only inside
# strings in its output).
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in (*range(0x7f, 0xa0), 0x2028, 0x2029)}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        # Tracebacks too: written on their record's line with \n, so no exception message (which
        # may quote a person's text) can start a line, and grep finds the whole record.
        return super().format(record).translate(_ESCAPES)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False).translate(_JSON_ESCAPES)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Request bodies and tokens can appear at debug level in these libraries: keep them quiet.
    for noisy in ("slack_bolt", "slack_sdk", "urllib3", "httpx", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
