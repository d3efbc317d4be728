"""The fake Slack's HTTP routes (a Starlette app):

* ``/api/<method>`` — the Web API (``web_api``), read as Slack reads a call: query, form or JSON
  body, the token as a bearer header or a ``token`` field;
* ``POST /response/<token>`` — a ``response_url`` as Slack hands out with commands and clicks;
* ``/link/?ticket=…`` (websocket) — Socket Mode (``bot.sandbox.socket_mode``), at the URL
  ``apps.connections.open`` hands out.

A call waits out ``latency`` and its method's delay first, then is answered and recorded in one
critical section under the state's lock.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from bot.sandbox.slack_state import Call, SlackState
from bot.sandbox.socket_mode import SocketModeLink
from bot.sandbox.web_api import WebApi

__all__ = ["SlackHttp"]

# Form-encoded parameters that carry JSON (slack-sdk serialises these when it sends a form body).
_JSON_PARAMS = {"blocks", "view"}


def _decode_json_params(params: dict) -> dict:
    for key in _JSON_PARAMS & params.keys():
        value = params[key]
        if isinstance(value, str) and value[:1] in ("[", "{"):
            try:
                params[key] = json.loads(value)
            except ValueError:
                pass  # left as a string; the method answers invalid_arguments / invalid_blocks
    return params


class SlackHttp:
    def __init__(self, state: SlackState, socket_mode: SocketModeLink) -> None:
        self._state = state
        self._api = WebApi(state, socket_mode)
        self.app = Starlette(routes=[
            Route("/api/{method}", self._handle_api, methods=["GET", "POST"]),
            Route("/response/{token:path}", self._handle_response_url, methods=["POST"]),
            WebSocketRoute("/link/", socket_mode.endpoint),
        ])

    async def _read_params(self, request: Request) -> dict:
        params: dict[str, Any] = {k: v for k, v in request.query_params.items()}
        body = await request.body()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body:
            if ctype == "application/json":
                data = json.loads(body)  # a ValueError becomes invalid_json
                if not isinstance(data, dict):
                    raise ValueError("JSON body is not an object")
                params.update(data)
            else:
                for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
                    params[k] = v[-1]
        return _decode_json_params(params)

    async def _handle_api(self, request: Request) -> Response:
        s = self._state
        method = request.path_params["method"]
        try:
            params = await self._read_params(request)
            bad_body = None
        except (ValueError, UnicodeDecodeError):
            params, bad_body = {}, "invalid_json"
        token = None
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        token = token or params.pop("token", None)
        params.pop("token", None)
        if s.latency > 0:
            await asyncio.sleep(s.latency)
        with s.lock:
            delay = s.delays.get(method, 0.0)
            if delay > 0:
                s.waiting.append(method)
        if delay > 0:
            await asyncio.sleep(delay)
            with s.lock:
                s.waiting.remove(method)
        with s.lock:
            status, body, headers = self._api.dispatch(method, params, token, bad_body)
            s.calls.append(Call(method, params, time.time(), status, body))
        return JSONResponse(body, status_code=status, headers=headers)

    async def _handle_response_url(self, request: Request) -> Response:
        s = self._state
        token = request.path_params["token"]
        body = await request.body()
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                payload = json.loads(body or b"{}")
            else:
                form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
                payload = json.loads(form["payload"]) if "payload" in form else form
        except (ValueError, KeyError, UnicodeDecodeError):
            payload = None
        if s.latency > 0:
            await asyncio.sleep(s.latency)
        with s.lock:
            hook = s.response_urls.get(token)
            if hook is None:
                status, text = 404, "no_active_hooks"
            elif not isinstance(payload, dict):
                status, text = 400, "invalid_payload"
            else:
                status, text = self._api.respond(hook, payload)
            s.calls.append(Call("response_url", payload if isinstance(payload, dict) else {},
                                time.time(), status, text))
        return PlainTextResponse(text, status_code=status)
