"""Logging as VOUCH_LOG_FORMAT asks: readable text, or one JSON object a line for a collector.
Either way one record is one line, whatever a person typed into it, and holds no secret this
process knows, no Slack token and no response_url: the formatters below apply to every logger
(ours, bolt's, slack_sdk's, uvicorn's) through the root handler. Nothing should log a request body
or a secret in the first place; the redaction is the net under that rule."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import datetime, timezone

# Control characters written as escapes. str.splitlines() (and many log tools) also break lines
# at \x1c-\x1e, \x85, \u2028 and \u2029, and ESC drives terminals.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                 0x2028: "\\u2028", 0x2029: "\\u2029"})
# json.dumps escapes only below 0x20; these are the rest, as JSON escapes (they occur only inside
# strings in its output).
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in (*range(0x7f, 0xa0), 0x2028, 0x2029)}

_SLASH = r"(?:/|\\/|%2[Ff])"  # as written, JSON-escaped (Slack's own payloads) or URL-encoded
_URL_CHAR = r"(?:[\w.:~+=-]|%[0-9A-Fa-f]{2}|\\?/)"
# A response_url lets whoever holds it answer as the app for 30 minutes: Slack's hooks host, or
# the Slack API stand-ins' (tests, `vouch sandbox`) /response/T…/ path.
_HOOK = re.compile(rf"https?(?::|%3[Aa]){_SLASH}{_SLASH}{_URL_CHAR}*?(?:hooks\.slack(?:-gov)?\.com"
                   rf"|{_SLASH}(?:commands|actions|workflows|response){_SLASH}T[A-Z0-9]+{_SLASH})"
                   rf"{_URL_CHAR}*")
_TOKEN = re.compile(r"(?:xoxe\.)?xox[a-z]-[\w-]+|xapp-[\w-]+")


class Redactor:
    """Takes secrets, Slack tokens and response_urls out of log text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Short values (a PIN) would blank out ordinary numbers; longest first, as one may
        # contain another.
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[secret]")
        return _TOKEN.sub("[token]", _HOOK.sub("[response_url]", text))


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        # Tracebacks too: written on their record's line with \n, so no exception message (which
        # may quote a person's text) can start a line, and grep finds the whole record.
        return self.redact(super().format(record)).translate(_ESCAPES)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": self.redact(record.getMessage())}
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False).translate(_JSON_ESCAPES)


def configure_logging(log_format: str, level: int = logging.INFO, *,
                      secrets: Iterable[str] = ()) -> None:
    """Log to stderr in `log_format`; `secrets` (the process's tokens, keys, passphrases) are
    redacted wherever they would appear."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else TextFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Request bodies and tokens can appear at debug level in these libraries: keep them quiet.
    # APScheduler says every run of every job at INFO: vouch.scheduler logs what matters.
    for noisy in ("slack_bolt", "slack_sdk", "urllib3", "httpx", "uvicorn.access", "alembic",
                  "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
