"""The hosts' HTTP paths (CONTRACT "HTTP"): `POST /api/v1/hosts/certificate` (enrolment with a
one-time token, or renewal signed by the host key) and `GET /known_hosts` for users.

Only translation happens here: JSON in, access.hosts decides, JSON out, each refusal as the status
the contract names (401 bad/used/expired token or signature, 403 a name change, 422 bad keys,
503 no host CA). The 1 MB body limit is BodyLimit's, before this code runs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import timezone

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from access import host_input, hosts, signed_calls
from access.context import Access
from access.errors import BadInput, PolicyRefusal, SignerUnavailable, VouchError
from access.signed_calls import Unauthorized
from ca.cert import Signer
from vouch.edge import signed_call

log = logging.getLogger("vouch.web")

PATH = "/api/v1/hosts/certificate"
_USAGE = ('send a JSON object: {"token": "vht_…", "public_keys": ["ssh-ed25519 AAAA…", …]} '
          'to enrol, or {"public_keys": […]} signed with the host key (Vouch-SSHSIG, namespace '
          'vouch-host) to renew')


class HostCaSource:
    """The host CA for these paths: the one `serve` opened, or, when `vouch ca init --host`
    runs after `serve` started, the one found on the first call after (looked for at most every
    RETRY seconds): no restart between making the host CA and enrolling hosts."""

    RETRY = 2.0

    def __init__(self, open_host_ca: Callable[[], Signer | None], found: Signer | None = None,
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self._open, self._found, self._clock = open_host_ca, found, clock
        self._next_look = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> Signer | None:
        with self._lock:
            if self._found is None and self._clock() >= self._next_look:
                self._next_look = self._clock() + self.RETRY
                try:
                    self._found = self._open()
                except VouchError as exc:
                    log.warning("host CA not usable: %s", exc.detail)
                if self._found is not None:
                    log.info("host certificates are on: host CA %s",
                             self._found.public_key.fingerprint)
            return self._found


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _strings(payload: dict, name: str) -> list[str] | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadInput(f"{name} must be a list of strings")
    return value


def host_routes(access: Access, host_cas: Callable[[], Signer | None],
                pattern: str) -> list[Route]:
    """The routes; while `host_cas()` has no host CA (no VOUCH_HOST_CA_KEY yet) both answer
    503."""
    pattern = host_input.host_pattern(pattern)

    async def certificate(request: Request) -> Response:
        host_ca = host_cas()
        if host_ca is None:
            return _error(503, hosts.NO_HOST_CA)
        body = await request.body()
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _error(400, f"the body is not JSON: {_USAGE}")
        if not isinstance(payload, dict):
            return _error(400, f"the body is not a JSON object: {_USAGE}")

        def work() -> hosts.HostIssued:
            public_keys = _strings(payload, "public_keys")
            if "token" in payload:
                token = payload["token"]
                if not isinstance(token, str):
                    raise Unauthorized("token must be a string (vht_…)")
                return hosts.enrol(access, host_ca, token=token, public_keys=public_keys or [])
            call = signed_call(request, body, namespace=signed_calls.HOST, now=access.clock())
            return hosts.renew(access, host_ca, call, names=_strings(payload, "hostnames"),
                               public_keys=public_keys)

        try:
            issued = await anyio.to_thread.run_sync(work)
        except Unauthorized as exc:
            return _error(401, exc.message, **{"WWW-Authenticate": signed_calls.SCHEME})
        except PolicyRefusal as exc:
            return _error(403, exc.message)
        except BadInput as exc:
            return _error(422, exc.message)
        except SignerUnavailable as exc:
            log.error("host CA unavailable: %s", exc.detail)
            return _error(503, f"the host CA cannot sign now: {exc.message}")
        except VouchError as exc:
            log.error("host certificate failed: %s", exc.detail)
            return _error(500, exc.message)
        return JSONResponse({
            "certificates": [c.line() for c in issued.certificates],
            "hostnames": list(issued.hostnames),
            "valid_before": issued.valid_before.astimezone(timezone.utc).isoformat()})

    async def known_hosts(request: Request) -> Response:
        host_ca = host_cas()
        if host_ca is None:
            return PlainTextResponse(f"{hosts.NO_HOST_CA}\n", status_code=503)
        try:
            text = await anyio.to_thread.run_sync(hosts.known_hosts, access, host_ca, pattern)
        except VouchError as exc:
            log.error("known_hosts unavailable: %s", exc.detail)
            return PlainTextResponse(f"known_hosts unavailable: {exc.message}\n", status_code=503)
        return PlainTextResponse(text, headers={"Cache-Control": "no-cache"})

    return [Route(PATH, certificate, methods=["POST"]),
            Route("/known_hosts", known_hosts)]
