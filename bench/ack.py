"""Slack-facing latency of `vouch serve`: slash-command acks, approve -> certificate DM, memory.

Run from the repository root:  .venv/bin/python bench/ack.py [--commands N] [--concurrency N] ...

Set-up: the fake Slack (bot.sandbox.FakeSlack, in this process) answers every Web API call after
--latency seconds (default 0.1). `vouch serve` runs as a subprocess on SQLite in a temp dir, with a
SoftHSM2 P-256 CA key created by `vouch ca init --key 'pkcs11:…'` in a private token, and
VOUCH_SCHEDULER_INTERVAL=30s. Every requester and approver registers a key (`/ssh-key add`
through the driver) before anything is timed; this also fills the bot's users.info cache.

Phases:
  1. acks      --commands signed `/ssh-request <target> 1h <reason>` POSTs, --concurrency at once,
               from --users requesters over two targets (the policy allows 3 pending requests per
               user per target). Timed: send -> HTTP 200 (the driver's `elapsed`).
  2. drain     no target, but reported: how long until every request message is in the requests
               channel. Vouch sends posts to one channel one at a time (bot/slack.py), and each
               request takes two posts (the message and the approvers' note in its thread), so
               this takes about 2 x N x latency. Also reported: duplicate request messages, and
               how long the first and the last 20 commands waited for their message.
  3. approve   an approver clicks Approve on --approvals posted requests, --approve-concurrency
               at a time (default 1: one after another, each after the previous DM arrived).
               Timed: from just before the click is sent until the fake records the
               chat.postMessage DM to the requester that carries the certificate. The end time
               is the fake's own timestamp of that call, so how often we poll does not matter.
  4. backlog   informational, no target (--backlog 0 skips it): a second burst of --backlog
               commands, and 0.5 s later --backlog-approvals approvals (one after another) of
               requests posted earlier. Shows approve -> DM while the bot is still posting.
  Last, VmRSS and VmHWM of the `vouch serve` process from /proc/<pid>/status.

Targets: ack p99 < 300 ms, approve -> DM p50 < 1 s, VmRSS < 200 MB (VmHWM is printed too).
PASS/FAIL is printed per target; the exit status is 0 either way: this is a benchmark.

One thread watches the fake. Every few ms it reads `fake.calls` and looks only at the calls added
since its last read (the fake only ever appends). The client, the fake and the watcher all run in
this process; `vouch serve` is a second process, and the machine has 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import (MODULE, PIN, free_port, init_token, machine, pct,  # noqa: E402
                          summary_ms, user_key_lines, verdict)
from bot.sandbox import FakeSlack, SlackDriver  # noqa: E402
from bot.views import APPROVE  # noqa: E402

VOUCH = REPO / ".venv" / "bin" / "vouch"
TOKEN = "vouch-ack-bench"
BOT_TOKEN = "xoxb-bench-1"
SIGNING_SECRET = "bench-signing-secret-1"
REQUESTS_CHANNEL = "C0REQUESTS"
SECURITY_CHANNEL = "C0SECURITY"
TARGETS = ("prod-db", "staging-db")
APPROVERS = ("U0APPROVER1", "U0APPROVER2", "U0APPROVER3")
MAX_PENDING_PER_TARGET = 3  # access.requests.MAX_PENDING_PER_TARGET

TARGET_ACK_P99_MS = 300.0
TARGET_DM_P50_S = 1.0
TARGET_RSS_MB = 200.0

_DM_REQUEST = re.compile(r"\(request ([^)\s]+)\)")
_ASKED = re.compile(r"Reason: (?:burst|backlog) (\d+):")  # the k in command_jobs' reasons


# --- /proc ----------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of the process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MB, and Threads, from /proc/<pid>/status."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
        elif name == "Threads":
            out[name] = int(value)
    return out


# --- watching the fake ---------------------------------------------------------------------

@dataclass
class Seen:
    """What the watcher has found in the fake's calls so far."""

    # request id -> [(message ts, when the fake recorded the post)], one entry per request message
    request_posts: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    asked: dict[str, int] = field(default_factory=dict)  # request id -> k of the asking command
    thread_posts: int = 0
    dms: dict[str, float] = field(default_factory=dict)  # request id -> first certificate DM at
    responses: int = 0  # response_url calls (the bot's ephemeral answers)
    response_texts: list[str] = field(default_factory=list)
    errors: int = 0  # calls the fake answered with ok=false or a non-200 status


