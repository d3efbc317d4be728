"""`vouch serve`: the composition root. Builds everything from settings, checks it, and runs it:
the only module that knows every package."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

import uvicorn
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError

from access.context import Access
from access.durations import parse_duration
from access.host_input import host_pattern
from access.policy_file import PolicyError, PolicyStore
from bot.app import build_app
from bot.handlers import Bot
from bot.jobs import Jobs
from bot.metrics import Metrics
from bot.notifier import Notifier
from bot.slack import SlackDirectory, SlackGateway, SlackUnavailable, make_client
from bot.terminal import Terminal
from ca.errors import BadInput, VouchError
from ca.keystore import open_signer
from storage import audit
from storage.checkpoints import Checkpointer
from storage.claims import SqlClaims
from storage.db import Database
from storage.messages import SqlMessages
from storage.store import SqlStore
from vouch.api import client_api_routes
from vouch.audit_key import load_audit_key
from vouch.host_api import HostCaSource
from vouch.host_cli import open_host_ca
from vouch.logs import configure_logging
from vouch.scheduler import Scheduler, parse_digest_at
from vouch.settings import Settings
from vouch.web import KrlCache, create_web_app

log = logging.getLogger("vouch.serve")

_PLACEHOLDERS = ("changeme", "change-me", "placeholder", "your-", "xxx", "todo", "<", "...", "…")


def _secret(settings: Settings, name: str, *, prefix: str | None = None, required: bool = True) -> str | None:
    value = getattr(settings, name)
    env = f"VOUCH_{name.upper()}"
    if value is None or not value.get_secret_value().strip():
        if required:
            raise BadInput(f"{env} is not set: `vouch serve` needs it (as an environment "
                           f"variable, or a file named {env} in VOUCH_SECRETS_DIR)")
        return None
    text = value.get_secret_value().strip()
    lowered = text.lower()
    if any(p in lowered for p in _PLACEHOLDERS) or (prefix and not text.startswith(prefix)):
        expected = f" (it should start with {prefix})" if prefix else ""
        raise BadInput(f"{env} looks like a placeholder, not a real value{expected}")
    return text


@dataclass
class Vouch:
    """Everything `vouch serve` runs, built and checked."""

    settings: Settings
    db: Database
    access: Access
    bot: Bot
    web: object
    jobs: Jobs
    policy: PolicyStore
    scheduler: Scheduler
    socket_mode: object | None = None
    notifier: Notifier | None = None

    def check_security_channel(self) -> None:
        """Break-glass must be able to alert: say loudly (log, /readyz) when it cannot."""
        if self.notifier is not None:
            self.notifier.check_security_channel()

    def reload(self) -> None:
        """SIGHUP: re-read the policy, and let a signer stopped by a refused PIN log in again."""
        self.reload_policy()
        self.reset_signer()

    def reset_signer(self) -> None:
        try:
            if self.access.signer.reset():
                log.info("the CA signer logged in again (SIGHUP)")
        except VouchError as exc:
            log.error("the CA signer is still unavailable after SIGHUP: %s", exc.detail)

    def reload_policy(self) -> None:
        try:
            policy = self.policy.reload()
        except (PolicyError, BadInput) as exc:
            log.error("policy reload refused, keeping the previous policy: %s", exc.detail)
            self.access.record(actor="vouch", action="policy.reload_refused",
                               subject=f"policy:{self.policy.path}",
                               details={"problems": exc.detail.splitlines()[:50]})
            return
        log.info("policy reloaded: %d targets", len(policy.targets))
        self.access.record(actor="vouch", action="policy.reloaded",
                           subject=f"policy:{self.policy.path}",
                           details={"targets": sorted(policy.targets)})
        self.check_security_channel()


def build(settings: Settings) -> Vouch:
    """Everything `serve` needs; raises BadInput (exit 2) naming the first thing missing."""
    bot_token = _secret(settings, "slack_bot_token", prefix="xoxb-")
    app_token = _secret(settings, "slack_app_token", prefix="xapp-", required=False)
    signing_secret = _secret(settings, "slack_signing_secret", required=app_token is None)
    interval = parse_duration(settings.scheduler_interval).total_seconds()
    offboarding_every = parse_duration(settings.offboarding_interval).total_seconds()
    digest_at = parse_digest_at(settings.digest_at)
    policy = PolicyStore(settings.policy_file)
    db = Database(settings.database_url)
    db.prepare()
    audit_key = load_audit_key(settings, create=True)
    with db.transaction() as connection:
        if audit.anchor(connection, audit_key, datetime.now(timezone.utc)):
            log.info("the audit chain is keyed from now on (an audit.keyed event anchors it)")
    passphrase = settings.ca_key_passphrase
    signer = open_signer(settings.ca_key, module=settings.pkcs11_module,
                         pin=settings.pkcs11_pin.get_secret_value() if settings.pkcs11_pin else None,
                         passphrase=passphrase.get_secret_value().encode() if passphrase else None)
    # Host certificates are off (503 on their paths) until `vouch ca init --host` made the key.
    host_ca = open_host_ca(settings, user_ca=signer, required=False)
    host_pattern(settings.host_pattern)
    if host_ca is None:
        log.info("host certificates are off: no host CA key file %r (vouch ca init --host)",
                 settings.host_ca_key)
    metrics = Metrics()
    client = make_client(bot_token, settings.slack_api_url)
    gateway = SlackGateway(client, metrics)
    try:
        team_id, _ = gateway.auth_test()
    except SlackUnavailable as exc:
        raise BadInput(f"Slack did not accept VOUCH_SLACK_BOT_TOKEN at {settings.slack_api_url}: "
                       f"{exc.message}") from None
    checkpointer = Checkpointer(db, signer, settings.audit_checkpoints)
    access = Access(SqlStore(db, audit_key, after_append=checkpointer.maybe), signer,
                    policy=policy, directory=SlackDirectory(gateway))
    notifier = Notifier(access, gateway, SqlMessages(db), metrics)
    bot = Bot(access, notifier, gateway, metrics, team_id=team_id)
    bolt = build_app(bot, client, signing_secret or "unused-in-socket-mode")
    socket_mode = None
    if app_token:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        socket_mode = SocketModeHandler(bolt, app_token, web_client=client)
    krls = KrlCache(access)
    web = create_web_app(bolt=None if app_token else bolt, signing_secret=signing_secret,
                         access=access, db=db, metrics=metrics,
                         checks=(lambda: notifier.security_problem,), krls=krls,
                         host_ca=HostCaSource(
                             lambda: open_host_ca(settings, user_ca=signer, required=False),
                             found=host_ca),
                         host_pattern=settings.host_pattern,
                         api=client_api_routes(access, Terminal(bot)))
    # Other packages' periodic work: audit checkpoints, and the served KRL remade when a revoked
    # certificate left it (a day past its expiry).
    jobs = Jobs(access, notifier, also={"audit-checkpoint": checkpointer.maybe,
                                        "krl": krls.current})
    return Vouch(settings=settings, db=db, access=access, bot=bot, web=web,
                 jobs=jobs, policy=policy, socket_mode=socket_mode, notifier=notifier,
                 scheduler=Scheduler(jobs, SqlClaims(db), metrics, interval=interval,
                                     digest_at=digest_at, offboarding_every=offboarding_every))


def _secret_values(settings: Settings) -> list[str]:
    """Every secret setting's value, for the log to redact."""
    values = (getattr(settings, name) for name in type(settings).model_fields)
    return [value.get_secret_value().strip() for value in values if isinstance(value, SecretStr)]


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror} "
                           "(is another vouch running? choose another --port)") from None


def handle_sighup(vouch: Vouch) -> None:
    """SIGHUP reloads in a thread: a token login may block, and the handler runs in the loop's."""
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=vouch.reload,
                                                             daemon=True).start())


def serve(settings: Settings, *, host: str, port: int) -> None:
    configure_logging(settings.log_format, secrets=_secret_values(settings))
    check_port(host, port)
    vouch = build(settings)
    if vouch.socket_mode is not None:
        try:
            vouch.socket_mode.connect()
        except SlackApiError as exc:
            raise BadInput(f"Slack did not accept VOUCH_SLACK_APP_TOKEN at {settings.slack_api_url}: "
                           f"{exc.response.get('error', 'refused')}") from None
        log.info("Slack traffic over Socket Mode")
    vouch.check_security_channel()
    scheduler = vouch.scheduler.start()
    handle_sighup(vouch)
    log.info("vouch serving on http://%s:%d", host, port)
    config = uvicorn.Config(vouch.web, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run()
    finally:
        scheduler.stop()
        if vouch.socket_mode is not None:
            vouch.socket_mode.close()
        vouch.db.close()
