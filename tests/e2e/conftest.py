"""End-to-end harness: `vouch serve` as a subprocess, talking to a FakeSlack in this process.

Everything here drives the bot the way Slack and a user would: signed HTTP requests in, Web API
calls out (recorded by the fake), plus the database file and the public HTTP endpoints.
"""

from __future__ import annotations

import os
import shutil
import sys
import signal
import socket
import sqlite3
import subprocess
import textwrap
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.sandbox.driver import Response, SlackDriver
from bot.sandbox.fake_slack import FakeSlack

VOUCH = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "vouch")
BOT_TOKEN = "xoxb-e2e-1234567890-abcdefghij"
SIGNING_SECRET = "e2e-signing-secret-8f2c1d"
TEAM = "T0VOUCH"
OTHER_TEAM = "T0OTHER"
ACK_LIMIT = 1.0  # seconds: every command and click must be acknowledged within this

REQUESTER = "U0REQ"
BOB = "U0BOB"
CAROL = "U0CAROL"  # approves through the @db-owners user group
ADMIN = "U0ADMIN"
GLASS = "U0GLASS"
GUEST = "U0GUEST"
ULTRA = "U0ULTRA"
SOMEBOT = "U0SOMEBOT"
GONE = "U0GONE"
STRANGER = "U0STRANGER"  # a member of another workspace
NOKEY = "U0NOKEY"
DAN = "U0DAN"  # a second requester
CROWD = [f"U0AP{i:02d}" for i in range(1, 21)]

DB_PRINCIPAL = "vouch-e2e-db"

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

# --- living next to tests/conftest.py ------------------------------------------------------
# Without __init__.py files every conftest.py is imported as the module "conftest", and pytest
# drops the previous one from sys.modules when it loads this one; other test modules do
# `from conftest import run`. So: hand sys.modules["conftest"] back to the top-level conftest
# once this one is registered, and make this one importable as `e2e_support`.
_ROOT_CONFTEST = str(Path(__file__).resolve().parents[1] / "conftest.py")
sys.modules["e2e_support"] = sys.modules[__name__]


def pytest_plugin_registered(plugin, manager):
    root = manager.get_plugin(_ROOT_CONFTEST)
    if root is not None and sys.modules.get("conftest") is not root:
        sys.modules["conftest"] = root


def policy_yaml(*, request_ttl: str = "30m", reminder_before: str = "1m",
                review_within: str = "4h") -> str:
    """The policy most tests use: one 1-approval target, one 2-approval target whose approvers
    include the requester, a 20-approver target and break-glass on prod-db only."""
    crowd = ", ".join(CROWD)
    return textwrap.dedent(f"""\
        requests_channel: C0REQUESTS
        security_channel: C0SECURITY
        request_ttl: {request_ttl}
        reminder_before: {reminder_before}
        admins: [{ADMIN}]
        targets:
          prod-db:
            principals: [{DB_PRINCIPAL}]
            max_duration: 4h
            approvers: [{BOB}, "@db-owners", {GUEST}, {ULTRA}, {SOMEBOT}, {GONE}, {STRANGER}]
            approvals_required: 1
          payments:
            principals: [payments-admin, payments-ro]
            max_duration: 8h
            approvers: [{REQUESTER}, {BOB}, "@db-owners"]
            approvals_required: 2
          crowd:
            principals: [crowd]
            max_duration: 2h
            approvers: [{crowd}]
            approvals_required: 1
        breakglass:
          users: [{GLASS}]
          max_duration: 1h
          targets: [prod-db]
          review_within: {review_within}
        """)


def make_fake() -> FakeSlack:
    fake = FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM)
    for uid, name in [(REQUESTER, "alice"), (BOB, "bob"), (CAROL, "carol"), (ADMIN, "secadmin"),
                      (GLASS, "glass"), (NOKEY, "nokey"), (DAN, "dan")]:
        fake.add_user(uid, name)
    for uid in CROWD:
        fake.add_user(uid, uid.lower())
    fake.add_user(GUEST, "guest", is_restricted=True)
    fake.add_user(ULTRA, "ultraguest", is_restricted=True, is_ultra_restricted=True)
    fake.add_user(SOMEBOT, "somebot", is_bot=True)
    fake.add_user(GONE, "gone", deleted=True)
    fake.add_user(STRANGER, "stranger", team_id=OTHER_TEAM)
    fake.add_group("db-owners", "S0DBOWNERS", [CAROL])
    fake.add_channel("C0REQUESTS", "access-requests")
    fake.add_channel("C0SECURITY", "security")
    fake.start()
    return fake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TimedDriver(SlackDriver):
    """A SlackDriver that records every answer and fails on any that took ACK_LIMIT or more."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.responses: list[tuple[str, Response]] = []
        self._guard = threading.Lock()

    def raw(self, body: bytes, headers: dict, content_type: str) -> Response:
        response = super().raw(body, headers, content_type)
        with self._guard:
            self.responses.append((body[:120].decode(errors="replace"), response))
        assert response.elapsed < ACK_LIMIT, (
            f"Slack request answered in {response.elapsed:.3f}s (limit {ACK_LIMIT}s): {body[:120]!r}")
        return response


def base_env() -> dict[str, str]:
    """The outer environment without any VOUCH_* (or a stray SoftHSM config)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("VOUCH_") and k != "SOFTHSM2_CONF"}


