"""A private PostgreSQL cluster for tests (and benchmarks): initdb in a temp dir, a unix socket
there, started with pg_ctl as the `postgres` system user, stopped at the end."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path


def find_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresCluster:
    def __init__(self, *, durable: bool = False) -> None:
        self.bindir = find_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="vouch-pg-"))
        self.durable = durable
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True,
                              text=True, check=True, cwd=self.root)

    def start(self) -> PostgresCluster:
        self._as_postgres(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = f"-k {self.root} -c listen_addresses='' -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                          "-l", str(self.root / "log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                              "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str | None = None) -> str:
        """A fresh database; returns its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._as_postgres(str(self.bindir / "createdb"), "-h", str(self.root), "-U", "postgres", name)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@/{name}?host={self.root}"

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def available() -> str | None:
    """None when a cluster can be started here, else why not."""
    if find_bindir() is None:
        return "PostgreSQL is not installed (make test installs it)"
    if os.geteuid() != 0:
        return "starting a private PostgreSQL cluster needs root (to run as the postgres user)"
    return None
