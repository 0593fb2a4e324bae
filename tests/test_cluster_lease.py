"""Leadership through PostgreSQL (tlog/cluster/lease.py), against a real PostgreSQL: one holder at a time,
an epoch per change of holder, the fence in a batch's transaction, and the elector's threads through
a stopped process and a cut-off network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tlog.errors import StorageError
from tlog.cluster.lease import NOT_LEADER, Elector, Fence, Term, take, writer_dsn
from tlog.store.postgres_schema import migrate
from tests.tcpproxy import Proxy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(pg_dsn: str) -> Any:
    import psycopg

    conn = psycopg.connect(pg_dsn, autocommit=True)
    migrate(conn, 0)  # the log's schema, the cluster's tables with it
    conn.execute("CREATE TABLE batches (n int)")  # what a batch would write
    yield conn
    conn.close()


def connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def count(conn: Any) -> int:
    return int(conn.execute("SELECT count(*) FROM batches").fetchone()[0])


def write_batch(conn: Any, fence: Fence, n: int) -> None:
    """A batch's transaction as PostgresStore runs one: the fence, then the writes."""
    with conn.transaction(), conn.cursor() as cur:
        fence(cur)
        cur.execute("INSERT INTO batches VALUES (%s)", (n,))


def fenced(dsn: str, fence: Fence, idle_s: float = 5) -> tuple[Any, Any]:
    """A batch's transaction left open after its fence passed (a writer in the middle of its batch), on
    a writer's connection (writer_dsn): (the transaction, its cursor). Leaving the transaction commits."""
    w = connect(writer_dsn(dsn, idle_s))
    tx = w.transaction()
    tx.__enter__()
    cur = w.cursor()
    fence(cur)
    return tx, cur


def wait_for(pred: Any, timeout: float, step: float = 0.02) -> float:
    """Seconds until pred() held; fails after `timeout`."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - t0


def test_one_holder_at_a_time_and_a_new_epoch_at_each_change_of_holder(db: Any) -> None:
    assert take(db, "a", 0.3) == 1
    assert take(db, "b", 0.3) is None  # a holds it
    assert take(db, "a", 0.3) == 1  # a renewal keeps the epoch
    time.sleep(0.4)
    assert take(db, "b", 0.3) == 2  # expired: b takes it, under a new epoch
    assert take(db, "a", 0.3) is None
    time.sleep(0.4)
    assert take(db, "a", 30) == 3  # back to a: a new epoch again, never a's old one
    assert take(db, "b", 30) is None


def test_the_lease_runs_on_postgresqls_clock_whatever_the_hosts_says(db: Any, monkeypatch: Any) -> None:
    assert take(db, "a", 30) == 1
    monkeypatch.setattr(time, "time", lambda: 4102444800.0)  # this host believes it is 2100
    assert take(db, "b", 30) is None
    left = db.execute("SELECT extract(epoch FROM expires_at - clock_timestamp()) FROM leader").fetchone()[0]
    assert 28 < float(left) <= 30


def test_the_fence_lets_the_holder_write_and_refuses_a_deposed_one(db: Any, pg_dsn: str) -> None:
    a = Fence(Term("a", take(db, "a", 0.3)))  # type: ignore[arg-type]
    w = connect(pg_dsn)
    write_batch(w, a, 1)
    assert count(db) == 1
    time.sleep(0.4)
    with pytest.raises(StorageError) as refused:  # expired, even before anyone took it over
        write_batch(w, a, 2)
    assert refused.value.code == NOT_LEADER
    b = Fence(Term("b", take(db, "b", 30)))  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        write_batch(w, a, 3)
    write_batch(w, b, 4)
    assert [r[0] for r in db.execute("SELECT n FROM batches ORDER BY n")] == [1, 4]


def test_a_takeover_waits_for_the_batch_that_passed_the_fence_and_reads_after_it(db: Any, pg_dsn: str) -> None:
    tx, cur = fenced(pg_dsn, Fence(Term("a", take(db, "a", 0.5))))  # type: ignore[arg-type]
    # The batch is inside its term...
    time.sleep(0.6)  # ...and the lease expires while it writes
    taken: list[int | None] = []
    b = connect(pg_dsn)
    t = threading.Thread(target=lambda: taken.append(take(b, "b", 30)))
    t.start()
    time.sleep(0.5)
    assert taken == []  # b waits for the batch's share lock
    cur.execute("INSERT INTO batches VALUES (1)")
    tx.__exit__(None, None, None)  # commits
    t.join(5)
    assert taken == [2]
    assert count(b) == 1  # the new holder sees the last batch of the term before


def test_a_batch_left_open_by_a_stopped_writer_is_ended_so_the_lease_passes(db: Any, pg_dsn: str) -> None:
    import psycopg

    tx, cur = fenced(pg_dsn, Fence(Term("a", take(db, "a", 0.3))), idle_s=0.5)  # type: ignore[arg-type]
    cur.execute("INSERT INTO batches VALUES (1)")
    # The writer "stops" here, its transaction open. PostgreSQL ends its session, and b gets the lease.
    waited = wait_for(lambda: take(db, "b", 30) is not None, timeout=5)
    assert waited < 2
    with pytest.raises(psycopg.Error):  # the writer, resumed, cannot commit: its session was ended
        cur.execute("INSERT INTO batches VALUES (2)")
        tx.__exit__(None, None, None)
    assert count(db) == 0


def test_a_batch_stopped_in_the_middle_of_a_copy_is_ended_once_its_lease_expires(db: Any, pg_dsn: str) -> None:
    import psycopg

    tx, cur = fenced(pg_dsn, Fence(Term("a", take(db, "a", 0.5))))  # type: ignore[arg-type]
    copying = cur.copy("COPY batches (n) FROM STDIN")
    copy = copying.__enter__()
    copy.write_row((1,))  # the writer stops here: PostgreSQL waits for the rest, no idle timeout applies
    other = Elector(pg_dsn, lease_s=1.0, renew_s=0.2, holder="b")
    other.start()
    try:
        waited = wait_for(lambda: other.current() is not None, timeout=10)
        assert waited < 0.5 + 0.2 + 0.2 + 1.0  # a's lease, one TAKE that waits, the end of a's batch, slack
        assert other.current() == Term("b", 2)
    finally:
        other.stop()
    with pytest.raises(psycopg.Error):  # a's writer, resumed, finds its batch ended: nothing was written
        copying.__exit__(None, None, None)
        tx.__exit__(None, None, None)
    assert count(db) == 0


def test_two_electors_race_and_exactly_one_holds_at_any_time(db: Any, pg_dsn: str) -> None:
    changes: dict[str, list[Term | None]] = {"a": [], "b": []}
    es = {k: Elector(pg_dsn, lease_s=1.0, renew_s=0.1, holder=k, on_change=changes[k].append) for k in "ab"}
    for e in es.values():
        e.start()
    try:
        wait_for(lambda: any(e.current() for e in es.values()), timeout=5)
        for _ in range(100):  # 2 s of samples: never two holders
            held = [k for k, e in es.items() if e.current() is not None]
            assert len(held) == 1, held
            time.sleep(0.02)
        first = held[0]
        other = "b" if first == "a" else "a"
        epoch = es[first].current().epoch  # type: ignore[union-attr]
        es[first].stop()  # a clean stop hands the lease back: the other takes it at its next try
        waited = wait_for(lambda: es[other].current() is not None, timeout=5)
        assert waited < 0.5
        assert es[other].current() == Term(other, epoch + 1)
        assert changes[first] == [Term(first, epoch), None]
        assert changes[other] == [Term(other, epoch + 1)]
    finally:
        for e in es.values():
            e.stop()


CHILD = """
import sys, time
from tlog.cluster.lease import Elector
e = Elector(sys.argv[1], lease_s=1.0, renew_s=0.1, holder="child",
            on_change=lambda t: print("term", t.epoch if t else None, flush=True))
