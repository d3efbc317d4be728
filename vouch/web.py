"""The HTTP surface of `vouch serve` (CONTRACT "HTTP"), as a Starlette app.

bolt's own Starlette adapter calls the synchronous App.dispatch on the event loop, which
serialises every Slack request behind the slowest one; here dispatch runs in a worker thread,
and dispatch itself only verifies, acks and hands the work to lazy listeners.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt import App, BoltRequest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from access import revoking
from access.context import Access
from bot.metrics import Metrics
from ca.cert import Signer
from ca.errors import VouchError
from ca.signer import probe
from storage.db import Database
from vouch.edge import BodyLimit, SlackGate
from vouch.host_api import host_routes

log = logging.getLogger("vouch.web")

class KrlCache:
    """The KRL served at /krl: remade only when revocations changed, or when a revoked
    certificate fell out of it a day past its expiry (the scheduled `krl` job asks)."""

    def __init__(self, access: Access) -> None:
        self.access = access
        self._served: revoking.Krl | None = None
        self._lock = threading.Lock()

    def current(self) -> revoking.Krl:
        with self._lock:
            self._served = revoking.krl(self.access, unless=self._served)
            return self._served


# How long /readyz reuses its test signature: a storm of probes must not queue at the token.
PROBE_TTL = 5.0


class Cached:
    """`check`'s last answer, reused for `ttl` seconds; callers arriving while it runs wait for
    that run instead of starting their own."""

    def __init__(self, check: Callable[[], str | None], *, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check, self._ttl, self._clock = check, ttl, clock
        self._lock = threading.Lock()
        self._answer: str | None = None
        self._until = float("-inf")

    def __call__(self) -> str | None:
        with self._lock:
            if self._clock() >= self._until:
                self._answer = self._check()
                self._until = self._clock() + self._ttl
            return self._answer


def create_web_app(*, bolt: App | None, signing_secret: str | None, access: Access, db: Database,
                   metrics: Metrics, checks: tuple[Callable[[], str | None], ...] = (),
                   krls: KrlCache | None = None,
                   host_ca: Callable[[], Signer | None] = lambda: None,
                   host_pattern: str = "*", api: list[Route] = ()) -> Starlette:
    """`checks`: more reasons not to be ready (the security channel unreachable, say).
    `host_ca`: gives the host CA, None while there is none (its paths answer 503); `api`: the
    client API's routes (vouch.api)."""
    krls = krls or KrlCache(access)
    limiter = anyio.CapacityLimiter(64)
    gate = SlackGate(signing_secret) if signing_secret else None

    async def slack_events(request: Request) -> Response:
        if bolt is None or gate is None:
            return PlainTextResponse("Slack traffic arrives over Socket Mode here", status_code=404)
        body = await request.body()  # at most 1 MB: BodyLimit
        refused = gate.refuse(body, {k.lower(): v for k, v in request.headers.items()})
        if refused is not None:
            status, reason = refused
            return PlainTextResponse(reason + "\n" if reason else "", status_code=status)
        bolt_request = BoltRequest(body=body.decode("utf-8", errors="replace"),
                                   query=str(request.url.query), headers=dict(request.headers))
        response = await anyio.to_thread.run_sync(bolt.dispatch, bolt_request, limiter=limiter)
        return Response(status_code=response.status, content=response.body,
                        headers=response.first_headers_without_set_cookie())

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    def signer_problem() -> str | None:
        try:
            probe(access.signer)
        except VouchError as exc:
            return exc.message
        return None

    signer_ready = Cached(signer_problem, ttl=PROBE_TTL)

    async def readyz(request: Request) -> Response:
        def check() -> str | None:
            try:
                db.ping()
            except VouchError as exc:
                return exc.message
            return next((problem for problem in (check() for check in (signer_ready, *checks))
                         if problem), None)

        problem = await anyio.to_thread.run_sync(check)
        if problem:
            return PlainTextResponse(f"not ready: {problem}\n", status_code=503)
        return PlainTextResponse("ready\n")

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def ca_pub(request: Request) -> Response:
        return PlainTextResponse(access.signer.public_key.line() + " vouch-ca\n")

    async def krl(request: Request) -> Response:
        try:
            latest = await anyio.to_thread.run_sync(krls.current)
        except VouchError as exc:
            log.error("KRL unavailable: %s", exc.detail)
            return PlainTextResponse(f"KRL unavailable: {exc.message}\n", status_code=503)
        etag = f'"{latest.tag}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(latest.data, media_type="application/octet-stream", headers=headers)

    return Starlette(middleware=[Middleware(BodyLimit)], routes=[
        Route("/slack/events", slack_events, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", prometheus),
        Route("/ca.pub", ca_pub),
        Route("/krl", krl),
        *api,
        *host_routes(access, host_ca, host_pattern),
    ])
