"""The fake Slack's Socket Mode endpoint: the websocket an app reaches at the URL
``apps.connections.open`` hands out (https://docs.slack.dev/apis/events-api/using-socket-mode).

The app gets ``{"type": "hello", …}`` on connect; ``send`` delivers an envelope to the newest
connected app and returns its ack. Tickets are single-purpose: a URL without a known ticket is
refused at the handshake, as Slack refuses a stale one.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

__all__ = ["SocketModeLink"]


@dataclass
class _Connection:
    websocket: WebSocket
    loop: asyncio.AbstractEventLoop
    closed: bool = False


class SocketModeLink:
    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self._lock = threading.Lock()
        self._tickets: set[str] = set()
        self._connections: list[_Connection] = []  # oldest first
        self._pending: dict[str, tuple[threading.Event, dict]] = {}  # envelope id -> ack slot
        self._received: list[dict] = []

    def new_url(self, base_url: str) -> str:
        """A ``wss``-style URL (plain ``ws`` here) for ``apps.connections.open`` to return."""
        host = base_url.split("://", 1)[-1].rstrip("/")
        ticket = secrets.token_hex(16)
        with self._lock:
            self._tickets.add(ticket)
        return f"ws://{host}/link/?ticket={ticket}&app_id={self.app_id}"

    def connected(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if any(not c.closed for c in self._connections):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def received(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(self._received)

    def send(self, type: str, payload: dict, *, timeout: float = 5.0,
             envelope_id: str | None = None, accepts_response_payload: bool = True,
             retry_attempt: int = 0, retry_reason: str = "") -> dict:
        started = time.monotonic()
        envelope: dict[str, Any] = {"envelope_id": envelope_id or str(uuid.uuid4()), "type": type,
                                    "payload": payload,
                                    "accepts_response_payload": accepts_response_payload}
        if type == "events_api":
            envelope.update(retry_attempt=retry_attempt, retry_reason=retry_reason)
        eid = envelope["envelope_id"]
        done, slot = threading.Event(), {}
        with self._lock:
            conn = next((c for c in reversed(self._connections) if not c.closed), None)
            if conn is None:
                raise AssertionError("no app is connected over Socket Mode")
            self._pending[eid] = (done, slot)
        try:
            asyncio.run_coroutine_threadsafe(conn.websocket.send_text(json.dumps(envelope)),
                                             conn.loop).result(timeout)
            left = max(0.0, timeout - (time.monotonic() - started))
            if not done.wait(left):
                raise AssertionError(f"no ack for {type} envelope {eid} within {timeout}s")
            return slot["ack"]
        finally:
            with self._lock:
                self._pending.pop(eid, None)

    async def endpoint(self, websocket: WebSocket) -> None:
        ticket = websocket.query_params.get("ticket", "")
        with self._lock:
            known = ticket in self._tickets
        if not known:
            await websocket.close(code=1008)  # before accept: the handshake is refused (403)
            return
        await websocket.accept()
        conn = _Connection(websocket, asyncio.get_running_loop())
        with self._lock:
            self._connections.append(conn)
            count = sum(1 for c in self._connections if not c.closed)
        try:
            await websocket.send_text(json.dumps({
                "type": "hello", "num_connections": count,
                "debug_info": {"host": "applink-fake", "build_number": 1,
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id}}))
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                self._record(message)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the app went away mid-send (RuntimeError: starlette's "after close"): gone
        finally:
            with self._lock:
                conn.closed = True
                self._connections.remove(conn)

    def _record(self, message: dict) -> None:
        raw = message.get("text")
        if raw is None:
            raw = (message.get("bytes") or b"").decode("utf-8", errors="replace")
        try:
            data = json.loads(raw)
        except ValueError:
            data = {"unparsed": raw}
        with self._lock:
            self._received.append(dict(data=data, at=time.time()))
            eid = data.get("envelope_id") if isinstance(data, dict) else None
            waiting = self._pending.get(eid) if isinstance(eid, str) else None
            if waiting is not None and not waiting[0].is_set():
                waiting[1]["ack"] = data
                waiting[0].set()
