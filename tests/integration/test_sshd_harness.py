"""Self-test of tests/support/sshd.py: a real sshd must tell accepted logins from refused ones.

Everything here uses certificates made by ssh-keygen only, so a failure points at
the harness (or the local OpenSSH), not at Vouch's CA code. Every refusal test
checks the line in which sshd states *why* it refused, so a test cannot pass
because a login failed for some unrelated reason.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.sshd import LoginResult, Sshd, require_sshd

pytestmark = pytest.mark.root

USER = "vouchtest"


def keygen(*args: str | Path) -> str:
    cp = subprocess.run(
        ["ssh-keygen", *map(str, args)], capture_output=True, text=True, timeout=30
    )
    assert cp.returncode == 0, f"ssh-keygen {args} failed: {cp.stderr}"
    return cp.stdout


def fingerprint(pub: Path) -> str:
    # "256 SHA256:xxxx comment (ECDSA)"
    return keygen("-l", "-E", "sha256", "-f", pub).split()[1]


@dataclass
class Pki:
    dir: Path
    ca: Path  # private CA key (ca.pub next to it)
    other_ca: Path  # a CA that sshd does not trust
    user_key: Path  # private user key (user.pub next to it)

    def cert(
        self,
        name: str,
        *,
        key_id: str,
        principals: str = USER,
        serial: int,
        validity: str = "-5m:+1h",
        ca: Path | None = None,
        options: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        """Sign a copy of the user key; return (private key, certificate)."""
        priv = self.dir / name
        pub = self.dir / f"{name}.pub"
        priv.write_bytes(self.user_key.read_bytes())
        priv.chmod(0o600)
        pub.write_bytes(self.user_key.with_suffix(".pub").read_bytes())
        opts = [a for o in options for a in ("-O", o)]
        keygen(
            "-q", "-s", ca or self.ca, "-I", key_id, "-n", principals,
            "-z", str(serial), "-V", validity, *opts, pub,
        )  # fmt: skip
        cert = self.dir / f"{name}-cert.pub"
        assert cert.exists()
        return priv, cert

    def krl(self, name: str, spec: str = "") -> bytes:
        """A KRL for certificates of ``ca`` (empty when ``spec`` is empty)."""
        path = self.dir / name
        if spec:
            spec_file = self.dir / f"{name}.spec"
            spec_file.write_text(spec)
            keygen("-q", "-k", "-f", path, "-s", self.ca.with_suffix(".pub"), spec_file)
        else:
            keygen("-q", "-k", "-f", path, "-s", self.ca.with_suffix(".pub"))
        return path.read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    require_sshd()
    d = tmp_path_factory.mktemp("pki")
    keygen("-q", "-t", "ecdsa", "-N", "", "-C", "test-ca", "-f", d / "ca")
    keygen("-q", "-t", "ecdsa", "-N", "", "-C", "untrusted-ca", "-f", d / "other_ca")
    keygen("-q", "-t", "ed25519", "-N", "", "-C", "user", "-f", d / "user")
    return Pki(dir=d, ca=d / "ca", other_ca=d / "other_ca", user_key=d / "user")


@pytest.fixture(scope="module")
def sshd(pki: Pki, tmp_path_factory: pytest.TempPathFactory):
    require_sshd()
    server = Sshd(
        tmp_path_factory.mktemp("sshd"),
        trusted_ca_keys=[(pki.dir / "ca.pub").read_text()],
        revoked_keys=pki.krl("empty.krl"),
        user=USER,
    )
    with server:
        yield server


def assert_refused(r: LoginResult, because: str | re.Pattern[str]) -> None:
    assert not r.ok, f"login unexpectedly succeeded:\n{r.sshd_log}"
    assert r.returncode == 255, r
    assert "Permission denied (publickey)" in r.stderr, r.stderr
    assert "Accepted certificate" not in r.sshd_log, r.sshd_log
    assert "Accepted publickey" not in r.sshd_log, r.sshd_log
    if isinstance(because, re.Pattern):
        assert because.search(r.sshd_log), f"{because.pattern!r} not in sshd log:\n{r.sshd_log}"
    else:
        assert because in r.sshd_log, f"{because!r} not in sshd log:\n{r.sshd_log}"


def failed_line(key_id: str, serial: int, ca_fp: str) -> re.Pattern[str]:
    return re.compile(
        rf"^Failed publickey for {USER} from 127\.0\.0\.1 port \d+ ssh2: ED25519-CERT "
        rf"SHA256:\S+ ID {re.escape(key_id)} \(serial {serial}\) CA ECDSA {re.escape(ca_fp)}$",
        re.M,
    )


# --------------------------------------------------------------------------- accepted


def test_valid_certificate_logs_in(sshd: Sshd, pki: Pki) -> None:
    key, cert = pki.cert("valid", key_id="id", serial=1)
    r = sshd.login(key, cert)
    assert r.ok, f"stderr={r.stderr!r}\nsshd:\n{r.sshd_log}"
    assert r.stdout.strip() == "vouch-login-ok"
    ca_fp = fingerprint(pki.dir / "ca.pub")
    assert re.search(
        rf'^Accepted certificate ID "id" \(serial 1\) signed by ECDSA CA {re.escape(ca_fp)} via ',
        r.sshd_log,
        re.M,
    ), r.sshd_log
    assert re.search(rf"^Accepted publickey for {USER} from 127\.0\.0\.1 port \d+ ", r.sshd_log, re.M)
    # The log slice belongs to this attempt only: one connection, from start to close.
    assert len(re.findall(r"^Connection from ", r.sshd_log, re.M)) == 1, r.sshd_log
    assert re.search(rf"^Disconnected from user {USER} 127\.0\.0\.1 port \d+$", r.sshd_log, re.M)


# --------------------------------------------------------------------------- refused


def test_expired_certificate_is_refused(sshd: Sshd, pki: Pki) -> None:
    key, cert = pki.cert("expired", key_id="id-expired", serial=2, validity="20200101:20200102")
    r = sshd.login(key, cert)
    assert_refused(r, "Certificate invalid: expired")
    assert_refused(r, failed_line("id-expired", 2, fingerprint(pki.dir / "ca.pub")))


def test_not_yet_valid_certificate_is_refused(sshd: Sshd, pki: Pki) -> None:
    key, cert = pki.cert("future", key_id="id-future", serial=3, validity="+1d:+2d")
    r = sshd.login(key, cert)
    assert_refused(r, "Certificate invalid: not yet valid")


def test_wrong_principal_is_refused(sshd: Sshd, pki: Pki) -> None:
    key, cert = pki.cert("wrongp", key_id="id-wrongp", principals="someoneelse", serial=4)
    r = sshd.login(key, cert)
    assert_refused(r, "Certificate does not contain an authorized principal")
    # sshd prints the same line when it cannot read the principals file at all;
    # make sure that is not why.
    assert "authorized principals" not in r.sshd_log, r.sshd_log


def test_certificate_from_untrusted_ca_is_refused(sshd: Sshd, pki: Pki, tmp_path: Path) -> None:
    key, cert = pki.cert("otherca", key_id="id-otherca", serial=5, ca=pki.other_ca)
    other_fp = fingerprint(pki.dir / "other_ca.pub")
    r = sshd.login(key, cert)
    # At LogLevel VERBOSE sshd gives no reason line for an unknown CA, only the
    # failure naming the certificate's CA; so also rule out every other reason.
    assert_refused(r, failed_line("id-otherca", 5, other_fp))
    for other_reason in ("Certificate invalid", "authorized principal", "revoked", "source address"):
        assert other_reason not in r.sshd_log, r.sshd_log
    # The reason itself is logged at DEBUG2: check it on a second, short-lived sshd.
    with Sshd(
        tmp_path / "sshd-debug",
        trusted_ca_keys=[(pki.dir / "ca.pub").read_text()],
        log_level="DEBUG2",
    ) as debug_sshd:
        r = debug_sshd.login(key, cert)
    assert_refused(
        r, f"user_cert_trusted_ca: CA ECDSA {other_fp} is not listed in {debug_sshd.ca_keys_path}"
    )


def test_source_address_mismatch_is_refused(sshd: Sshd, pki: Pki) -> None:
    key, cert = pki.cert(
        "srcaddr", key_id="id-src", serial=6, options=("source-address=10.0.0.0/8",)
    )
    r = sshd.login(key, cert)
    assert_refused(
        r,
        f"cert: Authentication tried for {USER} with valid certificate but not from a "
        "permitted source address (127.0.0.1).",
    )
    assert "Refused by certificate options" in r.sshd_log


def test_source_address_match_logs_in(sshd: Sshd, pki: Pki) -> None:
    """Control for the case above: the option itself works when the source matches."""
    key, cert = pki.cert(
        "srcok", key_id="id-srcok", serial=7, options=("source-address=127.0.0.2/32",)
    )
    r = sshd.login(key, cert, source="127.0.0.2")
    assert r.ok, r.sshd_log
    assert 'Accepted certificate ID "id-srcok" (serial 7)' in r.sshd_log
    assert "Connection from 127.0.0.2 port" in r.sshd_log


def test_revoked_serial_is_refused_on_running_sshd(sshd: Sshd, pki: Pki) -> None:
    key, cert = pki.cert("revokeme", key_id="id-revoke", serial=42)
    before = sshd.login(key, cert)
    assert before.ok, before.sshd_log
    assert 'Accepted certificate ID "id-revoke" (serial 42)' in before.sshd_log

    pid = sshd.pid
    try:
        sshd.set_revoked_keys(pki.krl("serial42.krl", "serial: 42\n"))
        after = sshd.login(key, cert)
        assert_refused(
            after,
            re.compile(
                r"^Authentication key ED25519-CERT SHA256:\S+ revoked by file "
                + re.escape(str(sshd.krl_path))
                + "$",
                re.M,
            ),
        )
        # Another serial from the same CA is unaffected by that KRL.
        key2, cert2 = pki.cert("notrevoked", key_id="id-notrevoked", serial=43)
        assert sshd.login(key2, cert2).ok
    finally:
        sshd.set_revoked_keys(pki.krl("empty-again.krl"))
    # ... and lifting the revocation works without restarting sshd either.
    again = sshd.login(key, cert)
    assert again.ok, again.sshd_log
    assert sshd.pid == pid  # same sshd process throughout: the KRL is re-read per login
