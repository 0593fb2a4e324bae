"""The sequencer: the only writer of a log, and the pipeline that writes its batches.

It takes work in batches (group commit): validated use records from one or more callers, preference
changes, policy publications. Each batch is built by its `BatchBuilder` (builder.py: decisions, leaves,
chains, the artist map, the checkpoint) and handed to its writer, which stores it as one transaction. A
result is reported only after that transaction has committed; a failed write reloads the state from
storage, so memory and disk agree again before the next batch.

Batches may be pipelined: `submit_uses` builds a batch and hands it to the writer (store/writer.py),
then returns a ticket at once, so the next batch is built while this one is written; `wait` returns a
ticket's results once its batch is durable. The synchronous calls are `wait(submit(...))`.

Invariants:
- Indexes are dense and assigned by the builder alone; `Batch.start` and `Batch.prev` guard against a
  second writer.
- Two states: the *build* state (the builder's `Head`: size, frontier, chain heads, artists, policies,
  artist map) moves forward as soon as a batch is handed over, so the next one extends it; the *durable*
  state (`checkpoint`, `maps`, `on_commit`) moves only as outcomes are received, oldest first. A result
  reaches its caller only once its batch, and every batch before it, is durable.
- Events of batches in flight are remembered (`BatchBuilder.recent`) until their batch is settled.
- If a batch fails, every later batch in flight was built on it: all outcomes still owed are received,
  the state is reloaded from storage, and the later batches are built again from their submissions (as
  is the failed one when the store said another writer had appended: STALE_STATE). A batch that was
  written after all (an answer lost with a dying writer) stands.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from . import merkle, records
from .artistmap import ArtistMap, MapValue
from .builder import BatchBuilder, BindingResult, Head, Pending, Submission, UseResult
from .errors import Damaged, StorageError, TlogError, ValidationError
from .note import Signer
from .canonical import merge_patch
from .rederive import entry_leaves
from .policy import (DEFAULT_POLICY, Policy, PreferenceLimits, accepted_purposes, dropped_settings, parse_policy,
                     validate_preferences)
from .store.base import (MAX_ENTRIES, STALE_STATE, Batch, CheckpointedLog, Entry, Erasure, LogStore, PolicyRecord,
                         UseFilter)
from .store.writer import BatchWriter, InlineWriter
from .vrf import VrfSecret

__all__ = ["BindingResult", "Sequencer", "Submission", "Ticket", "UseResult"]  # the results: built in builder.py

T = TypeVar("T")
MAX_IN_FLIGHT = 2  # batches handed to the writer and not yet settled: one being written, one queued
KEPT_MAPS = 16  # artist maps of the latest durable sizes kept for map proofs (older ones are rebuilt)


@dataclass(frozen=True, slots=True)
class PreferenceChange:
    """A `preference` leaf appended: where, the preferences now in force, and the settings the change
    dropped (policy.dropped_settings)."""

    index: int
    leaf_hash: bytes
    preferences: dict[str, Any]
    dropped: list[dict[str, Any]]


@dataclass(slots=True, eq=False)
class Ticket:
    """One submitted batch, until it is settled (`done`): then `result`, or `error` if it failed."""

    build: Callable[[], tuple[Pending, Any]] = field(repr=False)
    rebuilt: bool = False
    result: Any = None
    start: int = 0
    end: int = 0
    batch: Batch | None = None  # None: nothing to write (every record a duplicate, say)
    checkpoint: bytes | None = None
    map: ArtistMap | None = None  # the artist map at the batch's end
    error: BaseException | None = None
    done: bool = False


class Sequencer:
    def __init__(
        self,
        store: CheckpointedLog,
        *,
        origin: str,
        signers: Sequence[Signer],
        vrf: VrfSecret,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[Batch], None] | None = None,
        writer: BatchWriter | None = None,
        preference_limits: PreferenceLimits = PreferenceLimits(),
    ) -> None:
        self.store = store
        self.preference_limits = preference_limits
        self.writer = writer if writer is not None else InlineWriter(store)
        self._flight: deque[Ticket] = deque()
        # Told of every durable batch (the server warms its reader's node cache with it: the receipt of
        # a fresh leaf then needs no read of what was just written).
        self.on_commit = on_commit
        self.origin = origin
        # Kept by reference when a list: LocalLog.reload_keys swaps a running server's keys in place.
        self.signers = signers if isinstance(signers, list) else list(signers)
        self.vrf = vrf
        self.clock = clock
        # The artist maps of the latest durable sizes, oldest first: map proofs are served from these.
        self.maps: dict[int, ArtistMap] = {}
        self.reload()

    # --- state -------------------------------------------------------------------------------

    def reload(self) -> None:
        """(Re)reads the state a batch starts from. Called at start and after any failed write.

        All or nothing: every read happens before any field changes, so a read that fails half-way (the
        disk that just failed a write may fail again) cannot leave a new size beside an old frontier or
        chain head, which the next batch would extend into a corrupt tree. Until a reload succeeds the
        state is marked stale and the next batch reloads first."""
        if self._flight:
            raise RuntimeError("the state cannot be reloaded while batches are in flight")
        self._stale = True
        head = read_head(self.store)
        checkpoint = self.store.latest_checkpoint()
        pattern = self.store.get_meta("id_pattern")
        self.builder = BatchBuilder(self.store, head, origin=self.origin, signers=self.signers, vrf=self.vrf,
                                    clock=self.clock, ids=records.IdPattern(pattern) if pattern else None)
        self.checkpoint = checkpoint
        self.maps.clear()  # in place: a server holds a reference to it
        self.maps[head.size] = head.map
        self._stale = False

    @property
    def size(self) -> int:
        """The size the next batch starts at (batches in flight included)."""
        return self.builder.head.size

    @property
    def policy(self) -> Policy | None:
        """The policy in effect now (for checking a record's purpose before it is submitted)."""
        return self.builder.policy_now()

    def _begin(self) -> Pending:
        if self._stale:
            self.reload()
        return self.builder.begin()

    # --- uses --------------------------------------------------------------------------------

    def append_uses(self, submissions: Sequence[Submission]) -> list[list[UseResult] | TlogError]:
        """Appends every acceptable submission in one batch. Each submission gets its results (in its
        records' order) or the error that rejected it alone; a rejected submission writes nothing."""
        return self.wait(self.submit_uses(submissions))

    def append_all(self, batches: Iterable[Sequence[Submission]]) -> Iterator[list[list[UseResult] | TlogError]]:
        """Appends batch after batch, each built while the one before it is written (with a
        ProcessWriter); yields each batch's results, in order, once it is durable."""
        waiting: deque[Ticket] = deque()
        for submissions in batches:
            waiting.append(self.submit_uses(submissions))
            if len(waiting) > 1:
                yield self.wait(waiting.popleft())
        while waiting:
            yield self.wait(waiting.popleft())

    def submit_uses(self, submissions: Sequence[Submission]) -> Ticket:
        """`append_uses` without waiting: builds the batch, hands it to the writer and returns its
        ticket for `wait`. Builds and writes overlap with a ProcessWriter."""
        def build() -> tuple[Pending, list[list[UseResult] | TlogError]]:
            p = self._begin()
            return p, self.builder.uses(p, submissions)

        return self._submit(build)

    # --- preferences and policies ------------------------------------------------------------

    def set_preferences(
        self, artist_id: str, preferences: Any, *, by: str, service: str | None = None, patch: bool = False
    ) -> PreferenceChange:
        """Replaces an artist's preferences (or, with `patch`, applies `preferences` to them as an RFC 7396
        merge patch) and appends a `preference` leaf saying who did it. A service may only add
        restrictions (SPEC §4); the artist's own token may do anything. The patch is applied in the
        sequencer's turn, to the preferences as they are then, so two patches never undo each other; the
        document it gives is checked against the sequencer's limits and the purposes accepted when its
        leaf is logged."""
        if not records.is_platform_id(artist_id):
            raise ValidationError("artist_id must be 1-256 printable characters without spaces",
                                  [{"field": "artist_id", "message": "not a platform id"}])
        if by not in ("artist", "service"):
            raise ValidationError(f"by must be 'artist' or 'service', not {by!r}")

        def build() -> tuple[Pending, PreferenceChange]:
            p = self._begin()
            old = self.builder.current_preferences(p, artist_id)
            new = validate_preferences(merge_patch(old, preferences) if patch else preferences,
                                       purposes=accepted_purposes(p.schedule, p.logged_ms), limits=self.preference_limits)
            index, h = self.builder.preferences(p, artist_id, new, by=by, service=service)
            return p, PreferenceChange(index, h, new, dropped_settings(old, new))

        return self._build_and_commit(build)

    # --- content bound to its artists (SPEC §2.1) ---------------------------------------------

    def set_content_artists(self, content_id: str, artists: Sequence[str], *, service: str | None = None) -> list[BindingResult]:
        """Makes `artists` exactly the content's artists (`PUT /v1/content/{id}/artists`): a `binding` leaf
        in the chain of each artist bound or released; none if nothing changes."""
        target = frozenset(artists)
        return self._rebind(content_id, lambda before: target, service)

    def bind_content(self, content_id: str, artists: Sequence[str], *, service: str | None = None) -> list[BindingResult]:
        """Adds `artists` to the content's artists (`tlog content bind`)."""
        return self._rebind(content_id, lambda before: before | frozenset(artists), service)

    def release_content(self, content_id: str, artist_id: str, *, service: str | None = None) -> list[BindingResult]:
        """Releases the content from one of its artists (`tlog content release`)."""
        def target(before: frozenset[str]) -> frozenset[str]:
            if artist_id not in before:
                raise ValidationError(f"content {content_id!r} is not bound to {artist_id!r}",
                                      [{"field": "artist", "message": "not one of the content's artists"}])
            return before - {artist_id}

        return self._rebind(content_id, target, service)

    def _rebind(self, content_id: str, target: Callable[[frozenset[str]], frozenset[str]],
                service: str | None) -> list[BindingResult]:
        def build() -> tuple[Pending, list[BindingResult]]:
            p = self._begin()
            before = self.builder.artists_of(p, content_id) or frozenset()
            return p, self.builder.bind(p, content_id, target(before), service=service)

        return self._build_and_commit(build)

    def publish_policy(self, document: bytes, policy_id: str, *, effective_ms: int | None = None) -> tuple[int, bytes]:
        """Appends a `policy` leaf; uses logged from `effective_ms` on (default: at once) are decided under
        it. A time before the leaf's own `logged_at` is refused (SPEC §4: `effective_at` ≥ `logged_at`)."""
        policy = parse_policy(document, policy_id)

        def build() -> tuple[Pending, tuple[int, bytes]]:
            p = self._begin()
            return p, self.builder.policy(p, policy, effective_ms)

        return self._build_and_commit(build)

    def erase(self, artist_id: str, reason: str) -> Erasure | None:
        """Deletes the artist's private data and appends the `erasure` leaf that says so (SPEC §2.2), in
        one batch: one transaction. None if nothing of it was left to erase. The entries are read inside
        the build, so a batch rebuilt after another writer appended erases what that one added too."""
        def build() -> tuple[Pending, Erasure | None]:
            p = self._begin()
            return p, self.builder.erase(p, artist_id, reason, erasable(self.store, artist_id))

        return self._build_and_commit(build)

    def start_log(self, vrf_key: bytes) -> bytes:
        """The first batch of a new log (SPEC §2.3): the `log` leaf committing to the origin and the VRF
        public key, the default policy, and the map leaf; returns its checkpoint (size 3)."""
        def build() -> tuple[Pending, None]:
            p = self._begin()
            self.builder.first(p, vrf_key, DEFAULT_POLICY)
            return p, None

        self._build_and_commit(build)
        return self.checkpoint  # type: ignore[return-value]

    def _build_and_commit(self, build: Callable[[], tuple[Pending, T]]) -> T:
        """Builds a batch and commits it, after every batch in flight (preferences and policies read
        what those wrote)."""
        self.drain()
        return self.wait(self._submit(build))

    # --- the pipeline ------------------------------------------------------------------------

    def wait(self, ticket: Ticket) -> Any:
        """The ticket's results once its batch (and every one before it) is durable; raises its error."""
        while not ticket.done:
            self._settle_oldest()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def drain(self) -> None:
        """Settles every batch in flight."""
        while self._flight:
            self._settle_oldest()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self.writer.close()

    def _submit(self, build: Callable[[], tuple[Pending, Any]], *, rebuilt: bool = False) -> Ticket:
        ticket = Ticket(build, rebuilt)
        start = self.builder.head.size
        try:
            p, ticket.result = build()
            if p.entries:
                ticket.checkpoint, ticket.batch = self.builder.seal(p)
                ticket.map = p.map
                self.writer.send(ticket.batch)
            ticket.start, ticket.end = p.start, p.size
        except BaseException:
            self.builder.forget(start, None)  # nothing of this batch is in flight
            raise
        if p.entries:
            self.builder.advance(p)
        self._flight.append(ticket)
        while sum(t.batch is not None for t in self._flight) > MAX_IN_FLIGHT:
            self._settle_oldest()
        return ticket

    def _settle_oldest(self) -> None:
        ticket = self._flight[0]
        if ticket.batch is not None:
            try:
                self.writer.receive()
            except Exception as exc:
                self._recover(exc)
                return
        self._flight.popleft()
        self._durable(ticket)

    def _durable(self, ticket: Ticket) -> None:
        self.builder.forget(ticket.start, ticket.end)
        ticket.done = True
        if ticket.batch is not None:
            self.checkpoint = ticket.checkpoint
            self._keep_map(ticket)
            if self.on_commit is not None:
                self.on_commit(ticket.batch)

    def _keep_map(self, ticket: Ticket) -> None:
        if ticket.map is not None:
            self.maps[ticket.end] = ticket.map
            while len(self.maps) > KEPT_MAPS:
                del self.maps[next(iter(self.maps))]

    def _recover(self, exc: Exception) -> None:
        """The oldest batch in flight failed with `exc`: see the module docstring."""
        tickets = list(self._flight)
        self._flight.clear()
        outcomes: list[Exception | None] = [exc]
        for t in tickets[1:]:
            try:
                if t.batch is not None:
                    self.writer.receive()
                outcomes.append(None)
            except Exception as later:
                outcomes.append(later)
        self.builder.recent.clear()
        try:
            self.reload()
        except Exception as failed:  # the state stays stale: the next batch reloads first
            for t in tickets:
                t.error, t.done = failed, True
            return
        for i, (t, err) in enumerate(zip(tickets, outcomes)):
            if t.batch is not None and err is None:
                # Written after all (a batch whose answer was lost before it): part of what was reloaded.
                t.done = True
                self._keep_map(t)
                if self.on_commit is not None:
                    self.on_commit(t.batch)
            elif t.rebuilt or (i == 0 and not (isinstance(err, StorageError) and err.code == STALE_STATE)):
                t.error, t.done = err, True
            else:  # built on a batch that failed, or refused as stale: build it again on what is stored
                try:
                    again = self._submit(t.build, rebuilt=True)
                    t.result = self.wait(again)
                    t.start, t.end, t.batch, t.checkpoint, t.map = again.start, again.end, again.batch, again.checkpoint, again.map
                except Exception as e:
                    t.error = e
                t.done = True



def read_head(store: LogStore) -> Head:
    """Where the stored log ends: what a batch is built on after a start or a failed write."""
    size = store.size()
    frontier = merkle.Frontier.from_reader(size, store)
    prev = store.leaf_hashes(size - 1, size)[0] if size else bytes(32)
    last = store.entry(size - 1) if size else None
    schedule = read_schedule(store)
    amap = ArtistMap.build((tag, MapValue(aseq, head)) for tag, (aseq, head) in store.heads().items() if aseq)
    return Head(size, frontier, prev, last.logged_ms if last else 0, schedule, amap)


def erasable(store: LogStore, artist_id: str) -> list[tuple[Entry, bytes]]:
    """The artist's entries not erased yet, each with its public leaf (checked against its stored hash)."""
    entries = [e for e in store.artist_entries(artist_id, UseFilter(), MAX_ENTRIES) if e.erased is None]
    return list(zip(entries, entry_leaves(store, entries)))


def read_schedule(store: LogStore) -> tuple[tuple[int, int, Policy], ...]:
    """Every stored policy leaf as (effective_at ms, index, policy): the schedule `policy.in_effect` reads."""
    return tuple(_scheduled(store.entry(r.index), r) for r in store.policies())


def _scheduled(entry: Entry | None, record: PolicyRecord) -> tuple[int, int, Policy]:
    if entry is None or entry.type != "policy":
        raise StorageError(f"policy {record.policy_id!r} names index {record.index}, which is not its policy leaf")
    try:
        effective = records.parse_logged_at(entry.details["effective_at"])
        return effective, record.index, parse_policy(record.document, record.policy_id)
    except (KeyError, TlogError) as exc:
        why = exc.message if isinstance(exc, TlogError) else f"no {exc}"
        raise Damaged(f"the policy leaf at index {record.index} cannot be read back (the database was "
                           f"altered): {why}") from None

