"""The sequencer: the only writer of a log.

It takes work in batches (group commit): validated use records from one or more callers, preference
changes, policy publications. For each batch it decides, assigns indexes, builds the public leaves and
their chain, extends the tree and every touched artist chain, signs a checkpoint over the new size, and
hands the whole batch to its writer, which stores it as one transaction. A result is reported only after
that transaction has committed; a failed write reloads the state from storage, so memory and disk agree
again before the next batch.

Batches may be pipelined: `submit_uses` builds a batch and hands it to the writer (store/writer.py),
then returns a ticket at once, so the next batch is built while this one is written; `wait` returns a
ticket's results once its batch is durable. The synchronous calls are `wait(submit(...))`.

Invariants:
- Indexes are dense and assigned here alone; `Batch.start` guards against a second writer.
- `logged_at` never decreases along the log (`max(clock, last)`).
- Every batch ends with a `map` leaf committing to the artist map over every leaf before it (SPEC §2.3)
  and a signed checkpoint covering it, both made in `_seal`: so the last leaf of every checkpoint is a
  map leaf, and the map root is written in the same transaction as the batch it covers.
- Artist tags are VRF outputs (SPEC §2.2), computed once at an artist's first sight together with their
  proof, and stored with the artist: readers serve proofs without the VRF key.
- The policy a batch decides by is the one in effect at its `logged_at` (SPEC §4: the latest
  `effective_at` not after it, ties to the later leaf); publishing one that takes effect later changes
  nothing until then.
- Two states: the *build* state (size, frontier, chain heads, artists, policy) moves forward as soon as a
  batch is handed over, so the next one extends it; the *durable* state (`checkpoint`, `on_commit`)
  moves only as outcomes are received, oldest first. A result reaches its caller only once its batch,
  and every batch before it, is durable.
- Events of batches in flight are remembered (`_recent`) until their batch is settled, so an event_id
  sent again meanwhile is a duplicate of the first, not a second leaf (the store's unique index is the
  backstop).
- If a batch fails, every later batch in flight was built on it: all outcomes still owed are received,
  the state is reloaded from storage, and the later batches are built again from their submissions (as
  is the failed one when the store said another writer had appended: STALE_STATE). A batch that was
  written after all (an answer lost with a dying writer) stands.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from . import merkle, records
from .artistmap import ArtistMap, MapValue
from .checkpoint import Checkpoint
from .errors import Conflict, Forbidden, StorageError, TlogError, ValidationError
from .leaves import entry_leaf
from .note import Signer, sign_note
from .policy import DEFAULT_POLICY, Policy, decide, in_effect, loosenings, parse_policy, validate_preferences
from .vrf import VrfSecret
from .store.base import STALE_STATE, ArtistState, Batch, Entry, PolicyRecord, Store
from .store.writer import BatchWriter, InlineWriter

T = TypeVar("T")
MAX_IN_FLIGHT = 2  # batches handed to the writer and not yet settled: one being written, one queued
KEPT_MAPS = 16  # artist maps of the latest durable sizes kept for map proofs (older ones are rebuilt)

# The submitted fields of a use record; the rest of its details are the server's.
SUBMITTED_FIELDS = (
    "event_id", "content_id", "artist_id", "purpose", "phase", "system", "occurred_at", "invocations",
    "window_end", "detail", "basis",
)


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~1 µs more to build, once per record
class UseResult:
    event_id: str
    index: int
    decision: str
    leaf_hash: bytes
    duplicate: bool = False
    leaf: bytes | None = None  # the public leaf, when this call appended it (saves re-deriving it)


@dataclass(slots=True)
class Submission:
    """One caller's validated records: appended all together or not at all."""

    service: str
    records: list[dict[str, Any]]


@dataclass(slots=True)
class _Pending:
    """A batch being built: staged copies of everything a batch may change."""

    start: int
    frontier: merkle.Frontier
    prev: bytes
    base: bytes  # the hash of the leaf before `start`, which the store checks before writing
    logged_ms: int
    logged_at: str
    entries: list[Entry] = field(default_factory=list)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)
    artists: dict[str, ArtistState] = field(default_factory=dict)
    policies: list[PolicyRecord] = field(default_factory=list)
    policy: Policy | None = None  # the policy in effect at logged_at
    schedule: tuple[tuple[int, int, Policy], ...] = ()  # every published policy: (effective ms, index, policy)
    map: ArtistMap = field(default_factory=ArtistMap.empty)

    @property
    def size(self) -> int:
        return self.start + len(self.entries)


