"""The crash matrix: fail at every step of an append, in both ways Sunlight tests them.

- "failed and not saved": the step raises before COMMIT; the transaction rolls back, the caller gets an
  error, memory and disk agree on the old size, and the next append takes the next dense index.
- "failed but saved": COMMIT succeeded, then the process fails before answering or before its memory
  moved; the caller gets an error, the batch is all there, and a retry gets `duplicate: true` answers
  with the indexes first given.
- process death: a forked child opens the log, appends and `os._exit`s at the step (uncommitted WAL
  frames on disk included); the parent reopens the file as a restarted server would.

After each: the fsck passes, nothing acknowledged is missing, no batch is half-written, every checkpoint
ever served is consistent with the log now, every map root is right (the artist map replayed from the
public leaves gives the root of every map leaf, and every checkpoint ends at a map leaf: SPEC §2.3), and
appending continues with dense indexes. An erasure (SPEC §2.2) is all or nothing: either the artist's
entries, id, preferences and tokens are all there and no erasure leaf, or none of them and the leaf.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from tlog.committer import GroupCommitter
from tlog.demo import sample_records
from tlog.errors import StorageError, TlogError
from tlog.log import LocalLog, open_log
from tlog.policy import DEFAULT_POLICY
from tlog.records import validate_use
from tlog.sequencer import Sequencer, Submission
from tlog.server.errors import http_status
from tlog.tokens import new_token

from .conftest import records
from .faultkit import STEP_LABELS, Injected, check_log, fail_at, hooked, recorder, survived, within_batch
from .mapcheck import kept_map_problems

KILLED = 77


class History:
    """What a client and a reader of the log have seen: acknowledged records and served checkpoints."""

    def __init__(self, log: LocalLog) -> None:
        self.db = log.path
        self.acked: dict[tuple[str, str], tuple[int, str]] = {}
        self.served: list[bytes] = [log.store.latest_checkpoint() or b""]
        self.k = 0

    def serve(self, log: LocalLog) -> None:
        self.served.append(log.store.latest_checkpoint() or b"")

    def check(self, seq: Sequencer | None = None) -> None:
        """The after-crash check (faultkit.check_log: every map root among the rest), and the maps the
        sequencer that goes on keeps in memory for map proofs, after its recovery."""
        c = check_log(self.db, acked=self.acked, served=self.served)
        assert not c.problems(), c
        if seq is not None:
            problems = kept_map_problems(seq.maps, seq.store)
            assert not problems, problems


START = datetime.now(timezone.utc) - timedelta(days=1)


def _uses(k: int, n: int = 6) -> tuple[str, list[dict[str, Any]]]:
    """A batch that reaches every statement of `write_batch`: a new service and system (new names), known
    artists (updates), a new artist (insert) and new content (first-sight bindings). The same (k, n) gives the same bodies, as a retry must
    (also in a forked child)."""
    recs = [r for _, r in sample_records(n, seed=1000 + k, artists=4, start=START)]
    recs[-1]["artist_id"] = f"sc:user:new-{k}"
    recs[-1]["content_id"] = f"sc:track:new-{k}"  # first sight: bound to the new artist
    recs[0]["system"] = {"id": f"sys-{k}", "model": "m", "version": "1"}
    return f"svc-{k}", recs


def _submit(seq: Sequencer, service: str, recs: list[dict[str, Any]]) -> list[Any]:
    now = datetime.now(timezone.utc)
    valid = [validate_use(r, now=now, purposes=seq.policy.purposes) for r in recs]  # type: ignore[union-attr]
    (res,) = seq.append_uses([Submission(service, valid)])
    if isinstance(res, TlogError):
        raise res
    return res


# Each operation returns the (service, event_id) → (index, leaf hash) it acknowledged; OPS also says how
# many leaves it appends: its own and the map leaf that ends its batch.
Op = Callable[[Sequencer, int], dict[tuple[str, str], tuple[int, str]]]


def op_uses(seq: Sequencer, k: int) -> dict[tuple[str, str], tuple[int, str]]:
    service, recs = _uses(k)
    return {(service, r.event_id): (r.index, r.leaf_hash.hex()) for r in _submit(seq, service, recs)}


def op_preferences(seq: Sequencer, k: int) -> dict[tuple[str, str], tuple[int, str]]:
    seq.set_preferences(f"sc:user:pref-{k}", {"no_ai": True}, by="artist")
    return {}


def op_policy(seq: Sequencer, k: int) -> dict[tuple[str, str], tuple[int, str]]:
    seq.publish_policy(DEFAULT_POLICY.document, f"crash-{k}")
    return {}


def _erased_artist(k: int) -> str:
    return f"sc:user:erase-{k}"


def prepare_erasure(seq: Sequencer, k: int) -> None:
    """What op_erase erases: two uses, preferences, a token and a feed key of its artist (batches of their own)."""
    artist = _erased_artist(k)
    service, recs = _uses(k, 2)
    _submit(seq, f"erasable-{service}", [dict(r, artist_id=artist, event_id=f"erasable-{r['event_id']}",
                                              content_id=f"sc:track:erasable-{k}-{n}") for n, r in enumerate(recs)])
    seq.set_preferences(artist, {"no_ai": True}, by="artist")
    seq.store.add_token("artist", artist, new_token()[1], 0)
    seq.store.add_feed_key(artist, new_token("tlogfeed_")[1], 0)


def op_erase(seq: Sequencer, k: int) -> dict[tuple[str, str], tuple[int, str]]:
    seq.erase(_erased_artist(k), "account deleted")
    return {}


OPS: dict[str, tuple[Op, int]] = {"uses": (op_uses, 6 + 1), "preferences": (op_preferences, 1 + 1), "policy": (op_policy, 1 + 1),
                                  "erase": (op_erase, 1 + 1)}


def assert_erased(log: LocalLog, k: int, erased: bool) -> None:
    """Erasure is atomic: the artist's id, preferences, tokens, feed keys and the details of its three entries are all
    there and no erasure leaf names its tag, or none is there and one erasure leaf does."""
    artist = _erased_artist(k)
    store = log.store
    state = store.artist_state(artist)
    tokens = [t for t in store.tokens() if t.subject == artist]
    feed_keys = store.conn.execute("SELECT count(*) FROM feed_keys WHERE artist_id = ?", (artist,)).fetchone()[0]
    if not erased:
        assert state is not None and state.preferences["no_ai"] is True and len(tokens) == 1 and feed_keys == 1
        entries = [e for e in store.entries(0, store.size()) if e.tag == state.tag]
        assert len(entries) == 3 and all(e.erased is None and e.details.get("artist_id") == artist for e in entries)
        assert not store.erasures(state.tag)
        return
    assert state is None and not tokens and not feed_keys
    (record,) = [x for x in store.erasures() if x.index == store.size() - 2]
    entries = [e for e in store.entries(0, store.size()) if e.tag == record.tag and e.aseq is not None]
    assert len(entries) == 3 and all(e.erased == record.index for e in entries)


def assert_one_batch(log: LocalLog, start: int, n: int) -> None:
    """Leaves [start, start + n) are one batch: its own leaves, then the map leaf that ends it, under a
    checkpoint of its end."""
    types = [e.type for e in log.store.entries(start, start + n)]
    assert len(types) == n and "map" not in types[:-1] and types[-1] == "map", types
    assert log.store.checkpoint_at(start + n) is not None


@pytest.fixture
def history(log: LocalLog) -> History:
    seq = log.sequencer()
    h = History(log)
    h.acked.update(op_uses(seq, -1))
    h.serve(log)
    return h


def _reached(log: LocalLog, op: Op, k: int) -> list[str]:
    """The statements `op` runs inside its write transaction (BEGIN to COMMIT)."""
    steps: list[str] = []
    seq = log.sequencer()
    if op is op_erase:
        prepare_erasure(seq, k)
    with hooked(log.store, recorder(steps)):
        op(seq, k)
    return steps[steps.index("begin") : len(steps) - steps[::-1].index("commit")]


def test_the_matrix_covers_every_statement_of_a_batch(log, history):
    """A step added to `write_batch` must get its crash case: a uses batch and an erasure run exactly these."""
    uses, erasure = _reached(log, op_uses, 0), _reached(log, op_erase, 0)
    assert "other" not in uses + erasure, (uses, erasure)
    assert sorted(set(uses + erasure), key=STEP_LABELS.index) == list(STEP_LABELS)
    assert uses[0] == erasure[0] == "begin" and uses[-1] == erasure[-1] == "commit"


def test_durability_settings(log):
    """Power-loss safety rests on WAL + synchronous=FULL (fsync of the WAL at every COMMIT)."""
    c = log.store.conn
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


@pytest.mark.parametrize("name", list(OPS))
def test_failed_and_not_saved_at_every_step(log, history, name):
    op, n = OPS[name]
    seq = log.sequencer()
    _reached(log, op, 100)  # first-time work (a new name) is done; the loop sees the steady state
    steps = ["sign", *dict.fromkeys(_reached(log, op, 101))]
    history.serve(log)
    seq.reload()
    for k, step in enumerate(steps):
        if name == "erase":
            prepare_erasure(seq, k)
            history.serve(log)
        size, note = log.store.size(), log.store.latest_checkpoint()
        if step == "sign":
            builder = seq.builder
            builder.sign = lambda *a: (_ for _ in ()).throw(Injected("injected fault while signing"))  # type: ignore[method-assign]
            try:
                with pytest.raises(Injected):
                    op(seq, k)
            finally:
                del builder.sign
        else:
            with hooked(log.store, within_batch(fail_at(step, "before"))), pytest.raises(StorageError, match="injected"):
                op(seq, k)
        assert (log.store.size(), log.store.latest_checkpoint()) == (size, note), step
        assert seq.size == size, step
        if name == "erase":
            assert_erased(log, k, False)
        history.check(seq)
        got = op(seq, k)  # the same work again: same indexes, nothing skipped
        assert log.store.size() == size + n, step
        assert_one_batch(log, size, n)
        if name == "erase":
            assert_erased(log, k, True)
        assert all(index >= size for index, _ in got.values()), step
        history.acked.update(got)
        history.serve(log)
        survived("failed and not saved")
    history.check(seq)


@pytest.mark.parametrize("name", list(OPS))
def test_failed_but_saved_after_commit(log, history, name):
    """COMMIT returned, then the write path failed before memory moved or the caller was told."""
    op, n = OPS[name]
    seq = log.sequencer()
    if name == "erase":
        prepare_erasure(seq, 1)
        prepare_erasure(seq, 2)
        history.serve(log)
    size = log.store.size()
    with hooked(log.store, fail_at("commit", "after")), pytest.raises(StorageError, match="injected"):
        op(seq, 1)
    assert log.store.size() == size + n
    assert_one_batch(log, size, n)
    assert seq.size == size + n  # reloaded from disk
    history.serve(log)
    history.check(seq)
    if name == "erase":
        assert_erased(log, 1, True)
        op(seq, 1)  # the operator runs it again: nothing is left to erase, nothing is appended
        assert log.store.size() == size + n
    if name == "uses":
        service, recs = _uses(1)
        again = _submit(seq, service, recs)  # the client retries: the first answers, marked duplicate
        assert all(r.duplicate for r in again)
        assert sorted(r.index for r in again) == list(range(size, size + n - 1))  # before the map leaf
        assert log.store.size() == size + n  # duplicates only: no new batch, not even a map leaf
        history.acked.update({(service, r.event_id): (r.index, r.leaf_hash.hex()) for r in again})
    history.acked.update(op(seq, 2))
    assert log.store.size() == size + 2 * n
    history.serve(log)
    history.check(seq)
    survived("failed but saved")


@pytest.mark.parametrize("read", ["FROM nodes WHERE id IN", "FROM entries WHERE idx IN", "FROM entries WHERE idx >=", "FROM entries e", "FROM policies"])
def test_saved_but_reload_fails_does_not_corrupt(log, history, read):
    """After a failed-but-saved write the sequencer reloads from disk. If one of those reads fails too
    (the frontier, the chain head, the last entry, the policy), the next batch must neither build on a
    mix of old and new state nor be refused: it reloads first. (Found by this test: a half-done reload
    once left a new size beside the old chain head, and the next batch was signed over a broken chain.)"""
    seq = log.sequencer()
    size = log.store.size()
    state = {"committed": False}

    def hook(label: str, phase: str, sql: str) -> None:
        if label == "commit" and phase == "after":
            state["committed"] = True
            raise Injected("injected fault after commit")
        if state["committed"] and read in sql and phase == "before":
            state["committed"] = False
            raise Injected("injected fault while reloading")

    with hooked(log.store, hook), pytest.raises(Injected, match="while reloading"):
        op_uses(seq, 1)
    assert log.store.size() == size + 7  # six uses and the map leaf
    got = op_uses(seq, 2)
    assert sorted(i for i, _ in got.values()) == list(range(size + 7, size + 13))
    assert_one_batch(log, size + 7, 7)  # its map leaf extends the map reloaded after the failure
    history.acked.update(got)
    history.serve(log)
    history.check(seq)
    survived("failed but saved, then the reload failed")


# --- process death ----------------------------------------------------------------------------


def _die_at(db: Path, step: str, phase: str, op: Op, k: int) -> int:
    """Forks a child that opens the log, runs `op` and os._exit(KILLED)s when `step` reaches `phase`;
    returns the child's exit status (0: the step was not reached and the op completed)."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            log = open_log(db, secrets_needed=True)
            log.store.conn.execute("PRAGMA cache_size = 2")  # spill uncommitted pages into the WAL

            def hook(label: str, ph: str, sql: str) -> None:
                if label == step and ph == phase:
                    wal = Path(f"{db}-wal")
                    Path(f"{db}.died").write_text(str(wal.stat().st_size if wal.exists() else 0))
                    os._exit(KILLED)

            seq = log.sequencer()
            with hooked(log.store, within_batch(hook)):
                op(seq, k)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def op_big_uses(seq: Sequencer, k: int) -> dict[tuple[str, str], tuple[int, str]]:
    service, recs = _uses(k, 150)
    return {(service, r.event_id): (r.index, r.leaf_hash.hex()) for r in _submit(seq, service, recs)}


