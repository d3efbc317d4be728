"""A Starlette app served by uvicorn on a daemon thread, on a socket bound beforehand (so a taken
port is known before anything starts). The fake Slack and the sandbox page each run in one."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["ThreadedServer"]


class ThreadedServer:
    def __init__(self, app: Any, sock: socket.socket, name: str) -> None:
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self.name = name
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name=name, daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        """Start serving; RuntimeError when uvicorn has not started within ``timeout`` seconds."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.name} server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(5)
            if self.thread.is_alive():
                self.server.force_exit = True
                self.thread.join(5)
        self.sock.close()
