"""Reading a remote log over HTTP: its signed checkpoint, its c2sp.org/tlog-tiles tiles and the JSON read
API. Only fetching and framing live here (which bytes belong to which leaf); what the bytes prove is
verify.py's job, so nothing fetched here is trusted.

This is the one HTTP client for remote logs: `tlog verify --url`, `monitor`, `audit` (with the artist's
token), `stats --url`, `export --url` and the replaying witness all read through TileClient.

A handful of requests run at once: enough to hide the round trips, few enough not to swamp a small
server. A 5xx or a broken connection is retried RETRIES times with exponential backoff (backoff.py), a
429 ("slow down") waited out as its Retry-After says; any other 4xx is an error at once, because asking
again will not change the answer."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncGenerator, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson

from .backoff import Backoff, parse_retry_after
from .errors import NotFound, Unavailable, Unreachable, ValidationError
from .merkle import HASH_SIZE
from .tiles import TILE_WIDTH, Tile, decode_bundle, entry_bundles_for_size, tile_path

IN_FLIGHT = 6
RETRIES = 4
BACKOFF = 0.2  # seconds before the first retry (0.1–0.2 with the jitter); doubles with each retry
SLOWDOWNS = 120  # 429 answers waited out per request before it counts as a failure
MAX_RETRY_AFTER = 30.0
TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)


@dataclass
class Bundle:
    """Leaves [start, start + len(leaves)) and, for each, the hash the level-0 hash tile gives it."""

    start: int
    leaves: list[bytes]
    hashes: list[bytes]


class TileClient:
    """GETs under one base URL (the log's prefix, e.g. "https://log.example/"). Use as `async with`.

    Errors: NotFound for a 404, Unreachable for a 401 or 403, ValidationError for another 4xx or a body that
    cannot be what was asked for, Unavailable once the retries are spent."""

    def __init__(self, base_url: str, *, token: str | None = None, user_agent: str = "tlog-verifier") -> None:
        self.base = check_base_url(base_url) + "/"
        self.in_flight = IN_FLIGHT
        self.retries = RETRIES
        self._headers = {"User-Agent": user_agent, **({"Authorization": f"Bearer {token}"} if token else {})}
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> TileClient:
        self._session = aiohttp.ClientSession(timeout=TIMEOUT, headers=self._headers)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str, params: dict[str, str] | None = None) -> bytes:
        """The body of a 200 answer to GET base + path."""
        assert self._session is not None, "use TileClient as `async with`"
        url = self.base + path
        shown = f"{url}?{urlencode(params)}" if params else url
        # Jitter, so that many verifiers hitting one struggling log do not retry in lockstep.
        backoff = Backoff(base=BACKOFF, cap=MAX_RETRY_AFTER, jitter=0.5)
        slowdowns = 0
        while True:
            try:
                async with self._slots, self._session.get(url, params=params) as r:
                    body = await r.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            else:
                if r.status == 200:
                    return body
                problem = f"{r.status} {_error_message(body) or r.reason}"
                if r.status == 429 and slowdowns < SLOWDOWNS:
                    # "Slow down" is the server pacing anonymous readers, not a failure: wait as told.
                    slowdowns += 1
                    wait = parse_retry_after(r.headers.get("Retry-After"))
                    await asyncio.sleep(min(1.0 if wait is None else wait, MAX_RETRY_AFTER))
                    continue
                if r.status in (401, 403):
                    raise Unreachable(f"GET {shown}: {problem} (the log refused the token: check it, and the "
                                      "artist id it is for)")
                if r.status < 500 and r.status != 429:
                    raise (NotFound if r.status == 404 else ValidationError)(f"GET {shown}: {problem}")
            if backoff.attempt == self.retries:
                raise Unavailable(f"GET {shown}: {problem} (gave up after {backoff.attempt + 1} tries)")
            await asyncio.sleep(backoff.next_delay())

    async def json(self, path: str, **params: int | str) -> Any:
        body = await self.get(path, {k: str(v) for k, v in params.items()})
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValidationError(f"GET {self.base}{path}: the answer is not JSON") from None

    async def checkpoint(self) -> bytes:
        """The log's latest signed checkpoint, unverified."""
        return await self.get("checkpoint")

    async def policy(self, policy_id: str) -> bytes:
        """The exact bytes of a policy document (`GET /v1/policies/{id}`), unverified: its policy leaf
        holds their SHA-256."""
        return await self.get(f"v1/policies/{quote(policy_id, safe='')}")

    async def tile(self, t: Tile) -> bytes:
        """A hash tile (checked to hold exactly `width` hashes) or an entry bundle (raw)."""
        data = await self.get(tile_path(t))
        if not t.entries and len(data) != t.width * HASH_SIZE:
            raise ValidationError(f"{tile_path(t)} is {len(data)} bytes, want {t.width * HASH_SIZE}")
        return data

    async def leaves(self, start: int, end: int) -> AsyncGenerator[Bundle, None]:
        """Leaves [start, end) bundle by bundle, in order, with their level-0 tile hashes. `end` must be
        a checkpoint's size: it fixes the width of the last, partial, tile, and a log only promises the
        partial widths its checkpoints imply. Up to `in_flight` bundles are fetched ahead of the one
        handed out. Use with contextlib.aclosing, so that an early exit cancels what is in flight."""
        todo = (t for t in entry_bundles_for_size(end) if (t.index + 1) * TILE_WIDTH > start)
        ahead = deque(asyncio.ensure_future(self._bundle(t, start)) for t in itertools.islice(todo, self.in_flight))
        try:
            while ahead:
                bundle = await ahead.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    ahead.append(asyncio.ensure_future(self._bundle(nxt, start)))
                yield bundle
        finally:
            await cancel(ahead)

    async def _bundle(self, t: Tile, start: int) -> Bundle:
        data = await self.tile(t)
        hashes = await self.tile(Tile(0, t.index, t.width))
        try:
            leaves = decode_bundle(data, t.width)
        except ValidationError as exc:
            raise ValidationError(f"{tile_path(t)}: {exc.message}") from None
        first = t.index * TILE_WIDTH
        skip = max(start - first, 0)
        return Bundle(first + skip, leaves[skip:],
                      [hashes[k : k + HASH_SIZE] for k in range(skip * HASH_SIZE, len(hashes), HASH_SIZE)])


def check_base_url(url: str) -> str:
    """A log's base URL without its trailing slash. One without http:// or https:// or a host is a
    mistake in the configuration, said at once, not an outage to retry forever."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValidationError(
            f"the log's URL {url!r} must start with http:// or https:// and name a host, e.g. https://log.example",
            [{"field": "url", "message": "not an http(s) URL"}])
    return url.rstrip("/")


def fetch_json(url: str, path: str, params: dict[str, str]) -> Any:
    """One JSON answer of a log's public API, for a command that needs nothing else."""

    async def fetch() -> Any:
        async with TileClient(url) as client:
            return await client.json(path, **params)

    return asyncio.run(fetch())


async def cancel(tasks: Collection[asyncio.Future[Any]]) -> None:
    """Cancels fetches no longer wanted and collects their outcome (so no "exception never retrieved")."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _error_message(body: bytes) -> str | None:
    """The message of a SPEC §6 JSON error body, if it is one."""
    try:
        return str(orjson.loads(body)["error"]["message"])[:300]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
