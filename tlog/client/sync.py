"""SyncTlogClient: TlogClient for synchronous code (a WSGI service, a script, a Celery task).

    with SyncTlogClient(url, token, vkey=VKEY) as log:
        if log.use(record).refused:
            return  # the artist opted out: do not proceed

It owns one event loop on a daemon thread and runs each call there, so any number of the caller's threads
may share one client (and its connection pool); each call blocks only its own thread. Answers and errors
are TlogClient's, receipts verified the same way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Mapping, Sequence, TypeVar

from .client import LogInfo, PreferenceChange, TlogClient, UseReceipt, VerifiedReceipt

T = TypeVar("T")


class SyncTlogClient:
    """Blocking calls onto a TlogClient; takes TlogClient's arguments. Use it as a context manager, or call
    `close()`. Opening checks the verifier key against the log, as TlogClient does."""

    def __init__(self, url: str, token: str, *, vkey: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tlog-client", daemon=True)
        self._thread.start()
        try:
            self._client = self._run(self._open(url, token, vkey, options))
        except BaseException:
            self._stop()
            raise

    async def _open(self, url: str, token: str, vkey: str, options: dict[str, Any]) -> TlogClient:
        return await TlogClient(url, token, vkey=vkey, **options).__aenter__()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def use(self, record: Mapping[str, Any]) -> UseReceipt:
        """TlogClient.use: log one use; check `.refused` before going ahead."""
        return self._run(self._client.use(record))

    def log_many(self, records: Sequence[Mapping[str, Any]]) -> list[UseReceipt]:
        return self._run(self._client.log_many(records))

    def receipt(self, index: int, *, leaf_hash: bytes | None = None) -> VerifiedReceipt:
        return self._run(self._client.receipt(index, leaf_hash=leaf_hash))

    def get_preferences(self, artist_id: str) -> dict[str, Any]:
        return self._run(self._client.get_preferences(artist_id))

    def set_preferences(self, artist_id: str, preferences: Mapping[str, Any]) -> PreferenceChange:
        return self._run(self._client.set_preferences(artist_id, preferences))

    def log_info(self) -> LogInfo:
        return self._run(self._client.log_info())

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.close())
        self._stop()

    def _stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncTlogClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
