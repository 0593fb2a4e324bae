"""The intake table: a front end hands its writes to the sequencer durably, and gets their answers.

Table `handoff` (made by store/postgres_schema.py), one row per group of requests a front end sends at once: `node` (the front end waiting,
whose NOTIFY channel gets the answer), `request` (JSON: a list of items), `deadline` (by PostgreSQL's
clock: when the front end stops waiting), `claimed` (the epoch of the sequencer that took it) and
`answer` (JSON: one answer per item, `{"ok": value}` or `{"error": {...}}`).

A front end (`Outbox`) gathers the requests of its callers while its previous insert is under way, then
inserts them as one row and notifies the sequencer's channel in the same statement; it waits for a
notification on its own channel (or its poll, every `poll_s`, in case one was missed) and takes its
answers with the rows: `DELETE … WHERE answer IS NOT NULL RETURNING answer`. The sequencer (`Inbox`,
`serve`) claims rows with `FOR UPDATE SKIP LOCKED`, hands every item to its handler, which returns once
the item's batch is committed in the log, and writes the answers of many rows, with a notification to
each waiting front end, in one transaction.

Invariants, and what keeps them:
- An answer is written only after the batch holding its records committed (`serve` writes what the
  handler returned, and the handler returns only then). So a front end that reads an answer may tell
  its caller "logged".
- A row stays while its front end waits for it: only that front end deletes it (taking its answer, or
  withdrawing it at its deadline), or the sweeper, SWEEP_AFTER_S after its deadline.
- A row taken by a sequencer that lost the lease before answering it is taken again by the next one
  (`claimed < epoch`) and done again. A use already committed is found by its event_id and answered as
  the duplicate it is, with its first index, so nothing is logged twice, whichever front end and
  whichever sequencer saw it. The other kinds of request, done again in that window (after the batch's
  commit, before its answer): a preference change adds a second `preference` leaf with the same
  preferences (a merge patch applied twice gives what it gave once); a content's artists, set again,
  change nothing and add no leaf.
- A withdrawn row is one no sequencer had claimed: nothing of it was logged, and the caller is told so.
  A row claimed and not answered by the deadline may have been logged: the caller is told to send it
  again, which its event_ids make safe.
- Inserts and answers commit with `synchronous_commit` off: neither tells a caller "logged" by itself.
  Only an answer does, written after its batch committed synchronously, and PostgreSQL makes its log
  durable in order, so that commit made the row before it durable too. A row lost in a crash was never
  answered: its caller gets 503 and sends it again.
- The table stays small: a row lives from its request to its answer, and the sweeper removes what a
  front end that died left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import sql

from ..errors import TlogError, Unavailable
from ..server.errors import error_type, http_status
from .lease import NOT_LEADER
from ..store.postgres import link_options
from .links import alive, reason, shut, unreachable, within

CHANNEL = "tlog_handoff"  # where front ends tell the sequencer that a request is waiting
WAIT_S = 10.0  # how long a front end waits for an answer before it answers 503
POLL_S = 0.5  # how often answers (front end) and requests (sequencer) are looked for without a notification
LINK_S = 5.0  # how long any one statement of the cluster's may take before PostgreSQL counts as cut off
MAX_ITEMS = 256  # requests a front end puts in one row
MAX_ROWS = 64  # rows a sequencer works on at once
SWEEP_S = 30.0  # how often the sequencer sweeps
SWEEP_AFTER_S = 60.0  # how long after its deadline a row left by a dead front end is swept
log = logging.getLogger("tlog.cluster")

PUT = f"""
WITH put AS (
    INSERT INTO handoff (node, request, deadline)
    VALUES (%(node)s, %(request)s, clock_timestamp() + make_interval(secs => %(wait)s))
    RETURNING id
)
SELECT id, pg_notify('{CHANNEL}', '') FROM put
"""
TAKE_ANSWERS = "DELETE FROM handoff WHERE id = ANY(%(ids)s) AND answer IS NOT NULL RETURNING id, answer"
WITHDRAW = "DELETE FROM handoff WHERE id = %(id)s RETURNING claimed, answer"
CLAIM = """
UPDATE handoff SET claimed = %(epoch)s
  FROM (SELECT id, claimed FROM handoff
         WHERE answer IS NULL AND (claimed IS NULL OR claimed < %(epoch)s) AND deadline > clock_timestamp()
         ORDER BY id LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) AS was
 WHERE handoff.id = was.id
