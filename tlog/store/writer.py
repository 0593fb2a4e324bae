"""Batch writers: how the sequencer's sealed batches reach storage.

The sequencer hands each batch to a writer (`send`) and collects the outcomes in the same order
(`receive`); a batch is durable once `receive` has returned for it without raising. Between the two the
sequencer may build the next batch.

- `InlineWriter` writes in `send`, in the caller's thread: nothing overlaps.
- `ProcessWriter` writes from a child process with a connection of its own. Binding rows and running
  SQLite cost about as much as building the batch did, and they hold the GIL; in a child they run on the
  other core while the sequencer builds the next batch (scripts/bench, same-minute A/B: local append
  +40–56%).

Invariants of `ProcessWriter` (crash safety lives in the store: each batch is one transaction):
- The child writes batches strictly in the order sent, and the store refuses a batch whose `start` is
  not its size (STALE_STATE). So a batch built on top of one that failed is refused, never written
  above a hole.
- Outcomes come back in order, one per batch. If the child dies, every batch in flight fails with
  WRITER_DIED: each may or may not have committed, so the sequencer reloads its state from storage (a
  retried event_id is then found as a duplicate, never logged twice). The next `send` starts a new child.
- The child dies with its parent (`child.die_with_parent`): a killed server leaves no writer behind, and
  SQLite rolls back the transaction it cut short.
"""

from __future__ import annotations

import base64
import os
import pickle
import socket
import struct
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Protocol

import orjson

from ..child import die_with_parent
from ..errors import StorageError
from ..gctune import tune_for_batches
from .base import ArtistState, Batch, BindingChange, Entry, Erasure, LogStore, PolicyRecord

# The `code` of the StorageError for batches in flight when the writer process died.
WRITER_DIED = "writer_died"
_OK = b"ok"
_LEN = struct.Struct(">I")


class BatchWriter(Protocol):
    def start(self) -> None:
        """Gets ready to write (a ProcessWriter starts its child), so that a failure shows now and the
        first batch does not wait for it. `send` does it too if needed."""

    def send(self, batch: Batch) -> None:
        """Hands `batch` over. Raises only if it cannot be handed over at all (nothing in flight then
        changes)."""

    def receive(self) -> None:
        """The outcome of the oldest batch sent and not yet received: returns once it is durable, raises
        StorageError if it was not written (or may not have been: WRITER_DIED)."""

    def close(self) -> None: ...


class InlineWriter:
    """Writes each batch in `send`, keeping its outcome for `receive`."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self._outcomes: list[BaseException | None] = []

    def start(self) -> None:
        pass

    def send(self, batch: Batch) -> None:
        try:
            self.store.write_batch(batch)
        except Exception as exc:
            self._outcomes.append(exc)
        else:
            self._outcomes.append(None)

    def receive(self) -> None:
        exc = self._outcomes.pop(0)
        if exc is not None:
            raise exc

    def close(self) -> None:
        self._outcomes.clear()


class ProcessWriter:
    """Writes batches from a child process that opens its own store with `open_store` (a picklable
    callable, e.g. functools.partial(SqliteStore, path)). Started at the first `send`."""

    def __init__(self, open_store: Callable[[], LogStore]) -> None:
        self._open_store = open_store
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._in_flight = 0

    def start(self) -> None:
        if self._conn is None:
            if self._in_flight:  # outcomes of a dead child are still owed: receive them first
                raise StorageError("the writer process died; earlier batches are still unsettled", code=WRITER_DIED)
            self._start()

    def send(self, batch: Batch) -> None:
        data = encode_batch(batch)
        for attempt in (1, 2):
            self.start()
            assert self._conn is not None
            try:
                self._conn.send_bytes(data)
                break
            except OSError as exc:
                self._died()
                # A child that died idle owes nothing: a new one takes the batch. Otherwise the outcomes
                # of what the dead one was sent must be received (as failures) first.
                if self._in_flight or attempt == 2:
                    raise StorageError(f"could not hand the batch at {batch.start} to the writer process: {exc}",
                                       code=WRITER_DIED) from exc
        self._in_flight += 1

    def receive(self) -> None:
        if self._in_flight == 0:
            raise RuntimeError("no batch in flight")
        self._in_flight -= 1
        if self._conn is None:
            raise StorageError("the writer process died; the batch may not have been written", code=WRITER_DIED)
        try:
            answer = self._conn.recv_bytes()
        except (EOFError, OSError):
            self._died()
            raise StorageError("the writer process died; the batch may not have been written", code=WRITER_DIED) from None
        if answer != _OK:
            message, code = orjson.loads(answer)
            raise StorageError(message, code=code or "storage")

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def close(self) -> None:
        """Stops the child after it has written what it was sent (outcomes not received are lost: call
        after the last `receive`)."""
        if self._conn is not None:
            try:
                self._conn.send_bytes(b"")
            except OSError:
                pass
        self._stop(30)
        self._in_flight = 0

    def _start(self) -> None:
        # A fresh interpreter that imports only what writing needs (multiprocessing's spawn would also
        # re-run the parent's main module), handed one end of a socket pair. PYTHONPATH makes it import
        # this very copy of tlog.
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_TLOG_ROOT), env.get("PYTHONPATH")]))
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from tlog.store.writer import main; main()", str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
            )
        except OSError as exc:
            ours.close()
            raise StorageError(f"could not start the writer process: {exc}", code=WRITER_DIED) from exc
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        try:
            conn.send_bytes(pickle.dumps(self._open_store))
            ready = conn.recv_bytes()
        except (EOFError, OSError):
            ready = orjson.dumps(["the writer process exited as it started", WRITER_DIED])
        if ready != _OK:
            conn.close()
            proc.wait()
            message, code = orjson.loads(ready)
            raise StorageError(message, code=code or "storage")
        self._proc, self._conn = proc, conn

    def _died(self) -> None:
        self._stop(5)

    def _stop(self, timeout: float) -> None:
        """Closes our end and reaps the child, killing it if it has not gone within `timeout`."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


