"""Aggregator: one logged record per use key and time window, instead of one per call.

A recommender scores the same track millions of times a day; the log needs to say that it did, for which
purpose, with which system, and how often, not to hold a leaf per call. `add()` counts a call in memory
(a dict increment, safe on a hot path); every window, the counts of closed windows go to a BatchLogger as
one record per content_id × artist_id × purpose × phase × system (× detail × basis) with
`invocations` = the count and `occurred_at` / `window_end` = the span the count covers.

Windows are aligned on multiples of `window` since the Unix epoch, so every process agrees on their
bounds. A record's event_id is `prefix` + a hash of its key and span: the same count is always sent under
the same id, so the spool's retries deduplicate. Spans never overlap within one aggregator: `flush()`
(and `close()`) cut the open window at "now", and what is counted after that starts a new span, so a
restarted process never reuses an id for a different count. Two processes must not share a prefix
(give each its own, e.g. the host name), or their equal spans would collide on the same event_id.

Counts not yet handed to the BatchLogger live in memory only: a crash loses at most one window of
counts; once handed over they are in the spool and survive anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import orjson

from ..errors import ValidationError
from ..records import EVENT_ID, validate_use
from .batch import BatchLogger
from .check import ANY_PURPOSE

log = logging.getLogger("tlog.client")

_DIGEST_HEX = 40  # 160 bits of SHA-256: collisions between distinct spans are not a practical concern
MAX_PREFIX = 128 - 1 - _DIGEST_HEX
_SET_HERE = ("event_id", "occurred_at", "window_end", "invocations")
_CHUNK = 1000

Key = tuple[Any, ...]


class Aggregator:
    def __init__(
        self, logger: BatchLogger, *, prefix: str, window: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        if not EVENT_ID.fullmatch(prefix) or len(prefix) > MAX_PREFIX:
            raise ValidationError(
                f"the aggregator prefix must be 1–{MAX_PREFIX} characters from A–Z a–z 0–9 . _ : -",
                [{"field": "prefix", "message": repr(prefix)}],
            )
        if window < 0.001:
            raise ValueError("the window must be at least a millisecond")
        self.logger = logger
        self.prefix = prefix
        self.window_ms = round(window * 1000)
        self.clock = clock
        self._windows: dict[int, dict[Key, list[Any]]] = {}  # window number → key → [count, template]
        self._last_ms = 0
        self._cut_ms = self._now_ms()  # counting started here; a flush of the open window moves it
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Aggregator:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def start(self) -> None:
        """Emits closed windows in the background, shortly after each window ends."""
        self._task = asyncio.create_task(self._run(), name="tlog-aggregator")

    async def close(self) -> None:
        """Stops the background task (after the emission it may be in) and hands every count, the open
        window's too, to the logger."""
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None
        await self.flush()

    def add(self, use: Mapping[str, Any], count: int = 1) -> None:
        """Counts `count` calls of `use`: a use record without event_id, occurred_at, window_end and
        invocations (the aggregator sets those). Raises ValidationError for a malformed use."""
        if type(count) is not int or count < 1:
            raise ValidationError("count must be an integer ≥ 1", [{"field": "count", "message": repr(count)}])
        bucket = self._windows.setdefault(self._now_ms() // self.window_ms, {})
        try:
            key = _key(use)
            entry = bucket.get(key)
        except (KeyError, TypeError):
            raise _malformed(use) from None
        if entry is None:
            bucket[key] = [count, _template(use)]  # a full check once per key and window, off the common path
        else:
            entry[0] += count

    async def emit_closed(self) -> int:
        """Hands the counts of every window that has ended to the logger; returns the records made."""
        now_ms = self._now_ms()
        closed = sorted(w for w in self._windows if (w + 1) * self.window_ms <= now_ms)
        return await self._hand_over(self._records([(w, (w + 1) * self.window_ms) for w in closed]))

    async def flush(self) -> int:
        """Hands every count to the logger, cutting the open window at now; returns the records made."""
        made = await self.emit_closed()
        now_ms = self._now_ms()
        if now_ms > self._cut_ms:  # else nothing can have been counted since the last cut
            records = self._records([(w, now_ms) for w in sorted(self._windows)])
            self._cut_ms = now_ms  # before handing over: what is counted meanwhile belongs to the next span
            made += await self._hand_over(records)
        return made

    def _records(self, spans: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """Takes the counts of windows (number, span end) out, as records. Synchronous, so that no add()
        can slip in between taking a window's counts and fixing its span."""
        records = []
        for w, end_ms in spans:
            start_ms = max(w * self.window_ms, self._cut_ms)
            for key, (count, template) in self._windows.pop(w).items():
                records.append(self._record(key, count, template, start_ms, end_ms))
        return records

    async def _hand_over(self, records: list[dict[str, Any]]) -> int:
        for i in range(0, len(records), _CHUNK):
            await self.logger.log_many(records[i : i + _CHUNK])
        return len(records)

    def _record(self, key: Key, count: int, template: dict[str, Any], start_ms: int, end_ms: int) -> dict[str, Any]:
        occurred_at, window_end = _rfc3339(start_ms), _rfc3339(end_ms)
        digest = hashlib.sha256(orjson.dumps([*key, occurred_at, window_end])).hexdigest()[:_DIGEST_HEX]
        return {
            **template, "event_id": f"{self.prefix}-{digest}", "occurred_at": occurred_at,
            "window_end": window_end, "invocations": count,
        }

    async def _run(self) -> None:
        while not self._stop.is_set():
            now_ms = self._now_ms()
            next_end = (now_ms // self.window_ms + 1) * self.window_ms
            try:
                await asyncio.wait_for(self._stop.wait(), (next_end - now_ms) / 1000 + 0.01)
            except asyncio.TimeoutError:
                pass
            try:
                await self.emit_closed()
            except Exception:  # keep counting: the next window's emission may succeed
                log.exception("the aggregator could not hand a window's counts to the logger")

    def _now_ms(self) -> int:
        # Never backwards (a stepped clock): spans stay ordered and never overlap.
        self._last_ms = max(self._last_ms, int(self.clock() * 1000))
        return self._last_ms


def _key(use: Mapping[str, Any]) -> Key:
    system = use["system"]
    return (
        use["content_id"], use["artist_id"], use["purpose"], use["phase"],
        system["id"], system["model"], system["version"], use.get("detail"), use.get("basis"),
    )


def _malformed(use: Mapping[str, Any]) -> ValidationError:
    try:
        _template(use)
    except ValidationError as exc:
        return exc
    return ValidationError("a use needs content_id, artist_id, purpose, phase and system {id, model, version}")


def _template(use: Mapping[str, Any]) -> dict[str, Any]:
    """The use, checked as a record would be, without the fields the aggregator sets."""
    named = [f for f in _SET_HERE if f in use]
    if named:
        raise ValidationError(
            f"the aggregator sets {', '.join(named)} itself", [{"field": f, "message": "set by the aggregator"} for f in named]
        )
    probe = {**use, "event_id": "probe", "occurred_at": "2000-01-01T00:00:00Z"}
    valid = validate_use(probe, now=datetime.now(timezone.utc), purposes=ANY_PURPOSE)
    return {k: v for k, v in valid.items() if k not in _SET_HERE}


def _rfc3339(ms: int) -> str:
    seconds, milli = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{milli:03d}Z"
