"""What the benchmarks share: timing contenders fairly on a noisy machine, percentiles, a private
SoftHSM2 token, a private PostgreSQL cluster, user keys, free ports, `ssh-keygen -L`, verdicts.

Import it after putting the repository root on sys.path (each script does). Nothing here loads a
PKCS#11 module at import time: SoftHSM2 only sees tokens that exist when the module is
initialised, and a process initialises a module once, so init_token() must run first.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "tests") not in sys.path:  # tests/support/postgres.py
    sys.path.insert(0, str(REPO / "tests"))

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "bench"
PIN = "1234"
SO_PIN = "12345678"

# The audit chain's key for the benchmarks' own stores (vouch.audit_key in the product).
AUDIT_KEY = b"bench-audit-key-0123456789abcdef0123456789"


# --- reporting -------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine(started: float | None = None) -> str:
    """The closing line: interpreter, CPUs, load average, and the run's wall time."""
    line = (f"{sys.implementation.name} {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
            f"load average {loadavg()}")
    return line if started is None else f"{line}, {time.perf_counter() - started:.1f} s"


def print_top_functions(profiler: cProfile.Profile, top: int, sort: str = "tottime") -> None:
    """The `top` functions by `sort` (own time by default), indented, without pstats' header."""
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
    print("\n".join("  " + line for line in out.getvalue().splitlines()
                    if line.strip() and not line.startswith(("   Ordered", "   List reduced"))))


# --- statistics ------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[int(rank) - 1]


def summary_ms(seconds: list[float]) -> str:
    if not seconds:
        return "no samples"
    ms = [v * 1000 for v in seconds]
    return (f"n={len(ms)}  p50 {pct(ms, 50):7.1f}  p90 {pct(ms, 90):7.1f}  "
            f"p99 {pct(ms, 99):7.1f}  max {max(ms):7.1f}  mean {statistics.fmean(ms):7.1f} ms")


@dataclass(frozen=True)
class Result:
    count: int
    median_ns: int
    p90_ns: int
    total_ns: int

    @property
    def per_second(self) -> float:
        return self.count / (self.total_ns / 1e9)

    @property
    def median_us(self) -> float:
        return self.median_ns / 1e3

    @property
    def median_ms(self) -> float:
        return self.median_ns / 1e6

    @property
    def p90_ms(self) -> float:
        return self.p90_ns / 1e6


def measure(fn: Callable[[], object], n: int) -> tuple[list[int], int]:
    """Call `fn` n times: the time of each call and of the whole loop, in ns."""
    clock = time.perf_counter_ns
    times = [0] * n
    start = clock()
    for i in range(n):
        t0 = clock()
        fn()
        times[i] = clock() - t0
    return times, clock() - start


def compare(contenders: dict[str, tuple[Callable[[], object], int]], rounds: int = 20, *,
            warm_up: bool = True, after_round: Callable[[int], None] | None = None
            ) -> dict[str, Result]:
    """Measure contenders `name: (fn, n)` in alternating rounds, so that a slow spell on a shared
    machine hits all of them alike rather than whichever ran at the time."""
    if warm_up:
        for fn, n in contenders.values():
            measure(fn, max(3, n // 20))
    times: dict[str, list[int]] = {name: [] for name in contenders}
    totals = dict.fromkeys(contenders, 0)
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, n = contenders[name]
            chunk = n // rounds + (r < n % rounds)
            round_times, total = measure(fn, chunk)
            times[name] += round_times
            totals[name] += total
        if after_round is not None:
            after_round(r)
    return {name: Result(count=len(times[name]), median_ns=int(statistics.median(times[name])),
                         p90_ns=int(pct(times[name], 90)), total_ns=totals[name])
            for name in contenders}


# --- machine -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (OpenBao's dev mode listens on p+1 too)."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports on 127.0.0.1")


# --- SoftHSM2 ----------------------------------------------------------------------------------

def init_token(root: Path, label: str = TOKEN, *, this_process: bool = True) -> dict[str, str]:
    """A private SoftHSM2 token (its own SOFTHSM2_CONF under `root`); returns the environment
    entries that point at it. With this_process, they are set in os.environ too: this must then
    happen before python-pkcs11 loads the module here."""
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    if this_process:
        os.environ.update(env)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                    "--so-pin", SO_PIN, "--pin", PIN], check=True, capture_output=True,
                   env={**os.environ, **env})
    return env


def token_signer(key_type=None, label: str | None = None):
    """A fresh CA key (P-256 by default) in the bench token, and Vouch's Pkcs11Signer for it."""
    from ca.pkcs11 import Pkcs11Signer, create_token_key, parse_pkcs11_uri
    from ca.signer import CaKeyType

    key_type = key_type or CaKeyType.ECDSA_P256
    uri = parse_pkcs11_uri(f"pkcs11:token={TOKEN};object={label or 'ca-' + key_type.value}")
    create_token_key(uri, key_type, module=MODULE, pin=PIN)
    return Pkcs11Signer(uri, module=MODULE, pin=PIN)


# --- keys and certificates -------------------------------------------------------------------

def user_key_lines(n: int, comment: str = "") -> list[str]:
    """n distinct Ed25519 OpenSSH public key lines (with ` <comment><i>` when comment is given)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return [ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        + (f" {comment}{i}" if comment else "") for i in range(n)]


def user_key_line() -> str:
    return user_key_lines(1)[0]


def check_certificate(cert: Path | str, ca_fingerprint: str, *, root: Path | None = None,
                      name: str = "cert", principal: str | None = None) -> str:
    """`ssh-keygen -L` reads the certificate (a path, or a line written under root), checks its
    signature and names the CA key as signer (and `principal`, if given). Returns the listing."""
    if isinstance(cert, str):
        if root is None:
            raise ValueError("a certificate line needs a root directory to be written to")
        path = root / f"{name}-cert.pub"
        path.write_text(cert.strip() + "\n")
    else:
        path = cert
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(path)], capture_output=True,
                             text=True, check=True).stdout
    if ("Signing CA: " not in listing or ca_fingerprint not in listing
            or (principal is not None and principal not in listing)):
        raise RuntimeError(f"{name}: ssh-keygen -L does not show a certificate by the CA "
                           f"{ca_fingerprint}" + (f" for {principal}" if principal else "")
                           + f":\n{listing}")
    return listing


# --- PostgreSQL ----------------------------------------------------------------------------------

@contextmanager
def postgres_cluster(*, durable: bool = True) -> Iterator[object | None]:
    """A private PostgreSQL cluster (tests/support/postgres.py; durable: fsync and
    synchronous_commit on), stopped and removed at the end; None (and a line saying why) when
    none can be started here (not root, PostgreSQL missing)."""
    from support.postgres import PostgresCluster, available

    why = available()
    if why:
        print(f"postgresql: skipped: {why}", flush=True)
        yield None
        return
    cluster = PostgresCluster(durable=durable).start()
    try:
        yield cluster
    finally:
        cluster.stop()
