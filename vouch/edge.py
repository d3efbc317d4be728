"""What `vouch serve` checks before a request reaches anything else.

- Every path: a body over 1 MB is refused with 413, by its Content-Length before a byte is read,
  and by a running count while it streams (Starlette's `request.body()` would otherwise read all
  of it: a 300 MB POST took the server from 95 MB to 710 MB).
- `/api/v1/…`: a call signed with an SSH key (access.signed_calls) is read from its headers
  and the path and query exactly as sent (`signed_call`).
- `/slack/events`: Slack's signature is checked here (slack-sdk's SignatureVerifier, 5-minute
  window), before bolt sees the body: bolt parses `payload=` first and answered a malformed one
  with 500, signed or not. Unsigned gets 401, signed but malformed 400, and a signature seen
  before inside the window (a replay) is ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from datetime import datetime
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier
from starlette.requests import Request

from access import signed_calls

log = logging.getLogger("vouch.web")

MAX_BODY = 1024 * 1024
REPLAY_WINDOW = 300.0  # seconds: Slack's own signature window
# Expired signatures are dropped every this many new ones. Only validly signed requests are
# remembered, so the set is bounded by Slack's own traffic over REPLAY_WINDOW.
_PURGE_EVERY = 1000


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit`, declared or streamed."""

    def __init__(self, app, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _plain(send, 400, "bad Content-Length\n")
                return
            if int(declared) > self.limit:
                await _plain(send, 413, "request body too large (1 MB at most)\n")
                return
        received, started = 0, False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return message

        async def noting_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, noting_send)
        except BodyTooLarge:
            if not started:
                await _plain(send, 413, "request body too large (1 MB at most)\n")


async def _plain(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class SlackGate:
    """The signature, replay and shape checks for `/slack/events`."""

    def __init__(self, signing_secret: str) -> None:
        self._secret = signing_secret.encode()
        self._verifier = SignatureVerifier(signing_secret)
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def refuse(self, body: bytes, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, reason) to answer instead of dispatching, or None to go on. 200 for a replay:
        it is ignored, and the sender learns nothing."""
        if not self._signed(body, headers):
            log.warning("refused a Slack request: missing, stale or wrong signature")
            return 401, "invalid or missing Slack signature"
        if self._replayed(headers.get("x-slack-signature", "")):
            log.warning("ignored a replayed Slack request (a signature seen before)")
            return 200, ""
        problem = _malformed(body, headers.get("content-type", ""))
        if problem:
            log.warning("refused a signed Slack request: %s", problem)
            return 400, problem
        return None

    def _signed(self, body: bytes, headers: dict[str, str]) -> bool:
        try:
            return self._verifier.is_valid_request(body.decode("utf-8"), headers)
        except UnicodeDecodeError:
            pass
        # slack-sdk's verifier decodes the body as UTF-8 first; Slack signs bytes, so a body
        # that is not UTF-8 (never Slack's, but possibly signed) is checked on its bytes here.
        timestamp = headers.get("x-slack-request-timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > REPLAY_WINDOW:
            return False
        expected = hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + body,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(headers.get("x-slack-signature", ""), "v0=" + expected)

    def _replayed(self, signature: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if signature in self._seen:
                return True
            self._seen[signature] = now + REPLAY_WINDOW
            if len(self._seen) % _PURGE_EVERY == 0:
                self._seen = {s: t for s, t in self._seen.items() if t > now}
        return False


def _malformed(body: bytes, content_type: str) -> str | None:
    """What is wrong with a Slack body's shape, if anything: bolt must not be the one to find out."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    if content_type.startswith("application/json"):
        try:
            return None if isinstance(json.loads(text), dict) else "the JSON body is not an object"
        except ValueError:
            return "the body is not JSON"
    payload = parse_qs(text, keep_blank_values=True).get("payload")
    if payload is None:
        return None  # a slash command: plain form fields
    try:
        return None if isinstance(json.loads(payload[0]), dict) else "payload is not a JSON object"
    except ValueError:
        return "payload is not JSON"


def signed_call(request: Request, body: bytes, *, namespace: str,
                now: datetime) -> signed_calls.SignedCall:
    """The key that signed this call (the client API's, or a host's renewal), or Unauthorized:
    over the raw path and query, as the caller sent and signed them."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    return signed_calls.check(
        authorization=request.headers.get("authorization"),
        timestamp=request.headers.get("x-vouch-timestamp"), method=request.method,
        target=(path + (b"?" + query if query else b"")).decode("latin-1"), body=body,
        namespace=namespace, now=now)
