"""A real PostgreSQL for the tests (tlog/pglocal.py): one server a session, a fresh database a test.

Nothing here downloads anything: with CI=true, `scripts/install-postgres` installs Debian's `postgresql`
package and a missing one fails the run; elsewhere the tests that need it skip and say why. CI runs as
root, so the server runs as the unprivileged `postgres` (or `nobody`) user.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlog.pglocal import LocalPostgres, pg_bin

ROOT = Path(__file__).resolve().parents[1]
_databases = itertools.count()


def need_postgres() -> None:
    """Skips (or, with CI=true, installs, then fails if still missing) when PostgreSQL is not installed."""
    if pg_bin() is None and os.environ.get("CI") == "true":
        done = subprocess.run([str(ROOT / "scripts" / "install-postgres")], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"scripts/install-postgres failed:\n{done.stdout}\n{done.stderr}")
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed: run scripts/install-postgres (apt-get install postgresql) "
                    "to run the PostgreSQL tests")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e .)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    need_postgres()
    pg = LocalPostgres.create().start()
    try:
        yield pg
    finally:
        pg.remove()


@pytest.fixture
def pg_dsn(pg_server: LocalPostgres) -> str:
    """The DSN of a new, empty database on the session's server."""
    return pg_server.create_database(f"t{os.getpid()}_{next(_databases)}")