RETURNING handoff.id, handoff.node, handoff.request, was.claimed
"""
ANSWER = """
UPDATE handoff SET answer = a.answer
  FROM unnest(%(ids)s::bigint[], %(answers)s::bytea[]) AS a(id, answer)
 WHERE handoff.id = a.id AND handoff.answer IS NULL
"""
NOTIFY = "SELECT pg_notify(channel, '') FROM unnest(%(channels)s::text[]) AS channel"
SWEEP = "DELETE FROM handoff WHERE deadline < clock_timestamp() - make_interval(secs => %(after)s) RETURNING id"


def channel_of(node: str) -> str:
    return f"tlog_answer_{node}"


# --- answers on the wire ---------------------------------------------------------------------------------


def encode_error(exc: TlogError) -> dict[str, Any]:
    out = {"status": http_status(exc), "code": exc.code, "message": exc.message, "details": exc.details}
    retry = getattr(exc, "retry_after", None)
    return out if retry is None else {**out, "retry_after": retry}


def decode_error(e: dict[str, Any]) -> TlogError:
    """The error a handler raised, as the front end's caller gets it (the same status, code, message and
    details; a 503 or a 425 keeps its Retry-After)."""
    retry = {"retry_after": e["retry_after"]} if "retry_after" in e else {}
    return error_type(e["status"])(e["message"], e["details"], e["code"], **retry)


# --- the front end -------------------------------------------------------------------------------------


@dataclass
class OutboxStats:
    rows: int = 0  # rows inserted
    items: int = 0  # requests sent in them
    answered: int = 0
    withdrawn: int = 0  # requests in rows no sequencer took by their deadline
    unanswered: int = 0  # requests in rows taken and not answered by their deadline
    failed: int = 0  # requests refused because PostgreSQL did not answer


@dataclass
class _Waiting:
    futures: list[asyncio.Future[Any]]
    deadline: float  # loop time


class Outbox:
    """A front end's side: `ask(item)` returns the item's answer once a sequencer has written it, or
    raises the handler's error, or Unavailable (503, Retry-After) if PostgreSQL cannot be reached or no
    answer came by the deadline. Start with `start()` inside the event loop."""

    def __init__(self, dsn: str, *, wait_s: float = WAIT_S, poll_s: float = POLL_S, link_s: float = LINK_S,
                 max_items: int = MAX_ITEMS) -> None:
        self.dsn = dsn
        self.node = secrets.token_hex(8)
        self.wait_s, self.poll_s, self.link_s, self.max_items = wait_s, poll_s, link_s, max_items
        self.stats = OutboxStats()
        self._queue: list[tuple[Any, asyncio.Future[Any]]] = []
        self._waiting: dict[int, _Waiting] = {}
        self._conns: dict[str, psycopg.AsyncConnection[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._queued = asyncio.Event()
        self._notified = asyncio.Event()
        self._tasks = [asyncio.create_task(f(), name=f"tlog-outbox-{f.__name__}")
                       for f in (self._send_loop, self._listen_loop, self._collect_loop)]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        gone = Unavailable("this front end is shutting down; send the request again", retry_after=1)
        for _, fut in self._queue:
            _settle(fut, error=gone)
        for w in self._waiting.values():
            for fut in w.futures:
                _settle(fut, error=gone)
        for name in list(self._conns):
            await _drop(self._conns, name)

    async def ask(self, item: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        self._queued.set()
        return await fut

    @property
    def waiting(self) -> int:
        """Requests sent or queued and not answered yet."""
        return len(self._queue) + sum(len(w.futures) for w in self._waiting.values())

    # --- sending -------------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:  # callers that came during an insert go in the next row, together
                group, self._queue = self._queue[: self.max_items], self._queue[self.max_items :]
                await self._send(group)

    async def _send(self, group: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        request = orjson.dumps([item for item, _ in group])
        try:
            row = await self._fetchone("put", PUT, {"node": self.node, "request": request, "wait": self.wait_s})
        except (psycopg.Error, TimeoutError) as exc:
            self.stats.failed += len(group)
            err = unreachable(exc, "the request could not be handed to the sequencer") \
                if isinstance(exc, psycopg.Error) else self._timed_out("hand the request to the sequencer")
            for _, fut in group:
                _settle(fut, error=err)
            return
        assert row is not None
        self.stats.rows += 1
        self.stats.items += len(group)
        self._waiting[row[0]] = _Waiting([fut for _, fut in group], asyncio.get_running_loop().time() + self.wait_s)

    # --- answers -------------------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        """Sets `_notified` at each notification on this front end's channel; the poll covers the gaps
        while it connects again."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, **link_options(self.link_s, application="tlog front end"))
                try:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel_of(self.node))))
                    self._notified.set()  # what was answered while nobody listened
                    async for _ in conn.notifies():
                        self._notified.set()
                finally:
                    await conn.close()
            except psycopg.Error:
                await asyncio.sleep(self.poll_s)

    async def _collect_loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the cancellation of `close`
            # when the event is set at the same moment, and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._notified.wait()
            self._notified.clear()
            if self._waiting:
                await self._collect()
            await self._expire()

    async def _collect(self) -> None:
        try:
            rows = await self._fetchall("get", TAKE_ANSWERS, {"ids": list(self._waiting)})
        except (psycopg.Error, TimeoutError):
            return  # still waiting: the next poll tries again, and deadlines still apply
        for row_id, answer in rows:
            waiting = self._waiting.pop(row_id, None)
            if waiting is not None:
                self._answer(waiting, answer)

    def _answer(self, waiting: _Waiting, answer: bytes) -> None:
        self.stats.answered += 1
        for fut, a in zip(waiting.futures, orjson.loads(answer), strict=True):
            if "ok" in a:
                _settle(fut, result=a["ok"])
            else:
                _settle(fut, error=decode_error(a["error"]))

    async def _expire(self) -> None:
        now = asyncio.get_running_loop().time()
        for row_id in [i for i, w in self._waiting.items() if w.deadline <= now]:
            waiting = self._waiting.pop(row_id)
            try:
                row = await self._fetchone("get", WITHDRAW, {"id": row_id})
            except (psycopg.Error, TimeoutError):
                row = (-1, None)  # unknown: PostgreSQL did not say whether a sequencer had it
            if row is not None and row[1] is not None:  # answered just in time
                self._answer(waiting, row[1])
                continue
            if row is None or row[0] is None:
                self.stats.withdrawn += len(waiting.futures)
                err = Unavailable(f"no sequencer took the request within {self.wait_s:g} s (is one elected?); "
                                  "nothing of it was logged: send it again", retry_after=1)
            else:
                self.stats.unanswered += len(waiting.futures)
                err = Unavailable(f"the sequencer did not answer within {self.wait_s:g} s; the request may have "
                                  "been logged: send it again (its event_ids make that safe)", retry_after=1)
            for fut in waiting.futures:
                _settle(fut, error=err)

    # --- connections ---------------------------------------------------------------------------------

    async def _fetchone(self, name: str, query: str, params: dict[str, Any]) -> Any:
        rows = await self._fetchall(name, query, params)
        return rows[0] if rows else None

    async def _fetchall(self, name: str, query: str, params: dict[str, Any]) -> list[Any]:
        """Runs `query` on connection `name` (made on first use, dropped on any failure), within link_s."""
        try:
            conn = await _conn(self._conns, name, self.dsn, self.link_s, "tlog front end")
            return await within(conn, _fetch(conn, query, params), self.link_s)
        except (psycopg.Error, TimeoutError):
            await _drop(self._conns, name)
            raise

    def _timed_out(self, what: str) -> Unavailable:
        return Unavailable(f"could not {what}: the log's database did not answer within {self.link_s:g} s; try "
                           "again in a moment", retry_after=1)


