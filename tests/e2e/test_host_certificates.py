"""Host certificates end to end, against a real `vouch serve`: a host enrols and renews itself
with the script `vouch host-setup --host-certs` prints (run with /bin/sh, its paths moved into
tmp_path), a real sshd presents the certificate, and the real ssh client, knowing nothing but
the served /known_hosts (StrictHostKeyChecking yes), connects with no prompt, refuses a host the
certificate does not name, and refuses the host once its certificate is revoked. Every refusal of
the HTTP API is checked to have issued nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ca.keys import parse_public_key
from ca.krl import decode_krl
from e2e_support import HttpAnswer, Server, make_fake, policy_yaml
from support.sshd import DEFAULT_USER, Sshd, require_sshd

PATH = "/api/v1/hosts/certificate"
PATTERN = "*.example.com"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    fake = make_fake()
    srv = Server(tmp_path_factory.mktemp("vouch-hosts"), fake, policy_yaml(),
                 extra_env={"VOUCH_HOST_PATTERN": PATTERN})
    srv.workdir.mkdir(parents=True, exist_ok=True)
    made = srv.vouch("ca", "init", "--host", check=False)
    assert made.returncode == 0, made.stderr
    srv.start()
    yield srv
    srv.stop()
    fake.stop()


@pytest.fixture(scope="module")
def script(server, tmp_path_factory) -> Path:
    """vouch-host-cert exactly as `vouch host-setup --host-certs` prints it for this server."""
    printed = server.vouch("host-setup", "--public-url", server.url, "--host-certs").stdout
    body = re.search(r"<<'VOUCH_HOST_CERT'\n(.*?)^VOUCH_HOST_CERT$", printed, re.S | re.M)
    assert body, printed
    path = tmp_path_factory.mktemp("host-cert") / "vouch-host-cert"
    path.write_text(body.group(1))
    return path


def host_dir(path: Path) -> Path:
    """An /etc/ssh with an Ed25519 and an ECDSA host key."""
    path.mkdir(parents=True, exist_ok=True)
    for kind, args in (("ed25519", ["-t", "ed25519"]), ("ecdsa", ["-t", "ecdsa", "-b", "256"])):
        subprocess.run(["ssh-keygen", "-q", *args, "-N", "", "-C", f"host-{kind}",
                        "-f", str(path / f"ssh_host_{kind}_key")], check=True)
    return path


def run(script: Path, ssh_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = {**ENV, "VOUCH_SSH_DIR": str(ssh_dir),
           "VOUCH_SSHD_RELOAD": f"touch {ssh_dir}/reloaded", **env}
    return subprocess.run(["/bin/sh", str(script), *args], env=env, capture_output=True,
                          text=True, timeout=60)


def token(server: Server, *names: str, ttl: str = "1h") -> str:
    made = server.vouch("host", "token", *[f"--hostname={n}" for n in names], "--ttl", ttl)
    return made.stdout.strip()


def shown(cert: Path) -> str:
    return subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True,
                          check=True).stdout


def serial(cert: Path) -> int:
    return int(shown(cert).split("Serial: ")[1].split()[0])


def rows(server: Server) -> int:
    return server.scalar("SELECT count(*) FROM host_certificates")


def actions(server: Server) -> list[str]:
    return [row[0] for row in server.query("SELECT action FROM audit_events ORDER BY seq")]


def post(server: Server, body: bytes, headers: dict | None = None) -> HttpAnswer:
    request = urllib.request.Request(server.url + PATH, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return HttpAnswer(resp.status, resp.read(), dict(resp.headers.items()))
    except urllib.error.HTTPError as err:
        return HttpAnswer(err.code, err.read(), dict(err.headers.items()))


def signed(private: Path, body: bytes, *, at: int | None = None) -> dict:
    """The renewal headers, signed with `ssh-keygen -Y sign -n vouch-host` by a host key."""
    stamp = str(at or int(time.time()))
    call = private.with_name(f"call-{hashlib.sha256(body + stamp.encode()).hexdigest()[:12]}")
    call.write_bytes(f"v1\n{stamp}\nPOST\n{PATH}\n{hashlib.sha256(body).hexdigest()}".encode())
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "vouch-host", "-f", str(private),
                    str(call)], check=True)
    armored = call.with_name(call.name + ".sig").read_bytes()
    return {"Authorization": f"Vouch-SSHSIG {base64.b64encode(armored).decode()}",
            "X-Vouch-Timestamp": stamp}


def public_lines(ssh_dir: Path) -> list[str]:
    return [(ssh_dir / f"ssh_host_{kind}_key.pub").read_text().strip()
            for kind in ("ed25519", "ecdsa")]


def test_a_host_enrolled_by_the_script_is_trusted_with_no_prompt_until_revoked(
        server, script, user_keys, tmp_path):
    require_sshd()
    ssh_dir = host_dir(tmp_path / "sshd")
    enrolled = run(script, ssh_dir, "enrol", token(server, "db1.example.com", "db1"))
    assert enrolled.returncode == 0, enrolled.stderr
    host_cert = ssh_dir / "ssh_host_ed25519_key-cert.pub"
    for kind in ("ed25519", "ecdsa"):
        text = shown(ssh_dir / f"ssh_host_{kind}_key-cert.pub")
        assert "host certificate" in text
        assert re.search(r"Principals: \n\s+db1\.example\.com\n\s+db1\n", text), text
    known = tmp_path / "known_hosts"
    served = server.get("/known_hosts")
    host_ca = server.vouch("ca", "pubkey", "--host").stdout.strip()
    assert served.status == 200 and served.text == f"@cert-authority {PATTERN} {host_ca}\n"
    user_cert = tmp_path / "id-cert.pub"
    user_cert.write_text(server.vouch(
        "ca", "sign", str(user_keys["ed25519"].public_path), "--principal", DEFAULT_USER,
        "--duration", "10m", "--reason", "host certificate test").stdout)
    private = user_keys["ed25519"].private

    sshd = Sshd(ssh_dir, trusted_ca_keys=[server.vouch("ca", "pubkey").stdout],
                host_certificate=host_cert)
    with sshd:
        known.write_text("")
        unknown = sshd.login(private, user_cert, known_hosts=known, host_alias="db1.example.com")
        assert not unknown.ok and "Host key verification failed" in unknown.stderr
        known.write_text(served.text)
        trusted = sshd.login(private, user_cert, known_hosts=known, host_alias="db1.example.com")
        assert trusted.ok, trusted.stderr + trusted.sshd_log
        assert "authenticity" not in trusted.stderr and known.read_text() == served.text
        assert sshd.login(private, user_cert, known_hosts=known, host_alias="db1").ok is False, \
            "db1 is not under the @cert-authority pattern *.example.com"
        other = sshd.login(private, user_cert, known_hosts=known, host_alias="db2.example.com")
        assert not other.ok and "Host key verification failed" in other.stderr

        revoked = server.vouch("revoke", str(serial(host_cert)), "--reason", "host key leaked")
        assert f"revoked: serial {serial(host_cert)}" in revoked.stdout
        served = server.get("/known_hosts")
        kind, data, _comment = public_lines(ssh_dir)[0].split()
        assert served.text.splitlines()[1:] == [f"@revoked * {kind} {data}"]
        known.write_text(served.text)
        refused = sshd.login(private, user_cert, known_hosts=known, host_alias="db1.example.com")
        assert not refused.ok and "REVOKED" in refused.stderr, refused.stderr
    # RevokedHostKeys users get it from /krl: a section keyed to the host CA.
    host_ca_blob = parse_public_key(host_ca).blob
    sections = {s.ca_key: s for s in decode_krl(server.get("/krl").body).certificates}
    assert sections[host_ca_blob].revokes_serial(serial(host_cert))
    assert "host.enrolled" in actions(server) and "host.revoked" in actions(server)


def test_the_script_renews_when_due_and_keeps_its_certificates_on_a_failure(
        server, script, tmp_path):
    ssh_dir = host_dir(tmp_path / "etc-ssh")
    assert run(script, ssh_dir, "enrol", token(server, "db3.example.com")).returncode == 0
    certs = [ssh_dir / f"ssh_host_{kind}_key-cert.pub" for kind in ("ed25519", "ecdsa")]
    first = [cert.read_bytes() for cert in certs]
    before = rows(server)

    fresh = run(script, ssh_dir, "renew")  # 30 days left: nothing to do
    assert fresh.returncode == 0 and fresh.stderr == ""
    assert [c.read_bytes() for c in certs] == first and rows(server) == before
    assert not (ssh_dir / "reloaded").exists()

    due = run(script, ssh_dir, "renew", VOUCH_RENEW_DAYS="31")
    assert due.returncode == 0, due.stderr
    renewed = [c.read_bytes() for c in certs]
    assert all(new != old for new, old in zip(renewed, first, strict=True))
    assert (ssh_dir / "reloaded").exists() and rows(server) == before + 2
    assert "Principals: \n                db3.example.com\n" in shown(certs[1])
    assert server.scalar("SELECT count(*) FROM host_certificates WHERE enrolled_via = 'renewal' "
                         "AND hostnames = ?", '["db3.example.com"]') == 2
    assert actions(server)[-1] == "host.renewed"

    server.vouch("revoke", str(serial(certs[0])), "--reason", "stolen")
    (ssh_dir / "reloaded").unlink()
    failed = run(script, ssh_dir, "renew", VOUCH_RENEW_DAYS="31")
    assert failed.returncode == 1 and "HTTP 401" in failed.stderr and "was revoked" in failed.stderr
    assert [c.read_bytes() for c in certs] == renewed and not (ssh_dir / "reloaded").exists()
    assert not [p for p in ssh_dir.iterdir() if p.name.startswith(".vouch-host-cert")]


def test_a_token_enrols_once_and_not_after_it_expired(server, tmp_path):
    ssh_dir = host_dir(tmp_path / "h")
    body = {"token": token(server, "db4.example.com"), "public_keys": public_lines(ssh_dir)}
    first = post(server, json.dumps(body).encode())
    assert first.status == 200, first.text
    answer = json.loads(first.body)
    assert answer["hostnames"] == ["db4.example.com"] and len(answer["certificates"]) == 2
    before = rows(server)
    again = post(server, json.dumps(body).encode())
    assert again.status == 401 and "already used" in json.loads(again.body)["error"]

    short = {**body, "token": token(server, "db4.example.com", ttl="1s")}
    time.sleep(1.5)
    expired = post(server, json.dumps(short).encode())
    assert expired.status == 401 and "expired" in json.loads(expired.body)["error"]
    assert rows(server) == before
    assert actions(server)[-3:] == ["host.refused", "host.token_created", "host.refused"]


@pytest.mark.parametrize("body, status, why", [
    (b"not json", 400, "not JSON"),
    (b"[]", 400, "not a JSON object"),
    (json.dumps({"token": "vht_" + "A" * 43,
                 "public_keys": ["ssh-dss AAAAB3NzaC1kc3MAAACBAP== old"]}).encode(), 422, "DSA"),
    (json.dumps({"token": "vht_" + "A" * 43, "public_keys": "ssh-ed25519 AAAA"}).encode(), 422,
     "list of strings"),
    (json.dumps({"token": "vht_" + "A" * 43, "public_keys": []}).encode(), 422, "no public keys"),
    (json.dumps({"token": 42}).encode(), 401, "must be a string"),
    (json.dumps({"public_keys": []}).encode(), 401, "no signature"),
])
def test_malformed_calls_are_refused_with_a_json_error(server, body, status, why):
    before = rows(server)
    answer = post(server, body)
    assert answer.status == status and why in json.loads(answer.body)["error"], answer.text
    assert rows(server) == before


def enrolled_host(server: Server, tmp_path: Path, name: str) -> Path:
    ssh_dir = host_dir(tmp_path / name)
    body = {"token": token(server, f"{name}.example.com"), "public_keys": public_lines(ssh_dir)}
    assert post(server, json.dumps(body).encode()).status == 200
    return ssh_dir


def test_a_renewal_signed_by_the_host_key_answers_new_certificates(server, tmp_path):
    ssh_dir = enrolled_host(server, tmp_path, "db5")
    body = json.dumps({"public_keys": public_lines(ssh_dir)}).encode()
    answer = post(server, body, signed(ssh_dir / "ssh_host_ed25519_key", body))
    assert answer.status == 200, answer.text
    renewed = json.loads(answer.body)
    assert renewed["hostnames"] == ["db5.example.com"] and len(renewed["certificates"]) == 2
    assert renewed["valid_before"].endswith("+00:00")


def test_renewals_by_another_key_for_other_names_or_replayed_issue_nothing(server, tmp_path):
    ssh_dir = enrolled_host(server, tmp_path, "db6")
    stranger = host_dir(tmp_path / "stranger") / "ssh_host_ed25519_key"
    host_key = ssh_dir / "ssh_host_ed25519_key"
    body = json.dumps({"public_keys": public_lines(ssh_dir)}).encode()
    before, audited = rows(server), len(actions(server))

    other_key = post(server, body, signed(stranger, body))
    assert other_key.status == 401
    assert "no Vouch host certificate to renew" in json.loads(other_key.body)["error"]
    assert len(actions(server)) == audited  # a stranger's call: logged, not audited

    renamed = json.dumps({"public_keys": public_lines(ssh_dir),
                          "hostnames": ["db6.example.com", "payments.example.com"]}).encode()
    changed = post(server, renamed, signed(host_key, renamed))
    assert changed.status == 403 and "cannot change" in json.loads(changed.body)["error"]

    tampered = post(server, renamed, signed(host_key, body))
    assert tampered.status == 401 and "bad signature" in json.loads(tampered.body)["error"]
    stale = post(server, body, signed(host_key, body, at=int(time.time()) - 600))
    assert stale.status == 401 and "off the server's" in json.loads(stale.body)["error"]

    headers = signed(host_key, body)
    assert post(server, body, headers).status == 200
    replayed = post(server, body, headers)
    assert replayed.status == 401 and "already used" in json.loads(replayed.body)["error"]
    assert rows(server) == before + 2  # the one genuine renewal
    assert actions(server)[audited:] == ["host.refused", "host.renewed", "host.refused"]


def test_without_a_host_ca_the_host_paths_answer_503_and_the_rest_runs(tmp_path):
    fake = make_fake()
    srv = Server(tmp_path / "no-host-ca", fake, policy_yaml()).start()
    try:
        assert srv.get("/readyz").status == 200
        missing = srv.get("/known_hosts")
        assert missing.status == 503 and "vouch ca init --host" in missing.text
        answer = post(srv, b'{"token": "x", "public_keys": []}')
        assert answer.status == 503
        assert json.loads(answer.body) == {
            "error": "no host CA configured: run vouch ca init --host"}

        # The operator makes it now: the running server takes it up, no restart needed.
        made = srv.vouch("ca", "init", "--host")
        host_ca = srv.vouch("ca", "pubkey", "--host").stdout.strip()
        answered = srv.fake.wait_for(lambda: srv.get("/known_hosts").status == 200 and
                                     srv.get("/known_hosts"), timeout=10)
        assert answered.text == f"@cert-authority * {host_ca}\n", made.stderr
    finally:
        srv.stop()
        fake.stop()


@pytest.mark.parametrize("systemd", [True, False])
def test_step_7_enrols_tells_sshd_and_schedules_the_renewal(server, tmp_path, systemd):
    """The host-certificate step of `host-setup --host-certs` run for real against this server,
    its paths moved into tmp_path, sshd and systemctl recording stubs."""
    ssh_dir = host_dir(tmp_path / "etc-ssh")
    (ssh_dir / "sshd_config.d").mkdir()  # step 5 made it
    sbin, bin_dir, units, cron, booted = (tmp_path / d for d in
                                          ("sbin", "bin", "units", "cron.d", "systemd"))
    for d in (sbin, bin_dir, units, cron):
        d.mkdir()
    if systemd:
        booted.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> {calls}\n')
    (bin_dir / "sshd").write_text(f'#!/bin/sh\necho "sshd $*" >> {calls}\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    printed = server.vouch("host-setup", "--public-url", server.url, "--host-certs").stdout
    step = (printed[printed.index("\n# 7. "):]
            .replace("/usr/local/sbin/", f"{sbin}/")
            .replace("/usr/sbin/sshd", str(bin_dir / "sshd"))
            .replace("/etc/ssh/", f"{ssh_dir}/")
            .replace("/run/systemd/system", str(booted))
            .replace("/etc/systemd/system/", f"{units}/")
            .replace("/etc/cron.d/", f"{cron}/"))
    ran = subprocess.run(["/bin/sh", "-eu"], input=step, capture_output=True, text=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "VOUCH_SSH_DIR": str(ssh_dir),
                              "VOUCH_HOST_TOKEN": token(server, "db7.example.com")})
    assert ran.returncode == 0, ran.stderr
    conf = (ssh_dir / "sshd_config.d" / "vouch-host.conf").read_text().splitlines()
    assert conf == [f"HostCertificate {ssh_dir}/ssh_host_{kind}_key-cert.pub"
                    for kind in ("ecdsa", "ed25519")]
    for line in conf:
        assert "host certificate" in shown(Path(line.split()[1]))
    said = calls.read_text().splitlines()
    assert said[:2] == ["sshd -t", "systemctl reload ssh"]
    if systemd:
        assert said[2:] == ["systemctl daemon-reload",
                            "systemctl enable --now vouch-host-cert.timer"]
        assert sorted(p.name for p in units.iterdir()) == ["vouch-host-cert.service",
                                                           "vouch-host-cert.timer"]
    else:
        line = (cron / "vouch-host-cert").read_text()
        assert re.fullmatch(rf"[0-9]+ [0-9]+ \* \* \* root {sbin}/vouch-host-cert renew\n", line)
        assert not list(units.iterdir())


def test_the_script_installs_only_certificates_from_the_pinned_host_ca(server, script, tmp_path):
    ssh_dir = host_dir(tmp_path / "pinned")
    pin = "SHA256:" + "A" * 43  # another CA than the one this server signs with
    wrong = run(script, ssh_dir, "enrol", token(server, "db8.example.com"),
                VOUCH_HOST_CA_FINGERPRINT=pin)
    assert wrong.returncode == 1 and "no host certificate for" in wrong.stderr
    assert not list(ssh_dir.glob("*-cert.pub"))
