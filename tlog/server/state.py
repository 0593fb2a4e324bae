"""What the app's handlers share: the opened log (a read connection), the writer, limits and caches."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from ..committer import GroupCommitter
    from ..intake import Intake
    from ..witness.quorum import WitnessQuorum
    from .auth import RateLimit
    from .public import LRU
    from .reads import ReadPool

STATE_KEY = web.AppKey("tlog_state", object)


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


@dataclass
class State:
    log: LocalLog
    tile_cache: "LRU"
    rate_limit: "RateLimit"
    limits: Limits = field(default_factory=Limits)
    committer: "GroupCommitter | None" = None
    intake: "Intake | None" = None  # checks large write requests in a worker process
    reads: "ReadPool | None" = None  # long reads, off the event loop
    extra_verifier_keys: list[str] = field(default_factory=list)
    witnessed: bool = False  # a witness policy is set: publish only what its quorum cosigned
    witness_policy: "WitnessQuorum | None" = None  # its witnesses and quorum, published in /v1/log
    token_cache: TokenCache = field(default_factory=TokenCache)
    # The sequencer's maps of its latest durable sizes (`Sequencer.maps`, updated in place by its thread).
    recent_maps: Mapping[int, ArtistMap] = field(default_factory=dict)
    _rebuilt: dict[int, ArtistMap] = field(default_factory=dict)
    _note: bytes = b""
    _parsed: tuple[bytes, Checkpoint | None] = (b"", None)
    _size: int = 0
    _tokens_version: object = False  # False: not read in this loop iteration

    @property
    def store(self) -> Backend:
        """The loop's connection to the log (handlers read it; long reads go to `reads`, writes to the
        committer)."""
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
        """The artist map that the map leaf ending checkpoint `size` commits to: the sequencer's, or one
        rebuilt from the store (maps.py; `store`: a read thread's own) and kept while it is asked for."""
        amap = self.recent_maps.get(size)
        if amap is None:
            amap = self._rebuilt.get(size)
        if amap is None:
            amap = rebuild_map(store or self.store, size)
            self._rebuilt = {size: amap}
        return amap

    def parse_checkpoint(self, signed: bytes) -> Checkpoint:
        """The body of a checkpoint this server signed (memoised: every receipt of a batch shares it)."""
        if signed != self._parsed[0]:
            self._parsed = (signed, Checkpoint.parse(parse_note(signed)[0]))
        return self._parsed[1]  # type: ignore[return-value]

    def tokens_version(self) -> object:
        """The store's `tokens_version`, read at most once per event loop iteration: it is a system call,
        which under load hands the GIL to the sequencer thread and waits to get it back. Every request
        served in an iteration arrived before that read (the loop polls its sockets first, and the memo
        is dropped before the next poll's requests run), so a revocation that finished before a request
        was sent is still seen by it."""
        if self._tokens_version is False:
            self._tokens_version = self.store.tokens_version()
            asyncio.get_running_loop().call_soon(self._forget_tokens_version)
        return self._tokens_version

    def _forget_tokens_version(self) -> None:
        self._tokens_version = False

    def verifier_keys(self) -> list[str]:
        return [*(v.key for v in self.log.verifiers), *self.extra_verifier_keys]


def get_state(request: web.Request) -> State:
    return request.app[STATE_KEY]  # type: ignore[return-value]
