"""Vouch's error hierarchy: a message fit for the person who acted, and a detail for the log.

`message` may be shown to anyone (Slack, CLI); it never holds a PIN, a key or a token.
`detail` is for operators' logs; it must not hold secrets either.
"""

from __future__ import annotations


class VouchError(Exception):
    """Base of every error Vouch expects and explains."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message


class BadInput(VouchError, ValueError):
    """The user gave something malformed (a key, a duration, an argument)."""


class SignerUnavailable(VouchError):
    """The CA key cannot sign right now (token absent, PIN refused, file unreadable)."""


class SignerError(VouchError):
    """The CA key is reachable but cannot do what was asked (wrong key type, key exists)."""
