"""The import-linter contracts in pyproject.toml: kept by the code as it is, and broken (the build
fails) as soon as an arrow goes the wrong way."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = REPO / ".venv" / "bin" / "lint-imports"
PACKAGES = ("ca", "access", "storage", "bot", "vouch")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def copy(tmp_path) -> Path:
    """The packages and pyproject.toml, where an import can be added without touching the repo."""
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_code_keeps_every_contract():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("module", "line", "complaint"), [
    ("access/requests.py", "import storage.db", "access is not allowed to import storage"),
    ("access/policy.py", "import sqlalchemy", "access is not allowed to import sqlalchemy"),
    ("ca/cert.py", "import access.requests", "ca is not allowed to import access"),
    ("bot/views.py", "import storage.models", "bot is not allowed to import storage"),
    ("storage/db.py", "import bot.views", "storage is not allowed to import bot"),
    ("bot/texts.py", "import vouch.settings", "bot is not allowed to import vouch"),
])
def test_an_arrow_the_wrong_way_breaks_the_build(copy, module, line, complaint):
    path = copy / module
    path.write_text(path.read_text() + f"\n{line}  # the wrong way\n")
    result = lint(copy)
    assert result.returncode != 0
    assert complaint in result.stdout, result.stdout