@pytest.mark.parametrize("name", ["uses", "preferences", "policy", "erase"])
def test_process_death_at_every_step(log, history, name):
    op, n = {"uses": (op_big_uses, 150 + 1), "preferences": OPS["preferences"], "policy": OPS["policy"], "erase": OPS["erase"]}[name]
    _reached(log, op, 100)
    steps = [(s, "before") for s in dict.fromkeys(_reached(log, op, 101))] + [("commit", "after")]
    history.serve(log)
    db = log.path
    log.close()
    for k, (step, phase) in enumerate(steps):
        lg = open_log(db, secrets_needed=True)
        if name == "erase":
            prepare_erasure(lg.sequencer(), k)
            history.serve(lg)
        size, note = lg.store.size(), lg.store.latest_checkpoint()
        lg.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        lg.close()
        assert _die_at(db, step, phase, op, k) == KILLED, (step, phase)
        if name == "uses" and step in ("upsert stats", "store checkpoint", "commit"):
            # Uncommitted pages were on disk when the process died: recovery must ignore them.
            assert int(Path(f"{db}.died").read_text()) > 0, (step, phase)
        lg = open_log(db, secrets_needed=True)
        try:
            saved = (step, phase) == ("commit", "after")
            assert lg.store.size() == size + (n if saved else 0), (step, phase)
            if not saved:
                assert lg.store.latest_checkpoint() == note, (step, phase)
            if name == "erase":
                assert_erased(lg, k, saved)
            history.serve(lg)
            history.check()
            seq = lg.sequencer()
            if saved:
                assert_one_batch(lg, size, n)
            if saved and name in ("uses",):
                service, recs = _uses(k, n - 1)
                again = _submit(seq, service, recs)
                assert all(r.duplicate for r in again) and sorted(r.index for r in again) == list(range(size, size + n - 1))
                history.acked.update({(service, r.event_id): (r.index, r.leaf_hash.hex()) for r in again})
            elif not saved:
                history.acked.update(op(seq, k))  # the unacknowledged work, sent again, lands at the old size
                assert lg.store.size() == size + n
                assert_one_batch(lg, size, n)
                if name == "erase":
                    assert_erased(lg, k, True)
            history.serve(lg)
        finally:
            lg.close()
        survived("process death (os._exit)")
    history.check()


