"""`vouch host-setup [--target NAME] [--public-url URL]`: what a host needs to trust the CA, as a
script run for real in pieces (sh, sshd -T, systemd-analyze) with its paths moved to tmp_path."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

VOUCH = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "vouch")
POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


def vouch(tmp_path, *args, **env: str | None):
    """`vouch ARGS` with a clean environment; keyword arguments change VOUCH_* (None: unset)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOUCH_")}
    base.update(VOUCH_CA_KEY=str(tmp_path / "ca_key"), VOUCH_POLICY_FILE=str(POLICY),
                VOUCH_PUBLIC_URL="https://vouch.internal",
                VOUCH_DATABASE_URL=f"sqlite:///{tmp_path}/v.db")
    base.update({f"VOUCH_{k.upper()}": v for k, v in env.items()})
    base = {k: v for k, v in base.items() if v is not None}
    return subprocess.run([VOUCH, *args], env=base, capture_output=True, text=True, cwd=tmp_path)


def test_host_setup_for_a_target(tmp_path):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    ca_line = vouch(tmp_path, "ca", "pubkey").stdout.strip()
    result = vouch(tmp_path, "host-setup", "--target", "prod-db")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ca_line in out
    for line in ("TrustedUserCAKeys /etc/ssh/vouch_ca.pub",
                 "RevokedKeys /etc/ssh/vouch_revoked.krl",
                 "AuthorizedPrincipalsFile /etc/ssh/auth_principals/%u",
                 "echo postgres > /etc/ssh/auth_principals/postgres",
                 "https://vouch.internal/krl"):
        assert line in out, line


