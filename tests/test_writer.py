"""Batch writers (store/writer.py) and the pipelined sequencer built on them: a batch written by a child
process while the next is built must leave exactly the log a one-at-a-time writer leaves, and every
failure (the child killed, another writer appending meanwhile) must end in a log that verifies, with
every acknowledged record once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytest

from tlog.committer import GroupCommitter
from tlog.errors import Conflict, StorageError
from tlog.log import init_log, open_log
from tlog.policy import DEFAULT_POLICY
from tlog.records import validate_use
from tlog.sequencer import Sequencer, Submission
from tlog.server.errors import http_status
from tlog.store.base import Batch
from tlog.store.sqlite import SqliteStore
from tlog.store.writer import WRITER_DIED, InlineWriter, ProcessWriter, decode_batch, encode_batch
from tlog.verify import verify_log

from .conftest import append, records
from .mapcheck import map_problems


def _subs(seq: Sequencer, recs: list[dict], service: str = "recsys") -> list[Submission]:
    now = datetime.now(timezone.utc)
    return [Submission(service, [validate_use(r, now=now, purposes=seq.policy.purposes) for r in recs])]


def _writers(log):
    return {"inline": lambda: InlineWriter(log.store), "process": log.process_writer}


@pytest.fixture(params=["inline", "process"])
def pipelined(request, log):
    seq = log.sequencer(writer=_writers(log)[request.param]())
    yield seq
    seq.close()


def test_a_batch_crosses_the_pipe_unchanged(log):
    seq = log.sequencer()
    seq.set_preferences("sc:user:1", {"strict": True}, by="artist")
    batches = []
    seq.on_commit = batches.append
    append(seq, records(5, seed=3))
    seq.set_preferences("sc:user:2", {"no_ai": True}, by="service", service="recsys")
    seq.publish_policy(DEFAULT_POLICY.document, "2026-12")
    assert len(batches) == 3
    for b in batches:
        assert b.entries[-1].type == "map"  # every batch ends with its map leaf (SPEC §2.3)
        assert all(a.proof for a in b.artists)  # the VRF proof of each tag rides with its artist
        again = decode_batch(encode_batch(b))
        assert again.start == b.start and again.checkpoint == b.checkpoint and again.prev == b.prev
        assert again.nodes == b.nodes and again.artists == b.artists and again.policies == b.policies
        # The tag rides with the artist state, not with each entry.
        assert [(e.index, e.type, e.logged_ms, e.details, e.artist_id, e.aseq, e.aprev) for e in again.entries] == \
               [(e.index, e.type, e.logged_ms, e.details, e.artist_id, e.aseq, e.aprev) for e in b.entries]


def test_process_writer_leaves_the_log_an_inline_writer_leaves(tmp_path, monkeypatch):
    """One log, copied; the same records, clock and nonces appended to each copy: the same leaves, byte
    for byte, whichever writer wrote them, and both copies pass the fsck."""
    import tlog.builder as builder_module

    init_log(tmp_path / "inline" / "tlog.db", "test.tlog.example/log").close()
    shutil.copytree(tmp_path / "inline", tmp_path / "process")
    monkeypatch.setattr(builder_module.os, "urandom", lambda n: bytes(n))
    recs = [records(300, seed=k, artists=40) for k in range(7)]  # once: their times come from the clock
    hashes = {}
    for name in ("inline", "process"):
        log = open_log(tmp_path / name / "tlog.db", secrets_needed=True)
        writer = InlineWriter(log.store) if name == "inline" else log.process_writer()
        seq = log.sequencer(writer=writer, clock=lambda: 1_790_000_000.0)
        batches = [_subs(seq, r) for r in recs]
        results = [r for (res,) in seq.append_all(batches) for r in res]
        seq.close()
        # After init's three leaves, each batch of 300 ends with its map leaf.
        assert [r.index for r in results] == [3 + 301 * k + i for k in range(7) for i in range(300)]
        assert not map_problems(log.store)
        assert verify_log(log).size == 2110
        hashes[name] = log.store.leaf_hashes(0, 2110)
        log.close()
    assert hashes["inline"] == hashes["process"]


def test_an_event_sent_again_while_its_batch_is_in_flight_is_a_duplicate(pipelined):
    first = pipelined.submit_uses(_subs(pipelined, records(3, seed=1)))
    again = pipelined.submit_uses(_subs(pipelined, records(3, seed=1)))
    changed = pipelined.submit_uses(_subs(pipelined, records(3, seed=1, detail="another body")))
    (a,), (b,), (c,) = pipelined.wait(first), pipelined.wait(again), pipelined.wait(changed)
    assert [r.index for r in b] == [r.index for r in a] and all(r.duplicate for r in b)
    assert [r.leaf_hash for r in b] == [r.leaf_hash for r in a]
    assert isinstance(c, Conflict)
    assert pipelined.store.size() == 7  # init's 3, the 3 records and one map leaf: nothing else


def test_another_writer_between_two_batches_in_flight_cannot_fork_the_log(log, pipelined):
    """The pipelined sequencer hands over batch A (1 leaf) and batch B built on it; meanwhile another
    writer appends 1 leaf. B then names the size the store has, but extends A's leaf, not the stored
    one: the store refuses it as stale (`Batch.prev`), and both are built again on what is stored."""
    pipelined.reload()
    other = log.sequencer()
    append(other, records(1, seed=9), service="trust")
    a = pipelined.submit_uses(_subs(pipelined, records(1, seed=1)))
    b = pipelined.submit_uses(_subs(pipelined, records(1, seed=2)))
    (ra,), (rb,) = pipelined.wait(a), pipelined.wait(b)
    assert [ra[0].index, rb[0].index] == [5, 7]  # after the other writer's record and map leaf (3, 4)
    assert not map_problems(log.store)  # the rebuilt batches' map leaves include the other writer's artist
    assert verify_log(log).size == 9


def test_a_killed_writer_fails_its_batch_and_the_next_ones_are_written(log):
    seq = log.sequencer(writer=log.process_writer())
    append(seq, records(2, seed=1))
    pid = seq.writer.pid
    os.kill(pid, signal.SIGSTOP)  # hold it while two batches go in flight, then kill it
    first = seq.submit_uses(_subs(seq, records(50, seed=2)))
    second = seq.submit_uses(_subs(seq, records(50, seed=3)))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StorageError) as err:
        seq.wait(first)
    assert err.value.code == WRITER_DIED
    (res,) = seq.wait(second)  # built again on what is stored, by a new writer
    assert seq.writer.pid not in (None, pid)
    assert [r.index for r in res] == list(range(6, 56))  # 3 and 4 the first records, 5 their map leaf
    (again,) = seq.append_uses(_subs(seq, records(50, seed=2)))  # its caller sends it again
    assert [r.index for r in again] == list(range(57, 107)) and not any(r.duplicate for r in again)
    seq.close()
    assert not map_problems(log.store)
    assert verify_log(log).size == 108


def test_a_writer_that_cannot_open_the_log_says_why(tmp_path):
    bad = tmp_path / "not-a-log.db"
    bad.write_bytes(b"this is not SQLite" * 100)
    writer = ProcessWriter(partial(SqliteStore, bad))
    with pytest.raises(StorageError, match="could not open the log"):
        writer.send(Batch(0, [], []))
    writer.close()


def test_the_writer_dies_with_its_parent(tmp_path):
    db = tmp_path / "t.db"
    init_log(db, "test.tlog.example/log").close()
    script = f"""
