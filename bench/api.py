"""What authenticating one client API call costs the server (vouch.api), per key type.

Run from the repository root:  .venv/bin/python bench/api.py [--count N]

Signatures are made beforehand by `ssh-keygen -Y sign` (one process for all of a key's
messages), each over a message of its own (`?n=<i>` in the path), as `vouch request` makes them.
Then, per key type, in alternating rounds:

  verify     access.signed_calls.check: parse the header, check the time, verify the SSHSIG
  auth path  check, then keys.holder (a read unit) and signed_calls.first_use (a write unit:
             forget old entries, insert, RETURNING) on SQLite in a WAL file as storage.db opens it
             (synchronous=FULL: the replay record is on disk before the call goes on)

Slack's users.info is cached by the gateway for a minute and not counted. Target: the auth path
under 5 ms at the median for every key type (a person waits on a handful of calls; the server
must not be the bottleneck at a few hundred calls a second). Exit 0 either way.
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AUDIT_KEY, compare, machine, verdict  # noqa: E402

from access import signed_calls  # noqa: E402
from ca.keys import parse_public_key  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.store import SqlStore  # noqa: E402

KEYS = {"ed25519": ["-t", "ed25519"], "ecdsa-p256": ["-t", "ecdsa", "-b", "256"],
        "rsa-3072": ["-t", "rsa", "-b", "3072"]}
TARGET_MS = 5.0


def signed_calls_for(root: Path, name: str, args: list[str], count: int, stamp: str):
    key = root / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", *args, "-N", "", "-f", str(key)], check=True)
    files = []
    for i in range(count):
        path = root / f"{name}-{i}"
        path.write_bytes(signed_calls.message(stamp, "GET", f"/api/v1/requests/req-x?n={i}", b""))
        files.append(str(path))
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", signed_calls.API, "-f", str(key),
                    *files], check=True)
    headers = [f"{signed_calls.SCHEME} "
               + base64.b64encode(Path(f + ".sig").read_bytes()).decode() for f in files]
    return parse_public_key((root / f"id_{name}.pub").read_text()), headers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000, help="calls per key type")
    args = parser.parse_args()
    started = time.perf_counter()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = str(int(now.timestamp()))
    rounds = 10
    with tempfile.TemporaryDirectory(prefix="vouch-bench-api-") as scratch:
        root = Path(scratch)
        db = Database(f"sqlite:///{root / 'vouch.db'}")
        db.prepare()
        store = SqlStore(db, AUDIT_KEY)
        contenders = {}
        for name, keygen in KEYS.items():
            public, headers = signed_calls_for(root, name, keygen, args.count, stamp)
            with store.unit() as unit:
                unit.keys.add("U0BENCH" + name, public, now)
            verify_next = iter(range(args.count))
            auth_next = iter(range(args.count))

            def verify(headers=headers, nxt=verify_next):
                i = next(nxt)
                return signed_calls.check(authorization=headers[i], timestamp=stamp,
                                          method="GET", target=f"/api/v1/requests/req-x?n={i}",
                                          body=b"", namespace=signed_calls.API, now=now)

            def auth(headers=headers, nxt=auth_next):
                i = next(nxt)
                call = signed_calls.check(authorization=headers[i], timestamp=stamp,
                                          method="GET", target=f"/api/v1/requests/req-x?n={i}",
                                          body=b"", namespace=signed_calls.API, now=now)
                with store.unit(read_only=True) as unit:
                    assert unit.keys.holder(call.fingerprint)
                with store.unit() as unit:
                    signed_calls.first_use(unit, call, now)

            contenders[f"verify {name}"] = (verify, args.count)
            contenders[f"auth path {name}"] = (auth, args.count)
        results = compare(contenders, rounds=rounds, warm_up=False)
        db.close()
    print(f"{'contender':24} {'median':>9} {'p90':>9} {'calls/s':>9}")
    ok = True
    for name, result in results.items():
        line = (f"{name:24} {result.median_ms:7.3f}ms {result.p90_ms:7.3f}ms "
                f"{result.per_second:9.0f}")
        if name.startswith("auth path"):
            passed = result.median_ms < TARGET_MS
            ok &= passed
            line += f"  {verdict(passed)} (< {TARGET_MS} ms)"
        print(line)
    print(f"overall: {verdict(ok)}")
    print(machine(started))


if __name__ == "__main__":
    main()
