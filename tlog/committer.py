"""Group commit: the front of the sequencer for concurrent callers.

Callers (request handlers on the event loop) enqueue work and await a future. One thread owns the
sequencer: it drains whatever is queued into a single sequencer batch and hands it to the sequencer's
writer; while a ProcessWriter writes it, the thread builds the next batch from what queued meanwhile,
then resolves the first batch's callers once it is durable. (An asyncio task in its place only got its
turn after every answer of the previous batch was written, which left the writer idle most of the time.)
Each future resolves only after the batch's transaction has committed and its checkpoint is stored, so
"200 OK" always means durable. Under load batches grow by themselves; idle, a lone request is
committed at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import TlogError, Unavailable
from .sequencer import Sequencer, Submission, Ticket, UseResult

# A group stops growing at this many records. Small enough that, under batched load, the writer writes one
# request's batch while the next is built (at 8000, four 1000-record requests were built as one batch and
# written as one: the two halves of the pipeline took turns; scripts/bench-server's load +17%), large
# enough that per-batch costs (a signature, an fsync) stay small per record.
MAX_BATCH_RECORDS = 1000
log = logging.getLogger("tlog.committer")


@dataclass
class _Work:
    submission: Submission | None
    call: Callable[[], Any] | None
    future: asyncio.Future[Any] = field(repr=False)


@dataclass
class BatchStats:
    batches: int = 0
    records: int = 0
    last_batch_records: int = 0


class GroupCommitter:
    def __init__(self, sequencer: Sequencer, *, max_batch_records: int = MAX_BATCH_RECORDS) -> None:
        self.sequencer = sequencer
        self.max_batch_records = max_batch_records
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._held: _Work | None = None  # a call met while draining a batch: it runs next, alone
        self._thread = threading.Thread(target=self._run, name="tlog-sequencer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    async def close(self) -> None:
        self._closing = True
        if self._thread.is_alive():
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def append(self, submission: Submission) -> list[UseResult]:
        """Appends one caller's records (all or nothing) in the next batch."""
        return await self._enqueue(submission, None)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Runs another sequencer operation (preferences, policies) in order with the batches."""
        return await self._enqueue(None, fn)

    async def _enqueue(self, submission: Submission | None, call: Callable[[], Any] | None) -> Any:
        if self._closing or not self._thread.is_alive():
            raise Unavailable("the log's writer is not running")
        work = _Work(submission, call, asyncio.get_running_loop().create_future())
        self._queue.put(work)
        return await work.future

    # --- the writer thread -----------------------------------------------------------------------

    def _next(self, block: bool) -> _Work | None:
        """The next work; queue.Empty if there is none and `block` is false."""
        if self._held is not None:
            work, self._held = self._held, None
            return work
        return self._queue.get() if block else self._queue.get_nowait()

    def _run(self) -> None:
        try:
            self.sequencer.writer.start()
        except Exception as exc:  # each batch tries again, and its callers get the error
            log.error("cannot start the log's writer: %s", exc)
        # Batches handed to the writer whose callers are not answered yet, oldest first.
        in_flight: deque[tuple[Ticket, list[_Work], int]] = deque()
        try:
            self._loop_batches(in_flight)
        finally:
            for _, group, _ in in_flight:  # the thread is ending on an error: nobody waits forever
                self._resolve([(w.future, None, Unavailable("the log's writer stopped")) for w in group])
            self._fail_pending()
            self.sequencer.writer.close()

    def _loop_batches(self, in_flight: deque[tuple[Ticket, list[_Work], int]]) -> None:
        while True:
            try:
                first = self._next(block=not in_flight)
            except queue.Empty:  # nothing new: answer the oldest batch once it is durable
                self._finish(in_flight.popleft())
                continue
            if first is None:
                break
            if first.call is not None:
                while in_flight:  # a call runs after every batch before it, alone
                    self._finish(in_flight.popleft())
                self._settle([first], first.call, single=True)
                continue
            group = [first]
            count = len(first.submission.records)  # type: ignore[union-attr]
            stop = False
            while count < self.max_batch_records:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:  # closing: finish this batch, then stop
                    stop = True
                    break
                if nxt.call is not None:
                    self._held = nxt
                    break
                group.append(nxt)
                count += len(nxt.submission.records)  # type: ignore[union-attr]
            subs = [w.submission for w in group]
            try:
                ticket = self.sequencer.submit_uses(subs)  # type: ignore[arg-type]
            except BaseException as exc:
                self._fail(group, exc)
            else:
                in_flight.append((ticket, group, count))
            while len(in_flight) > 1:
                self._finish(in_flight.popleft())
            if stop:
                break
        while in_flight:
            self._finish(in_flight.popleft())

    def _finish(self, flight: tuple[Ticket, list[_Work], int]) -> None:
        ticket, group, count = flight
        self._settle(group, lambda: self.sequencer.wait(ticket), single=False, records=count)

    def _settle(self, group: list[_Work], fn: Callable[[], Any], *, single: bool, records: int = 0) -> None:
        """Runs `fn` and answers the group (statistics first: an answered caller may read them)."""
        try:
            result = fn()
        except BaseException as exc:
            self._fail(group, exc)
            return
        if not single:
            self.stats.batches += 1
            self.stats.records += records
            self.stats.last_batch_records = records
        results = [result] if single else result
        self._resolve([(w.future, None, r) if isinstance(r, BaseException) and not single else (w.future, r, None)
                       for w, r in zip(group, results)])

    def _fail(self, group: list[_Work], exc: BaseException) -> None:
        """A failed batch fails every caller in it (nothing of it was written, or it may not have been)."""
        err = exc if isinstance(exc, TlogError) else Unavailable(f"the log could not commit: {exc}")
        if not isinstance(exc, TlogError):
            log.error("batch failed: %s", exc)
        self._resolve([(w.future, None, err) for w in group])
        if not isinstance(exc, Exception):
            raise exc  # the thread ends; later callers get 503 instead of waiting forever

    def _resolve(self, answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        """Answers a whole group with one wake-up of the event loop, not one per caller."""
        def done() -> None:
            for fut, result, exc in answers:
                if fut.done():
                    continue
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)

        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(done)
        except RuntimeError:  # the loop is gone: nobody is waiting any more
            pass

    def _fail_pending(self) -> None:
        while True:
            try:
                w = self._queue.get_nowait()
            except queue.Empty:
                return
            if w is not None:
                self._resolve([(w.future, None, Unavailable("the server is shutting down"))])