e.start()
time.sleep(60)
"""


def test_a_stopped_holder_loses_the_lease_to_another_and_knows_it_when_it_resumes(db: Any, pg_dsn: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, pg_dsn], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    other = Elector(pg_dsn, lease_s=1.0, renew_s=0.1, holder="other")
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["term", "1"]
        other.start()
        os.kill(child.pid, signal.SIGSTOP)
        waited = wait_for(lambda: other.current() is not None, timeout=5)
        assert waited < 1.0 + 0.1 + 0.5  # the lease, one try, and slack for a busy machine
        assert other.current() == Term("other", 2)
        os.kill(child.pid, signal.SIGCONT)
        assert child.stdout.readline().split() == ["term", "None"]  # it knows at once, from its own clock
        time.sleep(0.5)
        assert other.current() == Term("other", 2)  # and takes nothing back
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.wait()
        other.stop()


def test_a_writers_url_keeps_its_options_and_gains_the_idle_timeout(db: Any, pg_dsn: str) -> None:
    dsn = writer_dsn(pg_dsn + "?application_name=w&options=-c%20work_mem%3D8MB", idle_s=1.5)
    with connect(dsn) as conn:
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("1500ms",)
        assert conn.execute("SHOW work_mem").fetchone() == ("8MB",)
        assert conn.execute("SHOW application_name").fetchone() == ("w",)


@pytest.mark.parametrize("how", ["hang", "cut"])
def test_a_holder_cut_off_from_postgresql_stops_believing_within_the_lease_and_recovers(
        db: Any, pg_dsn: str, pg_server: Any, how: str) -> None:
    proxy = Proxy(pg_server.port)
    changes: list[tuple[float, Term | None]] = []
    e = Elector(proxy.dsn(pg_dsn), lease_s=1.0, renew_s=0.1, holder="a",
                on_change=lambda t: changes.append((time.monotonic(), t)))
    e.start()
    try:
        wait_for(lambda: e.current() is not None, timeout=5)
        cut_at = time.monotonic()
        getattr(proxy, how)()
        wait_for(lambda: changes[-1][1] is None, timeout=5)  # reported, not only believed
        assert changes[-1][0] - cut_at <= 1.0 + 0.3
        taken: list[int | None] = []  # meanwhile another takes it, once PostgreSQL's lease has ended too
        wait_for(lambda: taken.append(take(db, "b", 0.5)) or taken[-1] is not None, timeout=2)
        assert taken[-1] == 2
        proxy.heal()
        wait_for(lambda: e.current() is not None, timeout=10)  # the elector connects again by itself
        assert e.current() == Term("a", 3)
    finally:
        e.stop()
        proxy.close()
