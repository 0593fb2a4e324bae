"""Disk and resource faults: a full disk, a read-only database, a locked database, a second server.

Each must give a clear error (HTTP 503 with a JSON body from the server, one line from the CLI), leave
the log intact (the fsck passes, memory and disk agree) and let appends resume, at the next dense index,
once the cause goes away. The real-filesystem cases (a tiny tmpfs, a read-only bind mount) need root
and mount(2); they are skipped with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tlog.errors import StorageError
from tlog.log import LocalLog, init_log, open_log
from tlog.server.app import make_app
from tlog.server.ratelimit import RateLimit
from tlog.tokens import new_token

from .conftest import append, records
from .faultkit import check_log, cli, http, make_token, serve, stop

# --- helpers ------------------------------------------------------------------------------------


def _token(log: LocalLog, service: str = "recsys") -> str:
    secret, digest = new_token()
    log.store.add_token("service", service, digest, int(time.time() * 1000))
    return secret


def _body(n: int, seed: int) -> dict[str, Any]:
    return {"records": records(n, seed=seed)}


@contextlib.asynccontextmanager
async def _app(db: Path, *, writer_readonly: bool = False) -> AsyncIterator[tuple[TestClient, LocalLog]]:
    """The real app in-process, so a test can reach the writer's connection (limits, locks)."""
    reader = open_log(db)
    writer = open_log(db, secrets_needed=True, readonly=writer_readonly)
    app = make_app(reader, writer, rate_limit=RateLimit(rate=0))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, writer
    finally:
        await client.close()
        reader.close()
        writer.close()


async def _post(client: TestClient, token: str, body: Any) -> tuple[int, Any]:
    r = await client.post("/v1/uses", data=orjson.dumps(body), headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return r.status, orjson.loads(await r.read())


def _assert_503(status: int, body: Any, *words: str) -> None:
    assert status == 503, body
    err = body["error"]
    assert err["code"] in ("storage", "unavailable"), err
    assert "\n" not in err["message"] and "Traceback" not in err["message"], err
    for w in words:
        assert w in err["message"], err


def _acked(results: list[dict[str, Any]], service: str = "recsys") -> dict[tuple[str, str], tuple[int, str]]:
    return {(service, r["event_id"]): (r["index"], r["leaf_hash"]) for r in results}


# --- disk full ----------------------------------------------------------------------------------


def _limit_pages(log: LocalLog, extra: int) -> None:
    c = log.store.conn
    pages = c.execute("PRAGMA page_count").fetchone()[0]
    c.execute(f"PRAGMA max_page_count = {pages + extra}")


def test_disk_full_fails_the_batch_and_recovers(log):
    seq = log.sequencer()
    append(seq, records(20, seed=1))
    size, note = log.store.size(), log.store.latest_checkpoint()
    _limit_pages(log, 2)
    with pytest.raises(StorageError, match="full"):
        append(seq, records(500, seed=2))
    assert (log.store.size(), log.store.latest_checkpoint(), seq.size) == (size, note, size)
    check_log(log.path)
    log.store.conn.execute("PRAGMA max_page_count = 1073741823")  # space freed
    res = append(seq, records(500, seed=2))
    assert [r.index for r in res] == list(range(size, size + 500))
    assert not check_log(log.path).problems()


async def test_disk_full_is_a_503_and_reads_go_on(log):
    token = _token(log)
    db = log.path
    async with _app(db) as (client, writer):
        status, body = await _post(client, token, _body(5, 1))
        assert status == 200
        acked = _acked(body["results"])
        size = writer.store.size()
        _limit_pages(writer, 1)
        status, body = await _post(client, token, _body(400, 2))
        _assert_503(status, body, "full")
        r = await client.get("/checkpoint")
        assert r.status == 200 and (await r.read()).startswith(log.origin.encode())
        writer.store.conn.execute("PRAGMA max_page_count = 1073741823")
        status, body = await _post(client, token, _body(400, 2))
        assert status == 200, body
        assert [r["index"] for r in body["results"]] == list(range(size, size + 400))
        acked.update(_acked(body["results"]))
    assert not check_log(db, acked=acked).problems()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that really fills up (ENOSPC, not SQLite's page limit)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and mount(2)): {exc}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_a_real_full_disk_under_a_running_server(tiny_fs):
    db = tiny_fs / "tlog.db"
    init_log(db, "full.example/log").close()
    token = make_token(db, "--service", "recsys")
    server = serve(db)
    acked: dict[tuple[str, str], tuple[int, str]] = {}
    try:
        for seed in range(100):
            status, data = http("POST", server.url + "/v1/uses", _body(100, seed), token)
            if status != 200:
                break
            acked.update(_acked(orjson.loads(data)["results"]))
        else:
            pytest.fail("1 MiB never filled up")
        _assert_503(status, orjson.loads(data), "full")
        assert acked, "the disk filled before anything was logged"
        assert http("GET", server.url + "/checkpoint")[0] == 200
        size = orjson.loads(http("GET", server.url + "/v1/log")[1])["size"]  # the failed batch wrote nothing
        assert size == max(i for i, _ in acked.values()) + 2  # the last acknowledged use, then its map leaf
        subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_fs)], check=True)
        status, data = http("POST", server.url + "/v1/uses", _body(100, seed), token)
        assert status == 200, data
        results = orjson.loads(data)["results"]
        assert [r["index"] for r in results] == list(range(size, size + 100))
        acked.update(_acked(results))
    finally:
        assert stop(server) == 0
    assert "Traceback" not in server.output(), server.output()
    assert not check_log(db, acked=acked).problems()