# --- the group committer ----------------------------------------------------------------------


def assert_batches(log: LocalLog, start: int, end: int, records: int, indexes: list[int] | None = None) -> None:
    """Leaves [start, end) are `records` records (at `indexes`, if given) in whole batches: every other
    leaf is the map leaf ending a batch, the last leaf one of them, and each batch end is a checkpoint."""
    types = [e.type for e in log.store.entries(start, end)]
    maps = [start + i for i, t in enumerate(types) if t == "map"]
    assert len(types) == end - start == records + len(maps) and maps and maps[-1] == end - 1, types
    if indexes is not None:
        assert sorted(indexes) == sorted(set(range(start, end)) - set(maps))
    assert all(log.store.checkpoint_at(m + 1) is not None for m in maps)


async def _group(committer: GroupCommitter, subs: list[Submission]) -> list[Any]:
    return await asyncio.gather(*(committer.append(s) for s in subs), return_exceptions=True)


def _subs(seq: Sequencer, k: int, callers: int = 5) -> list[Submission]:
    now = datetime.now(timezone.utc)
    out = []
    for c in range(callers):
        recs = records(3, seed=5000 + k * 10 + c, artists=3)
        out.append(Submission(f"caller-{c}", [validate_use(r, now=now, purposes=seq.policy.purposes) for r in recs]))  # type: ignore[union-attr]
    return out