def _settle(fut: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


# --- the sequencer -------------------------------------------------------------------------------------


@dataclass
class Claimed:
    id: int
    node: str
    items: list[Any]


@dataclass
class InboxStats:
    rows: int = 0  # rows claimed
    retaken: int = 0  # of which a sequencer before this one had claimed (and not answered)
    items: int = 0
    answered: int = 0  # rows answered
    left: int = 0  # rows left unanswered: this sequencer lost the lease while doing them
    swept: int = 0
    first_answer_at: float | None = None  # monotonic time of this term's first answer


class Inbox:
    """The sequencer's side, for one term: `epoch` is the lease's (lease.Term)."""

    def __init__(self, dsn: str, epoch: int, *, link_s: float = LINK_S) -> None:
        self.dsn, self.epoch, self.link_s = dsn, epoch, link_s
        self.stats = InboxStats()
        self._conns: dict[str, psycopg.AsyncConnection[Any]] = {}

    async def claim(self, limit: int) -> list[Claimed]:
        rows = await self._fetch("claim", CLAIM, {"epoch": self.epoch, "limit": limit})
        out = sorted((Claimed(i, node, orjson.loads(req)) for i, node, req, _ in rows), key=lambda c: c.id)
        self.stats.rows += len(out)
        self.stats.retaken += sum(was is not None for *_, was in rows)
        self.stats.items += sum(len(c.items) for c in out)
        return out

    async def wait(self, timeout: float) -> None:
        """Returns at the next notification that a request is waiting, or after `timeout`."""
        conn = self._conns.get("listen")
        try:
            if conn is None:
                conn = await self._conn("listen")
                await within(conn, conn.execute(f"LISTEN {CHANNEL}"), self.link_s)
                return  # requests may have come while nobody listened: look now
            async for _ in conn.notifies(timeout=timeout, stop_after=1):
                pass
        except (psycopg.Error, TimeoutError):
            await _drop(self._conns, "listen")
            raise

    async def answer(self, answers: list[tuple[int, str, bytes]]) -> None:
        """Writes the answers (row id, front end, answer) and wakes their front ends, in one transaction."""
        conn = await self._conn("answer")

        async def write() -> None:
            async with conn.transaction():
                await conn.execute(ANSWER, {"ids": [a[0] for a in answers], "answers": [a[2] for a in answers]})
                await conn.execute(NOTIFY, {"channels": sorted({channel_of(a[1]) for a in answers})})

        try:
            await within(conn, write(), self.link_s)
        except (psycopg.Error, TimeoutError):
            await _drop(self._conns, "answer")
            raise
        self.stats.answered += len(answers)
        if self.stats.first_answer_at is None:
            self.stats.first_answer_at = time.monotonic()

    async def sweep(self) -> int:
        swept = len(await self._fetch("claim", SWEEP, {"after": SWEEP_AFTER_S}))
        self.stats.swept += swept
        return swept

    async def close(self) -> None:
        for name in list(self._conns):
            await _drop(self._conns, name)

    async def _fetch(self, name: str, query: str, params: dict[str, Any]) -> list[Any]:
        conn = await self._conn(name)
        try:
            return await within(conn, _fetch(conn, query, params), self.link_s)
        except (psycopg.Error, TimeoutError):
            await _drop(self._conns, name)
            raise

    async def _conn(self, name: str) -> psycopg.AsyncConnection[Any]:
        return await _conn(self._conns, name, self.dsn, self.link_s, "tlog sequencer")


async def _conn(conns: dict[str, psycopg.AsyncConnection[Any]], name: str, dsn: str, link_s: float,
                application: str) -> psycopg.AsyncConnection[Any]:
    """Connection `name` of the cluster's (autocommit, synchronous_commit off: see the module docstring),
    made again if it died while idle."""
    conn = conns.get(name)
    if conn is not None and not (name == "listen" or alive(conn)):
        await _drop(conns, name)
        conn = None
    if conn is None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, options="-c synchronous_commit=off",
                                                     **link_options(link_s, application=application))
        conns[name] = conn
    return conn


