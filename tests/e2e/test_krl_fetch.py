"""The KRL fetcher `vouch host-setup` installs, run with /bin/sh against a real `vouch serve` and
a real sshd, and against a small stub server that can misbehave: a first fetch installs the KRL,
a second asks If-None-Match and keeps it on 304, and any failure (network, HTTP error, a corrupt
KRL) keeps the KRL in place and exits non-zero."""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from ca.krl import Revocations, encode_krl
from e2e_support import Server, free_port, make_fake, policy_yaml
from support.sshd import DEFAULT_USER, Sshd, ensure_test_user, require_sshd

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("ssh-keygen")),
    reason="the fetcher needs curl and ssh-keygen (apt-get install curl openssh-client)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fake = make_fake()
    srv = Server(tmp_path_factory.mktemp("vouch-krl"), fake, policy_yaml())
    srv.start()
    yield srv
    srv.stop()
    fake.stop()


@pytest.fixture(scope="module")
def fetcher(server, tmp_path_factory) -> Path:
    """The fetcher exactly as `vouch host-setup` prints it, pointed at this server."""
    script = server.vouch("host-setup", "--public-url", server.url + "/").stdout
    body = re.search(r"<<'VOUCH_KRL_FETCH'\n(.*?)^VOUCH_KRL_FETCH$", script, re.S | re.M)
    assert body, script
    path = tmp_path_factory.mktemp("fetcher") / "vouch-krl-fetch"
    path.write_text(body.group(1))
    return path


def fetch(fetcher: Path, krl: Path, url: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "VOUCH_KRL_FILE": str(krl)}
    if url:
        env["VOUCH_KRL_URL"] = url
    return subprocess.run(["/bin/sh", str(fetcher)], env=env, capture_output=True, text=True,
                          timeout=60)


def lists(krl: Path) -> bool:
    return subprocess.run(["ssh-keygen", "-Q", "-l", "-f", str(krl)],
                          capture_output=True).returncode == 0


