"""`vouch sandbox`: the real bot on embedded defaults, with a local web page that plays Slack.

Three servers run, each on its own port:

* the fake Slack Web API (``FakeSlack``, in this process) on a free internal port — the bot calls
  it through ``VOUCH_SLACK_API_URL`` exactly as it calls slack.com;
* the real bot, ``vouch serve`` in a child process (``BotProcess``) on another free port — it
  receives what Slack sends, signed, on ``/slack/events``, and runs its own scheduler;
* the page on ``--port`` (``bot.sandbox.page``): a chat page and a small JSON API for it.
  Everything a person does on the page becomes the signed HTTP request Slack would send
  (``SlackDriver``); everything the page shows is what the bot sent to the fake. Nothing reaches
  into the bot's internals, so what works here works in Slack.

Files live in the sandbox directory (default ``./sandbox``): ``vouch.db``, ``ca_key`` (+``.pub``),
``policy.yaml`` and a demo user key ``demo_key`` (+``.pub``), all created on first run and reused
afterwards, and ``vouch.log``, the bot's output. Chat history lives only in memory.
"""

from __future__ import annotations

import logging
import secrets
import signal
import sys
import threading
from pathlib import Path

from bot.sandbox import demo, files
from bot.sandbox.bot_process import BotProcess
from bot.sandbox.driver import SlackDriver
from bot.sandbox.fake_slack import FakeSlack
from bot.sandbox.page import create_page_app, listen
from bot.sandbox.page_api import PageApi
from bot.sandbox.threaded_server import ThreadedServer
from ca.errors import BadInput, VouchError

__all__ = ["Sandbox", "run_sandbox"]