_TLOG_ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    """The child's entry point: `python -c "from tlog.store.writer import main; main()" FD PARENT_PID`."""
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    _serve(Connection(fd), parent)


def _serve(conn: Connection, parent: int) -> None:
    """The child: opens the store with the callable it is sent first, then writes each batch it is sent
    and answers with its outcome. An empty message or a closed pipe ends it."""
    die_with_parent(parent, keep_stderr=True)  # the store logs its warnings (a failed WAL checkpoint)
    try:
        open_store: Callable[[], LogStore] = pickle.loads(conn.recv_bytes())
        store = open_store()
    except Exception as exc:
        conn.send_bytes(orjson.dumps([f"the writer process could not open the log: {exc}", getattr(exc, "code", None)]))
        return
    conn.send_bytes(_OK)
    tune_for_batches()
    try:
        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                return
            if not message:
                return
            try:
                store.write_batch(decode_batch(message))
            except StorageError as exc:
                conn.send_bytes(orjson.dumps([exc.message, exc.code]))
            except Exception as exc:  # a bug, not the disk: the batch still failed as a whole
                conn.send_bytes(orjson.dumps([f"could not write the batch: {type(exc).__name__}: {exc}", None]))
            else:
                conn.send_bytes(_OK)
    finally:
        store.close()


# --- the batch on the pipe: JSON for the structure, the node hashes as one raw blob -------------------


def encode_batch(batch: Batch) -> bytes:
    head = orjson.dumps([
        batch.start,
        None if batch.checkpoint is None else batch.checkpoint.decode(),
        [(e.index, e.type, e.logged_ms, e.details, e.artist_id, e.aseq, e.aprev) for e in batch.entries],
        [(a.artist_id, a.tag.hex(), a.aseq, a.head, a.preferences, a.proof.hex()) for a in batch.artists],
        [(p.policy_id, p.index, base64.b64encode(p.document).decode()) for p in batch.policies],
        [(level, n) for level, n, _ in batch.nodes],
        None if batch.prev is None else batch.prev.hex(),
        [(x.index, x.artist_id, x.tag.hex(), x.reason, x.entries) for x in batch.erasures],
        [(b.content_id, b.artist_id, b.index, b.bound) for b in batch.bindings],
    ])
    return _LEN.pack(len(head)) + head + b"".join([h for _, _, h in batch.nodes])


def decode_batch(data: bytes) -> Batch:
    (n,) = _LEN.unpack_from(data)
    start, checkpoint, entries, artists, policies, coords, prev, erasures, bindings = orjson.loads(data[_LEN.size : _LEN.size + n])
    hashes = memoryview(data)[_LEN.size + n :]
    if len(hashes) != 32 * len(coords):
        raise StorageError(f"the batch at {start} came with {len(hashes)} bytes of hashes for {len(coords)} nodes")
    return Batch(
        start=start,
        entries=[Entry(i, t, ms, d, a, None, s, p) for i, t, ms, d, a, s, p in entries],
        nodes=[(level, k, bytes(hashes[32 * j : 32 * j + 32])) for j, (level, k) in enumerate(coords)],
        artists=[ArtistState(a, bytes.fromhex(tag), s, h, prefs, bytes.fromhex(pf)) for a, tag, s, h, prefs, pf in artists],
        policies=[PolicyRecord(p, i, base64.b64decode(doc)) for p, i, doc in policies],
        checkpoint=None if checkpoint is None else checkpoint.encode(),
        prev=None if prev is None else bytes.fromhex(prev),
        erasures=[Erasure(i, a, bytes.fromhex(tag), why, [(k, public) for k, public in gone])
                  for i, a, tag, why, gone in erasures],
        bindings=[BindingChange(*b) for b in bindings],
    )