@dataclass
class Server:
    """One `vouch serve` subprocess with its own database, policy, CA key and fake Slack."""

    workdir: Path
    fake: FakeSlack
    policy: str
    ca_key: str | None = None  # None: a file key created with `vouch ca init`
    extra_env: dict = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def db_path(self) -> Path:
        return self.workdir / "vouch.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = base_env()
        env.update({
            "VOUCH_SLACK_BOT_TOKEN": BOT_TOKEN,
            "VOUCH_SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "VOUCH_SLACK_API_URL": self.fake.base_url,
            "VOUCH_DATABASE_URL": f"sqlite:///{self.db_path}",
            "VOUCH_POLICY_FILE": str(self.workdir / "policy.yaml"),
            "VOUCH_CA_KEY": self.ca_key or str(self.workdir / "ca_key"),
            "VOUCH_SCHEDULER_INTERVAL": "1s",
        })
        env.update(self.extra_env)
        return env

    def vouch(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([VOUCH, *args], env=self.env, cwd=self.workdir, capture_output=True,
                              text=True,
                              check=check, timeout=60)

    def start(self, *, init: bool = True) -> Server:
        """`init`: make the CA key first (a restart keeps the one it has)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "policy.yaml").write_text(self.policy)
        if init:
            made = self.vouch("ca", "init", "--key", self.env["VOUCH_CA_KEY"], check=False)
            assert made.returncode == 0, f"vouch ca init failed: {made.stderr}"
        self.port = free_port()
        self._log = open(self.workdir / "serve.log", "wb")
        self.proc = subprocess.Popen([VOUCH, "serve", "--port", str(self.port)], env=self.env,
                                     cwd=self.workdir,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vouch serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/healthz").status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vouch serve did not answer /healthz:\n{self.log()}")
            time.sleep(0.05)
        self.driver = TimedDriver(f"{self.url}/slack/events", SIGNING_SECRET, self.fake)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._log.close()

    def log(self) -> str:
        try:
            return (self.workdir / "serve.log").read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    # --- what the outside sees -----------------------------------------------------------

    def get(self, path: str) -> HttpAnswer:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return HttpAnswer(resp.status, resp.read(), dict(resp.headers.items()))
        except urllib.error.HTTPError as err:
            return HttpAnswer(err.code, err.read(), dict(err.headers.items()))

    def query(self, sql: str, *args) -> list[tuple]:
        """`sql` with `?` placeholders, on the server's database (SQLite, or PostgreSQL when
        extra_env sets VOUCH_DATABASE_URL to one)."""
        url = self.extra_env.get("VOUCH_DATABASE_URL", "")
        if url.startswith("postgresql"):
            return postgres_query(url, sql.replace("?", "%s"), args)
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def scalar(self, sql: str, *args):
        rows = self.query(sql, *args)
        return rows[0][0] if rows else None


def postgres_query(url: str, sql: str, args: tuple) -> list[tuple]:
    import psycopg
    from sqlalchemy import make_url

    parts = make_url(url)
    with psycopg.connect(dbname=parts.database, user=parts.username,
                         host=parts.query.get("host"), autocommit=True) as con:
        return con.execute(sql, args).fetchall()


@dataclass
class HttpAnswer:
    status: int
    body: bytes
    headers: dict

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def settle(fake: FakeSlack, quiet: float = 0.4, timeout: float = 10.0) -> int:
    """Wait until the bot has made no Web API call for `quiet` seconds; the number of calls."""
    deadline = time.monotonic() + timeout
    count, since = len(fake.calls), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now_count = len(fake.calls)
        if now_count != count:
            count, since = now_count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return count
    return len(fake.calls)


# --- a private SoftHSM2 token for one server --------------------------------------------

@dataclass
class HsmToken:
    root: Path
    conf: Path
    label: str
    pin: str

    @property
    def uri(self) -> str:
        return (f"pkcs11:token={self.label};object=vouch-ca?module-path={SOFTHSM_MODULE}"
                f"&pin-value={self.pin}")

    def token_dir(self) -> Path:
        dirs = [p for p in (self.root / "tokens").iterdir() if p.is_dir()]
        assert len(dirs) == 1, dirs
        return dirs[0]

    def _bump_generation(self, token_dir: Path) -> None:
        # SoftHSM2 re-reads a token directory only when its `generation` counter changes.
        path = token_dir / "generation"
        value = int.from_bytes(path.read_bytes(), "big") + 1
        path.write_bytes(value.to_bytes(8, "big"))

    def break_key(self) -> None:
        """Take the key objects out of the token, under the running server's feet."""
        token_dir = self.token_dir()
        stash = self.root / "stash"
        stash.mkdir(exist_ok=True)
        for path in token_dir.glob("*.object"):
            if path.name != "token.object":
                shutil.move(str(path), stash / path.name)
        self._bump_generation(token_dir)

    def restore_key(self) -> None:
        token_dir = self.token_dir()
        for path in (self.root / "stash").glob("*.object"):
            shutil.move(str(path), token_dir / path.name)
        self._bump_generation(token_dir)


def make_token(root: Path, label: str = "vouch-e2e") -> HsmToken:
    if not (os.path.exists(SOFTHSM_MODULE) and shutil.which("softhsm2-util")):
        pytest.skip("softhsm2 is not installed")
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    token = HsmToken(root=root, conf=conf, label=label, pin="2468")
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                    "--so-pin", "13572468", "--pin", token.pin],
                   env={**base_env(), "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True)
    return token


def rss_mb(pid: int) -> float:
    """A process's resident memory now, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")