async def _fetch(conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any]) -> list[Any]:
    cur = await conn.execute(query, params)
    return await cur.fetchall() if cur.description is not None else []


async def _drop(conns: dict[str, psycopg.AsyncConnection[Any]], name: str) -> None:
    conn = conns.pop(name, None)
    if conn is not None:
        shut(conn)  # closing sends a goodbye, which a dead route would hold up
        try:
            await conn.close()
        except psycopg.Error:
            pass


Handler = Callable[[Any], Awaitable[Any]]


@dataclass
class _Serving:
    inbox: Inbox
    handle: Handler
    answers: asyncio.Queue[tuple[int, str, bytes]] = field(default_factory=asyncio.Queue)
    busy: set[asyncio.Task[None]] = field(default_factory=set)


async def serve(inbox: Inbox, handle: Handler, *, max_rows: int = MAX_ROWS, poll_s: float = POLL_S) -> None:
    """The sequencer's loop, until cancelled (when its term ends): claims rows, runs `handle(item)` for
    every item of every row at once (the handler groups them into batches), and answers each row once
    all its items are done. A handler's TlogError is the item's answer, except NOT_LEADER: then the row
    is left for the next sequencer, which does it again."""
    s = _Serving(inbox, handle)
    writer = asyncio.create_task(_write_answers(s), name="tlog-inbox-answers")
    swept = time.monotonic()
    try:
        while True:
            if len(s.busy) >= max_rows:
                await asyncio.wait(s.busy, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                rows = await inbox.claim(max_rows - len(s.busy))
                if time.monotonic() - swept > SWEEP_S:
                    await inbox.sweep()
                    swept = time.monotonic()
                if not rows:
                    await inbox.wait(poll_s)
            except (psycopg.Error, TimeoutError) as exc:
                log.warning("cannot take requests from the intake table: %s", reason(exc))
                await asyncio.sleep(poll_s)
                continue
            for row in rows:
                task = asyncio.create_task(_do_row(s, row))
                s.busy.add(task)
                task.add_done_callback(s.busy.discard)
    finally:
        writer.cancel()
        for t in [*s.busy, writer]:
            t.cancel()
        await asyncio.gather(writer, *s.busy, return_exceptions=True)


class _Deposed(Exception):
    pass


async def _do_row(s: _Serving, row: Claimed) -> None:
    try:
        answers = await asyncio.gather(*(_do_item(s.handle, item) for item in row.items))
    except _Deposed:
        s.inbox.stats.left += 1
        return
    await s.answers.put((row.id, row.node, orjson.dumps(answers)))


async def _do_item(handle: Handler, item: Any) -> dict[str, Any]:
    try:
        return {"ok": await handle(item)}
    except TlogError as exc:
        if exc.code == NOT_LEADER:
            raise _Deposed() from exc
        return {"error": encode_error(exc)}


async def _write_answers(s: _Serving) -> None:
    """Writes the answers ready, many rows a transaction; a failed write is tried again (the front ends
    wait until their deadlines), so no committed batch goes unanswered while the term lasts."""
    while True:
        group = [await s.answers.get()]
        while not s.answers.empty() and len(group) < MAX_ROWS:
            group.append(s.answers.get_nowait())
        while True:
            try:
                await s.inbox.answer(group)
                break
            except (psycopg.Error, TimeoutError) as exc:
                log.warning("cannot write answers to the intake table (trying again): %s", reason(exc))
                await asyncio.sleep(POLL_S)