# --- read-only --------------------------------------------------------------------------------


async def test_a_read_only_database_is_a_503_until_writable(log):
    token = _token(log)
    db = log.path
    log.close()
    async with _app(db, writer_readonly=True) as (client, _writer):
        status, body = await _post(client, token, _body(3, 1))
        _assert_503(status, body, "readonly")
        r = await client.get("/v1/log")
        assert r.status == 200
    assert not check_log(db).problems()
    async with _app(db) as (client, writer):
        size = writer.store.size()
        status, body = await _post(client, token, _body(3, 1))
        assert status == 200 and [r["index"] for r in body["results"]] == [size, size + 1, size + 2]
        acked = _acked(body["results"])
    assert not check_log(db, acked=acked).problems()


@pytest.fixture
def ro_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(writable dir, the same dir bind-mounted read-only)."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(rw), str(ro)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount here (needs root and mount(2)): {exc}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True, capture_output=True)
        yield rw, ro
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False, capture_output=True)


def test_a_read_only_medium_can_be_verified_but_not_written(ro_mount):
    """An auditor's read-only copy: verify, checkpoint and export work (SQLite cannot make the -shm file
    a WAL database needs there; found by this test); writing fails with one line, nothing changes."""
    rw, ro = ro_mount
    lg = init_log(rw / "tlog.db", "ro.example/log")
    append(lg.sequencer(), records(30, seed=1))
    lg.close()
    db = ro / "tlog.db"
    # init's log, policy and map leaves; the 30 records and their batch's map leaf
    assert cli("verify", "--db", str(db)).stdout.startswith("ok: ro.example/log size 34")
    assert cli("checkpoint", "--db", str(db)).stdout.startswith("ro.example/log\n34\n")
    assert len(cli("export", "--db", str(db)).stdout.splitlines()) == 34
    for args in (["append", "--db", str(db), "--service", "x", "-"], ["serve", "--db", str(db), "--port", "1"],
                 ["token", "create", "--db", str(db), "--auditor"]):
        out = cli(*args, check=False, timeout=30)
        assert out.returncode != 0, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "read-only" in lines[0], (args, out.stderr)
    assert not check_log(rw / "tlog.db").problems()


def test_a_read_only_copy_with_an_unrecovered_wal_is_refused_clearly(ro_mount):
    """A copy taken while a writer was running holds commits only in its -wal file; read without its
    -shm, SQLite would have to skip them. The read-only open says so instead of showing an older log."""
    rw, ro = ro_mount
    lg = init_log(rw / "tlog.db", "ro.example/log")
    append(lg.sequencer(), records(5, seed=1))
    assert (rw / "tlog.db-wal").stat().st_size > 0
    (rw / "tlog.db-shm").unlink()  # as if copied without it (the writer still has its mapping)
    out = cli("verify", "--db", str(ro / "tlog.db"), check=False)
    assert out.returncode == 3 and "write-ahead log" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    lg.close()


