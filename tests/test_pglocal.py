"""The scratch PostgreSQL the tests and scripts start (tlog/pglocal.py): it runs unprivileged, keeps
commits durable, and a synchronous standby holds every commit the primary acknowledged."""

from __future__ import annotations

import pytest

from tlog.pglocal import LocalPostgres
from tests.postgres import need_postgres


def test_a_database_per_test_is_empty_and_writable(pg_dsn: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_the_server_does_not_run_as_root(pg_server: LocalPostgres) -> None:
    import os

    pid = pg_server.pid()
    assert pid is not None
    assert os.stat(f"/proc/{pid}").st_uid != 0


@pytest.mark.timeout(180)
def test_a_synchronous_standby_keeps_every_acknowledged_commit_when_the_primary_is_lost() -> None:
    need_postgres()
    import psycopg

    primary = LocalPostgres.create(synchronous_standby=True).start()
    standby = None
    try:
        standby = primary.standby()
        with psycopg.connect(primary.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE acked (n int)")
            for n in range(50):  # each autocommit returns only once the standby has its WAL
                conn.execute("INSERT INTO acked VALUES (%s)", (n,))
            state = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchall()
        assert state == [("sync",)]
        primary.kill()
        standby.promote()
        with psycopg.connect(standby.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM acked").fetchone() == (50,)
            conn.execute("INSERT INTO acked VALUES (50)")  # promoted: it takes writes
    finally:
        if standby is not None:
            standby.remove()
        primary.remove()
