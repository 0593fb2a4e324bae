"""Long reads off the event loop: an audit page (a thousand inclusion proofs and leaves) or a filtered
listing whose filter matches nothing (SQLite walks the artist's whole history to say so) would hold
the loop for tens or hundreds of milliseconds, and every other request, `/checkpoint` included, would
wait that long. They run here instead, on threads of their own.

A store is one connection with caches that are not meant to be shared (sqlite.py: "use one per
thread"), so each thread opens its own (`open_store`; for SQLite `Backend.sharing_nodes`: a connection
to the same file sharing the reader's node cache, which the sequencer keeps warm). SQLite releases the GIL while it
steps, and the server switches threads every half millisecond (app.GIL_SWITCH_INTERVAL), so the loop
keeps answering while a read runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..store.base import Backend

T = TypeVar("T")
# One long read at a time: each thread more takes the GIL from the loop more often (scripts/reliability,
# section 6: /checkpoint's p99 delay was 46 ms with two threads, 34 ms with one, on a shared machine).
READ_THREADS = 1


class ReadPool:
    def __init__(self, open_store: Callable[[], Backend], threads: int = READ_THREADS) -> None:
        self._open_store = open_store
        self._local = threading.local()
        self._stores: list[Backend] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="tlog-read")

    async def run(self, fn: Callable[[Backend], T]) -> T:
        """fn(store) on a read thread, with that thread's own connection."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[Backend], T]) -> T:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = self._open_store()
            with self._lock:
                self._stores.append(store)
        return fn(store)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for store in self._stores:
                store.close()
            self._stores.clear()