class Watcher:
    """One thread reading `fake.calls` incrementally; others wait on conditions over `Seen`."""

    def __init__(self, fake: FakeSlack, interval: float = 0.005) -> None:
        self.fake = fake
        self.interval = interval
        self.seen = Seen()
        self._cursor = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            calls = self.fake.calls  # a copy of the list of references: microseconds
            if len(calls) > self._cursor:
                fresh, self._cursor = calls[self._cursor:], len(calls)
                with self._cond:
                    for call in fresh:
                        self._note(call)
                    self._cond.notify_all()
            self._stop.wait(self.interval)

    def _note(self, call) -> None:
        s = self.seen
        if call.method == "response_url":
            s.responses += 1
            s.response_texts.append(str(call.params.get("text", "")))
            return
        if not call.ok:
            s.errors += 1
            return
        if call.method != "chat.postMessage":
            return
        channel = str(call.params.get("channel", ""))
        text = str(call.params.get("text", ""))
        if channel == REQUESTS_CHANNEL:
            if call.params.get("thread_ts"):
                s.thread_posts += 1
                return
            request_id = _approve_value(call.params.get("blocks"))
            if request_id:
                s.request_posts.setdefault(request_id, []).append((call.response["ts"], call.at))
                asked = _ASKED.search(text)
                if asked:
                    s.asked[request_id] = int(asked.group(1))
        elif channel.startswith("D"):
            match = _DM_REQUEST.search(text)
            if match and "-cert-v01@openssh.com " in text:
                s.dms.setdefault(match.group(1), call.at)

    def wait(self, predicate, timeout: float) -> bool:
        """Wait until predicate(seen) is true; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True


def _approve_value(blocks) -> str | None:
    """The request id on the message's Approve button."""
    for block in blocks if isinstance(blocks, list) else []:
        if isinstance(block, dict) and block.get("type") == "actions":
            for el in block.get("elements") or []:
                if isinstance(el, dict) and el.get("action_id") == APPROVE:
                    return str(el.get("value"))
    return None


# --- set-up --------------------------------------------------------------------------------

def write_policy(path: Path) -> None:
    approvers = ", ".join(APPROVERS)
    targets = "".join(f"  {t}:\n    principals: [{t.replace('-', '')}]\n    max_duration: 4h\n"
                      f"    approvers: [{approvers}]\n    approvals_required: 1\n"
                      for t in TARGETS)
    path.write_text(f"requests_channel: {REQUESTS_CHANNEL}\nsecurity_channel: {SECURITY_CHANNEL}\n"
                    f"admins: [{APPROVERS[0]}]\ntargets:\n{targets}")


@dataclass
class Serve:
    proc: subprocess.Popen
    port: int
    log: Path
    started_at: float  # time.time() at launch: the scheduler's ticks count from about here


