"""The real bot as the sandbox runs it: `python -m vouch serve` in a child process.

Its environment is the caller's without any ``VOUCH_*`` variable, plus the sandbox's settings, so
nothing from a real deployment's configuration leaks in. Its output goes to a log file in the
sandbox directory for a person to read. It is ready once it answers ``GET /healthz``, which
`vouch serve` does only after it has opened the database, the CA key and Slack (the fake).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ca.errors import BadInput, VouchError

__all__ = ["BotProcess", "free_port"]

STARTUP_SECONDS = 20.0
STOP_SECONDS = 8.0  # after SIGTERM, before SIGKILL: `vouch serve` drains requests for up to 5 s


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now. `vouch serve` binds it a moment later; in the rare case that
    another process took it in between, `vouch serve` refuses to start and says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def clean_environment(settings: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("VOUCH_")}
    env.update(settings)
    return env


class BotProcess:
    """``vouch serve --host 127.0.0.1 --port PORT`` with ``settings`` (VOUCH_* variables)."""

    def __init__(self, settings: dict[str, str], *, log_path: Path, database: Path) -> None:
        self.env = clean_environment(settings)
        self.log_path = log_path
        self.database = database  # named in the message when the bot refuses it
        self.port = 0
        self.url = ""
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it and wait until it answers; BadInput with the reason when it does not."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "vouch", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=self.env, cwd=self.log_path.parent, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C reaches the sandbox alone, which then stops the bot.
                start_new_session=True)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._healthy():
            if self._proc.poll() is not None:
                raise self._refused()
            if time.monotonic() > deadline:
                self.stop()
                raise BadInput(f"the sandbox's bot (`vouch serve`) did not answer within "
                               f"{STARTUP_SECONDS:g} s (last in its log: {self.last_words()}); "
                               f"see {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_SECONDS)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return None if self._proc is None else self._proc.poll()

    def how_it_ended(self) -> str:
        """Why it stopped, for a person: the signal that killed it, or its exit code and error."""
        code = self.exit_code()
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}: {self.last_words()}"

    def reload_policy(self) -> None:
        """`vouch serve` reloads its policy file on SIGHUP (and keeps the old one if it is bad)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)

    def get(self, path: str) -> bytes:
        """GET one of the bot's public endpoints (``/ca.pub``, ``/krl``)."""
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return resp.read()

    def cli(self, *args: str) -> str:
        """The output of ``vouch ARGS…`` with the bot's settings; BadInput (exit code 2) or
        VouchError (any other failure) with what it printed on stderr."""
        done = subprocess.run([sys.executable, "-m", "vouch", *args], env=self.env,
                              cwd=self.log_path.parent, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)
        if done.returncode == 0:
            return done.stdout
        said = _error_line(done.stderr.splitlines()) or f"exit code {done.returncode}"
        error = BadInput if done.returncode == 2 else VouchError
        raise error(f"`vouch {' '.join(args)}` failed: {said}")

    def last_words(self) -> str:
        """The error `vouch` printed last (its final ``vouch: …`` line), else its last line."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"its log {self.log_path} cannot be read: {exc.strerror}"
        return _error_line(lines) or "nothing"

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _refused(self) -> BadInput:
        said = self.last_words()
        code = self._proc.returncode if self._proc is not None else None
        # Across a process boundary its words are all there is: `vouch serve` names the
        # database in every refusal of one.
        if "database" in said.lower() or self.database.name in said:
            return BadInput(f"{self.database} cannot be used ({said}): delete it to start afresh "
                            f"(the sandbox's earlier requests and certificates are lost); "
                            f"`vouch serve`'s log is {self.log_path}")
        return BadInput(f"the sandbox's bot (`vouch serve`) did not start (exit code {code}): "
                        f"{said}; see {self.log_path}")


def _error_line(lines: list[str]) -> str:
    lines = [line.strip() for line in lines if line.strip()]
    for line in reversed(lines):
        if line.startswith("vouch: "):
            return line.removeprefix("vouch: ")[:300]
    return lines[-1][:300] if lines else ""