class Stub:
    """GET /krl with an ETag and If-None-Match → 304, or whatever a test sets `answer` to."""

    def __init__(self) -> None:
        self.body, self.etag = b"", '"one"'
        self.answer: tuple[int, bytes] | None = None  # (status, body) instead of the KRL
        self.asked: list[str | None] = []  # each request's If-None-Match
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                asked = self.headers.get("If-None-Match")
                stub.asked.append(asked)
                fresh = (304, b"") if asked == stub.etag else (200, stub.body)
                status, body = stub.answer or fresh
                self.send_response(status)
                self.send_header("ETag", stub.etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/krl"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def stub():
    served = Stub()
    yield served
    served.close()


@pytest.fixture(scope="module")
def ca_blob(tmp_path_factory) -> bytes:
    import base64

    key = tmp_path_factory.mktemp("krl-ca") / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return base64.b64decode(Path(f"{key}.pub").read_text().split()[1])


def installed(tmp_path: Path, fetcher: Path, stub: Stub, ca_blob: bytes) -> Path:
    """A KRL and its ETag in place, from a first fetch."""
    stub.body = encode_krl(Revocations(serials=frozenset({42})), ca_key=ca_blob, version=1,
                           generated_at=1_700_000_000)
    krl = tmp_path / "vouch_revoked.krl"
    first = fetch(fetcher, krl, stub.url)
    assert first.returncode == 0, first.stderr
    return krl


def untouched(krl: Path, before: tuple) -> bool:
    """The same file (not a replacement) with the same bytes, and nothing left beside it."""
    stat = krl.stat()
    leftovers = [p.name for p in krl.parent.iterdir() if p.name.startswith(".vouch-krl")]
    return (stat.st_ino, stat.st_mtime_ns, krl.read_bytes()) == before and not leftovers


def snapshot(krl: Path) -> tuple:
    stat = krl.stat()
    return stat.st_ino, stat.st_mtime_ns, krl.read_bytes()


def test_a_first_fetch_installs_the_krl_and_its_etag(tmp_path, fetcher, stub, ca_blob):
    krl = installed(tmp_path, fetcher, stub, ca_blob)
    assert stub.asked == [None]
    assert krl.read_bytes() == stub.body and lists(krl)
    assert krl.stat().st_mode & 0o777 == 0o644  # sshd and ssh-keygen -Q read it as any user
    assert Path(f"{krl}.etag").read_text().strip() == stub.etag


def test_a_second_fetch_asks_if_none_match_and_keeps_the_file_on_304(tmp_path, fetcher, stub,
                                                                     ca_blob):
    krl = installed(tmp_path, fetcher, stub, ca_blob)
    before = snapshot(krl)
    again = fetch(fetcher, krl, stub.url)
    assert again.returncode == 0, again.stderr
    assert stub.asked == [None, stub.etag]
    assert untouched(krl, before)


def test_a_deleted_krl_is_fetched_again_without_if_none_match(tmp_path, fetcher, stub, ca_blob):
    krl = installed(tmp_path, fetcher, stub, ca_blob)
    krl.unlink()
    assert fetch(fetcher, krl, stub.url).returncode == 0
    assert stub.asked == [None, None] and krl.read_bytes() == stub.body


@pytest.mark.parametrize("corrupt", [
    pytest.param(lambda krl: krl[:-7], id="truncated"),
    pytest.param(lambda krl: b"", id="empty"),
    pytest.param(lambda krl: b"<html>502 Bad Gateway</html>\n", id="html"),
    # sshd would read this as a list of revoked keys, and so revoke nothing of ours
    pytest.param(lambda krl: b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDx0 u\n", id="key-list"),
])
def test_a_corrupt_krl_keeps_the_old_one_and_fails(tmp_path, fetcher, stub, ca_blob, corrupt):
    krl = installed(tmp_path, fetcher, stub, ca_blob)
    before, etag = snapshot(krl), Path(f"{krl}.etag").read_text()
    stub.body, stub.etag = corrupt(stub.body), '"two"'
    failed = fetch(fetcher, krl, stub.url)
    assert failed.returncode != 0
    assert "did not send a valid KRL" in failed.stderr
    assert untouched(krl, before) and lists(krl)
    assert Path(f"{krl}.etag").read_text() == etag  # so the next run asks for the new one again


@pytest.mark.parametrize("status", [404, 500, 503])
def test_an_http_error_keeps_the_old_krl_and_fails(tmp_path, fetcher, stub, ca_blob, status):
    krl = installed(tmp_path, fetcher, stub, ca_blob)
    before = snapshot(krl)
    stub.answer = (status, b"KRL unavailable\n")
    failed = fetch(fetcher, krl, stub.url)
    assert failed.returncode != 0 and f"HTTP {status}" in failed.stderr
    assert untouched(krl, before)


def test_a_network_failure_keeps_the_old_krl_and_fails(tmp_path, fetcher, stub, ca_blob):
    krl = installed(tmp_path, fetcher, stub, ca_blob)
    before = snapshot(krl)
    failed = fetch(fetcher, krl, f"http://127.0.0.1:{free_port()}/krl")  # nobody listens
    assert failed.returncode != 0 and "cannot fetch" in failed.stderr
    assert untouched(krl, before)


def _sign(server: Server, key, tmp_path: Path) -> tuple[Path, int]:
    line = server.vouch("ca", "sign", str(key.public_path), "--principal", DEFAULT_USER,
                        "--duration", "10m", "--reason", "KRL fetcher test").stdout
    cert = tmp_path / f"{key.private.name}-cert.pub"
    cert.write_text(line)
    shown = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True,
                           check=True).stdout
    return cert, int(shown.split("Serial: ")[1].split()[0])


def test_sshd_refuses_a_certificate_once_the_fetcher_brought_its_revocation(
        server, fetcher, user_keys, tmp_path):
    """`vouch revoke`, one run of the fetcher, and a running sshd refuses that certificate while
    it accepts another: no reload in between, as sshd reads RevokedKeys for every key."""
    require_sshd()
    ensure_test_user()
    revoked_key, kept_key = user_keys["ed25519"], user_keys["ecdsa-p256"]
    revoked_cert, serial = _sign(server, revoked_key, tmp_path)
    kept_cert, _ = _sign(server, kept_key, tmp_path)
    ca_line = server.vouch("ca", "pubkey").stdout
    sshd = Sshd(tmp_path / "sshd", trusted_ca_keys=[ca_line], revoked_keys=b"")
    sshd.workdir.mkdir(parents=True)
    first = fetch(fetcher, sshd.krl_path)  # the URL host-setup baked in: this server's /krl
    assert first.returncode == 0, first.stderr
    sshd.revoked_keys = sshd.krl_path.read_bytes()  # what the fetcher installed
    with sshd:
        assert sshd.login(revoked_key.private, revoked_cert).ok
        server.vouch("revoke", str(serial), "--reason", "KRL fetcher test")
        pid = sshd.pid
        fetched = fetch(fetcher, sshd.krl_path)
        assert fetched.returncode == 0 and "installed a new KRL" in fetched.stderr
        refused = sshd.login(revoked_key.private, revoked_cert)
        assert not refused.ok
        assert "revoked" in refused.sshd_log.lower(), refused.sshd_log
        accepted = sshd.login(kept_key.private, kept_cert)
        assert accepted.ok, accepted.sshd_log
        assert sshd.pid == pid
        unchanged = fetch(fetcher, sshd.krl_path)  # the server's 304: nothing said, nothing moved
        assert unchanged.returncode == 0 and unchanged.stderr == ""


def test_after_a_revoke_click_sshd_refuses_that_certificate_and_accepts_another(
        server, fetcher, user_keys, tmp_path):
    """The issue's end-to-end case: certificates from Slack approvals, the holder's Revoke click
    and its modal, one run of the fetcher, and the running sshd refuses only the revoked one."""
    from e2e_support import BOB, DAN, DB_PRINCIPAL, REQUESTER
    from test_bot import REQUESTS, ask, certificate_line, register_key, wait_dm, wait_state

    require_sshd()
    login_user = ensure_test_user()
    certificates = {}
    for user, name in ((REQUESTER, "ed25519"), (DAN, "ecdsa-p256")):
        register_key(server, user, user_keys[name])
        request_id, message = ask(server, user, "prod-db", "1h", f"fetcher test for {user}")
        server.driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve")
        cert = tmp_path / f"{user}-cert.pub"
        cert.write_text(certificate_line(wait_dm(server.fake, user, request_id).text) + "\n")
        wait_state(server, request_id, "issued")
        certificates[user] = (request_id, message, user_keys[name].private, cert)
    ca_line = server.vouch("ca", "pubkey").stdout
    sshd = Sshd(tmp_path / "sshd", trusted_ca_keys=[ca_line], revoked_keys=b"",
                principals={login_user: [DB_PRINCIPAL]})
    sshd.workdir.mkdir(parents=True)
    assert fetch(fetcher, sshd.krl_path).returncode == 0
    sshd.revoked_keys = sshd.krl_path.read_bytes()
    with sshd:
        request_id, message, private, cert = certificates[REQUESTER]
        assert sshd.login(private, cert).ok
        fake = server.fake
        opened = len(fake.views(REQUESTER))
        server.driver.click_button(REQUESTER, channel=REQUESTS, ts=message.ts, label="Revoke")
        view = fake.wait_for(lambda: fake.views(REQUESTER)[opened:])[-1]
        server.driver.submit_view(REQUESTER, view, {
            "note": {"value": {"type": "plain_text_input", "value": "laptop left on a train"}}})
        wait_state(server, request_id, "revoked")
        assert fetch(fetcher, sshd.krl_path).returncode == 0
        assert not sshd.login(private, cert).ok
        _, _, other_private, other_cert = certificates[DAN]
        assert sshd.login(other_private, other_cert).ok
