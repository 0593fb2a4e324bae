"""Group commit: the asyncio front of the sequencer.

Concurrent callers enqueue work; one writer task drains whatever is queued into a single sequencer batch
and runs it on one dedicated thread (the sequencer and its store connection never leave that thread).
Each caller's future resolves only after the batch's transaction has committed and its checkpoint is
stored, so "200 OK" always means durable. Under load, batches grow by themselves; idle, a lone request
is committed at once.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import TlogError, Unavailable
from .sequencer import Sequencer, Submission, UseResult

MAX_BATCH_RECORDS = 8000


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
    def __init__(self, sequencer: Sequencer, *, max_batch_records: int = MAX_BATCH_RECORDS,
                 on_commit: Callable[[int], None] | None = None) -> None:
        self.sequencer = sequencer
        self.max_batch_records = max_batch_records
        self.on_commit = on_commit
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlog-sequencer")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tlog-committer")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            self._queue.get_nowait().future.set_exception(Unavailable("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def append(self, submission: Submission) -> list[UseResult]:
        """Appends one caller's records (all or nothing) in the next batch."""
        return await self._enqueue(_Work(submission, None, asyncio.get_running_loop().create_future()))

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Runs another sequencer operation (preferences, policies) in order with the batches."""
        return await self._enqueue(_Work(None, fn, asyncio.get_running_loop().create_future()))

    async def _enqueue(self, work: _Work) -> Any:
        if self._closing:
            raise Unavailable("the server is shutting down")
        await self._queue.put(work)
        return await work.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first.call is not None:
                await self._settle([first], loop.run_in_executor(self._executor, first.call), single=True)
                continue
            group = [first]
            count = len(first.submission.records)  # type: ignore[union-attr]
            while count < self.max_batch_records and not self._queue.empty():
                nxt = self._queue._queue[0]  # type: ignore[attr-defined]  # peek: calls run alone
                if nxt.call is not None:
                    break
                group.append(self._queue.get_nowait())
                count += len(nxt.submission.records)
            subs = [w.submission for w in group]
            await self._settle(group, loop.run_in_executor(self._executor, self.sequencer.append_uses, subs), single=False)
            self.stats.batches += 1
            self.stats.records += count
            self.stats.last_batch_records = count

    async def _settle(self, group: list[_Work], fut: asyncio.Future[Any], *, single: bool) -> None:
        try:
            result = await fut
        except BaseException as exc:  # a failed batch fails every caller in it; nothing was written
            err = exc if isinstance(exc, TlogError) else Unavailable(f"the log could not commit: {exc}")
            for w in group:
                if not w.future.done():
                    w.future.set_exception(err)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if self.on_commit is not None:
            self.on_commit(self.sequencer.size)
        results = [result] if single else result
        for w, r in zip(group, results):
            if w.future.done():
                continue
            if isinstance(r, BaseException) and not single:
                w.future.set_exception(r)
            else:
                w.future.set_result(r)
