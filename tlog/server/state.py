"""What the app's handlers share: the opened log (a read connection) and caches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from ..checkpoint import Checkpoint
from ..log import LocalLog
from ..store.sqlite import SqliteStore

if TYPE_CHECKING:
    from .public import LRU

STATE_KEY = web.AppKey("tlog_state", object)


@dataclass
class State:
    log: LocalLog
    tile_cache: "LRU"
    writable: bool = False
    _note: bytes = b""
    _size: int = 0
    extra_verifier_keys: list[str] = field(default_factory=list)

    @property
    def store(self) -> SqliteStore:
        return self.log.store

    def _refresh(self) -> None:
        # One indexed query; the checkpoint was verified at start-up and is only ever written by us.
        note = self.store.latest_checkpoint() or b""
        if note != self._note:
            self._size = Checkpoint.parse(note.split(b"\n\n", 1)[0] + b"\n").size
            self._note = note

    def published_note(self) -> bytes:
        self._refresh()
        return self._note

    def published_size(self) -> int:
        self._refresh()
        return self._size

    def verifier_keys(self) -> list[str]:
        return [self.log.verifier.key, *self.extra_verifier_keys]


def get_state(request: web.Request) -> State:
    return request.app[STATE_KEY]  # type: ignore[return-value]
