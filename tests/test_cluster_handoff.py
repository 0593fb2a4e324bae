"""The intake table (tlog/cluster/handoff.py) against a real PostgreSQL: answers reach their callers only
once the handler is done, a sequencer that lost the lease leaves its rows to the next one, a front end
with no sequencer or no database answers 503 and says whether anything may have been logged, and the
table empties itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tlog.cluster.handoff import Inbox, Outbox, serve
from tlog.cluster.lease import NOT_LEADER
from tlog.errors import StorageError, TlogError, Unavailable, ValidationError
from tlog.server.errors import http_status
from tlog.store.postgres_schema import migrate
from tests.postgres import pg_dsn, pg_server  # noqa: F401  (fixtures)
from tests.tcpproxy import Proxy


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        migrate(conn, 0)  # the log's schema, the cluster's tables with it
    return pg_dsn


def rows(dsn: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, claimed, answer IS NOT NULL FROM handoff ORDER BY id").fetchall()


async def started(outbox: Outbox) -> Outbox:
    await outbox.start()
    return outbox


@pytest.fixture
async def front(dsn: str) -> AsyncIterator[Outbox]:
    outbox = await started(Outbox(dsn, wait_s=3, poll_s=0.2))
    yield outbox
    await outbox.close()


class Sequencer:
    """A sequencer's loop around a handler: `serve` on an Inbox of `epoch`, until stopped."""

    def __init__(self, dsn: str, epoch: int, handle: Any) -> None:
        self.inbox = Inbox(dsn, epoch)
        self.task = asyncio.create_task(serve(self.inbox, handle, poll_s=0.2))

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.inbox.close()


async def test_every_caller_gets_its_own_answer_and_the_table_empties(front: Outbox, dsn: str) -> None:
    seen: list[Any] = []

    async def handle(item: Any) -> Any:
        seen.append(item)
        await asyncio.sleep(0.01)
        return {"twice": item["n"] * 2}

    seq = Sequencer(dsn, 1, handle)
    try:
        answers = await asyncio.gather(*(front.ask({"n": n}) for n in range(300)))
    finally:
        await seq.stop()
    assert answers == [{"twice": n * 2} for n in range(300)]
    assert sorted(i["n"] for i in seen) == list(range(300))  # each done once
    assert front.stats.rows < 300 // 4  # callers of the same moment share a row (and an insert)
    assert front.stats.answered == front.stats.rows and front.waiting == 0
    assert rows(dsn) == []  # a front end takes its answers with their rows


async def test_an_answer_comes_only_once_the_handler_is_done(front: Outbox, dsn: str) -> None:
    done = asyncio.Event()

    async def handle(item: Any) -> Any:
        await done.wait()  # the batch is not committed yet
        return "logged"

    seq = Sequencer(dsn, 1, handle)
    try:
        ask = asyncio.create_task(front.ask({"n": 1}))
        await asyncio.sleep(0.5)
        assert not ask.done()
        assert [r[1:] for r in rows(dsn)] == [(1, False)]  # claimed by epoch 1, not answered
        done.set()
        assert await asyncio.wait_for(ask, 2) == "logged"
    finally:
        await seq.stop()


async def test_a_handlers_error_reaches_the_caller_as_it_was_raised(front: Outbox, dsn: str) -> None:
    async def handle(item: Any) -> Any:
        if item == "bad":
            raise ValidationError("1 problem(s); nothing was logged", [{"field": "records[0].purpose", "message": "unknown"}])
        if item == "busy":
            raise StorageError("the disk is full", code="storage")
        return "ok"

    seq = Sequencer(dsn, 1, handle)
    try:
        ok, bad, busy = await asyncio.gather(*(front.ask(i) for i in ("ok", "bad", "busy")), return_exceptions=True)
    finally:
        await seq.stop()
    assert ok == "ok"
    assert isinstance(bad, TlogError) and (http_status(bad), bad.code, bad.message) == (400, "invalid_input", "1 problem(s); nothing was logged")
    assert bad.details == [{"field": "records[0].purpose", "message": "unknown"}]
    assert isinstance(busy, Unavailable) and http_status(busy) == 503 and busy.message == "the disk is full"


