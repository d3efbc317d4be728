"""`make` on a stock Debian 12, where `python3 -m venv` fails until python3-venv is installed:
scripts/ensure-venv (which the Makefile runs before creating .venv) asks apt for it exactly when
the Python lacks ensurepip. Fake python3, apt-get, dpkg and id on PATH record what is asked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ensure-venv"

# A python3 that has ensurepip only once the fake apt-get has "installed" python3-venv, and whose
# `-m venv DIR` makes a venv whose pip only records its arguments.
FAKE_PYTHON = """#!/bin/sh
echo "python3 $*" >> "$LOG"
if [ "$1" = "-c" ]; then
    case "$2" in *ensurepip*) [ -e "$STATE/python3-venv" ]; exit $? ;; esac
    exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    [ -e "$STATE/python3-venv" ] || { echo "ensurepip is not available" >&2; exit 1; }
    mkdir -p "$3/bin"
    printf '#!/bin/sh\\necho "pip $*" >> "$LOG"\\n' > "$3/bin/pip"
    chmod +x "$3/bin/pip"
fi
"""
FAKE_APT_GET = """#!/bin/sh
echo "apt-get $*" >> "$LOG"
if [ "$1" = "install" ] && [ -n "$APT_FIXES" ]; then
    for p in "$@"; do [ "$p" = python3-venv ] && touch "$STATE/python3-venv"; done
fi
exit 0
"""
FAKE_DPKG = """#!/bin/sh
echo "dpkg $*" >> "$LOG"
[ -e "$STATE/dpkg-has-python3-venv" ]
"""


@pytest.fixture
def machine(tmp_path):
    """A PATH whose python3, apt-get, dpkg and id are fakes; returns a runner and the log."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in [("python3", FAKE_PYTHON), ("apt-get", FAKE_APT_GET), ("dpkg", FAKE_DPKG),
                       ("id", "#!/bin/sh\necho \"${FAKE_UID:-0}\"\n")]:
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()

    class Machine:
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "STATE": str(state),
               "APT_FIXES": "1", "HOME": str(tmp_path)}

        def has_ensurepip(self):
            (state / "python3-venv").touch()

        def calls(self, prefix=""):
            return [line for line in log.read_text().splitlines() if line.startswith(prefix)]

        def run(self, *argv, **env):
            return subprocess.run(argv, env={**self.env, **env}, capture_output=True, text=True,
                                  timeout=60, cwd=ROOT)

    machine = Machine()
    machine.state = state
    return machine


def test_without_ensurepip_it_installs_python3_venv(machine):
    done = machine.run(str(SCRIPT), "python3")
    assert done.returncode == 0, done.stderr
    assert machine.calls("apt-get") == [
        "apt-get update -qq", "apt-get install -y -qq python3-venv"]
    assert "installing: python3-venv" in done.stdout


def test_with_ensurepip_it_asks_apt_for_nothing(machine):
    machine.has_ensurepip()
    done = machine.run(str(SCRIPT), "python3")
    assert done.returncode == 0, done.stderr
    assert machine.calls("apt-get") == []
    assert done.stdout == done.stderr == ""


def test_when_apt_does_not_bring_ensurepip_it_fails_in_one_line(machine):
    done = machine.run(str(SCRIPT), "python3", APT_FIXES="")
    assert done.returncode == 1
    assert machine.calls("apt-get install")
    assert done.stderr.count("\n") == 1 and "still has no ensurepip" in done.stderr


def test_not_root_it_says_what_to_install_and_does_not_call_apt(machine):
    done = machine.run(str(SCRIPT), "python3", FAKE_UID="1000")
    assert done.returncode == 1
    assert machine.calls("apt-get") == []
    assert "apt-get install python3-venv" in done.stderr and done.stderr.count("\n") == 1


def test_python3_venv_installed_but_this_python_lacks_ensurepip(machine):
    (machine.state / "dpkg-has-python3-venv").touch()
    done = machine.run(str(SCRIPT), "python3")
    assert done.returncode == 1
    assert machine.calls("apt-get") == []
    assert "set PYTHON=" in done.stderr


def test_make_installs_python3_venv_before_creating_the_venv_then_installs_the_lock(machine,
                                                                                   tmp_path):
    venv = tmp_path / "venv"
    done = machine.run("make", "--no-print-directory", "venv", f"VENV={venv}", "PYTHON=python3")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [line for line in machine.calls() if not line.startswith(("dpkg", "python3 -c"))]
    assert calls == [
        "apt-get update -qq",
        "apt-get install -y -qq python3-venv",
        f"python3 -m venv {venv}",
        "pip install -q --upgrade pip",
        "pip install -q --require-hashes -r requirements.lock",
        "pip install -q --no-deps -e .",
        f"pip install -q -e .[test] -c {venv}/pins.txt",
    ]
    assert (venv / ".installed").exists()


def test_make_with_a_venv_already_there_asks_apt_for_nothing(machine, tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "pip").write_text('#!/bin/sh\necho "pip $*" >> "$LOG"\n')
    (venv / "bin" / "pip").chmod(0o755)
    done = machine.run("make", "--no-print-directory", "venv", f"VENV={venv}", "PYTHON=python3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert machine.calls("apt-get") == [] and machine.calls("python3") == []