import sys, time
from datetime import datetime, timezone
from tlog.log import open_log
from tlog.records import validate_use
from tlog.sequencer import Submission
from tests.conftest import records
log = open_log({str(db)!r}, secrets_needed=True)
seq = log.sequencer(writer=log.process_writer())
now = datetime.now(timezone.utc)
seq.append_uses([Submission("recsys", [validate_use(r, now=now, purposes=seq.policy.purposes) for r in records(3)])])
print(seq.writer.pid, flush=True)
time.sleep(60)
"""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        os.kill(child, 0)  # alive
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.05)
        assert not _alive(child), "the writer outlived its parent"
    finally:
        proc.kill()
    log = open_log(db)
    assert verify_log(log).size == 7  # init's log, policy and map leaves, the three records, a map leaf
    log.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_a_server_whose_writer_cannot_start_answers_503_and_writes_nothing(log, tmp_path):
    bad = tmp_path / "not-a-log.db"
    bad.write_bytes(b"this is not SQLite" * 100)
    seq = log.sequencer(writer=ProcessWriter(partial(SqliteStore, bad)))
    committer = GroupCommitter(seq)
    committer.start()
    try:
        for _ in range(2):  # the next request tries again, and fails the same way
            with pytest.raises(StorageError) as err:
                await committer.append(_subs(seq, records(2))[0])
            assert http_status(err.value) == 503 and "could not open the log" in err.value.message
    finally:
        await committer.close()
    assert log.store.size() == 3  # init's leaves alone