async def test_rows_left_by_a_deposed_sequencer_are_done_again_by_the_next(front: Outbox, dsn: str) -> None:
    done: dict[int, list[Any]] = {1: [], 2: []}

    def handler(epoch: int) -> Any:
        async def handle(item: Any) -> Any:
            done[epoch].append(item)
            if epoch == 1:
                raise StorageError("refused by the fence", code=NOT_LEADER)
            return f"done by {epoch}"
        return handle

    first = Sequencer(dsn, 1, handler(1))
    asks = [asyncio.create_task(front.ask(n)) for n in range(5)]
    await asyncio.sleep(0.5)
    await first.stop()
    assert done[1] and not any(a.done() for a in asks)  # taken, left unanswered
    assert first.inbox.stats.left == first.inbox.stats.rows > 0
    second = Sequencer(dsn, 2, handler(2))
    try:
        assert await asyncio.wait_for(asyncio.gather(*asks), 3) == ["done by 2"] * 5
    finally:
        await second.stop()
    assert sorted(done[2]) == list(range(5))
    assert second.inbox.stats.retaken == first.inbox.stats.rows


async def test_a_late_answer_of_a_deposed_sequencer_changes_nothing(dsn: str) -> None:
    front = await started(Outbox(dsn, wait_s=3, poll_s=0.2))
    old, new = Inbox(dsn, 1), Inbox(dsn, 2)
    try:
        ask = asyncio.create_task(front.ask("x"))
        await asyncio.sleep(0.3)
        (row,) = await old.claim(10)
        (again,) = await new.claim(10)  # the next term takes it back
        assert again.id == row.id and await old.claim(10) == []  # and the old one cannot take it again
        await new.answer([(row.id, row.node, orjson.dumps([{"ok": "new"}]))])
        await old.answer([(row.id, row.node, orjson.dumps([{"ok": "old"}]))])
        assert await asyncio.wait_for(ask, 2) == "new"
    finally:
        await old.close()
        await new.close()
        await front.close()


async def test_without_a_sequencer_the_request_is_withdrawn_and_the_caller_told_nothing_was_logged(dsn: str) -> None:
    front = await started(Outbox(dsn, wait_s=0.5, poll_s=0.1))
    try:
        with pytest.raises(Unavailable) as no:
            await front.ask("x")
    finally:
        await front.close()
    assert "nothing of it was logged" in no.value.message and no.value.retry_after == 1
    assert front.stats.withdrawn == 1 and rows(dsn) == []


async def test_a_request_taken_and_not_answered_in_time_may_have_been_logged(dsn: str) -> None:
    front = await started(Outbox(dsn, wait_s=0.8, poll_s=0.1))
    inbox = Inbox(dsn, 1)
    try:
        ask = asyncio.create_task(front.ask("x"))
        await asyncio.sleep(0.3)
        assert len(await inbox.claim(10)) == 1  # and never answered
        with pytest.raises(Unavailable) as maybe:
            await ask
    finally:
        await inbox.close()
        await front.close()
    assert "may have been logged" in maybe.value.message
    assert front.stats.unanswered == 1 and rows(dsn) == []  # nobody does it after its caller was told


async def test_an_answer_without_its_notification_is_found_by_the_poll(front: Outbox, dsn: str) -> None:
    import psycopg

    ask = asyncio.create_task(front.ask("x"))
    await asyncio.sleep(0.3)
    with psycopg.connect(dsn) as conn:  # answered as a sequencer would, but nobody is notified
        conn.execute("UPDATE handoff SET claimed = 1, answer = %s", (orjson.dumps([{"ok": "polled"}]),))
    t0 = time.monotonic()
    assert await asyncio.wait_for(ask, 2) == "polled"
    assert time.monotonic() - t0 < 0.2 + 0.3


@pytest.mark.parametrize("how", ["cut", "hang"])
async def test_a_front_end_cut_off_from_postgresql_answers_503_then_recovers(dsn: str, pg_server: Any, how: str) -> None:
    proxy = Proxy(pg_server.port)
    front = await started(Outbox(proxy.dsn(dsn), wait_s=3, poll_s=0.1, link_s=1.0))

    async def handle(item: Any) -> Any:
        return item

    seq = Sequencer(dsn, 1, handle)
    try:
        assert await front.ask("before") == "before"
        getattr(proxy, how)()
        t0 = time.monotonic()
        with pytest.raises(Unavailable) as down:
            await front.ask("during")
        assert time.monotonic() - t0 < 1.0 + 0.5  # within link_s, not TCP's minutes
        assert down.value.retry_after == 1
        proxy.heal()
        assert await asyncio.wait_for(front.ask("after"), 5) == "after"
    finally:
        await seq.stop()
        await front.close()
        proxy.close()


async def test_the_sweeper_removes_rows_a_dead_front_end_left(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO handoff (node, request, deadline) VALUES "
                     "('gone', '[]', clock_timestamp() - interval '2 minutes'), ('alive', '[]', clock_timestamp() + interval '1 minute')")
    inbox = Inbox(dsn, 1)
    try:
        assert await inbox.sweep() == 1
    finally:
        await inbox.close()
    assert len(rows(dsn)) == 1
