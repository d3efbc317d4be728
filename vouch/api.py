"""The client API (CONTRACT "HTTP"): `vouch request` and `vouch ssh` open, follow and cancel
requests here, each call signed with the requester's registered SSH key (access.signed_calls).

Answers are JSON: `{"request": {...}}`, or `{"error": "..."}` with 401 (who are you), 403 (the
policy says no), 404 (no such request of yours), 409 (too late for that), 413, 422 (bad input),
429 (slow down) or 503 (Slack or the CA cannot answer; nothing was done).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from access import signed_calls
from access.context import Access
from access.durations import parse_duration
from access.errors import BadInput, InvalidTransition, PolicyRefusal, VouchError
from access.ports import StoredCertificate
from access.requests import Request, State
from access.certificate import template
from access.signed_calls import SignedCall, Unauthorized
from bot.handlers import Refused
from bot.terminal import NotYours, Terminal
from vouch.edge import signed_call

log = logging.getLogger("vouch.api")

MAX_WAIT = 30  # seconds a GET may hold the answer back for a change
POLL = 0.5  # how often a held GET looks again (the change may come through another replica)
MAX_JSON = 64 * 1024
FIELDS = {"target", "duration", "reason", "public_key"}
# States after which nothing changes for the terminal (approved is on its way to issued).
SETTLED = {State.ISSUED, State.DENIED, State.EXPIRED, State.CANCELLED, State.REVOKED}


class TooMany(VouchError):
    pass


class KeyRate:
    """A token bucket per key: `burst` calls at once, then `per_minute`. Per process: with
    several replicas a key gets that much from each, which still stops a runaway loop."""

    def __init__(self, *, burst: int = 20, per_minute: int = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate, self.clock = burst, per_minute / 60.0, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if a call may go ahead now, else the seconds until one may."""
        with self._lock:
            now = self.clock()
            tokens, since = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - since) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:  # forget the idle: full buckets say nothing
                self._buckets = {k: v for k, v in self._buckets.items()
                                 if v[0] + (now - v[1]) * self.rate < self.burst}
            return 0.0


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def client_api_routes(access: Access, terminal: Terminal, *, rate: KeyRate | None = None
                      ) -> list[Route]:
    rate = rate or KeyRate()

    def caller(call: SignedCall) -> str:
        """The Slack user whose registered key signed, once we know the call is new."""
        with access.unit(read_only=True) as unit:
            user = unit.keys.holder(call.fingerprint)
        if user is None:
            raise Unauthorized(f"the key {call.fingerprint} is not registered with Vouch: add it "
                               "in Slack with /ssh-key add (a removed or offboarded key no "
                               "longer counts)")
        with access.unit() as unit:
            signed_calls.first_use(unit, call, access.clock())
        return user

    def endpoint(work: Callable[[str, SignedCall, HttpRequest, bytes], Awaitable[JSONResponse]]):
        async def handle(request: HttpRequest) -> JSONResponse:
            body = await request.body()  # at most 1 MB: BodyLimit
            if len(body) > MAX_JSON:
                return _error(413, f"request body too large ({MAX_JSON // 1024} KB at most)")
            try:
                call = signed_call(request, body, namespace=signed_calls.API, now=access.clock())
                user = await anyio.to_thread.run_sync(caller, call)
                # After the replay check: replaying a captured call cannot spend the key's calls.
                wait = rate.take(call.fingerprint)
                if wait:
                    return _error(429, f"too many calls with this key: try again in "
                                       f"{int(wait) + 1} s", {"Retry-After": str(int(wait) + 1)})
                await anyio.to_thread.run_sync(terminal.check, user)
                return await work(user, call, request, body)
            except (Unauthorized, Refused) as exc:
                log.info("client API refused %s %s: %s", request.method, request.url.path,
                         exc.detail)
                return _error(401, exc.message)
            except PolicyRefusal as exc:
                return _error(403, exc.message)
            except NotYours as exc:
                return _error(404, exc.message)
            except InvalidTransition as exc:
                return _error(409, exc.message)
            except BadInput as exc:
                return _error(422, exc.message)
            except VouchError as exc:  # Slack or the CA cannot answer
                log.warning("client API %s %s failed: %s", request.method, request.url.path,
                            exc.detail)
                return _error(503, f"{exc.message}; nothing was done, try again")
            except Exception:  # noqa: BLE001 - the client gets a reference, the log the rest
                ref = secrets.token_hex(4)
                log.exception("client API error (ref %s)", ref)
                return _error(500, f"internal error (ref {ref})")
        return handle

    def describe(request: Request, certificate: StoredCertificate | None) -> dict:
        """The request as the terminal shows it (Slack names resolved: call outside a unit)."""
        target = access.policy.target(request.target)
        where = terminal.where(request)
        live = (certificate is not None and request.state is State.ISSUED
                and certificate.revoked_at is None)
        decided_by = request.denied_by or request.cancelled_by or (
            certificate.revoked_by if certificate and certificate.revoked_at else None)
        note = request.deny_reason or (certificate.revoke_reason if certificate and
                                       certificate.revoked_at else None) or request.issue_error
        return {"request": {
            "id": request.id, "state": request.state.value, "target": request.target,
            "principals": list(template(request, target).principals) if target else [],
            "duration_seconds": int(request.duration.total_seconds()),
            "reason": request.reason, "key_fingerprint": request.key_fingerprint,
            "channel": where.channel, "channel_name": where.channel_name,
            "approvals": len(request.approvers),
            "approvals_required": target.approvals_required if target else None,
            "approved_by": [{"id": a, "name": terminal.name(a)} for a in request.approvers],
            "decided_by": ({"id": decided_by, "name": terminal.name(decided_by)}
                           if decided_by and decided_by != "vouch" else decided_by),
            "note": note,
            "expires_at": request.expires_at.isoformat(),
            "certificate": certificate.line if live else None,
            "serial": str(certificate.serial) if certificate else None,
            "valid_before": certificate.valid_before.isoformat() if certificate else None,
        }}

    async def open_request(user: str, call: SignedCall, request: HttpRequest,
                           body: bytes) -> JSONResponse:
        asked = _json_object(body)
        unknown = set(asked) - FIELDS
        if unknown:
            raise BadInput(f"unknown field {sorted(unknown)[0]!r}; a request has "
                           f"{', '.join(sorted(FIELDS))}")
        target, duration, reason = (_text(asked, name) for name in ("target", "duration",
                                                                      "reason"))
        public_key = asked.get("public_key")
        if public_key is not None and (not isinstance(public_key, str)
                                       or public_key.split()[:2] != call.key.line().split()[:2]):
            raise Unauthorized("public_key is not the key that signed this call: the key to "
                               "certify proves itself by signing")

        def ask() -> dict:
            opened = terminal.ask(user, target=target, duration=parse_duration(duration),
                                  reason=reason, key_fingerprint=call.fingerprint)
            return describe(opened, None)

        return JSONResponse(await anyio.to_thread.run_sync(ask), status_code=201)

    async def show(user: str, call: SignedCall, request: HttpRequest, body: bytes) -> JSONResponse:
        request_id = request.path_params["request_id"]
        wait = _wait(request.query_params.get("wait"))
        found, certificate = await anyio.to_thread.run_sync(terminal.get, user, request_id)
        seen = _progress(found, certificate)
        deadline = time.monotonic() + wait
        while found.state not in SETTLED and time.monotonic() < deadline:
            await anyio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
            found, certificate = await anyio.to_thread.run_sync(terminal.get, user, request_id)
            if _progress(found, certificate) != seen:
                break
        return JSONResponse(await anyio.to_thread.run_sync(describe, found, certificate))

    async def cancel(user: str, call: SignedCall, request: HttpRequest,
                     body: bytes) -> JSONResponse:
        request_id = request.path_params["request_id"]

        def withdraw() -> dict:
            cancelled = terminal.cancel(user, request_id)
            return describe(cancelled, None)

        return JSONResponse(await anyio.to_thread.run_sync(withdraw))

    return [
        Route("/api/v1/requests", endpoint(open_request), methods=["POST"]),
        Route("/api/v1/requests/{request_id}", endpoint(show), methods=["GET"]),
        Route("/api/v1/requests/{request_id}", endpoint(cancel), methods=["DELETE"]),
    ]


def _progress(request: Request, certificate: StoredCertificate | None) -> tuple:
    return request.state, len(request.votes), certificate is not None


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadInput("the body must be a JSON object: {\"target\", \"duration\", "
                       "\"reason\", \"public_key\"}") from None
    if not isinstance(value, dict):
        raise BadInput("the body must be a JSON object, not a " + type(value).__name__)
    return value


def _text(asked: dict[str, Any], name: str) -> str:
    value = asked.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{name} is required (a string)")
    return value


def _wait(text: str | None) -> float:
    if text is None or text == "":
        return 0.0
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_WAIT:
        raise BadInput(f"wait must be whole seconds from 0 to {MAX_WAIT}")
    return float(text)