def start_vouch(root: Path, api_url: str, token_env: dict[str, str]) -> Serve:
    """`vouch ca init` a P-256 key in the token, then `vouch serve` until /readyz says ready."""
    uri = f"pkcs11:token={TOKEN};object=vouch-ca"
    env = {**os.environ, **token_env,
           "VOUCH_SLACK_BOT_TOKEN": BOT_TOKEN, "VOUCH_SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "VOUCH_SLACK_API_URL": api_url, "VOUCH_DATABASE_URL": f"sqlite:///{root / 'vouch.db'}",
           "VOUCH_POLICY_FILE": str(root / "policy.yaml"), "VOUCH_CA_KEY": uri,
           "VOUCH_PKCS11_MODULE": MODULE, "VOUCH_PKCS11_PIN": PIN,
           "VOUCH_SCHEDULER_INTERVAL": "30s"}
    env.pop("VOUCH_SLACK_APP_TOKEN", None)
    init = subprocess.run([str(VOUCH), "ca", "init", "--type", "ecdsa-p256", "--key", uri],
                          check=False, env=env, capture_output=True, text=True, cwd=root)
    if init.returncode != 0:
        raise RuntimeError(f"vouch ca init failed: {init.stderr.strip()}")
    port = free_port()
    log_path = root / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(VOUCH), "serve", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root)
    serve = Serve(proc, port, log_path, time.time())
    deadline = time.monotonic() + 30
    while True:
        # OSError: not listening yet, or not ready yet (HTTP 503)
        with contextlib.suppress(OSError), \
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            if r.status == 200:
                return serve
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError("vouch serve did not become ready:\n"
                               + log_path.read_text()[-2000:])
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process we started (by its pid), SIGKILL if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --- driving the bot -----------------------------------------------------------------------

