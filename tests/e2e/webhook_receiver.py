"""A real webhook receiver for the tests: aiohttp on a loopback port, in a thread with its own event loop.

It checks every request as docs/OPERATIONS.md tells a receiver to (`verify` is the snippet printed
there, word for word), records what arrived, and answers as the test says: a status, or a hang until
the receiver stops."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


# --- the snippet of docs/OPERATIONS.md ---------------------------------------------------------------
def verify(secret: bytes, headers, body: bytes, tolerance: int = 300) -> bool:
    """True if `body` was signed by tlog with `secret` less than `tolerance` seconds ago."""
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # too old (or from the future): a replay
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())
# --- end of the snippet ------------------------------------------------------------------------------


HANG = -1  # an answer: keep the request open until the receiver stops


@dataclass
class Delivery:
    id: str
    timestamp: int
    body: bytes
    valid: bool
    at: float  # time.monotonic() when it arrived
    status: int = 0  # the answer, once given

    @property
    def event(self) -> dict[str, Any]:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """`answer(delivery, n)` gives the status for the n-th request (0-based), or HANG."""

    secret: bytes
    port: int
    answer: Callable[[Delivery, int], int] = lambda d, n: 200
    delay: float = 0.0  # seconds taken before answering (a slow receiver)
    deliveries: list[Delivery] = field(default_factory=list)
    hanging: int = 0  # requests held open right now
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _release: asyncio.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/tlog"

    def start(self) -> "Receiver":
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10), "the receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            assert self._thread is not None
            self._thread.join(10)
            self._loop = None

    def accepted(self) -> list[Delivery]:
        """The deliveries answered 2xx, in arrival order."""
        with self._lock:
            return [d for d in self.deliveries if d.status // 100 == 2]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        """Waits until `count` distinct event ids were accepted; returns the accepted deliveries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.accepted()
            if len({d.id for d in got}) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len({d.id for d in self.accepted()})} of {count} events arrived in {timeout} s: "
                             f"{[d.id for d in self.deliveries]}")

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main(ready))
        self._loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._release = asyncio.Event()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hooks/tlog", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        ready.set()
        await self._stopping.wait()
        self._release.set()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        d = Delivery(request.headers["webhook-id"], int(request.headers["webhook-timestamp"]), body,
                     verify(self.secret, request.headers, body), time.monotonic())
        with self._lock:
            n = len(self.deliveries)
            self.deliveries.append(d)
        status = self.answer(d, n)
        if status == HANG:
            self.hanging += 1
            assert self._release is not None
            await self._release.wait()
            self.hanging -= 1
            status = 503
        elif self.delay:
            await asyncio.sleep(self.delay)
        d.status = status
        return web.Response(status=status)
