"""BatchLogger: logging uses from a hot path without waiting on the log, and without losing any.

    async with TlogClient(url, token, vkey=VKEY) as client, BatchLogger(client, "recsys.spool") as logger:
        answer = await logger.log(record)   # returns once the record is durable in the local spool
        ...
        result = await answer               # later, if wanted: the log's UseReceipt (or the error)

`log()` checks the record (everything but whether its purpose is in the log's current policy, which only
the log knows), writes it to the spool (committed and fsynced, group-committed with concurrent callers)
and returns a future of the log's answer. Sender tasks read the spool oldest-first, coalesce up to
`max_batch` records or `max_delay` seconds into one POST, and delete records only once the log has
acknowledged them. So:

- retries resend the same records with the same event_ids: the log answers a resend with the first
  answer (`duplicate=True`), so nothing is logged twice, even when an answer was lost after the commit;
- 5xx, 429, refused or dropped connections and timeouts are retried forever, with exponential backoff
  and full jitter (an outage is waited out, never turned into loss);
- a record the log refuses for good (400: invalid, e.g. a purpose the policy dropped; 409: its event_id
  was used for another body) fails alone, once: it is moved to the spool's `failed` table with the
  reason, its future raises, `on_error` is called; the rest of its batch is sent again (records named
  by the 400 are dropped from the batch, otherwise the batch is halved until the culprit is alone), so a
  batch of n records costs at most 2n - 1 requests, and an empty batch is never sent;
- 401/403/404/415 mean the logger is misconfigured (token, role, URL): it stops, keeps every record in
  the spool, and `log()`, `flush()` and `close()` raise that error;
- backpressure: `log()` waits while `max_pending` records are spooled and unacknowledged, so an outage
  longer than the spool's allowance slows callers down instead of filling the disk;
- records left in the spool (an outage at close, a crash) are sent first by the next BatchLogger that
  opens the same spool.

Decisions arrive with the answers: a caller that must honour a refusal before acting awaits the future
(or uses TlogClient.use); `on_result` sees every answer, including those of records spooled by an
earlier process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import orjson

from ..errors import Conflict, TlogError, Unavailable, ValidationError
from ..backoff import Backoff
from .check import check_uses
from .client import TlogClient, UseReceipt, answered_status
from .errors import TooLarge, describe, is_transient
from .spool import FailedRecord, PendingConflict, Spool, SpooledRecord

log = logging.getLogger("tlog.client")

T = TypeVar("T")
OnResult = Callable[[UseReceipt], object]
OnError = Callable[[str, TlogError], object]

_RECORD_FIELD = re.compile(r"records\[(\d+)\](?:\.(.*))?")


class BatchLogger:
    def __init__(
        self,
        client: TlogClient,
        spool: str | os.PathLike[str],
        *,
        max_batch: int = 1000,
        max_delay: float = 0.05,
        max_pending: int = 100_000,
        concurrency: int = 2,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        on_result: OnResult | None = None,
        on_error: OnError | None = None,
    ) -> None:
        if not 1 <= max_batch <= 1000:
            raise ValueError("max_batch must be 1 to 1000 (the log's limit per request)")
        self.client = client
        self.spool_path = Path(spool)
        self.max_batch, self.max_delay, self.max_pending = max_batch, max_delay, max_pending
        self.concurrency = concurrency
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.on_result, self.on_error = on_result, on_error
        self._spool: Spool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._writes: list[tuple[list[tuple[str, bytes]], asyncio.Future[list[asyncio.Future[UseReceipt]]]]] = []
        self._waiters: dict[int, list[asyncio.Future[UseReceipt]]] = {}
        self._pending = 0  # spooled (or being spooled) and not yet acknowledged or failed
        self._last_seq = 0  # the newest spooled seq
        self._cursor = 0  # every seq up to here has been taken by a sender
        self._flushing = 0
        self._stopping = False
        self._closed = False
        self._fatal: TlogError | None = None

    @property
    def pending(self) -> int:
        """Records spooled and not yet acknowledged (or refused) by the log."""
        return self._pending

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> BatchLogger:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Opens the spool and starts the senders; records an earlier process left are sent first."""
        self._arrived = asyncio.Event()  # a record was spooled, or a flush or stop wants the senders awake
        self._progress = asyncio.Event()  # replaced after each acknowledgement, failure or stop
        self._take_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlog-spool")
        self._spool = await self._run(Spool, self.spool_path)
        self._pending = await self._run(self._spool.count)
        self._last_seq = await self._run(self._spool.newest)
        if self._pending:
            log.info("%d records left in the spool %s by an earlier run are sent first", self._pending, self.spool_path)
        self._workers = [asyncio.create_task(self._work(), name=f"tlog-sender-{i}") for i in range(self.concurrency)]

    async def flush(self) -> None:
        """Returns once every record spooled before the call is acknowledged or refused by the log."""
        self._check_usable()
        target = self._last_seq
        self._flushing += 1
        self._arrived.set()
        try:
            while True:
                self._raise_fatal()
                progress = self._progress
                oldest = await self._run(self._spool_().oldest)
                if oldest is None or oldest > target:
                    return
                await progress.wait()
        finally:
            self._flushing -= 1

    async def close(self, timeout: float | None = None) -> int:
        """Drains (waits for every spooled record to be acknowledged), then stops. With `timeout`, stops
        after that many seconds even if the log is unreachable; what is left stays in the spool for the
        next BatchLogger on it. Returns the number of records left."""
        if self._closed:
            return 0
        if self._spool is None:  # never started
            self._closed = True
            return 0
        timed_out = False
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except asyncio.TimeoutError:
            timed_out = True
        except TlogError:
            pass  # the fatal error, raised below once everything is closed
        self._stopping = True
        self._arrived.set()
        if timed_out:
            for w in self._workers:
                w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        spool = self._spool_()
        left = await self._run(spool.count)
        self._abandon(Unavailable(
            f"the batch logger closed before the log acknowledged this record; it stays in the spool "
            f"{self.spool_path} and is sent when a BatchLogger opens it again"
        ))
        await self._run(spool.close)
        self._executor.shutdown(wait=True)  # type: ignore[union-attr]
        self._closed = True
        self._notify()
        if left:
            log.warning("%d records stay in the spool %s until a BatchLogger opens it again", left, self.spool_path)
        if self._fatal is not None:
            raise self._fatal
        return left

    async def failed(self) -> list[FailedRecord]:
        """The records the log refused for good, with the reasons (kept in the spool for a person)."""
        return await self._run(self._spool_().failed)

    # --- logging -----------------------------------------------------------------------------

    async def log(self, record: Mapping[str, Any]) -> asyncio.Future[UseReceipt]:
        """Spools one use; see the module docstring. Raises ValidationError (nothing spooled) if the
        record is malformed, Conflict if its event_id is already spooled with a different body."""
        (future,) = await self.log_many([record])
        return future

    async def log_many(self, records: Sequence[Mapping[str, Any]]) -> list[asyncio.Future[UseReceipt]]:
        """Spools several uses in one durable write, all or nothing."""
        self._check_usable()
        items = [(r["event_id"], orjson.dumps(r)) for r in check_uses(records)]
        await self._wait_for_room(len(items))
        self._pending += len(items)  # reserved now, so concurrent callers cannot overshoot max_pending
        try:
            return await self._write(items)
        except BaseException:
            self._pending -= len(items)
            self._notify()
            raise

    async def _wait_for_room(self, n: int) -> None:
        while self._pending > 0 and self._pending + n > self.max_pending:
            progress = self._progress
            await progress.wait()
            self._check_usable()

    async def _write(self, items: list[tuple[str, bytes]]) -> list[asyncio.Future[UseReceipt]]:
        done: asyncio.Future[list[asyncio.Future[UseReceipt]]] = asyncio.get_running_loop().create_future()
        self._writes.append((items, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="tlog-spool-writer")
        try:
            return await done
        except PendingConflict as exc:
            raise _pending_conflict(items, exc.positions) from None

    async def _write_all(self) -> None:
        """Group commit: whatever callers queued while the previous write was on disk goes in one
        transaction (one fsync). A conflict anywhere redoes the group one caller at a time, so it
        fails only its own caller."""
        while self._writes:
            writes, self._writes = self._writes, []
            if len(writes) > 1:
                try:
                    added = await self._run(self._spool_().add, [item for items, _ in writes for item in items])
                except PendingConflict:
                    pass
                except Exception as exc:
                    for _, done in writes:
                        _settle(done, exc=exc)
                    continue
                else:
                    for items, done in writes:
                        _settle(done, self._register(added[: len(items)]))
                        added = added[len(items) :]
                    continue
            for items, done in writes:
                try:
                    added = await self._run(self._spool_().add, items)
                except Exception as exc:
                    _settle(done, exc=exc)
                else:
                    _settle(done, self._register(added))

    def _register(self, added: list[tuple[int, bool]]) -> list[asyncio.Future[UseReceipt]]:
        # Runs in the writer's step right after the spool write returns: a sender can only take these
        # rows after that write, so every future is registered before its answer can arrive.
        loop = asyncio.get_running_loop()
        futures = []
        for seq, new in added:
            if not new:
                self._pending -= 1  # joined a record already pending: its reservation is not needed
            self._last_seq = max(self._last_seq, seq)
            future: asyncio.Future[UseReceipt] = loop.create_future()
            future.add_done_callback(_mark_retrieved)
            self._waiters.setdefault(seq, []).append(future)
            futures.append(future)
        self._arrived.set()
        return futures

    # --- sending -----------------------------------------------------------------------------

    async def _work(self) -> None:
        try:
            while (batch := await self._next_batch()) is not None:
                await self._deliver(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a broken spool: stop rather than spin, keep the records
            log.exception("a batch logger sender stopped")
            self._set_fatal(exc if isinstance(exc, TlogError) else TlogError(f"the batch logger stopped: {exc!r}", code="internal"))

    async def _next_batch(self) -> list[SpooledRecord] | None:
        async with self._take_lock:
            while self._fatal is None:
                if self._last_seq > self._cursor:
                    await self._coalesce()
                    batch = await self._run(self._spool_().take, self._cursor, self.max_batch)
                    self._cursor = batch[-1].seq if batch else self._last_seq
                    if batch:
                        return batch
                elif self._stopping:
                    return None
                else:
                    self._arrived.clear()
                    await self._arrived.wait()
            return None

    async def _coalesce(self) -> None:
        """Waits up to max_delay for a full batch, unless a flush or stop wants it sent now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay
        while self._last_seq - self._cursor < self.max_batch and not (self._flushing or self._stopping):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _deliver(self, batch: list[SpooledRecord]) -> None:
        backoff = Backoff(self.backoff_base, self.backoff_cap)
        parts = deque([batch])
        while parts and self._fatal is None:
            part = parts.popleft()
            try:
                results = await self.client.submit([r.body for r in part], [r.event_id for r in part])
            except TlogError as exc:
                if is_transient(exc):
                    _log_retry(backoff.attempt, len(part), exc)
                    await asyncio.sleep(backoff.next_delay(getattr(exc, "retry_after", None)))
                    parts.appendleft(part)
                elif isinstance(exc, (ValidationError, Conflict)):  # 400, 409, 413: about some record(s)
                    parts.extendleft(reversed(await self._isolate(part, exc)))
                else:
                    self._set_fatal(exc)
                continue
            if backoff.attempt:
                log.info("the log answered again after %d failed attempts", backoff.attempt)
                backoff.reset()
            await self._ack(part, results)

    async def _isolate(self, part: list[SpooledRecord], exc: TlogError) -> list[list[SpooledRecord]]:
        """Fails the records a permanent error is about and returns the rest to send again."""
        if len(part) == 1:
            await self._fail([(part[0], exc)])
            return []
        named = _named_records(exc, len(part)) if not isinstance(exc, TooLarge) else {}
        if not named:  # a 409 (or an error naming no record): halve until the culprit is alone
            mid = len(part) // 2
            return [part[:mid], part[mid:]]
        await self._fail([(part[i], _record_error(exc, details)) for i, details in named.items()])
        rest = [r for i, r in enumerate(part) if i not in named]
        return [rest] if rest else []  # every record refused: nothing left to send, not an empty batch

    async def _ack(self, part: list[SpooledRecord], results: list[UseReceipt]) -> None:
        await self._run(self._spool_().remove, [r.seq for r in part])
        self._pending -= len(part)
        for rec, result in zip(part, results):
            for future in self._waiters.pop(rec.seq, []):
                _settle(future, result)
            _call(self.on_result, result)
        self._notify()

    async def _fail(self, failures: list[tuple[SpooledRecord, TlogError]]) -> None:
        for rec, err in failures:
            await self._run(self._spool_().fail, [rec], answered_status(err), err.code, err.message)
            self._pending -= 1
            log.warning("the log refused %r for good, kept in the spool's failed table: %s", rec.event_id, err)
            for future in self._waiters.pop(rec.seq, []):
                _settle(future, exc=err)
            _call(self.on_error, rec.event_id, err)
        self._notify()

    # --- state -------------------------------------------------------------------------------

    def _set_fatal(self, exc: TlogError) -> None:
        if self._fatal is None:
            self._fatal = exc
            log.error("the batch logger stopped sending (records stay in the spool %s): %s", self.spool_path, exc)
        self._abandon(exc)
        self._arrived.set()
        self._notify()

    def _abandon(self, exc: TlogError) -> None:
        """Fails the futures still waiting; their records stay in the spool."""
        for futures in self._waiters.values():
            for future in futures:
                _settle(future, exc=exc)
        self._waiters.clear()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _check_usable(self) -> None:
        if self._spool is None:
            raise RuntimeError("start the BatchLogger first (async with BatchLogger(...), or await start())")
        if self._closed or self._stopping:
            raise RuntimeError("the BatchLogger is closed")
        self._raise_fatal()

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def _spool_(self) -> Spool:
        assert self._spool is not None, "started"
        return self._spool

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs a spool call on the spool's own thread: SQLite's fsyncs never block the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


# --- helpers -----------------------------------------------------------------------------------


def _pending_conflict(items: list[tuple[str, bytes]], positions: list[int]) -> Conflict:
    ids = ", ".join(repr(items[i][0]) for i in positions)
    return Conflict(
        f"event_id {ids} is already waiting in the spool with a different record; nothing was spooled",
        [{"field": f"records[{i}].event_id" if len(items) > 1 else "event_id", "message": "pending with a different record"}
         for i in positions],
    )


def _named_records(exc: TlogError, n: int) -> dict[int, list[dict[str, Any]]]:
    """The records a 400's details name (`records[3].purpose`), with their own details. Empty if any
    detail names no record: then the error cannot be pinned on some records only. The count of details
    the server did not list is skipped: the records they are about are sent again, and named then."""
    named: dict[int, list[dict[str, Any]]] = {}
    for d in exc.details:
        if "more" in d:
            continue
        m = _RECORD_FIELD.fullmatch(str(d.get("field", "")))
        if m is None or int(m.group(1)) >= n:
            return {}
        named.setdefault(int(m.group(1)), []).append({**d, "field": m.group(2) or ""})
    return named


def _record_error(exc: TlogError, details: list[dict[str, Any]]) -> TlogError:
    """The part of a batch's error that is about one record, with its fields named as in that record."""
    return type(exc)(describe("the log rejected the record", details), details, code=exc.code)


def _log_retry(attempt: int, n: int, exc: TlogError) -> None:
    # One warning per outage, not one per attempt.
    (log.warning if attempt == 0 else log.debug)("cannot deliver %d records yet, retrying: %s", n, exc)


def _settle(future: asyncio.Future[T], result: T | None = None, *, exc: BaseException | None = None) -> None:
    if future.done():  # the caller gave up waiting (cancelled)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    # A hot-path caller may never await its future; its failure is reported through logging and
    # on_error, so asyncio need not warn "exception was never retrieved".
    if not future.cancelled():
        future.exception()


def _call(callback: Callable[..., object] | None, *args: Any) -> None:
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        log.exception("a batch logger callback failed")