def command_jobs(users: list[str], n: int, offset: int, tag: str) -> list[tuple[str, str]]:
    """n (user, text) commands round-robin over the users; each pass over the users switches
    target, so a user gets at most ceil(n / users / targets) requests per target from one call."""
    jobs = []
    for i in range(n):
        k = offset + i
        target = TARGETS[(k // len(users)) % len(TARGETS)]
        jobs.append((users[k % len(users)], f"{target} 1h {tag} {k}: checking replication lag"))
    return jobs


def burst(driver: SlackDriver, jobs: list[tuple[str, str]], concurrency: int
          ) -> tuple[list[float], dict[int, int], float]:
    """Send the /ssh-request commands `concurrency` at a time: the elapsed times of the 200s,
    a count of HTTP statuses (-1: no answer), and the wall time of the whole burst."""
    def one(job: tuple[str, str]) -> tuple[int, float]:
        try:
            r = driver.command(job[0], "/ssh-request", job[1])
            return r.status, r.elapsed
        except Exception:  # noqa: BLE001 - a reset or timeout counts as a failure
            return -1, float("nan")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-client") as pool:
        results = list(pool.map(one, jobs))
    wall = time.monotonic() - started
    statuses: dict[int, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return [e for s, e in results if s == 200], statuses, wall


def approve(driver: SlackDriver, watcher: Watcher, request_ids: list[str], approver: str,
            concurrency: int, timeout: float = 20.0
            ) -> tuple[list[float], list[float], list[str]]:
    """Click Approve on each request's message and wait for the certificate DM:
    (click -> DM seconds, click -> HTTP 200 seconds, problems), in click order."""
    posts = watcher.seen.request_posts

    def one(request_id: str) -> tuple[float | None, float | None, str | None]:
        ts = posts[request_id][0][0]
        sent = time.time()
        r = driver.click_button(approver, channel=REQUESTS_CHANNEL, ts=ts, label="Approve")
        if r.status != 200:
            return None, None, f"{request_id}: the click was answered HTTP {r.status}"
        if not watcher.wait(lambda s: request_id in s.dms, timeout):
            return None, r.elapsed, f"{request_id}: no certificate DM within {timeout:.0f} s"
        return watcher.seen.dms[request_id] - sent, r.elapsed, None

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-approver") as pool:
        results = list(pool.map(one, request_ids))
    return ([d for d, _, _ in results if d is not None],
            [a for _, a, _ in results if a is not None], [p for _, _, p in results if p])


# --- phases --------------------------------------------------------------------------------

@dataclass
class Bench:
    args: argparse.Namespace
    fake: FakeSlack
    watcher: Watcher
    driver: SlackDriver
    serve: Serve
    users: list[str]


def register_keys(b: Bench) -> None:
    """Everyone registers a key; not timed (it also fills users.info caches)."""
    everyone = b.users + list(APPROVERS)
    keys = [line + "@ack" for line in user_key_lines(len(everyone), "bench")]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=b.args.concurrency) as pool:
        statuses = list(pool.map(
            lambda uk: b.driver.command(uk[0], "/ssh-key", "add " + uk[1]).status,
            zip(everyone, keys)))
    answered = b.watcher.wait(lambda s: s.responses >= len(everyone), 60)
    seen = b.watcher.seen
    if any(s != 200 for s in statuses) or not answered:
        raise RuntimeError(f"key registration failed: HTTP {set(statuses)}, {seen.responses} "
                           f"answers; the last: {seen.response_texts[-3:]}")
    refused = [t for t in seen.response_texts if not t.startswith("Registered")]
    if refused:
        raise RuntimeError(f"key registration refused: {refused[:3]}")
    print(f"registered {len(everyone)} keys in {time.monotonic() - started:.1f} s")


def phase_acks(b: Bench) -> tuple[list[float], bool, float]:
    """(acks in seconds, whether the target is met, time.time() when the burst began)."""
    a = b.args
    pid = b.serve.proc.pid
    print(f"\n1. acks: {a.commands} x /ssh-request, {a.concurrency} concurrent, "
          f"{a.users} requesters, targets {', '.join(TARGETS)}")
    jobs = command_jobs(b.users, a.commands, 0, "burst")
    began, cpu_before = time.time(), cpu_seconds(pid)
    acks, statuses, wall = burst(b.driver, jobs, a.concurrency)
    cpu = cpu_seconds(pid) - cpu_before
    print(f"   HTTP statuses {dict(sorted(statuses.items()))}; the burst took {wall:.2f} s "
          f"({a.commands / wall:.0f} commands/s);\n   vouch serve used {cpu:.2f} s CPU meanwhile "
          f"({cpu / a.commands * 1000:.1f} ms per command: acks and the start of lazy work)")
    print(f"   send -> HTTP 200:  {summary_ms(acks)}")
    ok = (statuses.get(200, 0) == a.commands and bool(acks)
          and pct(acks, 99) * 1000 < TARGET_ACK_P99_MS)
    return acks, ok, began


def phase_drain(b: Bench, began: float, responses_before: int) -> list[str]:
    """Wait until every request message is posted; report how long that took. Returns the
    posted request ids, oldest post first."""
    n = b.args.commands
    done = b.watcher.wait(lambda s: len(s.request_posts) >= n
                          and s.responses - responses_before >= n, 120)
    seen = b.watcher.seen
    firsts = {r: posts[0][1] for r, posts in seen.request_posts.items()}
    last = max(firsts.values(), default=began) - began
    dupes = sum(len(posts) - 1 for posts in seen.request_posts.values())
    print(f"\n2. drain: {len(firsts)}/{n} request messages posted, the last {last:.1f} s after "
          f"the burst began ({len(firsts) / max(last, 1e-9):.1f} request messages/s);\n"
          f"   {seen.thread_posts} thread posts; {dupes} duplicate request messages"
          + ("" if done else "  (TIMED OUT after 120 s)"))
    by_k = {seen.asked[r]: at - began for r, at in firsts.items() if r in seen.asked}
    first, last_ = range(min(20, n)), range(max(0, n - 20), n)
    for label, ks in ((f"commands #1-#{first.stop}", first),
                      (f"commands #{last_.start + 1}-#{n}", last_)):
        delays = [by_k[k] for k in ks if k in by_k]
        if delays:
            print(f"   {label}: request message posted {min(delays):.1f} .. {max(delays):.1f} s "
                  f"(median {statistics.median(delays):.1f} s) after the burst began")
    refused = [t for t in seen.response_texts[responses_before:] if not t.startswith("Request `")]
    if refused:
        print(f"   {len(refused)} commands got an answer other than 'Request …': {refused[:2]}")
    # Let the last thread notes land, so that phase 3 starts with an idle bot.
    b.watcher.wait(lambda s: s.thread_posts >= len(firsts), 30)
    return sorted(firsts, key=firsts.get)


def phase_approve(b: Bench, posted: list[str]) -> tuple[list[float], bool, list[str]]:
    a = b.args
    chosen = posted[::max(1, len(posted) // max(1, a.approvals))][:a.approvals]
    print(f"\n3. approve -> certificate DM: {len(chosen)} requests, approved by {APPROVERS[1]}, "
          + ("one after another" if a.approve_concurrency == 1
             else f"{a.approve_concurrency} at a time"))
    dms, clicks, problems = approve(b.driver, b.watcher, chosen, APPROVERS[1],
                                    a.approve_concurrency)
    print(f"   click -> DM:       {summary_ms(dms)}")
    print(f"   click -> HTTP 200: {summary_ms(clicks)}")
    for p in problems[:5]:
        print(f"   problem: {p}")
    ok = len(dms) == len(chosen) and bool(dms) and pct(dms, 50) < TARGET_DM_P50_S
    return dms, ok, chosen


def phase_backlog(b: Bench, posted: list[str], approved: list[str]) -> None:
    a = b.args
    taken = set(approved)
    remaining = [r for r in posted if r not in taken]
    picks = remaining[::max(1, len(remaining) // a.backlog_approvals)][:a.backlog_approvals]
    print(f"\n4. backlog (no target): {a.backlog} more /ssh-request at {a.concurrency} concurrent, "
          f"and 0.5 s later {len(picks)} approvals,\n   one after another, of requests posted "
          "earlier")
    jobs = command_jobs(b.users, a.backlog, a.commands, "backlog")
    result: dict = {}
    sender = threading.Thread(target=lambda: result.update(
        zip(("acks", "statuses", "wall"), burst(b.driver, jobs, a.concurrency))))
    sender.start()
    time.sleep(0.5)
    dms, clicks, problems = approve(b.driver, b.watcher, picks, APPROVERS[2], 1, timeout=90)
    sender.join()
    print(f"   second burst: HTTP {dict(sorted(result['statuses'].items()))}, "
          f"send -> HTTP 200: {summary_ms(result['acks'])}")
    print(f"   click -> HTTP 200: {summary_ms(clicks)}")
    print(f"   click -> DM:       {summary_ms(dms)}")
    print(f"   click -> DM each, in click order: {', '.join(f'{d:.2f}' for d in dms)} s")
    for p in problems[:5]:
        print(f"   problem: {p}")
    b.watcher.wait(lambda s: len(s.request_posts) >= a.commands + a.backlog, 90)


def report_duplicates(b: Bench) -> None:
    dupes = {r: posts for r, posts in b.watcher.seen.request_posts.items() if len(posts) > 1}
    if not dupes:
        print("\nno duplicate request messages over the whole run")
        return
    extra = sorted(at - b.serve.started_at for posts in dupes.values() for _, at in posts[1:])
    print(f"\nduplicate request messages over the whole run: {len(dupes)} requests were posted "
          f"more than once;\n   the later copies at +{', +'.join(f'{t:.1f}' for t in extra[:12])}"
          f"{' …' if len(extra) > 12 else ''} s after `vouch serve` started "
          f"(its scheduler ticks every 30 s)")


def report_log(b: Bench) -> None:
    lines = b.serve.log.read_text(errors="replace").splitlines()
    bad = [line for line in lines if " WARNING " in line or " ERROR " in line
           or '"level": "warning"' in line or '"level": "error"' in line]
    print(f"serve.log: {len(bad)} warning/error lines; fake Slack: {len(b.fake.calls)} calls, "
          f"{b.watcher.seen.errors} answered not ok")
    for line in bad[:5]:
        print(f"   {line[:200]}")


# --- main ----------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--commands", type=int, default=200, help="slash commands timed (default %(default)s)")
    add("--concurrency", type=int, default=20, help="commands in flight (default %(default)s)")
    add("--users", type=int, default=70, help="distinct requesters (default %(default)s)")
    add("--latency", type=float, default=0.1,
        help="seconds the fake takes to answer each Web API call (default %(default)s)")
    add("--approvals", type=int, default=30, help="approve -> DM samples (default %(default)s)")
    add("--approve-concurrency", type=int, default=1,
        help="approvals in flight (default %(default)s: one after another)")
    add("--backlog", type=int, default=60,
        help="phase 4: commands in the second burst; 0 skips the phase (default %(default)s)")
    add("--backlog-approvals", type=int, default=5,
        help="phase 4: approvals sent while that burst posts (default %(default)s)")
    add("--keep", action="store_true", help="keep the temp dir (serve.log, vouch.db)")
    args = parser.parse_args()
    per_user = -(-(args.commands + args.backlog) // args.users)
    if -(-per_user // len(TARGETS)) > MAX_PENDING_PER_TARGET:
        parser.error(f"--users {args.users} is too few: the policy allows "
                     f"{MAX_PENDING_PER_TARGET} pending requests per user per target")
    return args


def main() -> int:
    args = parse_args()
    if not shutil.which("softhsm2-util"):
        sys.exit("softhsm2-util is not installed (apt-get install softhsm2)")
    if not VOUCH.exists():
        sys.exit(f"{VOUCH} is missing: install the project into .venv first")

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="vouch-ack-bench-"))
    fake = FakeSlack(bot_token=BOT_TOKEN, latency=args.latency)
    users = [f"U0REQ{i:03d}" for i in range(args.users)]
    for i, uid in enumerate(users):
        fake.add_user(uid, f"requester{i}")
    for i, uid in enumerate(APPROVERS):
        fake.add_user(uid, f"approver{i}")
    fake.add_channel(REQUESTS_CHANNEL, "access-requests")
    fake.add_channel(SECURITY_CHANNEL, "security")
    api_url = fake.start()
    watcher = Watcher(fake).start()
    serve = None
    try:
        token_env = init_token(root, TOKEN, this_process=False)  # for vouch serve, not us
        write_policy(root / "policy.yaml")
        serve = start_vouch(root, api_url, token_env)
        driver = SlackDriver(f"http://127.0.0.1:{serve.port}/slack/events", SIGNING_SECRET, fake)
        b = Bench(args, fake, watcher, driver, serve, users)
        idle = memory(serve.proc.pid)
        print(f"vouch serve pid {serve.proc.pid} on :{serve.port}; the fake Slack answers each "
              f"Web API call after {args.latency * 1000:.0f} ms;\nRSS after start "
              f"{idle['VmRSS']:.1f} MB, {idle['Threads']:.0f} threads")
        register_keys(b)

        responses_before = watcher.seen.responses
        acks, ack_ok, began = phase_acks(b)
        after_burst = memory(serve.proc.pid)
        posted = phase_drain(b, began, responses_before)
        dms, dm_ok, approved = phase_approve(b, posted)
        if args.backlog > 0 and args.backlog_approvals > 0:
            phase_backlog(b, posted, approved)
        report_duplicates(b)

        mem = memory(serve.proc.pid)
        print(f"\nvouch serve memory: VmRSS {mem['VmRSS']:.1f} MB (after start "
              f"{idle['VmRSS']:.1f}, after the burst {after_burst['VmRSS']:.1f}), "
              f"VmHWM (peak) {mem['VmHWM']:.1f} MB, {mem['Threads']:.0f} threads")
        report_log(b)

        over_3s = sum(1 for a in acks if a > 3.0)
        ack_p99 = pct(acks, 99) * 1000 if acks else float("nan")
        dm_p50 = pct(dms, 50) if dms else float("nan")
        print(f"\nack p99 < {TARGET_ACK_P99_MS:.0f} ms: {ack_p99:.1f} ms"
              f"{f', {over_3s} over 3 s' if over_3s else ''}  {verdict(ack_ok)}")
        print(f"approve -> DM p50 < {TARGET_DM_P50_S:g} s: {dm_p50:.3f} s  {verdict(dm_ok)}")
        print(f"vouch serve VmRSS < {TARGET_RSS_MB:.0f} MB: {mem['VmRSS']:.1f} MB "
              f"(peak {mem['VmHWM']:.1f} MB)  {verdict(mem['VmRSS'] < TARGET_RSS_MB)}")
    finally:
        if serve is not None:
            stop(serve.proc)
        watcher.stop()
        fake.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{machine()}, {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