@pytest.mark.parametrize("phase", ["before", "after"])
async def test_group_commit_fails_every_caller_of_a_failed_batch(log, history, phase):
    """One transaction for many callers: a fault fails all of them with 503 (before COMMIT nothing is
    there; after, everything is, and the retries are answered as duplicates); the committer goes on."""
    seq = log.sequencer()
    committer = GroupCommitter(seq)
    committer.start()
    try:
        size = log.store.size()
        subs = _subs(seq, 1)
        with hooked(log.store, fail_at("commit", phase, times=0)):
            # Every commit fails while the hook is on, however the writer groups the callers.
            out = await _group(committer, subs)
        assert all(isinstance(r, StorageError) and http_status(r) == 503 for r in out), out
        if phase == "before":
            assert log.store.size() == size
        else:  # the 15 records, in one batch or more, each ending with its map leaf
            assert_batches(log, size, log.store.size(), 15)
        saved = log.store.size()
        history.serve(log)
        history.check(seq)
        again = await _group(committer, subs)
        assert not any(isinstance(r, BaseException) for r in again), again
        flat = [r for res in again for r in res]
        assert_batches(log, size, log.store.size(), 15, [r.index for r in flat])
        assert all(r.duplicate for r in flat) == (phase == "after")
        assert phase == "before" or log.store.size() == saved  # duplicates only: nothing appended
        for s, res in zip(subs, again):
            history.acked.update({(s.service, r.event_id): (r.index, r.leaf_hash.hex()) for r in res})
        subs2 = _subs(seq, 2)
        mid = log.store.size()
        more = await _group(committer, subs2)
        assert_batches(log, mid, log.store.size(), 15, [r.index for res in more for r in res])
        for s, res in zip(subs2, more):
            history.acked.update({(s.service, r.event_id): (r.index, r.leaf_hash.hex()) for r in res})
        assert committer.stats.batches >= 2  # committed batches: the failed one is not counted
        history.serve(log)
    finally:
        await committer.close()
    history.check(seq)
    survived("group commit " + ("failed but saved" if phase == "after" else "failed and not saved"), len(subs))


