"""What the app's handlers share: the opened log (a read connection), the writer (appender.py), the read
threads (reads.py), limits and caches. Handlers read through it and change the log only through
`State.appender`."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

from aiohttp import web

from ..artistmap import ArtistMap
from ..checkpoint import Checkpoint
from ..errors import DETAILS_SHOWN, Unavailable
from ..log import LocalLog
from ..maps import rebuild_map
from ..note import parse_note
from ..policy import PreferenceLimits
from ..store.base import Backend, LogStore
from ..tokens import TokenCache
from ..witness.quorum import WitnessQuorum
from .appender import Appender, ReadOnly
from .ratelimit import RateLimit
from .reads import ReadPool


@dataclass(frozen=True)
class Limits:
    """Request limits with safe defaults; `tlog serve` options override them."""

    max_body: int = 8 << 20
    max_records: int = 1000
    page_size: int = 100
    max_page_size: int = 1000
    max_export: int = 10_000  # leaves per GET /v1/export
    max_details: int = DETAILS_SHOWN  # details an error lists; one more counts the rest
    max_preferences: int = PreferenceLimits.max_bytes  # bytes of a preferences document
    max_content_overrides: int = PreferenceLimits.max_content

    @property
    def preferences(self) -> PreferenceLimits:
        return PreferenceLimits(self.max_preferences, self.max_content_overrides)


class LRU:
    """A small cache of immutable bodies (full tiles and bundles) with their entity tags."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()

    def get(self, key: str) -> tuple[bytes, str] | None:
        body = self._items.get(key)
        if body is not None:
            self._items.move_to_end(key)
        return body

    def put(self, key: str, body: tuple[bytes, str]) -> None:
        self._items[key] = body
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


@dataclass
class State:
    log: LocalLog
    tile_cache: LRU
    rate_limit: RateLimit
    reads: ReadPool  # long reads, off the event loop
    appender: Appender = field(default_factory=ReadOnly)  # every change to the log goes through it
    limits: Limits = field(default_factory=Limits)
    extra_verifier_keys: list[str] = field(default_factory=list)
    witnessed: bool = False  # a witness policy is set: publish only what its quorum cosigned
    witness_quorum: WitnessQuorum | None = None  # its witnesses and quorum, published in /v1/log
    token_cache: TokenCache = field(default_factory=TokenCache)
    _rebuilt: dict[int, ArtistMap] = field(default_factory=dict)
    _note: bytes = b""
    _parsed: tuple[bytes, Checkpoint] | None = None
    _size: int = 0
    _tokens_read: bool = False  # `_tokens_version` was read in this loop iteration
    _tokens_version: object = None

    @property
    def store(self) -> Backend:
        """The loop's connection to the log (handlers read it; long reads go to `reads`, changes to
        `appender`)."""
        return self.log.store

    def _refresh(self) -> None:
        # One indexed query; the checkpoint was verified at start-up and is only ever written by us.
        store = self.store
        note = (store.published_checkpoint() if self.witnessed else store.latest_checkpoint()) or b""
        if note != self._note:
            self._size = Checkpoint.parse(parse_note(note)[0]).size
            self._note = note

    def published_note(self) -> bytes:
        self._refresh()
        if not self._note:
            raise Unavailable("no checkpoint has been cosigned by the witness policy's quorum yet")
        return self._note

    def published_size(self) -> int:
        self._refresh()
        return self._size

    def latest_size(self) -> int:
        return Checkpoint.parse(parse_note(self.store.latest_checkpoint() or b"")[0]).size

    def signed_size(self) -> int:
        """The size of the latest checkpoint the log signed: the published one, or later ones still being
        cosigned. Without a witness policy the two are the same."""
        return self.latest_size() if self.witnessed else self.published_size()

    def map_at(self, size: int, store: LogStore | None = None) -> ArtistMap:
        """The artist map that the map leaf ending checkpoint `size` commits to: the writer's, or one
        rebuilt from the store (maps.py; `store`: a read thread's own) and kept while it is asked for."""
        amap = self.appender.recent_maps().get(size)
        if amap is None:
            amap = self._rebuilt.get(size)
        if amap is None:
            amap = rebuild_map(store or self.store, size)
            self._rebuilt = {size: amap}
        return amap

    def parse_checkpoint(self, signed: bytes) -> Checkpoint:
        """The body of a checkpoint this server signed (memoised: every receipt of a batch shares it)."""
        if self._parsed is None or signed != self._parsed[0]:
            self._parsed = (signed, Checkpoint.parse(parse_note(signed)[0]))
        return self._parsed[1]

    def tokens_version(self) -> object:
        """The store's `tokens_version`, read at most once per event loop iteration: it is a system call,
        which under load hands the GIL to the sequencer thread and waits to get it back. Every request
        served in an iteration arrived before that read (the loop polls its sockets first, and the memo
        is dropped before the next poll's requests run), so a revocation that finished before a request
        was sent is still seen by it."""
        if not self._tokens_read:
            self._tokens_version, self._tokens_read = self.store.tokens_version(), True
            asyncio.get_running_loop().call_soon(self._forget_tokens_version)
        return self._tokens_version

    def _forget_tokens_version(self) -> None:
        self._tokens_read = False

    def verifier_keys(self) -> list[str]:
        return [*(v.key for v in self.log.verifiers), *self.extra_verifier_keys]


STATE_KEY = web.AppKey("tlog_state", State)


def get_state(request: web.Request) -> State:
    return request.app[STATE_KEY]
