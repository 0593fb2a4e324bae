"""The server's one way to change the log: an `Appender`, which the handlers call and never see past.

Handlers read through the store and `State`, and change the log only by awaiting an Appender's methods;
none of them names the sequencer, its thread or its worker. So the server does not care where the
sequencer runs:
- `LocalAppender`: this process holds the log's keys and is its sequencer. Changes go to the sequencer
  thread in order with the batches (committer.py); a large `POST /v1/uses` body is checked in a worker
  process first (intake.py).
- `ReadOnly`: a server that cannot read the keys. It serves reads (app.py routes no write to it); a
  change asked of it is 503.
- A front end of a deployment whose sequencer runs elsewhere (say, one elected among PostgreSQL
  servers, taking records from an intake table) offers the same methods, and handlers stay as they are.

Invariant (what every Appender keeps): a method returns only once its change is durable, and raises a
TlogError otherwise, having changed nothing the caller can see. `Appended.checkpoint`, when there is
one, is a signed checkpoint covering every leaf of its results, so a receipt can be built on it without a
read."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from ..artistmap import ArtistMap
from ..committer import BatchStats, GroupCommitter
from ..errors import Unavailable
from ..intake import Intake
from ..log import LocalLog
from ..sequencer import BindingResult, PreferenceChange, Sequencer, Submission, UseResult

READ_ONLY = "this server is read-only (it cannot read the log's key files), so it cannot change the log"


@dataclass(frozen=True)
class Appended:
    """The answer to a `POST /v1/uses` body: a result per record, in order; whether the body was a batch
    ({"records": [...]}); and a signed checkpoint covering every result's leaf (None: none to hand, and
    the caller reads one if it needs it)."""

    results: list[UseResult]
    batch: bool
    checkpoint: bytes | None


class Appender(Protocol):
    """What handlers may ask of the log's writer (each durable before it returns, see above)."""

    async def append_uses(self, service: str, body: bytes, *, max_records: int) -> Appended:
        """Checks a body of use records (intake.check_body) and appends them all, or none."""
        ...

    async def set_preferences(self, artist_id: str, document: Any, *, by: str, service: str | None,
                              patch: bool) -> PreferenceChange:
        """Sequencer.set_preferences: replaces the artist's preferences, or merge-patches them."""
        ...

    async def set_content_artists(self, content_id: str, artists: list[str], *, service: str) -> list[BindingResult]:
        """Sequencer.set_content_artists: the content's artists become exactly `artists`."""
        ...

    async def add_token(self, role: str, subject: str | None, digest: bytes, now_ms: int, *,
                        expires_ms: int | None) -> int:
        """Stores a new token's digest; its id."""
        ...

    async def add_feed_key(self, artist_id: str, digest: bytes, now_ms: int) -> int:
        """Stores a new feed key's digest; its id."""
        ...

    async def revoke_feed_key(self, artist_id: str, key_id: int, now_ms: int) -> bool:
        """Revokes one of the artist's feed keys; False if it has no such unrevoked key."""
        ...

    async def reload_keys(self) -> None:
        """Signs with the log's keys as they are now stored (after `tlog key rotate` in another process)."""
        ...

    def stats(self) -> BatchStats | None:
        """The batches written so far, for /metrics; None where this server writes none."""
        ...

    def recent_maps(self) -> Mapping[int, ArtistMap]:
        """The artist maps of the latest durable sizes this server knows without a read (may be empty)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalAppender:
    """The sequencer of `log` in this process, on its own thread (committer.py). `eager_intake`: start
    the worker that checks large bodies at once, not at the first large body (`tlog serve`)."""

    def __init__(self, log: LocalLog, sequencer: Sequencer, *, eager_intake: bool = False) -> None:
        self._log = log
        self._sequencer = sequencer
        self._committer = GroupCommitter(sequencer)
        self._intake = Intake()
        self._eager_intake = eager_intake

    async def append_uses(self, service: str, body: bytes, *, max_records: int) -> Appended:
        policy = self._sequencer.policy
        checked = await self._intake.check_body(body, now=datetime.now(timezone.utc),
                                                purposes=policy.purposes if policy else {}, max_records=max_records)
        results = await self._committer.append(Submission(service, checked.records))
        # Read after the batch is durable: the sequencer's latest checkpoint is stored in the same
        # transaction as the batch, or a later one, so it covers every leaf acknowledged.
        return Appended(results, checked.batch, self._sequencer.checkpoint)

    async def set_preferences(self, artist_id: str, document: Any, *, by: str, service: str | None,
                              patch: bool) -> PreferenceChange:
        seq = self._sequencer
        change: PreferenceChange = await self._committer.call(
            lambda: seq.set_preferences(artist_id, document, by=by, service=service, patch=patch))
        return change

    async def set_content_artists(self, content_id: str, artists: list[str], *, service: str) -> list[BindingResult]:
        seq = self._sequencer
        changes: list[BindingResult] = await self._committer.call(
            lambda: seq.set_content_artists(content_id, artists, service=service))
        return changes

    # Tokens and feed keys are written on the sequencer's thread, through the writer log's connection
    # (the sequencer's own), like every other change: the event loop's and the read threads' only read.

    async def add_token(self, role: str, subject: str | None, digest: bytes, now_ms: int, *,
                        expires_ms: int | None) -> int:
        store = self._log.store
        token_id: int = await self._committer.call(
            lambda: store.add_token(role, subject, digest, now_ms, expires_ms=expires_ms))
        return token_id

    async def add_feed_key(self, artist_id: str, digest: bytes, now_ms: int) -> int:
        store = self._log.store
        key_id: int = await self._committer.call(lambda: store.add_feed_key(artist_id, digest, now_ms))
        return key_id

    async def revoke_feed_key(self, artist_id: str, key_id: int, now_ms: int) -> bool:
        store = self._log.store
        revoked: bool = await self._committer.call(lambda: store.revoke_feed_key(artist_id, key_id, now_ms))
        return revoked

    async def reload_keys(self) -> None:
        await self._committer.call(self._log.reload_keys)

    def stats(self) -> BatchStats | None:
        return self._committer.stats

    def recent_maps(self) -> Mapping[int, ArtistMap]:
        return self._sequencer.maps  # updated in place by the sequencer's thread

    async def start(self) -> None:
        self._committer.start()
        if self._eager_intake:
            self._intake.start()

    async def close(self) -> None:
        await self._committer.close()
        await asyncio.get_running_loop().run_in_executor(None, self._intake.close)


class ReadOnly:
    """A server without the log's keys: it changes nothing (503, as a writer that is not running)."""

    async def append_uses(self, service: str, body: bytes, *, max_records: int) -> Appended:
        raise Unavailable(READ_ONLY)

    async def set_preferences(self, artist_id: str, document: Any, *, by: str, service: str | None,
                              patch: bool) -> PreferenceChange:
        raise Unavailable(READ_ONLY)

    async def set_content_artists(self, content_id: str, artists: list[str], *, service: str) -> list[BindingResult]:
        raise Unavailable(READ_ONLY)

    async def add_token(self, role: str, subject: str | None, digest: bytes, now_ms: int, *,
                        expires_ms: int | None) -> int:
        raise Unavailable(READ_ONLY)

    async def add_feed_key(self, artist_id: str, digest: bytes, now_ms: int) -> int:
        raise Unavailable(READ_ONLY)

    async def revoke_feed_key(self, artist_id: str, key_id: int, now_ms: int) -> bool:
        raise Unavailable(READ_ONLY)

    async def reload_keys(self) -> None:
        return None  # it signs nothing: the reader's keys, reloaded by the app, are all it shows

    def stats(self) -> BatchStats | None:
        return None

    def recent_maps(self) -> Mapping[int, ArtistMap]:
        return {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