async def test_pipelined_group_commit_survives_its_writer_being_killed(log, history):
    """`tlog serve` hands batches to a child process (store/writer.py) and builds the next meanwhile.
    Kill that child with batches in flight, three times: callers of the batches it took down get 503,
    every other caller is answered once its batch is durable, retries are found as duplicates or
    appended, and the log holds every acknowledged record once."""
    seq = log.sequencer(writer=log.process_writer())
    committer = GroupCommitter(seq)
    committer.start()
    failed, before = 0, len(history.acked)
    try:
        for k in range(3):
            await committer.append(_subs(seq, 100 + k, callers=1)[0])  # a live writer to kill
            pid = seq.writer.pid
            os.kill(pid, signal.SIGSTOP)  # batches queue up in front of it
            subs = [s for j in range(4) for s in _subs(seq, 10 * k + j, callers=8)]
            tasks = [asyncio.ensure_future(committer.append(s)) for s in subs]
            await asyncio.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
            out = await asyncio.gather(*tasks, return_exceptions=True)
            assert any(isinstance(r, BaseException) for r in out)
            for s, res in zip(subs, out):
                if isinstance(res, BaseException):
                    assert isinstance(res, StorageError) and http_status(res) == 503, res
                    failed += 1
                    res = await committer.append(s)  # the caller retries
                history.acked.update({(s.service, r.event_id): (r.index, r.leaf_hash.hex()) for r in res})
            assert seq.writer.pid not in (None, pid)
            history.serve(log)
    finally:
        await committer.close()
    history.check(seq)
    assert len(history.acked) - before == 3 * 32 * 3
    survived("pipelined group commit, writer killed", failed)