# --- locked -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(db: Path) -> Iterator[sqlite3.Connection]:
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield other
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_locked_database_fails_within_the_busy_timeout(log):
    seq = log.sequencer()
    log.store.conn.execute("PRAGMA busy_timeout = 300")
    size = log.store.size()
    with _exclusive(log.path):
        t0 = time.monotonic()
        with pytest.raises(StorageError, match="locked"):
            append(seq, records(5, seed=1))
        assert time.monotonic() - t0 < 3
    assert seq.size == size == log.store.size()
    assert [r.index for r in append(seq, records(5, seed=1))] == list(range(size, size + 5))
    assert not check_log(log.path).problems()


async def test_a_locked_database_is_a_503_and_reads_stay_quick(log):
    token = _token(log)
    db = log.path
    async with _app(db) as (client, writer):
        writer.store.conn.execute("PRAGMA busy_timeout = 500")
        size = writer.store.size()
        with _exclusive(db):
            t0 = time.monotonic()
            status, body = await _post(client, token, _body(3, 1))
            took = time.monotonic() - t0
            _assert_503(status, body, "locked")
            assert took < 5, took
            t0 = time.monotonic()
            r = await client.get("/checkpoint")
            assert r.status == 200 and time.monotonic() - t0 < 1
        status, body = await _post(client, token, _body(3, 1))
        assert status == 200 and [r["index"] for r in body["results"]] == [size, size + 1, size + 2]
        acked = _acked(body["results"])
    assert not check_log(db, acked=acked).problems()


# --- a second server ----------------------------------------------------------------------------


def test_a_second_server_on_the_same_database_exits_with_one_line(log):
    db = log.path
    token = _token(log)
    log.close()
    first = serve(db)
    try:
        t0 = time.monotonic()
        out = cli("serve", "--db", str(db), "--port", "1", check=False, timeout=30)
        assert out.returncode != 0 and time.monotonic() - t0 < 20
        lines = out.stderr.strip().splitlines()
        assert lines == [f"error: another tlog serve is already running on {db}"], out.stderr
        status, data = http("POST", first.url + "/v1/uses", _body(2, 1), token)
        assert status == 200, data
        acked = _acked(orjson.loads(data)["results"])
    finally:
        assert stop(first) == 0
    second = serve(db)  # the lock went with the first server
    try:
        status, data = http("POST", second.url + "/v1/uses", _body(2, 2), token)
        assert status == 200
        acked.update(_acked(orjson.loads(data)["results"]))
    finally:
        stop(second)
    assert not check_log(db, acked=acked).problems()


def test_cli_writes_beside_a_running_server_fail_no_request(log, tmp_path):
    """`tlog append` and `tlog policy publish` may run while the server does: the store refuses the
    server's next batch built on the old size (no fork), and the sequencer builds it again on the new
    state instead of answering 503; uses are decided under the policy just published. (Found by this
    test: the next request after any CLI write failed with "another writer?".)"""
    from tlog.policy import DEFAULT_POLICY

    db = log.path
    token = _token(log)
    log.close()
    server = serve(db)
    acked: dict[tuple[str, str], tuple[int, str]] = {}
    try:
        status, data = http("POST", server.url + "/v1/uses", _body(2, 1), token)
        assert status == 200
        acked.update(_acked(orjson.loads(data)["results"]))
        (tmp_path / "r.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in records(3, seed=2)))
        assert cli("append", "--db", str(db), "--service", "cli", str(tmp_path / "r.jsonl")).returncode == 0
        (tmp_path / "policy.json").write_bytes(DEFAULT_POLICY.document)
        assert cli("policy", "publish", "--db", str(db), "--id", "2026-12", str(tmp_path / "policy.json")).returncode == 0
        status, data = http("POST", server.url + "/v1/uses", _body(2, 3), token)
        assert status == 200, data
        results = orjson.loads(data)["results"]
        # init 0-2; the server's 3, 4 (map 5); the CLI's 6-8 (map 9); the policy 10 (map 11); then 12, 13
        assert [r["index"] for r in results] == [12, 13]
        acked.update(_acked(results))
    finally:
        stop(server)
    c = check_log(db, acked=acked)  # the map leaves of the rebuilt batch include the CLI's artists
    assert not c.problems() and c.size == 15
    lg = open_log(db, readonly=True)
    try:
        assert lg.store.entry(13).details["policy"] == "2026-12"
    finally:
        lg.close()
