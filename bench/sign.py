"""Certificates per second from Vouch's PKCS#11 CA signer, against the floor and ssh-keygen.

Run from the repository root:  .venv/bin/python bench/sign.py [--count N] [--profile N]

For each CA key type, in one run:
  vouch-pkcs11  Vouch's Pkcs11Signer (SoftHSM2): a whole certificate per item (new serial,
                CertificateSpec, sign_certificate).
  raw-pkcs11    python-pkcs11 `sign` on the same token key (its own session): the floor.
  vouch-file    Vouch's FileSigner with a freshly created key file: a whole certificate per item.
  ssh-keygen    `ssh-keygen -s ca.pub -D libsofthsm2.so ...`, one process per certificate, the way a
                shell-script CA does it (not Ed25519: OpenSSH 9.2's PKCS#11 code has no Ed25519).

Contenders run in alternating rounds (a slow spell on a shared machine hits all alike); the table
gives throughput and the median time per item, and the ratios compare medians. Both ratios have a
target; PASS/FAIL is printed, but the exit status is 0 either way: this is a benchmark, not a test.
--profile N runs cProfile over N ecdsa-p256 PKCS#11 certificates instead.

SoftHSM2 only sees tokens that exist when the module is initialised, and a process initialises a
module once; so the token is created (in a private SOFTHSM2_CONF) before anything loads the module.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# None of these loads a PKCS#11 module; ca.pkcs11 (python-pkcs11) is imported only after the
# token exists.
from ca.cert import (CertificateSpec, encode_tbs, new_serial, sign_certificate,  # noqa: E402
                     validity)
from ca.keys import PublicKey, parse_public_key  # noqa: E402
from ca.signer import CaKeyType, create_file_key  # noqa: E402
from bench.common import (MODULE, PIN, TOKEN, Result, check_certificate, compare,  # noqa: E402
                          init_token, machine, measure, print_top_functions, token_signer,
                          user_key_line, verdict)

SSH_KEYGEN_SKIPPED = {"ed25519": "OpenSSH 9.2's ssh-keygen -D says 'skipping unsupported key type'"}

# Targets: how much faster than ssh-keygen-per-certificate Vouch must be (P-256), and how close
# a whole Vouch certificate must come to one raw token signature.
TARGET_VS_SSH_KEYGEN = 50.0
TARGET_VS_RAW = 1.5


# --- set-up ------------------------------------------------------------------------------

def user_key(root: Path) -> tuple[PublicKey, Path]:
    """An Ed25519 user public key, parsed and as `user.pub` for ssh-keygen."""
    line = user_key_line()
    path = root / "user.pub"
    path.write_text(line + " user@bench\n")
    return parse_public_key(line), path


# --- contenders ----------------------------------------------------------------------------

def vouch(signer, subject: PublicKey) -> Callable[[], object]:
    """A whole certificate per call, as Vouch issues one: fresh serial, validity window,
    CertificateSpec (validated), sign_certificate. Works for the PKCS#11 and the file signer."""
    lifetime = timedelta(hours=1)

    def issue():
        after, before = validity(datetime.now(timezone.utc), lifetime)
        spec = CertificateSpec(public_key=subject, serial=new_serial(), key_id="id",
                               principals=("user",), valid_after=after, valid_before=before)
        return sign_certificate(spec, signer)

    return issue


def raw_pkcs11(signer, subject: PublicKey, label: str):
    """The floor: python-pkcs11's sign alone, on the same token key (found by its label in a
    session of its own, which shares the signer's login), over a real certificate body. EC hashes
    first (SoftHSM2 has no CKM_ECDSA_SHA256). Returns (the call, its session, to close)."""
    from pkcs11 import Mechanism, ObjectClass

    from ca.pkcs11 import load_module

    body = encode_tbs(vouch(signer, subject)().spec, signer.public_key.blob)
    session = load_module(MODULE).get_token(token_label=TOKEN).open()
    key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
    kind = signer.public_key.type
    if kind == "ssh-ed25519":
        return (lambda: key.sign(body, mechanism=Mechanism.EDDSA)), session
    if kind == "ssh-rsa":
        return (lambda: key.sign(body, mechanism=Mechanism.SHA512_RSA_PKCS)), session
    digest = {256: hashlib.sha256, 384: hashlib.sha384, 521: hashlib.sha512}[signer.public_key.bits]
    return (lambda: key.sign(digest(body).digest(), mechanism=Mechanism.ECDSA)), session


def file_signer(key_type: CaKeyType, root: Path):
    return create_file_key(root / f"ca-{key_type.value}", key_type)


def ssh_keygen(signer, key_type: CaKeyType, root: Path, user_pub: Path) -> Callable[[], object]:
    """One `ssh-keygen -s -D` process per certificate; the PIN comes from an SSH_ASKPASS script.
    The first certificate is checked with `ssh-keygen -L` before any timing."""
    ca_pub = root / f"ca-{key_type.value}-token.pub"
    ca_pub.write_text(signer.public_key.line() + "\n")
    askpass = root / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\necho {PIN}\n")
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force",
           "DISPLAY": ":0"}
    argv = ["ssh-keygen", "-q", "-s", str(ca_pub), "-D", MODULE, "-I", "id", "-n", "user",
            "-V", "+1h", str(user_pub)]
    cert = user_pub.with_name("user-cert.pub")

    def run() -> None:
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)

    cert.unlink(missing_ok=True)
    try:
        run()
    except subprocess.CalledProcessError:
        detail = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True).stderr.strip()
        raise RuntimeError(f"ssh-keygen -D failed for {key_type.value}: {detail}") from None
    check_certificate(cert, signer.public_key.fingerprint, name=key_type.value)
    return run