@dataclass(slots=True, eq=False)
class Ticket:
    """One submitted batch, until it is settled (`done`): then `result`, or `error` if it failed."""

    build: Callable[[], tuple[_Pending, Any]] = field(repr=False)
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
        store: Store,
        *,
        origin: str,
        signers: Sequence[Signer],
        vrf: VrfSecret,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[Batch], None] | None = None,
        writer: BatchWriter | None = None,
    ) -> None:
        self.store = store
        self.writer = writer if writer is not None else InlineWriter(store)
        self._flight: deque[Ticket] = deque()
        self._recent: dict[tuple[str, str], tuple[Any, UseResult]] = {}
        # Told of every durable batch (the server warms its reader's node cache with it: the receipt of
        # a fresh leaf then needs no read of what was just written).
        self.on_commit = on_commit
        self.origin = origin
        # Kept by reference when a list: LocalLog.reload_keys swaps a running server's keys in place.
        self.signers = signers if isinstance(signers, list) else list(signers)
        self.vrf = vrf
        self.clock = clock
        self._artists: dict[str, ArtistState | None] = {}
        # The artist maps of the latest durable sizes, newest last: map proofs are served from these.
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
        self._artists.clear()
        size = self.store.size()
        frontier = merkle.Frontier.from_reader(size, self.store)
        prev = self.store.leaf_hashes(size - 1, size)[0] if size else bytes(32)
        last = self.store.entry(size - 1) if size else None
        schedule = tuple(_scheduled(self.store.entry(r.index), r) for r in self.store.policies())
        amap = ArtistMap.build((a.tag, MapValue(a.aseq, a.head)) for a in self.store.artists() if a.aseq)
        checkpoint = self.store.latest_checkpoint()
        self.size, self.frontier, self.prev, self.checkpoint = size, frontier, prev, checkpoint
        self.logged_ms = last.logged_ms if last else 0
        self.schedule, self.map = schedule, amap
        self.maps.clear()  # in place: a server holds a reference to it
        self.maps[size] = amap
        self._stale = False

    @property
    def policy(self) -> Policy | None:
        """The policy in effect now (for checking a record's purpose before it is submitted)."""
        return in_effect(self.schedule, max(int(self.clock() * 1000), self.logged_ms))

    def _artist(self, p: _Pending, artist_id: str) -> ArtistState:
        """The artist's state as of the batch being built (staged, cached, stored or new)."""
        a = p.artists.get(artist_id)
        if a is not None:
            return a
        if artist_id in self._artists:
            cur = self._artists[artist_id]
        else:
            cur = self._artists[artist_id] = self.store.artist_state(artist_id)
        if cur is None:
            tag, proof = records.artist_tag(self.vrf, artist_id)
            a = ArtistState(artist_id, tag, 0, -1, None, proof)
        else:
            a = ArtistState(cur.artist_id, cur.tag, cur.aseq, cur.head, cur.preferences, cur.proof)
        p.artists[artist_id] = a
        return a

    def _prefetch_artists(self, artist_ids: set[str]) -> None:
        """Loads the artists of a submission in one query instead of one per artist."""
        missing = [a for a in artist_ids if a not in self._artists]
        if missing:
            found = self.store.artist_states(missing)
            for a in missing:
                self._artists[a] = found.get(a)

    def _begin(self) -> _Pending:
        if self._stale:
            self.reload()
        logged_ms = max(int(self.clock() * 1000), self.logged_ms)
        return _Pending(
            start=self.size, frontier=self.frontier.copy(), prev=self.prev, base=self.prev, logged_ms=logged_ms,
            logged_at=records.format_logged_at(logged_ms), policy=in_effect(self.schedule, logged_ms),
            schedule=self.schedule, map=self.map,
        )

    # --- leaves ------------------------------------------------------------------------------

    def _add(self, p: _Pending, entry: Entry) -> tuple[bytes, bytes]:
        """Appends `entry` to the batch; returns its leaf and leaf hash."""
        leaf = entry_leaf(entry, p.prev)
        return leaf, self._push(p, entry, leaf)

    def _push(self, p: _Pending, entry: Entry, leaf: bytes) -> bytes:
        """Appends `entry`, whose leaf is `leaf`, to the batch; returns the leaf hash."""
        h = merkle.leaf_hash(leaf)
        p.nodes.extend(p.frontier.append(h))
        p.entries.append(entry)
        p.prev = h
        return h

    def _artist_entry(self, p: _Pending, artist: ArtistState, kind: str, details: dict[str, Any]) -> Entry:
        index = p.size
        aprev = artist.head if artist.aseq else None
        artist.aseq += 1
        artist.head = index
        return Entry(index, kind, p.logged_ms, details, artist.artist_id, artist.tag, artist.aseq, aprev)

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
        def build() -> tuple[_Pending, list[list[UseResult] | TlogError]]:
            p = self._begin()
            return p, self._build_uses(p, submissions)

        return self._submit(build)

    def _build_uses(self, p: _Pending, submissions: Sequence[Submission]) -> list[list[UseResult] | TlogError]:
        seen = self._recent  # events of this batch and of every batch in flight
        out: list[list[UseResult] | TlogError] = []
        # One query each for every submission's artists and earlier events, not one per submission.
        self._prefetch_artists({r["artist_id"] for sub in submissions for r in sub.records})
        stored: dict[str, dict[str, Entry]] = {}
        for service in {sub.service for sub in submissions}:
            ids = [r["event_id"] for sub in submissions if sub.service == service for r in sub.records
                   if (service, r["event_id"]) not in seen]
            stored[service] = self.store.find_events(service, ids)
        for sub in submissions:
            # Only this submission's artists can change: their states are all an undo needs.
            touched = {r["artist_id"]: p.artists.get(r["artist_id"]) for r in sub.records}
            mark = (len(p.entries), len(p.nodes), p.prev, p.frontier.copy(), _snapshot(touched))
            try:
                out.append(self._append_submission(p, sub, seen, stored[sub.service]))
            except TlogError as exc:
                # Undo this submission's staged work; earlier submissions in the batch stand.
                n_entries, n_nodes, p.prev, p.frontier, before = mark
                for artist_id, state in before.items():
                    if state is None:
                        p.artists.pop(artist_id, None)
                    else:
                        p.artists[artist_id] = state
                del p.entries[n_entries:], p.nodes[n_nodes:]
                for key in [k for k, (_, r) in seen.items() if r.index >= p.start + n_entries and not r.duplicate]:
                    del seen[key]
                out.append(exc)
        return out

    def _append_submission(self, p: _Pending, sub: Submission, seen: dict[tuple[str, str], tuple[Any, UseResult]],
                           stored: dict[str, Entry]) -> list[UseResult]:
        policy = p.policy
        if policy is None:
            raise ValidationError("no policy has been published; publish one with `tlog policy publish`")
        problems = [
            {"field": f"records[{i}].purpose", "message": f"unknown purpose {r['purpose']!r} in policy {policy.id}"}
            for i, r in enumerate(sub.records)
            if r["purpose"] not in policy.purposes
        ]
        ids = [r["event_id"] for r in sub.records]
        if len(set(ids)) != len(ids):
            problems.append({"field": "records", "message": "an event_id appears twice in one request"})
        if problems:
            raise ValidationError("records rejected", problems)
        results: list[UseResult] = []
        nonces = os.urandom(16 * len(sub.records))  # one system call per submission, not per record
        for k, r in enumerate(sub.records):
            key = (sub.service, r["event_id"])
            prior = seen.get(key)
            if prior is None and r["event_id"] in stored:
                e = stored[r["event_id"]]
                h = self.store.leaf_hashes(e.index, e.index + 1)[0]
                prior = ({k: e.details[k] for k in SUBMITTED_FIELDS}, UseResult(r["event_id"], e.index, e.details["decision"], h, True))
            if prior is not None:
                # A validated record holds exactly the submitted fields, so dict equality is body equality.
                body, first = prior
                if body != r:
                    raise Conflict(
                        f"event_id {r['event_id']!r} was already logged by {sub.service} with a different body",
                        [{"field": "event_id", "message": f"first logged at index {first.index}"}],
                    )
                results.append(UseResult(first.event_id, first.index, first.decision, first.leaf_hash, True))
                continue
            res = self._append_use(p, sub.service, r, policy, nonces[16 * k : 16 * k + 16])
            results.append(res)
            seen[key] = (r, res)
        return results

    def _append_use(self, p: _Pending, service: str, r: dict[str, Any], policy: Policy, nonce: bytes) -> UseResult:
        artist = self._artist(p, r["artist_id"])
        decision = decide(policy, r["purpose"], r["content_id"], artist.preferences, r["basis"])
        kind = "refusal" if decision == "refused" else "use"
        entry = self._artist_entry(p, artist, kind, {})
        d = entry.details = records.use_details(
            r, service=service, index=entry.index, logged_at=p.logged_at, decision=decision,
            policy=policy.id, nonce=nonce,
        )
        leaf = records.use_leaf_unchecked(d, prev=p.prev, artist=artist.tag, aseq=entry.aseq, aprev=entry.aprev)  # type: ignore[arg-type]
        h = self._push(p, entry, leaf)
        return UseResult(r["event_id"], entry.index, decision, h, leaf=leaf)

    # --- preferences and policies ------------------------------------------------------------

    def set_preferences(
        self, artist_id: str, preferences: Any, *, by: str, service: str | None = None
    ) -> tuple[int, bytes]:
        """Replaces an artist's preferences and appends a `preference` leaf saying who did it. A service
        may only add restrictions (SPEC §4); the artist's own token may do anything."""
        if not records.is_platform_id(artist_id):
            raise ValidationError("artist_id must be 1-256 printable characters without spaces",
                                  [{"field": "artist_id", "message": "not a platform id"}])
        prefs = validate_preferences(preferences)
        if by not in ("artist", "service"):
            raise ValidationError(f"by must be 'artist' or 'service', not {by!r}")

        def build() -> tuple[_Pending, tuple[int, bytes]]:
            p = self._begin()
            artist = self._artist(p, artist_id)
            if by == "service":
                loosened = loosenings(artist.preferences or {}, prefs)
                if loosened:
                    raise Forbidden(
                        "only the artist may loosen preferences", [{"field": "preferences", "message": m} for m in loosened]
                    )
            entry = self._artist_entry(p, artist, "preference", {})
            entry.details = records.preference_details(
                artist_id, prefs, by=by, service=service, index=entry.index, logged_at=p.logged_at, nonce=os.urandom(16)
            )
            artist.preferences = prefs
            _, h = self._add(p, entry)
            return p, (entry.index, h)

        return self._build_and_commit(build)

    def publish_policy(self, document: bytes, policy_id: str, *, effective_ms: int | None = None) -> tuple[int, bytes]:
        """Appends a `policy` leaf; uses logged from `effective_ms` on (default: at once) are decided under
        it. A time before the leaf's own `logged_at` is refused (SPEC §4: `effective_at` ≥ `logged_at`)."""
        policy = parse_policy(document, policy_id)

        def build() -> tuple[_Pending, tuple[int, bytes]]:
            if self.store.policy(policy_id) is not None:
                raise Conflict(f"policy {policy_id!r} was already published")
            p = self._begin()
            effective = p.logged_ms if effective_ms is None else effective_ms
            if effective < p.logged_ms:
                raise ValidationError(f"a policy cannot take effect before it is announced ({p.logged_at})",
                                      [{"field": "effective_at", "message": "must not be in the past"}])
            details = {"policy": policy.id, "sha256": hashlib.sha256(policy.document).hexdigest(),
                       "effective_at": records.format_logged_at(effective)}
            entry = Entry(p.size, "policy", p.logged_ms, details)
            _, h = self._add(p, entry)
            p.policies.append(PolicyRecord(policy.id, entry.index, policy.document))
            p.schedule = (*p.schedule, (effective, entry.index, policy))
            p.policy = in_effect(p.schedule, p.logged_ms)
            return p, (entry.index, h)

        return self._build_and_commit(build)

    def start_log(self, vrf_key: bytes) -> bytes:
        """The first batch of a new log (SPEC §2.3): the `log` leaf committing to the origin and the VRF
        public key, the default policy, and the map leaf; returns its checkpoint (size 3)."""
        if self.size:
            raise Conflict("the log has already been started")
        policy = DEFAULT_POLICY

        def build() -> tuple[_Pending, bytes]:
            p = self._begin()
            self._add(p, Entry(0, "log", p.logged_ms, {"origin": self.origin, "vrf": vrf_key.hex()}))
            sha = hashlib.sha256(policy.document).hexdigest()
            entry = Entry(1, "policy", p.logged_ms, {"policy": policy.id, "sha256": sha, "effective_at": p.logged_at})
            self._add(p, entry)
            p.policies.append(PolicyRecord(policy.id, 1, policy.document))
            p.schedule = ((p.logged_ms, 1, policy),)
            return p, b""

        self._build_and_commit(build)
        return self.checkpoint  # type: ignore[return-value]

    # --- the batch boundary ------------------------------------------------------------------

    def sign(self, size: int, root: bytes) -> bytes:
        return sign_note(Checkpoint(self.origin, size, root).body(), tuple(self.signers))

    def _seal(self, p: _Pending) -> tuple[bytes, Batch]:
        """Ends the batch: the map leaf over every leaf before it (SPEC §2.3), then the signed checkpoint."""
        changed = {a.tag: MapValue(a.aseq, a.head) for a in p.artists.values() if a.aseq}
        if changed:
            p.map = p.map.update(changed)
        self._add(p, Entry(p.size, "map", p.logged_ms, {"root": p.map.root().hex()}))
        checkpoint = self.sign(p.size, p.frontier.root())
        return checkpoint, Batch(p.start, p.entries, p.nodes, list(p.artists.values()), p.policies, checkpoint, p.base)

    def _build_and_commit(self, build: Callable[[], tuple[_Pending, T]]) -> T:
        """Builds a batch and commits it, after every batch in flight (preferences and policies read
        what those wrote)."""
        self.drain()
        return self.wait(self._submit(build))  # type: ignore[no-any-return]

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

    def _submit(self, build: Callable[[], tuple[_Pending, Any]], *, rebuilt: bool = False) -> Ticket:
        ticket = Ticket(build, rebuilt)
        start = self.size
        try:
            p, ticket.result = build()
            if p.entries:
                ticket.checkpoint, ticket.batch = self._seal(p)
                ticket.map = p.map
                self.writer.send(ticket.batch)
            ticket.start, ticket.end = p.start, p.size
        except BaseException:
            self._forget(start, None)  # nothing of this batch is in flight
            raise
        if p.entries:
            self._advance(p)
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
        self._forget(ticket.start, ticket.end)
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
        self._recent.clear()
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

    def _forget(self, start: int, end: int | None) -> None:
        """Drops the remembered events of leaves start..end (end None: all from start). They were
        remembered in index order, so a settled batch's are at the front and an abandoned one's last."""
        recent = self._recent
        if end is None:
            gone = [k for k, (_, r) in recent.items() if r.index >= start]
        else:
            gone = []
            for k, (_, r) in recent.items():
                if r.index >= end:
                    break
                gone.append(k)
        for k in gone:
            del recent[k]

    def _advance(self, p: _Pending) -> None:
        """The batch is handed over: the next one is built on it."""
        self.size, self.frontier, self.prev, self.logged_ms = p.size, p.frontier, p.prev, p.logged_ms
        self.schedule, self.map = p.schedule, p.map
        for a in p.artists.values():
            self._artists[a.artist_id] = a



def _snapshot(artists: dict[str, ArtistState | None]) -> dict[str, ArtistState | None]:
    return {k: None if a is None else ArtistState(a.artist_id, a.tag, a.aseq, a.head, a.preferences, a.proof)
            for k, a in artists.items()}


def _scheduled(entry: Entry | None, record: PolicyRecord) -> tuple[int, int, Policy]:
    if entry is None or entry.type != "policy":
        raise StorageError(f"policy {record.policy_id!r} names index {record.index}, which is not its policy leaf")
    effective = records.parse_logged_at(entry.details["effective_at"])
    return effective, record.index, parse_policy(record.document, record.policy_id)

