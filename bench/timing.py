"""What the benchmarks share: timing contenders fairly on a noisy machine, and a private
SoftHSM2 token."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TOKEN = "bench"
PIN = "1234"
SO_PIN = "12345678"


@dataclass(frozen=True)
class Result:
    count: int
    median_ns: int
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
                         total_ns=totals[name]) for name in contenders}


def init_token(root: Path) -> None:
    """A private SoftHSM2 token. Must run before python-pkcs11 loads the module in this process:
    SoftHSM2 only sees tokens that exist at C_Initialize."""
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN,
                    "--so-pin", SO_PIN, "--pin", PIN], check=True, capture_output=True)


def print_top_functions(profiler: cProfile.Profile, top: int) -> None:
    """The `top` functions by own time, indented, without pstats' header lines."""
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    print("\n".join("  " + line for line in out.getvalue().splitlines()
                    if line.strip() and not line.startswith(("   Ordered", "   List reduced"))))