def test_host_setup_unknown_target_is_bad_input(tmp_path):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    result = vouch(tmp_path, "host-setup", "--target", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vouch: unknown target 'nope'; targets: prod-db"]


@pytest.mark.parametrize("empty", [None, ""])
def test_without_a_public_url_it_prints_no_script(tmp_path, empty):
    """No placeholder URL a host would fetch its KRL from: exit 2 naming both ways to give one."""
    result = vouch(tmp_path, "host-setup", public_url=empty)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "--public-url" in line and "VOUCH_PUBLIC_URL" in line


def test_the_option_wins_over_the_setting(tmp_path):
    assert vouch(tmp_path, "ca", "init").returncode == 0
    result = vouch(tmp_path, "host-setup", "--public-url", "https://krl.example.net:8443/vouch/",
                   public_url=None)
    assert result.returncode == 0, result.stderr
    assert "https://krl.example.net:8443/vouch/krl" in result.stdout
    assert "vouch.internal" not in result.stdout


@pytest.mark.parametrize(("url", "source"), [
    ("ftp://vouch.internal", "--public-url"),
    ("vouch.internal", "--public-url"),
    ("https://", "--public-url"),
    ("https:///krl", "--public-url"),
    ("https://vouch.internal/?x=1", "--public-url"),
    ("https://vouch.internal/$(reboot)", "--public-url"),
    ("file:///etc/passwd", "VOUCH_PUBLIC_URL"),
])
def test_a_public_url_that_is_not_http_with_a_host_is_refused(tmp_path, url, source):
    args = ("--public-url", url) if source == "--public-url" else ()
    env = {"public_url": url} if source == "VOUCH_PUBLIC_URL" else {}
    result = vouch(tmp_path, "host-setup", *args, **env)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert source in line and repr(url) in line, line


# --- the script itself ----------------------------------------------------------------------

SSHD = "/usr/sbin/sshd"


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> dict[str, str]:
    """What `host-setup` prints with --target prod-db (principal postgres) and without."""
    tmp_path = tmp_path_factory.mktemp("host-setup")
    assert vouch(tmp_path, "ca", "init").returncode == 0
    out = {}
    for name, args in (("target", ("--target", "prod-db")), ("plain", ())):
        result = vouch(tmp_path, "host-setup", *args)
        assert result.returncode == 0, result.stderr
        out[name] = result.stdout
    return out


def heredoc(script: str, path: str) -> str:
    """The text a `cat > PATH <<'DELIM'` in the script writes."""
    found = re.search(rf"cat > {re.escape(path)} <<'(\w+)'\n(.*?)^\s*\1$", script, re.S | re.M)
    assert found, f"no heredoc for {path}"
    return found.group(2)


def section(script: str, number: int) -> str:
    return script[script.index(f"\n# {number}. "):script.index(f"\n# {number + 1}. ")]


@pytest.mark.parametrize("name", ["target", "plain"])
def test_the_script_is_posix_sh_that_stops_at_the_first_failure(scripts, name):
    script = scripts[name]
    assert script.startswith("#!/bin/sh\n") and "\nset -eu\n" in script
    checked = subprocess.run(["/bin/sh", "-n"], input=script, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    # The first fetch comes before sshd hears of RevokedKeys: it refuses every key without one.
    assert script.index("\n/usr/local/sbin/vouch-krl-fetch\n") < script.index(
        "cat > /etc/ssh/sshd_config.d/vouch.conf")


def sshd_settings(tmp_path: Path, conf: str, user: str) -> dict[str, str]:
    """`sshd -T` for `user`, with the printed vouch.conf included the way Debian includes it."""
    if not os.access(SSHD, os.X_OK):
        pytest.skip("sshd is not installed")
    host_key = tmp_path / "host_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True)
    (tmp_path / "vouch.conf").write_text(conf)
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {tmp_path}/vouch.conf\nHostKey {host_key}\n"
                    "PasswordAuthentication no\n")
    shown = subprocess.run([SSHD, "-T", "-f", str(main), "-C", f"user={user},host=h,addr=10.0.0.1"],
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    return dict(line.split(" ", 1) for line in shown.stdout.splitlines())


def test_a_targets_accounts_are_certificate_only_and_no_other(scripts, tmp_path):
    conf = heredoc(scripts["target"], "/etc/ssh/sshd_config.d/vouch.conf")
    postgres = sshd_settings(tmp_path, conf, "postgres")
    assert postgres["authorizedkeysfile"] == "none"
    assert postgres["trustedusercakeys"] == "/etc/ssh/vouch_ca.pub"
    assert postgres["revokedkeys"] == "/etc/ssh/vouch_revoked.krl"
    assert postgres["authorizedprincipalsfile"] == "/etc/ssh/auth_principals/%u"
    other = sshd_settings(tmp_path, conf, "alice")
    assert other["authorizedkeysfile"] == ".ssh/authorized_keys .ssh/authorized_keys2"
    # The Match block ends with the included file: settings after the Include stay global.
    assert other["passwordauthentication"] == "no"


def test_without_a_target_certificate_only_is_a_commented_suggestion(scripts, tmp_path):
    conf = heredoc(scripts["plain"], "/etc/ssh/sshd_config.d/vouch.conf")
    active = [line for line in conf.splitlines() if line.strip() and not line.startswith("#")]
    assert not any("Match" in line or "AuthorizedKeysFile" in line for line in active)
    assert "#     AuthorizedKeysFile none" in conf
    assert sshd_settings(tmp_path, conf, "postgres")["authorizedkeysfile"] != "none"


def test_the_systemd_units_fetch_every_5_minutes_at_a_random_delay(scripts, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    script = scripts["target"]
    fetcher = tmp_path / "vouch-krl-fetch"
    fetcher.write_text(heredoc(script, "/usr/local/sbin/vouch-krl-fetch"))
    fetcher.chmod(0o755)
    for suffix in ("service", "timer"):
        text = heredoc(script, f"/etc/systemd/system/vouch-krl-fetch.{suffix}")
        # verify wants ExecStart to exist here: the fetcher as the script would install it
        (tmp_path / f"vouch-krl-fetch.{suffix}").write_text(
            text.replace("/usr/local/sbin/vouch-krl-fetch", str(fetcher)))
    timer = (tmp_path / "vouch-krl-fetch.timer").read_text()
    assert "OnUnitActiveSec=5min" in timer and "RandomizedDelaySec=" in timer
    checked = subprocess.run([analyze, "verify", "--man=no", "vouch-krl-fetch.timer",
                              "vouch-krl-fetch.service"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


@pytest.mark.parametrize("systemd", [True, False])
def test_a_timer_where_systemd_runs_else_a_cron_line(scripts, tmp_path, systemd):
    """Step 4 run for real, its paths moved into tmp_path and systemctl a recording stub."""
    bin_dir, units, cron, booted = (tmp_path / d for d in ("bin", "units", "cron.d", "systemd"))
    for d in (bin_dir, units, cron):
        d.mkdir()
    if systemd:
        booted.mkdir()
    calls = tmp_path / "systemctl.calls"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_dir / "systemctl").chmod(0o755)
    step = (section(scripts["target"], 4)
            .replace("/run/systemd/system", str(booted))
            .replace("/etc/systemd/system/", f"{units}/")
            .replace("/etc/cron.d/", f"{cron}/"))
    ran = subprocess.run(["/bin/sh", "-eu"], input=step, capture_output=True, text=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    if systemd:
        assert sorted(p.name for p in units.iterdir()) == ["vouch-krl-fetch.service",
                                                           "vouch-krl-fetch.timer"]
        assert calls.read_text().splitlines() == ["daemon-reload",
                                                  "enable --now vouch-krl-fetch.timer"]
        assert not list(cron.iterdir())
    else:
        line = (cron / "vouch-krl").read_text()
        assert re.fullmatch(r"[0-4]-59/5 \* \* \* \* root /usr/local/sbin/vouch-krl-fetch\n", line)
        assert not list(units.iterdir()) and not calls.exists()


@pytest.mark.parametrize("host", ["debian", "rhel", "no-systemd", "bad-config"])
def test_sshd_is_checked_then_reloaded_once_on_each_kind_of_host(scripts, tmp_path, host):
    """Step 6 run for real against stubs: `ssh` is Debian's unit, `sshd` RHEL's; without systemd
    only the listener named in sshd's PID file gets the HUP; a config sshd -t refuses is removed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls, conf, pid_file = tmp_path / "calls", tmp_path / "vouch.conf", tmp_path / "sshd.pid"
    conf.write_text("TrustedUserCAKeys /etc/ssh/vouch_ca.pub\n")
    works = {"debian": "reload ssh", "rhel": "reload sshd"}.get(host, "nothing")
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\necho "systemctl $*" >> {calls}\n[ "$*" = "{works}" ]\n')
    check = "exit 1" if host == "bad-config" else "exit 0"
    (bin_dir / "sshd").write_text(
        f'#!/bin/sh\necho "sshd $*" >> {calls}\n'
        f'case $1 in -t) {check};; -T) echo "pidfile {pid_file}";; esac\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    listener = subprocess.Popen(["sleep", "30"])  # stands in for sshd's listener
    pid_file.write_text(f"{listener.pid}\n")
    script = scripts["target"]
    step = (script[script.index("\n# 6. "):]
            .replace("/usr/sbin/sshd", str(bin_dir / "sshd"))
            .replace("/etc/ssh/sshd_config.d/vouch.conf", str(conf)))
    try:
        ran = subprocess.run(["/bin/sh", "-eu"], input=step, capture_output=True, text=True,
                             env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        said = calls.read_text().splitlines()
        if host == "bad-config":
            assert ran.returncode == 1 and "sshd -t failed" in ran.stderr
            assert said == ["sshd -t"] and not conf.exists()
            return
        assert ran.returncode == 0, ran.stderr
        assert conf.exists()
        expected = {"debian": ["systemctl reload ssh"],
                    "rhel": ["systemctl reload ssh", "systemctl reload sshd"],
                    "no-systemd": ["systemctl reload ssh", "systemctl reload sshd", "sshd -T"]}
        assert said == ["sshd -t", *expected[host]]
        if host == "no-systemd":
            assert listener.wait(timeout=5) == -signal.SIGHUP
        else:
            assert listener.poll() is None
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()


# --- --host-certs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def host_certs(tmp_path_factory) -> tuple[str, str]:
    """(the script `host-setup --host-certs` prints, the host CA's fingerprint)."""
    tmp_path = tmp_path_factory.mktemp("host-certs")
    assert vouch(tmp_path, "ca", "init").returncode == 0
    missing = vouch(tmp_path, "host-setup", "--host-certs")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "vouch ca init --host" in missing.stderr
    assert vouch(tmp_path, "ca", "init", "--host").returncode == 0
    result = vouch(tmp_path, "host-setup", "--host-certs")
    assert result.returncode == 0, result.stderr
    shown = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "host_ca_key.pub")],
                           capture_output=True, text=True, check=True)
    return result.stdout, shown.stdout.split()[1]


def test_host_certs_script_is_posix_sh_asking_for_the_token_before_any_change(host_certs):
    script, fingerprint = host_certs
    checked = subprocess.run(["/bin/sh", "-n"], input=script, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    head = script[:script.index("\n# 1. ")]  # only this part runs: the rest would change /etc
    for env, args in (({}, []), ({"VOUCH_HOST_TOKEN": ""}, [])):
        ran = subprocess.run(["/bin/sh", "-s", *args], input=head, capture_output=True,
                             text=True, env={"PATH": "/usr/bin:/bin", **env})
        assert ran.returncode == 2 and "give the one-time host token" in ran.stderr
    given = subprocess.run(["/bin/sh", "-s", "vht_x"], input=head + '\necho "$VOUCH_HOST_TOKEN"',
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert given.returncode == 0 and given.stdout == "vht_x\n"
    # The certificates must come from this host CA: the script pins its fingerprint.
    assert f"CA_FINGERPRINT=${{VOUCH_HOST_CA_FINGERPRINT:-'{fingerprint}'}}" in script
    assert script.index("cat > /etc/ssh/sshd_config.d/vouch.conf") < script.index("\n# 7. ")


def test_without_host_certs_nothing_of_them_is_printed(scripts):
    for script in scripts.values():
        assert "vouch-host-cert" not in script and "VOUCH_HOST_TOKEN" not in script


def test_the_renewal_timer_runs_daily_and_verifies(host_certs, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    script, _ = host_certs
    renewer = tmp_path / "vouch-host-cert"
    renewer.write_text(heredoc(script, "/usr/local/sbin/vouch-host-cert"))
    renewer.chmod(0o755)
    for suffix in ("service", "timer"):
        text = heredoc(script, f"/etc/systemd/system/vouch-host-cert.{suffix}")
        (tmp_path / f"vouch-host-cert.{suffix}").write_text(
            text.replace("/usr/local/sbin/vouch-host-cert", str(renewer)))
    timer = (tmp_path / "vouch-host-cert.timer").read_text()
    assert "OnCalendar=daily" in timer and "Persistent=true" in timer
    service = (tmp_path / "vouch-host-cert.service").read_text()
    assert f"ExecStart={renewer} renew" in service
    checked = subprocess.run([analyze, "verify", "--man=no", "vouch-host-cert.timer",
                              "vouch-host-cert.service"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


def test_the_renewer_refuses_bad_usage_and_tokens_before_any_request(host_certs, tmp_path):
    script, _ = host_certs
    renewer = tmp_path / "vouch-host-cert"
    renewer.write_text(heredoc(script, "/usr/local/sbin/vouch-host-cert"))
    env = {"PATH": "/usr/bin:/bin", "VOUCH_SSH_DIR": str(tmp_path),
           "VOUCH_HOST_CERT_URL": "http://127.0.0.1:9"}  # nothing listens: any request fails
    for args, why in ((["frobnicate"], "usage"), (["enrol"], "one-time token"),
                      (["enrol", "vht_a'b"], "not a Vouch host token"),
                      (["enrol", "hunter2"], "one-time token")):
        ran = subprocess.run(["/bin/sh", str(renewer), *args], env=env, capture_output=True,
                             text=True)
        assert ran.returncode == 2 and why in ran.stderr, (args, ran.stderr)
    renew = subprocess.run(["/bin/sh", str(renewer), "renew"], env=env, capture_output=True,
                           text=True)
    assert renew.returncode == 1 and "enrol first" in renew.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vouch-host-cert"]