def bench_type(key_type: CaKeyType, count: int, root: Path, subject: PublicKey,
               user_pub: Path) -> dict[str, Result | str]:
    """All contenders for one CA key type. RSA signs slowly: a tenth of the count."""
    rsa = key_type.value.startswith("rsa")
    n = max(20, count // 10 if rsa else count)
    n_ssh_keygen = max(20, n // 4 if rsa else n // 20)
    print(f"{key_type.value}: {n} certificates per contender"
          + ("" if key_type.value in SSH_KEYGEN_SKIPPED else f", {n_ssh_keygen} by ssh-keygen"),
          flush=True)
    signer = token_signer(key_type)
    raw, raw_session = raw_pkcs11(signer, subject, f"ca-{key_type.value}")
    try:
        issue = vouch(signer, subject)
        vouch_cert = root / f"vouch-{key_type.value}-cert.pub"
        vouch_cert.write_text(issue().line() + "\n")
        check_certificate(vouch_cert, signer.public_key.fingerprint, name=key_type.value)
        contenders = {"vouch-pkcs11": (issue, n),
                      "raw-pkcs11": (raw, n),
                      "vouch-file": (vouch(file_signer(key_type, root), subject), n)}
        skipped = SSH_KEYGEN_SKIPPED.get(key_type.value)
        if skipped:
            return {**compare(contenders), "ssh-keygen": skipped}
        contenders["ssh-keygen"] = (ssh_keygen(signer, key_type, root, user_pub), n_ssh_keygen)
        return compare(contenders)
    finally:
        raw_session.close()  # before the signer's: closing the last session logs out
        signer.close()


# --- report --------------------------------------------------------------------------------

CONTENDERS = ("vouch-pkcs11", "raw-pkcs11", "vouch-file", "ssh-keygen")


def print_table(results: dict[str, dict[str, Result | str]]) -> None:
    print(f"\n{'CA key':<11} {'contender':<13} {'n':>6} {'per second':>12} {'median µs':>11}")
    for type_name, row in results.items():
        for contender in CONTENDERS:
            result = row.get(contender)
            if isinstance(result, Result):
                print(f"{type_name:<11} {contender:<13} {result.count:>6} "
                      f"{result.per_second:>12,.0f} {result.median_us:>11,.1f}")
            elif result:
                print(f"{type_name:<11} {contender:<13} {'-':>6} {'skipped:':>12} {result}")
        print()


def print_ratios(results: dict[str, dict[str, Result | str]]) -> None:
    print(f"Ratios of median times per certificate; targets: vouch-pkcs11 / raw-pkcs11 <= "
          f"{TARGET_VS_RAW:g}x,\n  ssh-keygen / vouch-pkcs11 >= {TARGET_VS_SSH_KEYGEN:g}x for "
          f"ecdsa-p256 (vouch-pkcs11 - raw-pkcs11 in brackets):")
    for type_name, row in results.items():
        vouch_p11, raw, keygen = row["vouch-pkcs11"], row["raw-pkcs11"], row["ssh-keygen"]
        over_raw = vouch_p11.median_ns / raw.median_ns
        overhead = vouch_p11.median_us - raw.median_us
        line = (f"  {type_name:<11} vouch/raw {over_raw:5.2f}x ({overhead:+5,.0f} µs) "
                f"{verdict(over_raw <= TARGET_VS_RAW)}")
        if isinstance(keygen, Result):
            speedup = keygen.median_ns / vouch_p11.median_ns
            target = verdict(speedup >= TARGET_VS_SSH_KEYGEN) if type_name == "ecdsa-p256" else ""
            line += f"   ssh-keygen/vouch {speedup:6.1f}x {target}"
        print(line.rstrip())


def profile(signer, subject: PublicKey, n: int) -> None:
    """Where a PKCS#11 certificate's time goes: cProfile of n certificates after a warm-up.
    (cProfile inflates every Python call; compare with the unprofiled medians.)"""
    import cProfile

    issue = vouch(signer, subject)
    measure(issue, max(10, n // 10))
    profiler = cProfile.Profile()
    profiler.runcall(measure, issue, n)
    print_top_functions(profiler, 20)
    print_top_functions(profiler, 12, sort="cumulative")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000,
                        help="certificates per contender for EC and Ed25519 CA keys (RSA: "
                             "count/10; ssh-keygen: count/20, RSA count/40; default %(default)s)")
    parser.add_argument("--no-rsa-4096", action="store_true", help="skip the RSA-4096 CA key")
    parser.add_argument("--profile", type=int, metavar="N",
                        help="instead: cProfile N ecdsa-p256 PKCS#11 certificates, print the top")
    args = parser.parse_args()
    for tool in ("softhsm2-util", "ssh-keygen"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install softhsm2 openssh-client)")

    with tempfile.TemporaryDirectory(prefix="vouch-bench-") as tmp:
        root = Path(tmp)
        init_token(root)  # before anything below loads the PKCS#11 module
        subject, user_pub = user_key(root)
        if args.profile:
            profile(token_signer(CaKeyType.ECDSA_P256), subject, args.profile)
            return 0
        types = [CaKeyType.ECDSA_P256, CaKeyType.ECDSA_P384, CaKeyType.ED25519, CaKeyType.RSA_3072]
        if not args.no_rsa_4096:
            types.append(CaKeyType.RSA_4096)
        results: dict[str, dict[str, Result | str]] = {}
        started = time.perf_counter()
        for key_type in types:
            results[key_type.value] = bench_type(key_type, args.count, root, subject, user_pub)
        print_table(results)
        print_ratios(results)
        print(f"\n{machine(started)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