@pytest.mark.parametrize("restart", [False, True], ids=["retried in place", "after a restart"])
@pytest.mark.parametrize("step", ["insert entries", "store checkpoint", "commit"])
def test_a_crash_at_the_policy_switch_changes_nothing(log, history, step, restart):
    """Issue 14: the first batch at a policy's effective_at fails inside its transaction; nothing is
    stored, and the same use sent again, by this sequencer or by a fresh one after a restart, is decided
    by the new policy and names it."""
    t = [time.time()]
    seq = log.sequencer(clock=lambda: t[0])
    doc = orjson.loads(DEFAULT_POLICY.document)
    doc["purposes"]["recommendation"]["default"] = "refused"  # a tightening may take effect at any time
    switch_ms = int(t[0] * 1000) + 60_000
    seq.publish_policy(orjson.dumps(doc), "stricter", effective_ms=switch_ms)
    rec = dict(_uses(0)[1][0], purpose="recommendation", phase="inference")
    t[0] = switch_ms / 1000  # the clock stands exactly at effective_at
    size, note = log.store.size(), log.store.latest_checkpoint()
    with hooked(log.store, within_batch(fail_at(step, "before"))), pytest.raises(StorageError, match="injected"):
        _submit(seq, "svc-switch", [rec])
    assert (log.store.size(), log.store.latest_checkpoint()) == (size, note)
    again = log.sequencer(clock=lambda: t[0]) if restart else seq  # a restart reads the schedule back
    (res,) = _submit(again, "svc-switch", [rec])
    assert res.decision == "refused" and log.store.entry(res.index).details["policy"] == "stricter"
    assert log.store.size() == size + 2  # the use's refusal leaf and its map leaf
    history.serve(log)
    history.check()
