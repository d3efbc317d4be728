"""The container image, as far as it can be checked without a container engine: the Dockerfile
(parsed by BuildKit's parser, linted by hadolint) installs what `make` installs, runs as a
non-root user with no compilers, and its entry point, environment and health check work: the
venv's `vouch` runs the image's ENTRYPOINT + CMD with the image's ENV, rewritten into a temporary
directory, on a filesystem that is read-only except the data directory."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import pytest

from bot.sandbox.fake_slack import FakeSlack

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: vouch, python, hadolint
DATA = "/var/lib/vouch"
CONFIG = "/etc/vouch"
COMPILERS = {"gcc", "g++", "cc", "clang", "make", "build-essential", "cpp", "libc6-dev"}


@dataclass
class Stage:
    base: str
    name: str | None
    commands: list = field(default_factory=list)

    def all(self, cmd: str) -> list:
        return [c for c in self.commands if c.cmd == cmd.upper()]

    def one(self, cmd: str):
        found = self.all(cmd)
        assert found, f"no {cmd} in the stage FROM {self.base}"
        return found[-1]  # as Docker does: the last one counts

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for command in self.all("ENV"):
            pairs = command.value
            for key, value in zip(pairs[::2], pairs[1::2]):
                values[key] = value
        return values


def stages() -> list[Stage]:
    found: list[Stage] = []
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            words = command.value
            found.append(Stage(words[0], words[2] if len(words) > 2 else None))
        else:
            found[-1].commands.append(command)
    return found


def shell_lines(command) -> list[str]:
    """A RUN's shell text as separate commands (split at && and ;)."""
    text = command.value[0] if not command.json else shlex.join(command.value)
    return [part.strip() for part in re.split(r"&&|;", text) if part.strip()]


def pip_installs(lines: list[str]) -> list[list[str]]:
    """`<venv>/bin/pip install …` commands as words, the venv path and -e (editable) dropped:
    the image installs the package itself, make an editable checkout of it."""
    found = []
    for line in lines:
        words = shlex.split(line)
        for i, word in enumerate(words[:-1]):
            if word.endswith("/bin/pip") and words[i + 1] == "install":
                found.append(["pip", *[w for w in words[i + 1:] if w != "-e"]])
    return found


