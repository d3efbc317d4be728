"""Separate processes for race tests.

By default they start from a forkserver that has the heavy libraries preloaded. Like 'spawn',
each child descends from a freshly exec'd interpreter that never opened a database or started a
thread, and builds its own Database from the URL; unlike 'spawn' it does not pay ~1.3 s of CPU
importing SQLAlchemy, Alembic and cryptography per child (50 spawned children take ~2 minutes per
database on 2 CPUs). VOUCH_TEST_START_METHOD=spawn runs them spawned.
"""

from __future__ import annotations

import multiprocessing
import os

START_METHOD = os.environ.get("VOUCH_TEST_START_METHOD", "forkserver")
PRELOAD = ["pytest", "access.voting", "access.policy_file", "ca.signer", "storage.store",
           "sqlite3", "sqlalchemy.dialects.sqlite.pysqlite", "psycopg",
           "sqlalchemy.dialects.postgresql.psycopg"]


def process_context():
    context = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        context.set_forkserver_preload(PRELOAD)  # no effect once the server runs
    return context
