"""Work a server does beside its requests (witnessing, notifications, key reloads): an asyncio task that
starts and ends with the aiohttp application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
# What aiohttp's `app.cleanup_ctx` takes: code before its `yield` runs at start, after it at cleanup.
CleanupContext = Callable[[web.Application], AsyncGenerator[None, None]]


def task_context(name: str, setup: Callable[[], Awaitable[T]], run: Callable[[T], Coroutine[Any, Any, None]],
                 teardown: Callable[[T], None] = lambda _: None) -> CleanupContext:
    """An aiohttp cleanup context: `setup()` before the server serves (a failure stops the start), then
    `run(value)` as a task until the server stops, when it is cancelled and `teardown(value)` follows."""

    async def context(_app: web.Application) -> AsyncGenerator[None, None]:
        value = await setup()
        task = asyncio.create_task(run(value), name=name)
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            teardown(value)

    return context
