"""`tlog serve --notify-url URL --notify-secret-file F`: the platform's notification system is told of
each event of events.py, at least once, in order, signed, without touching ingest.

Why the notifier tails the log instead of keeping an outbox of its own: every event already follows from
a committed entry (or, for `policy.effective`, from the policy schedule and the clock), durably and in
order. So all it keeps is a cursor (store: `notify_cursor`, every event of an entry below `done_before`
was delivered; `notify_effective`, the policies whose `policy.effective` event was). Ingest writes
nothing more and waits for nothing: a batch's transaction is the same with or without webhooks, and the
notifier reads committed rows on a connection of its own, from a thread of its own.

- At least once: the cursor moves only after the receiver answered 2xx, and is saved every SAVE_EVERY
  while it moves (and when the server stops). A crash in between makes the same events, with the same
  ids and bytes, be delivered again after the restart.
- Retries, forever: a receiver that is down, answers anything but 2xx, or takes longer than TIMEOUT gets
  the same event again after RETRY_BASE·2ⁿ seconds (at most RETRY_CAP), of which a random part up to
  half is taken off; the events after it wait, so the order holds.
- The first start begins at the log's size: what happened before webhooks were configured is not news.
- The secret is read once, at start, and never logged; logs name the receiver by scheme, host and port
  only (a path or query may hold a token).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from yarl import URL

from .background import CleanupContext, task_context
from .backoff import Backoff, parse_retry_after
from .errors import TlogError, ValidationError
from .events import EFFECTIVE, EVENT_DECISIONS, EVENT_TYPES, Event, Schedule, due_effective, effective_event, entry_event, headers
from .sequencer import read_schedule
from .store import open_store
from .store.base import LogStore, NotifyStore

if TYPE_CHECKING:
    from .store.postgres import Fence

RETRY_BASE = 0.5  # seconds before the first retry (0.25–0.5 with the jitter)
RETRY_CAP = 300.0  # the longest wait between two tries
TIMEOUT = 10.0  # seconds a receiver has to answer one delivery
POLL = 0.25  # seconds between looks at the log when caught up: also how late a `policy.effective` may be
SCAN_ROWS = 4096  # entries read per query, so that each query stays short
SAVE_EVERY = 1.0  # seconds at most between a delivery and the saved cursor
MIN_SECRET = 32  # bytes
RESTART_AFTER = 5.0  # seconds before the notifier starts over after a failure to read the log
log = logging.getLogger("tlog.webhooks")


@dataclass(frozen=True)
class Target:
    """Where events go and the key that signs them."""

    url: str = field(repr=False)
    key: bytes = field(repr=False)

    @property
    def shown(self) -> str:
        """The receiver as logs name it: scheme, host and port."""
        return str(URL(self.url).origin())

    @property
    def in_clear(self) -> bool:
        """Events would cross a network unencrypted (plain http to a host other than this one)."""
        url = URL(self.url)
        return url.scheme == "http" and url.host not in ("127.0.0.1", "::1", "localhost")


def load_target(url: str, secret_file: Path) -> Target:
    """The receiver's URL, checked, and the secret, read once from `secret_file`. A file every user of
    the machine may read (or write) is refused: anyone could then sign events the receiver trusts."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationError("--notify-url must be an http:// or https:// URL with a host name")
    with open(secret_file, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & 0o006:
            raise ValidationError(f"{secret_file} can be read or changed by every user of this machine (mode "
                                  f"{mode & 0o777:o}), who could then sign events your receiver would trust: "
                                  f"make it private first (chmod 600 {secret_file})")
        key = f.read().strip()
    if len(key) < MIN_SECRET:
        raise ValidationError(f"the secret in {secret_file} is {len(key)} bytes long; use at least {MIN_SECRET} "
                              f"(for example: openssl rand -hex 32 > {secret_file})")
    return Target(url, key)


class NotifierStore(LogStore, NotifyStore, Protocol):
    """What the notifier reads (the log's entries and policies) and keeps (its cursor)."""


class Notifier:
    """Delivers the log's events to one receiver. `store` is a connection of its own, used only from the
    notifier's own thread; the event loop only sends."""

    def __init__(self, store: NotifierStore, origin: str, target: Target, *, clock: Callable[[], float] = time.time,
                 retry_base: float = RETRY_BASE, retry_cap: float = RETRY_CAP, timeout: float = TIMEOUT) -> None:
        self.store = store
        self.origin = origin
        self.target = target
        self.clock = clock
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.timeout = timeout
        self._io = ThreadPoolExecutor(1, thread_name_prefix="tlog-notify")
        self._pending: deque[Event] = deque()  # events of entries read but not yet delivered, in order
        self._scanned = 0  # entries below this were read
        self._effective: set[int] = set()  # policy leaves whose `policy.effective` event was delivered
        self._schedule: Schedule = ()
        self._saved: tuple[int, frozenset[int]] | None = None  # the state last saved; None until `_load` read it

    @property
    def done_before(self) -> int:
        """Every event of the entries below this index was delivered."""
        return self._pending[0].index if self._pending else self._scanned

    async def start(self) -> None:
        """Reads where the notifier stopped (on its very first start: the log's size). The server awaits it
        before it serves, so nothing logged after webhooks were configured can be missed."""
        await self._call(self._load)
        log.info("notifications: sending events to %s from log index %d", self.target.shown, self.done_before)

    async def run(self) -> None:
        """Delivers events until cancelled. A failure to read the log (a locked or altered database) is
        logged and the notifier starts over from its saved cursor a few seconds later: it must not die
        quietly."""
        while True:
            try:
                if self._saved is None:
                    await self.start()
                await self._run()
            except TlogError as exc:
                log.error("notifications stopped for %g s: %s", RESTART_AFTER, exc.message)
            except Exception:  # noqa: BLE001 - anything else is a bug: logged in full, and retried
                log.exception("notifications stopped for %g s", RESTART_AFTER)
            self._saved = None  # start over from what was saved
            self._pending.clear()
            await asyncio.sleep(RESTART_AFTER)

    async def _run(self) -> None:
        saver = asyncio.create_task(self._save_every(), name="tlog-notify-save")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                while True:
                    if not self._pending:
                        await self._call(self._scan)
                    event = self._next()
                    if event is None:
                        await asyncio.sleep(POLL)
                        continue
                    await self._deliver(session, event)
                    if event.type == EFFECTIVE:
                        self._effective.add(event.index)
                    else:
                        self._pending.popleft()
        finally:
            saver.cancel()
            await asyncio.gather(saver, return_exceptions=True)

    def close(self) -> None:
        """After `run` was cancelled: saves how far it got and closes the connection."""
        try:
            self._io.submit(self._write_last).result()
        except TlogError as exc:  # the events since the last save will be delivered again: at least once
            log.warning("notifications: could not save how far delivery got: %s", exc.message)
        self._io.shutdown()
        self.store.close()

    # --- reading the log (on the notifier's thread) ---------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _load(self) -> None:
        self._pending.clear()
        self._schedule = read_schedule(self.store)
        state = self.store.notify_state()
        if state is None:  # the first start: policies already in effect are not news
            now = self._now_ms()
            state = (self.store.size(), {i for e, i, _ in self._schedule if e <= now})
            self.store.save_notify_state(*state)
        self._scanned, self._effective = state
        self._saved = self._state()

    def _scan(self) -> None:
        """Reads committed entries until one makes an event or none are left."""
        size = self.store.size()
        while not self._pending and self._scanned < size:
            end = min(size, self._scanned + SCAN_ROWS)
            found = self.store.entries_of(self._scanned, end, EVENT_TYPES, EVENT_DECISIONS)
            if any(e.type == "policy" for e in found):
                self._schedule = read_schedule(self.store)
            for entry in found:
                event = entry_event(self.origin, entry, self._schedule)
                if event is not None:
                    self._pending.append(event)
            self._scanned = end

    def _state(self) -> tuple[int, frozenset[int]]:
        return self.done_before, frozenset(self._effective)

    def _write(self, state: tuple[int, frozenset[int]]) -> None:
        self.store.save_notify_state(*state)

    def _write_last(self) -> None:
        """At stop, after whatever the thread was doing: where the notifier got to."""
        if self._saved is not None:  # never before `_load` read where the notifier was
            self._write(self._state())

    # --- delivering (on the event loop) ----------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _next(self) -> Event | None:
        """The next event: the first pending one, unless a policy took effect before it was logged."""
        due = due_effective(self._schedule, self.done_before, self._effective, self._now_ms())
        if due and (not self._pending or due[0][0] <= self._pending[0].at_ms):
            return effective_event(self.origin, self._schedule, *due[0])
        return self._pending[0] if self._pending else None

    async def _deliver(self, session: aiohttp.ClientSession, event: Event) -> None:
        backoff = Backoff(base=self.retry_base, cap=self.retry_cap, jitter=0.5)
        while True:
            failed, retry_after = await self._attempt(session, event)
            if failed is None:
                return
            delay = backoff.next_delay(retry_after)
            log.warning("notifications: event %s was not delivered to %s (%s); trying again in %.1f s",
                        event.id, self.target.shown, failed, delay)
            await asyncio.sleep(delay)

    async def _attempt(self, session: aiohttp.ClientSession, event: Event) -> tuple[str | None, float | None]:
        """One delivery: (None, None) on a 2xx, else why not and the receiver's Retry-After, if any."""
        signed = headers(self.target.key, event, int(self.clock()))
        try:
            async with session.post(self.target.url, data=event.body, headers=signed, allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    return None, None
                return f"it answered HTTP {resp.status}", parse_retry_after(resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            return f"no answer within {self.timeout:g} s", None
        except (aiohttp.ClientError, OSError) as exc:
            return str(exc) or type(exc).__name__, None

    async def _save_every(self) -> None:
        """Saves the cursor every SAVE_EVERY while it moves: the state is taken here, on the event loop
        that moves it, and written on the notifier's thread."""
        while True:
            await asyncio.sleep(SAVE_EVERY)
            state = self._state()
            if state == self._saved:
                continue
            try:
                await self._call(self._write, state)
                self._saved = state
            except TlogError as exc:  # tried again in a second; meanwhile a crash would re-send more
                log.warning("notifications: could not save how far delivery got: %s", exc.message)


def notifier_context(db: Path | str, origin: str, target: Target, *,
                     fence: Fence | None = None) -> CleanupContext:
    """An aiohttp cleanup context running a Notifier on its own connection to the log at db (`fence`: of
    the sequencer's term, on a PostgreSQL log: store/postgres.py). It has read where it stopped before
    the server serves."""

    async def setup() -> Notifier:
        notifier = Notifier(open_store(db, fence=fence), origin, target)
        await notifier.start()
        return notifier

    return task_context("tlog-notify", setup, Notifier.run, Notifier.close)
