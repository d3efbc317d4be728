"""`vouch ssh` learning Vouch's host CA into ~/.ssh/known_hosts (vouch.client.trust_host_ca),
against a stand-in HTTP server on loopback: what it trusts, from whom, and what it keeps."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import run

ROOT = Path(__file__).resolve().parents[2]


class Served:
    """Answers every GET with `text`, as Vouch's /known_hosts would, or as anyone on the path
    of a plain-http connection could (it is also an HTTP proxy: the requests it saw are kept)."""

    def __init__(self) -> None:
        self.text = ""
        self.seen: list[str] = []
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                served.seen.append(self.path)
                body = served.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture
def served():
    stand_in = Served()
    yield stand_in
    stand_in.http.shutdown()


def key_line(tmp_path: Path, name: str) -> str:
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp_path / name))
    return " ".join((tmp_path / f"{name}.pub").read_text().split()[:2])


def trust(url: str, known: Path, **env: str) -> bool:
    """trust_host_ca in a fresh interpreter: urllib reads the proxy settings once a process."""
    environ = {k: v for k, v in os.environ.items() if k.lower() not in
               ("http_proxy", "https_proxy", "no_proxy", "all_proxy")}
    environ.update(env, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from vouch.client import trust_host_ca; "
                           "print(trust_host_ca(sys.argv[1], Path(sys.argv[2])))", url, str(known)],
                          capture_output=True, text=True, env=environ, timeout=30, check=True)
    return done.stdout.strip() == "True"


def test_a_host_ca_answered_over_plain_http_is_not_trusted(tmp_path, served):
    """Over http:// to another machine anyone on the path answers /known_hosts: trusting what
    they say would let them pose as every SSH server (`*`) from then on."""
    served.text = f"@cert-authority * {key_line(tmp_path, 'mallory-ca')} vouch-host-ca\n"
    known = tmp_path / "known_hosts"
    trusted = trust("http://vouch.corp.example", known, http_proxy=served.url)
    assert not known.exists(), known.read_text()
    assert trusted is False and served.seen == []
    # The same answer from this machine itself (no network between) is Vouch's own.
    assert trust(served.url, known) is True
    assert known.read_text() == served.text


def test_host_keys_vouch_revoked_reach_the_users_known_hosts(tmp_path, served):
    """/known_hosts names the host CA and, as `@revoked` lines, each host key whose certificate
    was revoked: with the CA line alone, ssh would keep accepting a revoked (leaked) host key's
    certificate until it expires."""
    ca, leaked, later, github = (key_line(tmp_path, name) for name in ("host-ca", "db1", "db2",
                                                                        "github"))
    served.text = f"@cert-authority * {ca} vouch-host-ca\n@revoked * {leaked}\n"
    known = tmp_path / "known_hosts"
    known.write_text(f"github.com {github}\n")
    assert trust(served.url, known) is True
    assert known.read_text().splitlines()[1:] == [f"@cert-authority * {ca} vouch-host-ca",
                                                  f"@revoked * {leaked}"]
    # A later revocation reaches a user who trusts the CA already; nothing is added twice.
    served.text += f"@revoked * {later}\n"
    assert trust(served.url, known) is False
    assert trust(served.url, known) is False
    assert known.read_text().splitlines() == [f"github.com {github}",
                                              f"@cert-authority * {ca} vouch-host-ca",
                                              f"@revoked * {leaked}", f"@revoked * {later}"]
