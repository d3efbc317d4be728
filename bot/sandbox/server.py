"""`vouch sandbox`: the real bot on embedded defaults, with a local web page that plays Slack.

Three HTTP servers run in one process, each on its own port:

* the fake Slack Web API (``FakeSlack``) on a free internal port — the bot calls it through
  ``VOUCH_SLACK_API_URL`` exactly as it calls slack.com;
* the real bot (``bot.serve.build``) on another free internal port — it receives what Slack sends,
  signed, on ``/slack/events``; its scheduler runs as under ``vouch serve``;
* the page on ``--port``: a chat page and a small JSON API for it. Everything a person does on the
  page becomes the signed HTTP request Slack would send (``SlackDriver``); everything the page shows
  is what the bot sent to the fake. Nothing reaches into the bot's internals, so what works here
  works in Slack.

Files live in the sandbox directory (default ``./sandbox``): ``vouch.db``, ``ca_key`` (+``.pub``),
``policy.yaml`` and a demo user key ``demo_key`` (+``.pub``), all created on first run and reused
afterwards. Chat history lives only in memory.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bot.sandbox import demo
from bot.sandbox.driver import SlackDriver
from bot.sandbox.fake_slack import FakeSlack
from ca.errors import BadInput, VouchError
from ca.keys import PublicKey, parse_public_key
from ca.wire import Reader, WireError

__all__ = ["Sandbox", "run_sandbox"]

log = logging.getLogger("vouch.sandbox")

_HERE = Path(__file__).resolve().parent
_PAGE = _HERE / "page.html"
_STATIC = _HERE / "static"

COMMANDS = ("/ssh-request", "/ssh-breakglass", "/ssh-key", "/ssh-revoke", "/ssh-status")
DEFAULT_SSH = ("ssh -i ~/.ssh/id_ed25519 -o CertificateFile=~/.ssh/id_ed25519-cert.pub "
               "{principal}@HOST")
_CERT_LINE = re.compile(r"\b((?:ssh|ecdsa|sk)-[a-z0-9@.-]*-cert-v01@openssh\.com) ([A-Za-z0-9+/=]+)"
                        r"(?:[ \t]+([^\s`]+))?")
_CERT_FILE = {
    "ssh-ed25519": "id_ed25519", "ssh-rsa": "id_rsa", "ecdsa-sha2-nistp256": "id_ecdsa",
    "ecdsa-sha2-nistp384": "id_ecdsa", "ecdsa-sha2-nistp521": "id_ecdsa",
    "sk-ssh-ed25519@openssh.com": "id_ed25519_sk",
    "sk-ecdsa-sha2-nistp256@openssh.com": "id_ecdsa_sk",
}


# --- certificates as the page sees them -----------------------------------------------------

@dataclass(frozen=True)
class CertInfo:
    line: str
    key_type: str  # the certified key's type, e.g. ssh-ed25519
    key_fingerprint: str
    serial: int
    principals: tuple[str, ...]
    valid_before: int


def parse_cert_line(line: str) -> CertInfo | None:
    """The facts of an OpenSSH user certificate line, or None when it is not one."""
    from ca.keys import _read_key_fields, fingerprint  # the same field checks as for keys
    from ca.wire import put_string

    parts = line.split()
    if len(parts) < 2 or not parts[0].endswith("-cert-v01@openssh.com"):
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
        reader = Reader(blob)
        cert_type = reader.text()
        if cert_type != parts[0]:
            return None
        reader.string()  # nonce
        key_type = cert_type.removesuffix("-cert-v01@openssh.com")
        if key_type.startswith("sk-"):
            key_type += "@openssh.com"
        start = len(blob) - reader.remaining()
        _read_key_fields(key_type, reader)
        key_blob = put_string(key_type) + blob[start:len(blob) - reader.remaining()]
        serial = reader.u64()
        reader.u32()  # type
        reader.string()  # key id
        principals_reader = Reader(reader.string())
        principals = []
        while principals_reader.remaining():
            principals.append(principals_reader.text())
        reader.u64()  # valid after
        valid_before = reader.u64()
    except (binascii.Error, WireError, BadInput, ValueError):
        return None
    return CertInfo(line=" ".join(parts[:3]), key_type=key_type,
                    key_fingerprint=fingerprint(key_blob),
                    serial=serial, principals=tuple(principals), valid_before=valid_before)


def certificates_in(text: str) -> list[CertInfo]:
    found = []
    for match in _CERT_LINE.finditer(text or ""):
        info = parse_cert_line(" ".join(g for g in match.groups() if g))
        if info is not None and all(c.serial != info.serial for c in found):
            found.append(info)
    return found


# --- the sandbox ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoKey:
    private: Path
    public: Path
    line: str
    fingerprint: str

    @property
    def certificate(self) -> Path:
        return self.private.with_name(self.private.name + "-cert.pub")


def _free_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def _listen(host: str, port: int) -> socket.socket:
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


class _Server:
    """A Starlette app served by uvicorn on a daemon thread, on an already bound socket."""

    def __init__(self, app: Any, sock: socket.socket, name: str) -> None:
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name=name, daemon=True)

    def start(self, what: str) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise VouchError(f"the sandbox's {what} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(5)
            if self.thread.is_alive():
                self.server.force_exit = True
                self.thread.join(5)
        self.sock.close()


class Sandbox:
    """The fake Slack, the real bot and the page, started together. ``start()`` then ``.url``."""

    def __init__(self, *, port: int = 8080, host: str = "127.0.0.1",
                 workdir: Path | str = Path("sandbox"), scheduler_interval: float = 2.0) -> None:
        self.port = port
        self.host = host
        self.workdir = Path(workdir).absolute()
        self.scheduler_interval = scheduler_interval
        self.url = ""
        self.bot_url = ""
        self.db_path = self.workdir / "vouch.db"
        self.ca_key = self.workdir / "ca_key"
        self.policy_file = self.workdir / "policy.yaml"
        self.demo_key: DemoKey | None = None
        self.fake: FakeSlack | None = None
        self.driver: SlackDriver | None = None
        self.vouch = None
        self.created: list[str] = []  # files made by this run (for the banner)
        self._bot_token = "xoxb-sandbox-" + secrets.token_hex(12)
        self._signing_secret = secrets.token_hex(16)
        self._scheduler = None
        self._bot_server: _Server | None = None
        self._page_server: _Server | None = None
        self._lock = threading.Lock()
        self._local_ephemerals: list[dict] = []  # immediate answers to slash commands
        self._closed_views: set[str] = set()
        self._view_errors: dict[str, dict] = {}

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        page_sock = _listen(self.host, self.port)
        try:
            self._prepare_files()
            self._start_slack_and_bot()
            self.url = f"http://{self._url_host()}:{page_sock.getsockname()[1]}"
            self._page_server = _Server(self._page_app(), page_sock, "sandbox-page")
            self._page_server.start("page")
        except BaseException:
            page_sock.close()
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._page_server is not None:
            self._page_server.stop()
            self._page_server = None
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        if self._bot_server is not None:
            self._bot_server.stop()
            self._bot_server = None
        if self.fake is not None:
            self.fake.stop()
        if self.vouch is not None:
            try:
                self.vouch.db.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
            self.vouch = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _url_host(self) -> str:
        if self.host in ("0.0.0.0", "", "::"):
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host else self.host

    # --- files -----------------------------------------------------------------------------

    def _prepare_files(self) -> None:
        from access.policy import PolicyError, load_policy
        from ca.signer import CaKeyType, FileSigner, create_file_key
        from storage.db import Database

        where = self.workdir
        if where.exists() and not where.is_dir():
            raise BadInput(f"{where} is in the way: the sandbox keeps its files in a directory "
                           f"of that name; move or delete the file")
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create the sandbox directory {where}: {exc.strerror}") from None
        if not os.access(where, os.W_OK | os.X_OK):
            raise BadInput(f"cannot write in the sandbox directory {where}: check its permissions")

        if demo.write_policy(self.policy_file):
            self.created.append(self.policy_file.name)
        try:
            load_policy(str(self.policy_file))
        except PolicyError as exc:
            raise BadInput(f"{exc.lines()[0]} — fix {self.policy_file} (`vouch policy check "
                           f"{self.policy_file}` lists every problem) or delete it to get the demo "
                           "policy back") from None
        except (BadInput, OSError) as exc:
            raise BadInput(f"{self.policy_file} cannot be used ({getattr(exc, 'message', exc)}): "
                           "delete it to get the demo policy back") from None

        if self.ca_key.exists() or self.ca_key.is_symlink():
            try:
                FileSigner.load(self.ca_key)
            except VouchError as exc:
                raise BadInput(f"{self.ca_key} is not a usable CA key ({exc.message}): delete "
                               f"{self.ca_key} and {self.ca_key}.pub, and the sandbox creates a "
                               "new one (certificates from the old one stop being trusted)") \
                    from None
        else:
            create_file_key(self.ca_key, CaKeyType.ECDSA_P256)
            self.created.append(self.ca_key.name)

        if self.db_path.exists() and not self.db_path.is_file():
            raise BadInput(f"{self.db_path} is in the way (not a file): delete it")
        db = Database(f"sqlite:///{self.db_path}")
        try:
            fresh = not self.db_path.exists() or self.db_path.stat().st_size == 0
            db.prepare()
            if fresh:
                self.created.append(self.db_path.name)
        except (VouchError, SQLAlchemyError) as exc:
            reason = exc.message if isinstance(exc, VouchError) else \
                str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
            raise BadInput(f"{self.db_path} cannot be used ({reason}): it is left from an "
                           f"incompatible run; delete it to start afresh (the sandbox's earlier "
                           "requests and certificates are lost)") from None
        finally:
            db.close()

        self.demo_key = self._demo_key()

    def _demo_key(self) -> DemoKey:
        """A user key for alice to register and ssh with: made once per sandbox directory."""
        private = self.workdir / "demo_key"
        public = self.workdir / "demo_key.pub"
        key = _read_public(public) if private.is_file() else None
        if key is None:
            for path in (private, public):
                if path.is_dir():
                    raise BadInput(f"{path} is in the way (a directory): delete it")
                path.unlink(missing_ok=True)
            _generate_user_key(private)
            self.created.append(private.name)
            key = _read_public(public)
            if key is None:
                raise VouchError(f"could not create the demo key {private}")
        line = f"{key.type} {base64.b64encode(key.blob).decode()}"
        if key.comment:
            line += f" {key.comment}"
        return DemoKey(private=private, public=public, line=line, fingerprint=key.fingerprint)

    # --- Slack and the bot -----------------------------------------------------------------

    def _start_slack_and_bot(self) -> None:
        from bot.jobs import Scheduler
        from bot.serve import build
        from vouch.settings import Settings

        self.fake = FakeSlack(bot_token=self._bot_token, team_name="Vouch Sandbox",
                              team_domain="vouch-sandbox")
        demo.populate(self.fake)
        base_url = self.fake.start("127.0.0.1", 0)
        for user in demo.USERS:
            self.fake.dm_channel(user.id)  # each person's DM with the app, as in Slack's sidebar

        bot_sock = _free_socket()
        self.bot_url = f"http://127.0.0.1:{bot_sock.getsockname()[1]}"
        # Every setting is given, so nothing from the caller's VOUCH_* environment leaks in.
        settings = Settings(
            slack_bot_token=SecretStr(self._bot_token),
            slack_signing_secret=SecretStr(self._signing_secret),
            slack_app_token=None, slack_api_url=base_url,
            database_url=f"sqlite:///{self.db_path}", policy_file=str(self.policy_file),
            ca_key=str(self.ca_key), ca_key_passphrase=None, pkcs11_module=None, pkcs11_pin=None,
            scheduler_interval=f"{self.scheduler_interval:g}s", log_format="text",
            public_url=f"http://{self._url_host()}:{self.port or 8080}")
        try:
            self.vouch = build(settings)
        except VouchError as exc:
            bot_sock.close()
            raise BadInput(f"the sandbox's bot did not start: {exc.message}") from None
        self._bot_server = _Server(self.vouch.web, bot_sock, "sandbox-bot")
        self._bot_server.start("bot")
        self._scheduler = Scheduler(self.vouch.jobs, self.vouch.interval).start()
        self.driver = SlackDriver(self.bot_url + "/slack/events", self._signing_secret, self.fake)

    # --- what the page asks for ------------------------------------------------------------

    def info(self) -> dict:
        from access.policy import load_policy

        try:
            policy = load_policy(str(self.policy_file))
            targets = {name: {"principals": list(t.principals),
                              "max_duration": int(t.max_duration.total_seconds())}
                       for name, t in sorted(policy.targets.items())}
        except VouchError:
            targets = {}
        key = self.demo_key
        return {
            "team": self.fake.team_name if self.fake else "",
            "users": [dict(id=u.id, name=u.name, real_name=u.real_name, role=u.role)
                      for u in demo.USERS],
            "commands": list(COMMANDS),
            "targets": targets,
            "workdir": str(self.workdir),
            "demo_key": None if key is None else {
                "public": key.line, "private_path": str(key.private),
                "public_path": str(key.public),
                "certificate_path": str(key.certificate), "fingerprint": key.fingerprint},
        }

    def state(self, user: str) -> dict:
        fake = self.fake
        snap = json.loads(json.dumps(fake.snapshot(), default=str))
        users = {u["id"]: {"name": u["name"], "real_name": u["real_name"], "is_bot": u["is_bot"]}
                 for u in snap["users"]}
        order = {cid: i for i, (cid, _) in enumerate(demo.CHANNELS)}
        channels = []
        for cid, info in snap["channels"].items():
            if cid.startswith("D"):
                if info.get("user") != user:
                    continue
                kind, name = "dm", fake.bot_name.capitalize()
            elif info["name"].startswith("mpdm-"):
                continue
            else:
                kind, name = "channel", info["name"]
            messages = info["messages"]
            for m in messages:
                self._annotate(m, kind)
                for r in m.get("replies", []):
                    self._annotate(r, kind)
            channels.append(dict(id=cid, name=name, kind=kind, messages=messages))
        channels.sort(key=lambda c: (c["kind"] == "dm", order.get(c["id"], 99), c["name"]))

        ephemerals = []
        for e in fake.ephemerals(user):
            if e.get("replace_original") or e.get("delete_original"):
                continue  # applied to the original message, not shown on its own
            ephemerals.append(dict(channel=e["channel"], text=e.get("text", ""),
                                   blocks=e.get("blocks") or [], at=e["at"],
                                   thread_ts=e.get("thread_ts"), source=e["source"]))
        with self._lock:
            ephemerals += [dict(e) for e in self._local_ephemerals if e["user"] == user]
        ephemerals.sort(key=lambda e: e["at"])
        for i, e in enumerate(ephemerals):
            e["id"] = f"{e['at']:.6f}-{i}"
        return dict(user=user, users=users, channels=channels, ephemerals=ephemerals,
                    modal=self._open_modal(user), bot_user=fake.bot_user_id)

    def _annotate(self, message: dict, kind: str) -> None:
        certs = certificates_in(message.get("text", "")) if kind == "dm" else []
        if certs:
            cert = certs[0]
            message["certificate"] = dict(
                line=cert.line, serial=str(cert.serial), principals=list(cert.principals),
                valid_before=cert.valid_before, filename=self._cert_filename(cert))

    def _cert_filename(self, cert: CertInfo) -> str:
        if self.demo_key is not None and cert.key_fingerprint == self.demo_key.fingerprint:
            return self.demo_key.certificate.name
        return _CERT_FILE.get(cert.key_type, "id_ed25519") + "-cert.pub"

    def _open_modal(self, user: str) -> dict | None:
        logged = self.fake.views(user)
        if not logged:
            return None
        view_id = logged[-1]["id"]
        with self._lock:
            if view_id in self._closed_views:
                return None
            errors = dict(self._view_errors.get(view_id, {}))
        try:
            view = self.fake.view(view_id)
        except KeyError:
            return None
        view["errors"] = errors
        return view

    def certificate(self, serial: str, user: str | None) -> tuple[CertInfo, str] | None:
        """A certificate the bot sent to ``user`` (anyone, if None) by DM, with a file name."""
        snap = self.fake.snapshot()
        for cid, info in snap["channels"].items():
            if not cid.startswith("D") or (user and info.get("user") != user):
                continue
            for m in info["messages"]:
                for cert in certificates_in(m.get("text", "")):
                    if str(cert.serial) == serial:
                        return cert, self._cert_filename(cert)
        return None

    def save_certificate(self, serial: str, user: str) -> dict:
        """Write a certificate for the demo key next to it, so the demo `ssh` line works as is."""
        found = self.certificate(serial, user or None)
        if found is None:
            raise BadInput(f"no certificate with serial {serial} was sent to {user or 'anyone'}")
        cert, _ = found
        key = self.demo_key
        if key is None or cert.key_fingerprint != key.fingerprint:
            raise BadInput("this certificate is not for the sandbox's demo key: download it and "
                           "save it next to the private key it certifies")
        try:
            tmp = key.certificate.with_name(f".{key.certificate.name}.tmp")
            tmp.write_text(cert.line + "\n")
            tmp.chmod(0o644)
            os.replace(tmp, key.certificate)
        except OSError as exc:
            raise BadInput(f"cannot write {key.certificate}: {exc.strerror}") from None
        return dict(ok=True, path=str(key.certificate))

    def host_setup(self, target: str | None) -> dict:
        from access.policy import load_policy
        from vouch.cli import host_setup

        ca_line = " ".join(self._bot_get("/ca.pub").decode().split()[:2])
        policy = load_policy(str(self.policy_file))
        if target is None:
            target = next(iter(policy.targets), None)
        t = policy.target(target) if target else None
        if target and t is None:
            raise BadInput(f"unknown target {target!r}; "
                           f"targets: {', '.join(sorted(policy.targets))}")
        principals = tuple(t.principals) if t else ()
        principal = principals[0] if principals else "postgres"
        key = self.demo_key
        demo_ssh = None
        if key is not None:
            demo_ssh = (f"ssh -i {key.private} -o CertificateFile={key.certificate} "
                        f"{principal}@HOST")
        return dict(
            target=target, principals=list(principals), ca_line=ca_line,
            text=host_setup(ca_line, self.url, target=target, principals=principals),
            ssh=DEFAULT_SSH.format(principal=principal), demo_ssh=demo_ssh,
            targets=sorted(policy.targets))

    def _bot_get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.bot_url + path, timeout=10) as resp:
            return resp.read()

    # --- what the page does (each one a signed request, as Slack sends it) -----------------

    def command(self, user: str, channel: str, text: str) -> dict:
        text = (text or "").strip()
        if not text.startswith("/"):
            return dict(ok=False, error="The sandbox sends slash commands only: start with /, "
                                        "e.g. /ssh-request prod-db 2h checking replication")
        name, _, rest = text.partition(" ")
        name = name.lower()
        if name not in COMMANDS:
            return dict(ok=False, error=f"{name} is not a valid command. Vouch's commands: "
                                        + ", ".join(COMMANDS))
        self._check_user(user)
        try:
            response = self.driver.command(user, name, rest.strip(), channel_id=channel)
        except OSError as exc:
            self._ephemeral(user, channel, f"`{name}` failed with the error \"operation_timeout\" "
                                           f"({exc})")
            return dict(ok=False, error=f"{name} failed: the bot did not answer")
        answer = None
        if response.status == 200 and response.body.strip():
            try:
                body = response.json()
            except ValueError:
                body = {"text": response.body}
            if isinstance(body, dict) and (body.get("text") or body.get("blocks")):
                answer = body
                self._ephemeral(user, channel, body.get("text") or "", body.get("blocks") or [])
        elif response.status != 200:
            self._ephemeral(user, channel, f"`{name}` failed with the error "
                                           f"\"http_service_error\" (HTTP {response.status})")
        return dict(ok=response.status == 200, status=response.status, body=response.body,
                    response=answer)

    def click(self, user: str, channel: str, ts: str, action_id: str, value: str,
              text: str = "") -> dict:
        self._check_user(user)
        try:
            response = self.driver.click(user, channel=channel, ts=ts, action_id=action_id,
                                         value=value, text=text or action_id)
        except KeyError:
            return dict(ok=False, error="that message is gone")
        return dict(ok=response.status == 200, status=response.status, body=response.body)

    def submit_view(self, user: str, view_id: str, values: dict) -> dict:
        self._check_user(user)
        try:
            view = self.fake.view(view_id)
        except KeyError:
            return dict(ok=False, error="that form is gone")
        response = self.driver.submit_view(user, view, values)
        errors: dict = {}
        action = None
        if response.status == 200 and response.body.strip():
            try:
                body = response.json()
            except ValueError:
                body = {}
            action = body.get("response_action") if isinstance(body, dict) else None
            if action == "errors":
                errors = body.get("errors") or {}
        with self._lock:
            if response.status == 200 and action != "errors":
                self._closed_views.add(view_id)
                self._view_errors.pop(view_id, None)
            else:
                self._view_errors[view_id] = errors
        return dict(ok=response.status == 200 and not errors, status=response.status,
                    errors=errors, body=response.body)

    def close_view(self, user: str, view_id: str) -> dict:
        with self._lock:
            self._closed_views.add(view_id)
        return dict(ok=True)

    def _check_user(self, user: str) -> None:
        if not user or self.fake.user(user) is None:
            raise BadInput(f"unknown user {user!r}")

    def _ephemeral(self, user: str, channel: str, text: str, blocks: list | None = None) -> None:
        with self._lock:
            self._local_ephemerals.append(dict(
                user=user, channel=channel, text=text, blocks=blocks or [], at=time.time(),
                thread_ts=None, source="command_response"))

    # --- the page's HTTP app ---------------------------------------------------------------

    def _page_app(self) -> Starlette:
        sandbox = self

        def _json_error(exc: BaseException, status: int = 400) -> JSONResponse:
            return JSONResponse({"ok": False, "error": getattr(exc, "message", str(exc))},
                                status_code=status)

        async def body_of(request: Request) -> dict:
            try:
                data = json.loads(await request.body() or b"{}")
            except ValueError:
                raise BadInput("the request body is not JSON") from None
            if not isinstance(data, dict):
                raise BadInput("the request body is not a JSON object")
            return data

        async def run(func, *args) -> JSONResponse:
            try:
                result = await anyio.to_thread.run_sync(func, *args)
            except BadInput as exc:
                return _json_error(exc)
            except VouchError as exc:
                return _json_error(exc, 500)
            return JSONResponse(result, headers={"Cache-Control": "no-store"})

        async def posted(request: Request, call) -> Response:
            """A POST with a JSON object body: call(body) names the function and its arguments."""
            try:
                body = await body_of(request)
            except BadInput as exc:
                return _json_error(exc)
            return await run(*call(body))

        def field(body: dict, name: str) -> str:
            return str(body.get(name, ""))

        async def page(request: Request) -> Response:
            return FileResponse(_PAGE, media_type="text/html; charset=utf-8",
                                headers={"Cache-Control": "no-store"})

        async def api_info(request: Request) -> Response:
            return await run(sandbox.info)

        async def api_state(request: Request) -> Response:
            return await run(sandbox.state, request.query_params.get("user", "U0ALICE"))

        async def api_command(request: Request) -> Response:
            return await posted(request, lambda b: (
                sandbox.command, field(b, "user"), field(b, "channel"), field(b, "text")))

        async def api_click(request: Request) -> Response:
            return await posted(request, lambda b: (
                sandbox.click, field(b, "user"), field(b, "channel"), field(b, "ts"),
                field(b, "action_id"), field(b, "value"), field(b, "text")))

        async def api_view(request: Request) -> Response:
            return await posted(request, lambda b: (
                sandbox.submit_view, field(b, "user"), field(b, "view_id"),
                b["values"] if isinstance(b.get("values"), dict) else {}))

        async def api_view_close(request: Request) -> Response:
            return await posted(request, lambda b: (
                sandbox.close_view, field(b, "user"), field(b, "view_id")))

        async def api_host_setup(request: Request) -> Response:
            target = request.query_params.get("target") or None
            if request.query_params.get("format") == "text":
                try:
                    result = await anyio.to_thread.run_sync(sandbox.host_setup, target)
                except VouchError as exc:
                    return PlainTextResponse(exc.message + "\n", status_code=400)
                return PlainTextResponse(result["text"] + f"\n# Then, from your machine:\n"
                                         f"{result['ssh']}\n")
            return await run(sandbox.host_setup, target)

        async def api_certificate(request: Request) -> Response:
            serial = str(request.path_params["serial"])  # the int convertor's value, as text
            user = request.query_params.get("user") or None
            found = await anyio.to_thread.run_sync(sandbox.certificate, serial, user)
            if found is None:
                return PlainTextResponse(f"no certificate with serial {serial} was sent"
                                         + (f" to {user}" if user else "") + "\n", status_code=404)
            cert, filename = found
            return PlainTextResponse(cert.line + "\n", headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-store"})

        async def api_certificate_save(request: Request) -> Response:
            return await posted(request, lambda b: (
                sandbox.save_certificate, str(request.path_params["serial"]), field(b, "user")))

        async def proxy(request: Request) -> Response:
            path = request.url.path
            try:
                data = await anyio.to_thread.run_sync(sandbox._bot_get, path)
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
            Route("/api/view", api_view, methods=["POST"]),
            Route("/api/view/close", api_view_close, methods=["POST"]),
            Route("/api/host-setup", api_host_setup, methods=["GET"]),
            Route("/api/certificate/{serial:int}.pub", api_certificate, methods=["GET"]),
            Route("/api/certificate/{serial:int}/save", api_certificate_save, methods=["POST"]),
            Route("/ca.pub", proxy, methods=["GET"]),
            Route("/krl", proxy, methods=["GET"]),
        ]
        if _STATIC.is_dir():
            routes.append(Mount("/static", app=StaticFiles(directory=_STATIC), name="static"))
        return Starlette(routes=routes)


def _read_public(path: Path) -> PublicKey | None:
    try:
        return parse_public_key(path.read_text())
    except (OSError, UnicodeDecodeError, BadInput):
        return None


def _generate_user_key(private: Path) -> None:
    comment = "alice@vouch-sandbox"
    keygen = shutil.which("ssh-keygen")
    if keygen:
        done = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment,
                               "-f", str(private)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=30)
        if done.returncode == 0:
            return
        log.warning("ssh-keygen failed (%s); creating the demo key in Python",
                    done.stderr.strip()[:200])
    # Without ssh-keygen (no openssh-client): the same key file format, written directly.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    private.with_name(private.name + ".pub").write_text(f"{public} {comment}\n")


def run_sandbox(*, port: int = 8080, host: str = "127.0.0.1",
                workdir: Path = Path("sandbox")) -> None:
    """`vouch sandbox [--port 8080]`: run until Ctrl-C / SIGTERM. Raises BadInput (exit 2) when
    the port is taken or the sandbox directory holds something it cannot use."""
    from vouch.logs import configure_logging

    configure_logging("text")
    for noisy in ("uvicorn", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sandbox = Sandbox(port=port, host=host, workdir=workdir)
    sandbox.start()
    stop = threading.Event()
    previous = {}
    main = threading.current_thread() is threading.main_thread()
    for sig in (signal.SIGINT, signal.SIGTERM) if main else ():
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    if main and hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(
            signal.SIGHUP, lambda *_: threading.Thread(target=sandbox.vouch.reload_policy,
                                                       daemon=True).start())
    key = sandbox.demo_key
    out = sys.stdout
    kept = ", ".join(p.name for p in (sandbox.db_path, sandbox.ca_key, sandbox.policy_file,
                                      key.private if key else None) if p is not None)
    lines = [
        f"Vouch sandbox: open {sandbox.url}/ in your browser (Ctrl-C stops it)",
        f"  files:    {sandbox.workdir}/ ({kept})",
        "            " + (f"created now: {', '.join(sandbox.created)}" if sandbox.created
                          else "reused from an earlier run; delete the directory to start afresh"),
        "  people:   " + ", ".join(f"{u.name} ({u.role})" for u in demo.USERS),
    ]
    if key is not None:
        lines.append(f"  demo key: {key.private} — as alice: /ssh-key add {key.line}")
    print("\n".join(lines), file=out, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("Vouch sandbox: stopping", file=out, flush=True)
        sandbox.stop()
        for sig, handler in previous.items():
            try:
                signal.signal(sig, handler)
            except (TypeError, ValueError):
                pass