class Sandbox:
    """The fake Slack, the real bot and the page, started together. ``start()`` then ``.url``."""

    def __init__(self, *, port: int = 8080, host: str = "127.0.0.1",
                 workdir: Path | str = Path("sandbox"), scheduler_interval: float = 2.0) -> None:
        self.port = port
        self.host = host
        self.workdir = Path(workdir).absolute()
        self.scheduler_interval = scheduler_interval
        self.url = ""
        self.db_path = self.workdir / "vouch.db"
        self.ca_key = self.workdir / "ca_key"
        self.policy_file = self.workdir / "policy.yaml"
        self.log_path = self.workdir / "vouch.log"
        self.demo_key: files.DemoKey | None = None
        self.fake: FakeSlack | None = None
        self.driver: SlackDriver | None = None
        self.bot: BotProcess | None = None
        self.api: PageApi | None = None
        self.created: list[str] = []  # files made by this run (for the banner)
        self._bot_token = "xoxb-sandbox-" + secrets.token_hex(12)
        self._signing_secret = secrets.token_hex(16)
        self._page_server: ThreadedServer | None = None

    @property
    def bot_url(self) -> str:
        return self.bot.url if self.bot is not None else ""

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        page_sock = listen(self.host, self.port)
        try:
            self.url = f"http://{self._url_host()}:{page_sock.getsockname()[1]}"
            self._prepare_files()
            self._start_slack()
            self._start_bot()
            self.api = PageApi(fake=self.fake, driver=self.driver, bot=self.bot,
                               policy_file=self.policy_file, workdir=self.workdir,
                               demo_key=self.demo_key)
            self._page_server = ThreadedServer(create_page_app(self.api, loopback=self._loopback()), page_sock,
                                               "sandbox page")
            try:
                self._page_server.start()
            except RuntimeError as exc:
                raise VouchError(str(exc)) from None
        except BaseException:
            page_sock.close()
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the page, the bot (SIGTERM, then SIGKILL) and the fake; safe to call twice."""
        if self._page_server is not None:
            self._page_server.stop()
            self._page_server = None
        if self.bot is not None:
            self.bot.stop()
        if self.fake is not None:
            self.fake.stop()

    def reload_policy(self) -> None:
        if self.bot is not None:
            self.bot.reload_policy()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")

    def _url_host(self) -> str:
        if self.host in ("0.0.0.0", "", "::"):
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host else self.host

    def _prepare_files(self) -> None:
        files.ensure_directory(self.workdir)
        if files.ensure_policy(self.policy_file):
            self.created.append(self.policy_file.name)
        if files.ensure_ca_key(self.ca_key):
            self.created.append(self.ca_key.name)
        self.demo_key, made = files.ensure_demo_key(self.workdir)
        if made:
            self.created.append(self.demo_key.private.name)
        if self.db_path.exists() and not self.db_path.is_file():
            raise BadInput(f"{self.db_path} is in the way (not a file): delete it")

    def _start_slack(self) -> None:
        self.fake = FakeSlack(bot_token=self._bot_token, team_name="Vouch Sandbox",
                              team_domain="vouch-sandbox")
        demo.populate(self.fake)
        self.fake.start("127.0.0.1", 0)
        for user in demo.USERS:
            self.fake.dm_channel(user.id)  # each person's DM with the app, as in Slack's sidebar

    def _start_bot(self) -> None:
        fresh = not self.db_path.exists() or self.db_path.stat().st_size == 0
        self.bot = BotProcess({
            "VOUCH_SLACK_BOT_TOKEN": self._bot_token,
            "VOUCH_SLACK_SIGNING_SECRET": self._signing_secret,
            "VOUCH_SLACK_API_URL": self.fake.base_url,
            "VOUCH_DATABASE_URL": f"sqlite:///{self.db_path}",
            "VOUCH_POLICY_FILE": str(self.policy_file),
            "VOUCH_CA_KEY": str(self.ca_key),
            "VOUCH_SCHEDULER_INTERVAL": f"{self.scheduler_interval:g}s",
            "VOUCH_LOG_FORMAT": "text",
            "VOUCH_PUBLIC_URL": self.url,  # where hosts fetch /krl: the page passes it through
        }, log_path=self.log_path, database=self.db_path)
        self.bot.start()
        if fresh:
            self.created.append(self.db_path.name)
        self.driver = SlackDriver(self.bot.url + "/slack/events", self._signing_secret, self.fake)


def run_sandbox(*, port: int = 8080, host: str = "127.0.0.1",
                workdir: Path = Path("sandbox")) -> None:
    """`vouch sandbox [--port 8080]`: run until Ctrl-C / SIGTERM. Raises BadInput (exit 2) when
    the port is taken or the sandbox directory holds something it cannot use, VouchError when
    the bot stops on its own."""
    _configure_logging()
    sandbox = Sandbox(port=port, host=host, workdir=workdir)
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    stopping = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
                if s is not None] if main else []
    # While it starts, each of these interrupts start(), which then stops the bot it may have
    # started: the bot runs in a session of its own, so nothing else would.
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in stopping}
    died = None
    try:
        sandbox.start()
        for sig in stopping:
            signal.signal(sig, lambda *_: stop.set())
        if getattr(signal, "SIGHUP", None) in previous:  # as under `vouch serve`: reload
            signal.signal(signal.SIGHUP, lambda *_: sandbox.reload_policy())
        print(_banner(sandbox), file=sys.stdout, flush=True)
        while not stop.wait(0.5):
            if sandbox.bot.exit_code() is not None:
                died = (f"the sandbox's bot (`vouch serve`) stopped on its own "
                        f"({sandbox.bot.how_it_ended()}); see {sandbox.log_path}")
                break
        print("Vouch sandbox: stopping", file=sys.stdout, flush=True)
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            try:
                signal.signal(sig, handler)
            except (TypeError, ValueError):
                pass  # a handler installed outside Python cannot be put back; exiting anyway
    if died:
        raise VouchError(died)


def _banner(sandbox: Sandbox) -> str:
    warning = [] if sandbox._loopback() else [
        f"WARNING: the sandbox listens on {sandbox.host}: anyone who can reach this machine can "
        "act as any demo user, with no password. Use the default, 127.0.0.1, unless you mean it."]
    key = sandbox.demo_key
    kept = ", ".join(p.name for p in (sandbox.db_path, sandbox.ca_key, sandbox.policy_file,
                                      key.private if key else None) if p is not None)
    lines = [
        f"Vouch sandbox: open {sandbox.url}/ in your browser (Ctrl-C stops it)",
        f"  files:    {sandbox.workdir}/ ({kept})",
        "            " + (f"created now: {', '.join(sandbox.created)}" if sandbox.created
                          else "reused from an earlier run; delete the directory to start afresh"),
        f"  bot log:  {sandbox.log_path}",
        "  people:   " + ", ".join(f"{u.name} ({u.role})" for u in demo.USERS),
    ]
    if key is not None:
        lines.append(f"  demo key: {key.private} — as alice: /ssh-key add {key.line}")
    return "\n".join(warning + lines + warning)


def _configure_logging() -> None:
    # The sandbox's own few lines (a failed ssh-keygen, uvicorn's warnings); the bot logs to
    # vouch.log. Written here, not through vouch.logs: the Slack surface does not import vouch/.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("uvicorn", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
