"""What the sandbox page shows and does, behind its JSON API.

What it shows is what the bot sent to the fake Slack (messages, ephemerals, modals), plus the
certificates found in the DMs. What a person does becomes the signed request Slack would send
(``SlackDriver``). The bot itself is reached only as Slack and hosts reach it: over HTTP.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from access.policy_file import load_policy
from bot.sandbox import demo
from bot.sandbox.bot_process import BotProcess
from bot.sandbox.certs import CertInfo, certificates_in, default_filename
from bot.sandbox.driver import SlackDriver
from bot.sandbox.fake_slack import FakeSlack
from bot.sandbox.files import DemoKey
from ca.errors import BadInput, VouchError

__all__ = ["COMMANDS", "PageApi"]

COMMANDS = ("/ssh-request", "/ssh-breakglass", "/ssh-key", "/ssh-revoke", "/ssh-status")
DEFAULT_SSH = ("ssh -i ~/.ssh/id_ed25519 -o CertificateFile=~/.ssh/id_ed25519-cert.pub "
               "{principal}@HOST")


class PageApi:
    def __init__(self, *, fake: FakeSlack, driver: SlackDriver, bot: BotProcess,
                 policy_file: Path, workdir: Path, demo_key: DemoKey | None) -> None:
        self.fake = fake
        self.driver = driver
        self.bot = bot
        self.policy_file = policy_file
        self.workdir = workdir
        self.demo_key = demo_key
        self._lock = threading.Lock()
        self._local_ephemerals: list[dict] = []  # immediate answers to slash commands
        self._closed_views: set[str] = set()
        self._view_errors: dict[str, dict] = {}

    # --- what the page shows ---------------------------------------------------------------

    def info(self) -> dict:
        try:
            policy = load_policy(str(self.policy_file))
            targets = {name: {"principals": list(t.principals),
                              "max_duration": int(t.max_duration.total_seconds())}
                       for name, t in sorted(policy.targets.items())}
        except VouchError:
            targets = {}
        key = self.demo_key
        return {
            "team": self.fake.team_name,
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
                    modal=self._open_modal(user), home=fake.home(user), bot_user=fake.bot_user_id)

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
        return default_filename(cert)

    def _open_modal(self, user: str) -> dict | None:
        # views.publish (App Home) is logged too; only views.open makes a modal.
        logged = [v for v in self.fake.views(user) if v["method"] == "views.open"]
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
        """What `vouch host-setup --target TARGET` prints for this sandbox, and the ssh lines."""
        try:
            ca_line = " ".join(self.bot.get("/ca.pub").decode().split()[:2])
        except OSError as exc:  # urllib's URLError included
            raise VouchError(f"the bot did not answer: {exc}") from None
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
        text = self.bot.cli("host-setup", *(("--target", target) if target else ()))
        return dict(
            target=target, principals=list(principals), ca_line=ca_line, text=text,
            ssh=DEFAULT_SSH.format(principal=principal), demo_ssh=demo_ssh,
            targets=sorted(policy.targets))

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

    def open_home(self, user: str) -> dict:
        """The user opens the App Home tab: Slack's app_home_opened event, signed."""
        self._check_user(user)
        response = self.driver.open_home(user)
        return dict(ok=response.status == 200, status=response.status, body=response.body)

    def click_home(self, user: str, value: str, text: str) -> dict:
        """A button in the App Home, found by label and value in the home published now."""
        self._check_user(user)
        try:
            response = self.driver.click_in_home(user, label=text, value=value)
        except LookupError:
            return dict(ok=False, error="that button is gone: the App Home changed")
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
