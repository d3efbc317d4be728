"""The sandbox page over HTTP: the chat page, its static files, its JSON API (``PageApi``) and the
bot's public ``/ca.pub`` and ``/krl``, passed through so hosts can be pointed at the page."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bot.sandbox.page_api import PageApi
from ca.errors import BadInput, VouchError

__all__ = ["create_page_app", "listen"]

_HERE = Path(__file__).resolve().parent
_PAGE = _HERE / "page.html"
_STATIC = _HERE / "static"


def listen(host: str, port: int) -> socket.socket:
    """The page's socket, bound now: a taken port is one clear line, before any file is touched."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise BadInput(f"port {port} on {host} is already in use (another `vouch sandbox`?): "
                           f"stop that, or choose another port with `vouch sandbox --port "
                           f"{port + 1 if port else 8081}`") from None
        if exc.errno == 13:  # EACCES
            raise BadInput(f"not allowed to listen on port {port} on {host}: choose a port above "
                           f"1023 with `vouch sandbox --port 8080`") from None
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                       f"(choose another with `vouch sandbox --port N`)") from None
    return sock


def _json_error(exc: BaseException, status: int = 400) -> JSONResponse:
    return JSONResponse({"ok": False, "error": getattr(exc, "message", str(exc))},
                        status_code=status)


async def _body_of(request: Request) -> dict:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        raise BadInput("the request body is not JSON") from None
    if not isinstance(data, dict):
        raise BadInput("the request body is not a JSON object")
    return data


async def _run(func, *args) -> JSONResponse:
    try:
        result = await anyio.to_thread.run_sync(func, *args)
    except BadInput as exc:
        return _json_error(exc)
    except VouchError as exc:
        return _json_error(exc, 500)
    return JSONResponse(result, headers={"Cache-Control": "no-store"})


async def _posted(request: Request, call) -> Response:
    """A POST with a JSON object body: call(body) names the function and its arguments."""
    try:
        body = await _body_of(request)
    except BadInput as exc:
        return _json_error(exc)
    return await _run(*call(body))


def _field(body: dict, name: str) -> str:
    return str(body.get(name, ""))


_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "[::1]", "::1"}


class SameSite:
    """ASGI middleware: the page acts for whoever can reach it, so another site must not be able
    to drive it through the user's browser. A request that changes something (not GET/HEAD) and
    comes from another origin is refused, and on loopback a Host other than a loopback name (DNS
    rebinding) is refused for every request."""

    def __init__(self, app, *, loopback: bool) -> None:
        self.app, self.loopback = app, loopback

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem:
                await PlainTextResponse(problem + "\n", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, scope) -> str | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or ()}
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.loopback and name not in _LOOPBACK_NAMES:
            return f"refused: the sandbox answers to 127.0.0.1 and localhost, not {host[:60]!r}"
        origin = headers.get("origin")
        if scope.get("method") not in ("GET", "HEAD") and origin is not None:
            if urlsplit(origin).netloc != host:
                return "refused: a request from another site"
        return None


def create_page_app(api: PageApi, *, loopback: bool = True) -> Starlette:
    async def page(request: Request) -> Response:
        return FileResponse(_PAGE, media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-store"})

    async def api_info(request: Request) -> Response:
        return await _run(api.info)

    async def api_state(request: Request) -> Response:
        return await _run(api.state, request.query_params.get("user", "U0ALICE"))

    async def api_command(request: Request) -> Response:
        return await _posted(request, lambda b: (
            api.command, _field(b, "user"), _field(b, "channel"), _field(b, "text")))

    async def api_click(request: Request) -> Response:
        return await _posted(request, lambda b: (
            api.click, _field(b, "user"), _field(b, "channel"), _field(b, "ts"),
            _field(b, "action_id"), _field(b, "value"), _field(b, "text")))

    async def api_home_open(request: Request) -> Response:
        return await _posted(request, lambda b: (api.open_home, _field(b, "user")))

    async def api_home_click(request: Request) -> Response:
        return await _posted(request, lambda b: (
            api.click_home, _field(b, "user"), _field(b, "value"), _field(b, "text")))

    async def api_view(request: Request) -> Response:
        return await _posted(request, lambda b: (
            api.submit_view, _field(b, "user"), _field(b, "view_id"),
            b["values"] if isinstance(b.get("values"), dict) else {}))

    async def api_view_close(request: Request) -> Response:
        return await _posted(request, lambda b: (
            api.close_view, _field(b, "user"), _field(b, "view_id")))

    async def api_host_setup(request: Request) -> Response:
        target = request.query_params.get("target") or None
        if request.query_params.get("format") == "text":
            try:
                result = await anyio.to_thread.run_sync(api.host_setup, target)
            except VouchError as exc:
                return PlainTextResponse(exc.message + "\n", status_code=400)
            return PlainTextResponse(result["text"] + f"\n# Then, from your machine:\n"
                                     f"{result['ssh']}\n")
        return await _run(api.host_setup, target)

    async def api_certificate(request: Request) -> Response:
        serial = str(request.path_params["serial"])  # the int convertor's value, as text
        user = request.query_params.get("user") or None
        found = await anyio.to_thread.run_sync(api.certificate, serial, user)
        if found is None:
            return PlainTextResponse(f"no certificate with serial {serial} was sent"
                                     + (f" to {user}" if user else "") + "\n", status_code=404)
        cert, filename = found
        return PlainTextResponse(cert.line + "\n", headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store"})

    async def api_certificate_save(request: Request) -> Response:
        return await _posted(request, lambda b: (
            api.save_certificate, str(request.path_params["serial"]), _field(b, "user")))

    async def bot_endpoint(request: Request) -> Response:
        path = request.url.path
        try:
            data = await anyio.to_thread.run_sync(api.bot.get, path)
        except (OSError, urllib.error.URLError) as exc:
            return PlainTextResponse(f"the bot did not answer: {exc}\n", status_code=502)
        media = "application/octet-stream" if path == "/krl" else "text/plain; charset=utf-8"
        return Response(data, media_type=media, headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/api/info", api_info, methods=["GET"]),
        Route("/api/state", api_state, methods=["GET"]),
        Route("/api/command", api_command, methods=["POST"]),
        Route("/api/click", api_click, methods=["POST"]),
        Route("/api/home/open", api_home_open, methods=["POST"]),
        Route("/api/home/click", api_home_click, methods=["POST"]),
        Route("/api/view", api_view, methods=["POST"]),
        Route("/api/view/close", api_view_close, methods=["POST"]),
        Route("/api/host-setup", api_host_setup, methods=["GET"]),
        Route("/api/certificate/{serial:int}.pub", api_certificate, methods=["GET"]),
        Route("/api/certificate/{serial:int}/save", api_certificate_save, methods=["POST"]),
        Route("/ca.pub", bot_endpoint, methods=["GET"]),
        Route("/krl", bot_endpoint, methods=["GET"]),
    ]
    if _STATIC.is_dir():
        routes.append(Mount("/static", app=StaticFiles(directory=_STATIC), name="static"))
    return Starlette(routes=routes, middleware=[Middleware(SameSite, loopback=loopback)])