def make_recipe() -> list[str]:
    """The commands `make venv` runs on a machine without .venv, as make expands them."""
    done = subprocess.run(["make", "-n", "--no-print-directory", "venv", "VENV=/nonexistent/venv"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


# --- the Dockerfile, read -----------------------------------------------------------------

def test_hadolint_finds_nothing():
    done = subprocess.run([str(BIN / "hadolint"), "--no-color", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_two_stages_on_the_same_slim_python_3_11_base():
    builder, final = stages()
    assert builder.base == final.base == "python:3.11-slim-bookworm"
    assert builder.name == "builder"


def test_the_image_installs_exactly_what_make_installs_minus_the_test_tools():
    builder, final = stages()
    docker = pip_installs([line for run in builder.all("RUN") for line in shell_lines(run)])
    make = pip_installs(make_recipe())
    runtime = [words for words in make if not any("[test]" in w for w in words)]
    assert len(runtime) == len(make) - 1, make  # the one line left out is the test extras
    assert docker == runtime
    assert ["pip", "install", "-q", "--require-hashes", "-r", "requirements.lock"] in docker
    assert ["pip", "install", "-q", "--no-deps", "."] in docker
    copied = [c.value[:-1] for c in builder.all("COPY")]
    assert ("requirements.lock",) in copied
    assert not final.all("RUN") or not pip_installs(
        [line for run in final.all("RUN") for line in shell_lines(run)])


def test_the_venv_lives_at_opt_vouch_and_only_it_leaves_the_builder():
    builder, final = stages()
    assert any("python -m venv /opt/vouch" in line
               for run in builder.all("RUN") for line in shell_lines(run))
    copies = [c for c in final.all("COPY")]
    assert [(c.flags, c.value) for c in copies] == [(("--from=builder",),
                                                     ("/opt/vouch", "/opt/vouch"))]


def test_the_final_stage_has_no_compiler_and_no_pkcs11_module():
    _, final = stages()
    installed = set()
    for run in final.all("RUN"):
        for line in shell_lines(run):
            words = shlex.split(line)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value command
                words.pop(0)
            if words[:2] == ["apt-get", "install"]:
                installed |= {w for w in words[2:] if not w.startswith("-")}
    assert installed == {"ca-certificates", "openssh-client"}
    assert not installed & COMPILERS
    assert not any(name.endswith("-dev") or "softhsm" in name or "ykcs11" in name
                   for name in installed)


def test_it_runs_as_a_non_root_user_in_the_data_volume():
    _, final = stages()
    user = final.one("USER").value[0]
    uid, _, gid = user.partition(":")
    assert uid == "10001" and gid == "10001"  # numeric: Kubernetes' runAsNonRoot can check it
    assert final.one("WORKDIR").value == (DATA,)
    assert final.one("VOLUME").value == (DATA,)
    assert final.one("EXPOSE").value == ("3000",)
    created = " ".join(line for run in final.all("RUN") for line in shell_lines(run))
    assert f"install -d -o 10001 -g 10001 -m 0700 {DATA}" in created
    assert "useradd --system --uid 10001" in created


def test_every_path_it_writes_is_under_the_data_volume():
    _, final = stages()
    env = final.env()
    assert env["VOUCH_DATABASE_URL"] == f"sqlite:///{DATA}/vouch.db"
    for name in ("VOUCH_CA_KEY", "VOUCH_HOST_CA_KEY", "VOUCH_AUDIT_CHECKPOINTS"):
        assert env[name].startswith(DATA + "/"), name
    assert env["HOME"] == DATA
    assert env["VOUCH_POLICY_FILE"] == f"{CONFIG}/policy.yaml"  # read, never written
    assert "VOUCH_SLACK_BOT_TOKEN" not in env and "VOUCH_AUDIT_KEY" not in env


def test_entry_point_and_health_check():
    _, final = stages()
    entry, cmd, health = final.one("ENTRYPOINT"), final.one("CMD"), final.one("HEALTHCHECK")
    assert entry.json and entry.value == ("vouch",)
    assert cmd.json and cmd.value == ("serve", "--host", "0.0.0.0", "--port", "3000")
    assert health.json and health.value[0] == "CMD"
    probe = " ".join(health.value)
    assert "urllib.request" in probe and "http://127.0.0.1:3000/healthz" in probe
    assert "curl" not in probe and "wget" not in probe


def test_the_build_context_leaves_out_local_state_but_not_what_the_build_copies():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for path in (".git", ".venv", "tests", "vouch.db*", "ca_key*", "audit_key", "sandbox"):
        assert path in ignored
    builder, _ = stages()
    copied = [source for c in builder.all("COPY") for source in c.value[:-1]]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


# --- the image's entry point, run ------------------------------------------------------

def image_argv(*override: str) -> list[str]:
    """ENTRYPOINT + (CMD, or the arguments given), with the venv's `vouch` as the entry point."""
    _, final = stages()
    entry = list(final.one("ENTRYPOINT").value)
    args = list(override) if override else list(final.one("CMD").value)
    return [str(BIN / entry[0]), *entry[1:], *args]


def test_the_entry_point_parses_the_image_command():
    assert subprocess.run(image_argv("--version"), capture_output=True, text=True,
                          check=True).stdout.startswith("vouch ")
    helped = subprocess.run([*image_argv(), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0, helped.stderr
    assert "--host" in helped.stdout and "--port" in helped.stdout


BOT_TOKEN = "xoxb-image-1234567890-abcdefghij"

READ_ONLY = r"""
# Everything read-only but the data directory, in this process's own mount namespace.
mount --bind "$DATA_DIR" "$DATA_DIR"
awk '{print $2}' /proc/self/mounts | while read -r point; do
    case "$point" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$DATA_DIR") continue ;; esac
    mount -o remount,bind,ro "$point" 2>/dev/null || true
done
touch /probe-ro 2>/dev/null && { echo "the root filesystem is still writable" >&2; exit 97; }
cd "$PWD"  # the working directory again, through the new mounts
exec "$@"
"""


def read_only_runner() -> list[str]:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a read-only filesystem")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount is not allowed here: {probe.stderr.decode().strip()}")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.root
def test_the_image_command_serves_on_a_read_only_root_writing_only_to_the_data_volume(tmp_path):
    runner = read_only_runner()
    _, final = stages()
    data, config = tmp_path / "data", tmp_path / "etc"
    data.mkdir(mode=0o700)
    config.mkdir()
    shutil.copy(ROOT / "examples" / "policy.yaml", config / "policy.yaml")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOUCH_", "SOFTHSM"))}
    for key, value in final.env().items():
        value = value.replace("$PATH", os.environ["PATH"]).replace("/opt/vouch/bin", str(BIN))
        env[key] = value.replace(DATA, str(data)).replace(CONFIG, str(config))
    fake = FakeSlack(bot_token=BOT_TOKEN, team_id="T0IMAGE")
    fake.add_channel("C0REQUESTS", "access-requests")
    fake.add_channel("C0SECURITY", "security")
    fake.start()
    port = free_port()
    env.update({"VOUCH_SLACK_BOT_TOKEN": BOT_TOKEN, "VOUCH_SLACK_SIGNING_SECRET": "image-secret-42",
                "VOUCH_SLACK_API_URL": fake.base_url, "DATA_DIR": str(data)})
    workdir = final.one("WORKDIR").value[0].replace(DATA, str(data))

    logs = tmp_path / "logs"  # outside the data directory: opened by this process
    logs.mkdir()

    def run(name: str, *argv: str) -> subprocess.Popen:
        with open(logs / name, "wb") as log:
            return subprocess.Popen([*runner, *argv], env=env, cwd=workdir, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def output(name: str) -> str:
        return (logs / name).read_text(errors="replace")[-6000:]

    made = run("init", *image_argv("ca", "init"))
    assert made.wait(60) == 0, output("init")

    command = [w.replace("3000", str(port)).replace("0.0.0.0", "127.0.0.1") for w in image_argv()]
    health = [w.replace("3000", str(port)) for w in final.one("HEALTHCHECK").value[1:]]
    health[0] = str(BIN / health[0])
    server = run("serve", *command)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, output("serve")
            try:
                if status(f"http://127.0.0.1:{port}/healthz") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "vouch serve did not answer /healthz"
            time.sleep(0.1)
        assert status(f"http://127.0.0.1:{port}/readyz") == 200  # database and CA key work

        assert subprocess.run(health, env=env, timeout=30).returncode == 0

        checkpoint = run("checkpoint", *image_argv("audit", "checkpoint"))
        assert checkpoint.wait(60) == 0, output("checkpoint")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
        fake.stop()
    # uvicorn shuts down cleanly on SIGTERM, then re-raises it.
    assert server.returncode in (0, -signal.SIGTERM), output("serve")
    assert "Application shutdown complete" in output("serve")
    written = {p.name for p in data.iterdir()}
    assert {"vouch.db", "ca_key", "ca_key.pub", "audit_key", "audit-checkpoints.log"} <= written
    for name in ("init", "serve", "checkpoint"):
        assert "Read-only file system" not in output(name)
    # The health check fails once the server is gone: it is not a check that always passes.
    assert subprocess.run(health, env=env, capture_output=True, timeout=30).returncode != 0
