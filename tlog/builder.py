"""Building a batch: the integration step of the sequencer, apart from the pipeline that writes batches.

A `BatchBuilder` turns submissions into a `Pending` batch on top of a `Head` (where the log ends: size,
frontier, last leaf hash, time, policies, artist map): it decides each use, assigns indexes, builds the
public leaves and their chain, extends the tree and every touched artist chain, and `seal` ends the batch
with its map leaf (SPEC §2.3) and signed checkpoint. It reads storage only through `BuildReader` (five
lookups), so it is tested without SQLite (tests/test_builder.py), as tessera's `Integrate` is tested
without storage. The pipeline (sequencer.py) decides when batches are built, written and settled.

Invariants kept here:
- Indexes are dense: each batch starts at `Head.size` and `advance` moves the head past it.
- `logged_at` never decreases along the log (`max(clock, last)`).
- A batch ends with a `map` leaf committing to the artist map over every leaf before it, then the
  checkpoint over the whole batch: the last leaf of every checkpoint is a map leaf.
- Artist tags are VRF outputs (SPEC §2.2), computed once at an artist's first sight with their proof.
- A batch is decided by the policy in effect at its `logged_at` (SPEC §4, `policy.in_effect`).
- A rejected submission leaves nothing behind: its staged entries, nodes, artist states, first-sight
  bindings and remembered events are undone, and the submissions before it in the batch stand.
- Content belongs to its artists (SPEC §2.1): a use names an artist its content is bound to, or the
  content is bound to none yet and the use binds it to that artist (no leaf of its own); otherwise the
  submission is refused (409). A content, once bound, stays bound to at least one artist, so no later
  use can bind it afresh under another id.
- An erased artist keeps its tag and its chain (SPEC §2.2): if its id comes back, the artist map still
  holds the tag, and the chain goes on from there.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from . import merkle, records
from .artistmap import ArtistMap, MapValue
from .checkpoint import Checkpoint
from .errors import Conflict, Forbidden, TlogError, ValidationError
from .leaf import use_leaf_unchecked
from .note import Signer, sign_note
from .policy import Policy, decide, in_effect, loosenings, notice_problem, phase_problem, validate_preferences
from .records import UseRecord
from .rederive import entry_leaf, public_fields
from .store.base import ArtistState, Batch, BindingChange, Entry, Erasure, PolicyRecord
from .vrf import VrfSecret

# The submitted fields of a use record; the rest of its details are the server's.
SUBMITTED_FIELDS = (
    "event_id", "content_id", "artist_id", "purpose", "phase", "system", "occurred_at", "invocations",
    "window_end", "detail", "basis",
)
Schedule = tuple[tuple[int, int, Policy], ...]  # every published policy: (effective_at ms, leaf index, policy)
BOUND_CACHE = 200_000  # contents whose stored bindings the builder keeps in memory (then it forgets them all)
MAX_CONTENT_ARTISTS = 100  # artists one content may be bound to: a request names them all


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~1 µs more to build, once per record
class UseResult:
    event_id: str
    index: int
    decision: str
    leaf_hash: bytes
    duplicate: bool = False
    leaf: bytes | None = None  # the public leaf, when this call appended it (saves re-deriving it)


@dataclass(slots=True)
class BindingResult:
    """One binding leaf: `artist_id` bound to the content or released from it."""

    artist_id: str
    change: str
    index: int
    leaf_hash: bytes


@dataclass(slots=True)
class Submission:
    """One caller's validated records: appended all together or not at all."""

    service: str
    records: list[UseRecord]


class BuildReader(Protocol):
    """What building a batch reads from storage: artists' states, the artists contents are bound to,
    earlier events (idempotency), a stored leaf hash (a duplicate's answer) and whether a policy id is
    taken."""

    def artist_states(self, artist_ids: Sequence[str]) -> dict[str, ArtistState]: ...
    def bindings(self, content_ids: Sequence[str]) -> dict[str, frozenset[str]]: ...
    def find_events(self, service: str, event_ids: Sequence[str]) -> dict[str, Entry]: ...
    def leaf_hashes(self, start: int, end: int) -> list[bytes]: ...
    def policy(self, policy_id: str) -> PolicyRecord | None: ...


@dataclass(slots=True)
class Head:
    """Where the next batch starts: the end of the log as built so far."""

    size: int
    frontier: merkle.Frontier
    prev: bytes  # hash of the leaf at size - 1 (32 zero bytes for an empty log)
    logged_ms: int  # logged_at of that leaf
    schedule: Schedule
    map: ArtistMap


@dataclass(slots=True)
class Pending:
    """A batch being built: staged copies of everything a batch may change."""

    start: int
    frontier: merkle.Frontier
    prev: bytes
    base: bytes  # the hash of the leaf before `start`, which the store checks before writing
    logged_ms: int
    logged_at: str
    schedule: Schedule
    map: ArtistMap
    policy: Policy | None = None  # the policy in effect at logged_at
    entries: list[Entry] = field(default_factory=list)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)
    artists: dict[str, ArtistState] = field(default_factory=dict)
    policies: list[PolicyRecord] = field(default_factory=list)
    erasures: list[Erasure] = field(default_factory=list)
    bindings: list[BindingChange] = field(default_factory=list)
    bound: dict[str, frozenset[str]] = field(default_factory=dict)  # contents whose artists this batch changed

    @property
    def size(self) -> int:
        return self.start + len(self.entries)


class BatchBuilder:
    def __init__(self, reader: BuildReader, head: Head, *, origin: str, signers: list[Signer], vrf: VrfSecret,
                 clock: Callable[[], float], ids: records.IdPattern | None = None) -> None:
        self.reader = reader
        self.ids = ids  # the log's own id pattern, on top of the default one
        self.head = head
        self.origin = origin
        self.signers = signers  # by reference: LocalLog.reload_keys swaps a running server's keys in place
        self.vrf = vrf
        self.clock = clock
        self._artists: dict[str, ArtistState | None] = {}  # artists read from storage or built, as of `head`
        # Events of batches built and not yet settled, so an event_id sent again meanwhile is a duplicate
        # of the first, not a second leaf (the store's unique index is the backstop).
        self.recent: dict[tuple[str, str], tuple[Any, UseResult]] = {}
        # The artists of contents as stored (None: bound to none), a cache that may be dropped at any
        # time; and those that batches handed over changed, with the end of their batch, kept until the
        # batch is durable (until then storage may not show them yet).
        self._bound: dict[str, frozenset[str] | None] = {}
        self._unsettled_bound: dict[str, tuple[frozenset[str], int]] = {}

    def begin(self) -> Pending:
        h = self.head
        logged_ms = max(int(self.clock() * 1000), h.logged_ms)
        return Pending(
            start=h.size, frontier=h.frontier.copy(), prev=h.prev, base=h.prev, logged_ms=logged_ms,
            logged_at=records.format_logged_at(logged_ms), schedule=h.schedule, map=h.map,
            policy=in_effect(h.schedule, logged_ms),
        )

    def advance(self, p: Pending) -> None:
        """The batch was handed over: the next one is built on it."""
        self.head = Head(p.size, p.frontier, p.prev, p.logged_ms, p.schedule, p.map)
        for a in p.artists.values():
            self._artists[a.artist_id] = a
        for x in p.erasures:
            self._artists[x.artist_id] = None  # no longer stored under its id
            self._bound.clear()  # its contents were released with it: what storage holds changed
        for content_id, artists in p.bound.items():
            self._unsettled_bound[content_id] = (artists, p.size)

    def policy_now(self) -> Policy | None:
        return in_effect(self.head.schedule, max(int(self.clock() * 1000), self.head.logged_ms))

    def forget(self, start: int, end: int | None) -> None:
        """Drops the remembered events of leaves start..end (end None: all from start). They were
        remembered in index order, so a settled batch's are at the front and an abandoned one's last.
        Bindings made by batches now durable move to the cache of what storage holds."""
        if end is not None:  # durable: storage shows these bindings now
            for content_id, (artists, batch_end) in list(self._unsettled_bound.items()):
                if batch_end <= end:
                    del self._unsettled_bound[content_id]
                    self._bound[content_id] = artists
        recent = self.recent
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

    # --- artists and leaves ------------------------------------------------------------------

    def _artist(self, p: Pending, artist_id: str) -> ArtistState:
        """The artist's state as of the batch being built (staged, cached, stored or new)."""
        a = p.artists.get(artist_id)
        if a is not None:
            return a
        if artist_id in self._artists:
            cur = self._artists[artist_id]
        else:
            cur = self._artists[artist_id] = self.reader.artist_states([artist_id]).get(artist_id)
        if cur is None:
            tag, proof = records.artist_tag(self.vrf, artist_id)
            erased = p.map.get(tag)  # an erased artist whose id came back: its chain goes on
            a = ArtistState(artist_id, tag, erased.aseq if erased else 0, erased.head if erased else -1, None, proof)
        else:
            a = ArtistState(cur.artist_id, cur.tag, cur.aseq, cur.head, cur.preferences, cur.proof)
        p.artists[artist_id] = a
        return a

    def _prefetch_artists(self, artist_ids: set[str]) -> None:
        """Loads the artists of a submission in one query instead of one per artist."""
        missing = [a for a in artist_ids if a not in self._artists]
        if missing:
            found = self.reader.artist_states(missing)
            for a in missing:
                self._artists[a] = found.get(a)

    # --- content bound to its artists -----------------------------------------------------------

    def artists_of(self, p: Pending, content_id: str) -> frozenset[str] | None:
        """The artists `content_id` is bound to as of the batch being built; None if none yet."""
        got = p.bound.get(content_id)
        if got is not None:
            return got
        unsettled = self._unsettled_bound.get(content_id)
        if unsettled is not None:
            return unsettled[0]
        if content_id not in self._bound:
            self._prefetch_bindings({content_id})
        return self._bound[content_id]

    def _prefetch_bindings(self, content_ids: set[str]) -> None:
        """Loads the stored bindings of a submission's contents in one query instead of one per content."""
        missing = [c for c in content_ids if c not in self._bound and c not in self._unsettled_bound]
        if not missing:
            return
        if len(self._bound) + len(missing) > BOUND_CACHE:
            self._bound.clear()  # only a cache of what storage holds: the unsettled ones are apart
        found = self.reader.bindings(missing)
        for c in missing:
            self._bound[c] = found.get(c)

    def _check_bound(self, p: Pending, r: UseRecord, k: int) -> None:
        """The use's artist must be one its content is bound to; content bound to no one yet is bound to
        it now (SPEC §2.1: first sight, recorded by the use leaf itself, at index p.size)."""
        content_id, artist_id = r["content_id"], r["artist_id"]
        bound = self.artists_of(p, content_id)
        if bound is None:
            p.bound[content_id] = frozenset((artist_id,))
            p.bindings.append(BindingChange(content_id, artist_id, p.size, True))
        elif artist_id not in bound:
            raise Conflict(
                f"content {content_id!r} is bound to {_names(bound)}, not to {artist_id!r}: nothing was logged. "
                "Log the use under the content's artist (one record per rightsholder), or have the catalogue "
                "bind the content to its artists first",
                [{"field": f"records[{k}].artist_id", "message": f"{content_id!r} is not bound to {artist_id!r}"}],
            )

    def bind(self, p: Pending, content_id: str, artists: frozenset[str], *, service: str | None) -> list[BindingResult]:
        """Makes `artists` the content's artists: a `binding` leaf (release) in the chain of each artist
        it had and loses, then one (bind) in the chain of each it gains, in id order. No change, no leaf."""
        self._check_ids(content_id, "content_id")
        if not artists:
            raise ValidationError(f"content {content_id!r} must stay bound to at least one artist (a use would "
                                  "otherwise bind it afresh): bind its new artists before releasing the last one",
                                  [{"field": "artists", "message": "must not be empty"}])
        if len(artists) > MAX_CONTENT_ARTISTS:
            raise ValidationError(f"a content may be bound to at most {MAX_CONTENT_ARTISTS} artists",
                                  [{"field": "artists", "message": f"{len(artists)} given"}])
        for a in sorted(artists):
            self._check_ids(a, "artists")
        before = self.artists_of(p, content_id) or frozenset()
        changes = [(a, "release") for a in sorted(before - artists)] + [(a, "bind") for a in sorted(artists - before)]
        out = []
        nonces = os.urandom(records.NONCE_SIZE * len(changes))
        for k, (artist_id, change) in enumerate(changes):
            artist = self._artist(p, artist_id)
            entry = self._artist_entry(p, artist, "binding", {})
            entry.details = records.binding_details(
                artist_id, content_id, change=change, service=service, index=entry.index, logged_at=p.logged_at,
                nonce=nonces[records.NONCE_SIZE * k : records.NONCE_SIZE * (k + 1)],
            )
            p.bindings.append(BindingChange(content_id, artist_id, entry.index, change == "bind"))
            _, h = self._add(p, entry)
            out.append(BindingResult(artist_id, change, entry.index, h))
        if changes:
            p.bound[content_id] = artists
        return out

    def _check_ids(self, value: str, field: str) -> None:
        if not records.is_platform_id(value):
            raise ValidationError(f"{field}: {value[:64]!r} is not a platform id",
                                  [{"field": field, "message": records.PLATFORM_ID_RULE}])
        if self.ids is not None and not self.ids.matches(value):
            raise ValidationError(f"{field}: {value[:64]!r} does not match the log's id pattern",
                                  [{"field": field, "message": f"must match {self.ids.regex}"}])

    def _add(self, p: Pending, entry: Entry) -> tuple[bytes, bytes]:
        """Appends `entry` to the batch; returns its leaf and leaf hash."""
        leaf = entry_leaf(entry, p.prev)
        return leaf, self._push(p, entry, leaf)

    def _push(self, p: Pending, entry: Entry, leaf: bytes) -> bytes:
        """Appends `entry`, whose leaf is `leaf`, to the batch; returns the leaf hash."""
        h = merkle.leaf_hash(leaf)
        p.nodes.extend(p.frontier.append(h))
        p.entries.append(entry)
        p.prev = h
        return h

    def _artist_entry(self, p: Pending, artist: ArtistState, kind: str, details: dict[str, Any]) -> Entry:
        index = p.size
        aprev = artist.head if artist.aseq else None
        artist.aseq += 1
        artist.head = index
        return Entry(index, kind, p.logged_ms, details, artist.artist_id, artist.tag, artist.aseq, aprev)

    def uses(self, p: Pending, submissions: Sequence[Submission]) -> list[list[UseResult] | TlogError]:
        seen = self.recent  # events of this batch and of every batch in flight
        out: list[list[UseResult] | TlogError] = []
        # One query each for every submission's artists and earlier events, not one per submission.
        self._prefetch_artists({r["artist_id"] for sub in submissions for r in sub.records})
        self._prefetch_bindings({r["content_id"] for sub in submissions for r in sub.records})
        stored: dict[str, dict[str, Entry]] = {}
        for service in {sub.service for sub in submissions}:
            ids = [r["event_id"] for sub in submissions if sub.service == service for r in sub.records
                   if (service, r["event_id"]) not in seen]
            stored[service] = self.reader.find_events(service, ids)
        for sub in submissions:
            # Only this submission's artists can change: their states are all an undo needs.
            touched = {r["artist_id"]: p.artists.get(r["artist_id"]) for r in sub.records}
            mark = (len(p.entries), len(p.nodes), p.prev, p.frontier.copy(), _snapshot(touched), len(p.bindings))
            try:
                out.append(self._append_submission(p, sub, seen, stored[sub.service]))
            except TlogError as exc:
                # Undo this submission's staged work; earlier submissions in the batch stand.
                n_entries, n_nodes, p.prev, p.frontier, before, n_bindings = mark
                for artist_id, state in before.items():
                    if state is None:
                        p.artists.pop(artist_id, None)
                    else:
                        p.artists[artist_id] = state
                for b in p.bindings[n_bindings:]:  # first sights only: the content was bound to no one before
                    del p.bound[b.content_id]
                del p.entries[n_entries:], p.nodes[n_nodes:], p.bindings[n_bindings:]
                for key in [k for k, (_, r) in seen.items() if r.index >= p.start + n_entries and not r.duplicate]:
                    del seen[key]
                out.append(exc)
        return out

    def _append_submission(self, p: Pending, sub: Submission, seen: dict[tuple[str, str], tuple[Any, UseResult]],
                           stored: dict[str, Entry]) -> list[UseResult]:
        policy = p.policy
        if policy is None:
            raise ValidationError("no policy has been published; publish one with `tlog policy publish`")
        problems = [
            {"field": f"records[{i}].purpose", "message": f"unknown purpose {r['purpose']!r} in policy {policy.id}"}
            for i, r in enumerate(sub.records)
            if r["purpose"] not in policy.purposes
        ]
        problems += [
            {"field": f"records[{i}].phase", "message": why}
            for i, r in enumerate(sub.records)
            if (why := phase_problem(policy, r["purpose"], r["phase"])) is not None
        ]
        if self.ids is not None:
            problems += [
                {"field": f"records[{i}].{f}", "message": f"must match the log's id pattern {self.ids.regex}"}
                for i, r in enumerate(sub.records) for f in ("content_id", "artist_id") if not self.ids.matches(r[f])
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
                h = self.reader.leaf_hashes(e.index, e.index + 1)[0]
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
            self._check_bound(p, r, k)
            res = self._append_use(p, sub.service, r, policy, nonces[16 * k : 16 * k + 16])
            results.append(res)
            seen[key] = (r, res)
        return results

    def _append_use(self, p: Pending, service: str, r: UseRecord, policy: Policy, nonce: bytes) -> UseResult:
        artist = self._artist(p, r["artist_id"])
        decision = decide(policy, r["purpose"], r["content_id"], artist.preferences, r["basis"])
        kind = "refusal" if decision == "refused" else "use"
        entry = self._artist_entry(p, artist, kind, {})
        d = entry.details = records.use_details(
            r, service=service, index=entry.index, logged_at=p.logged_at, decision=decision,
            policy=policy.id, nonce=nonce,
        )
        leaf = use_leaf_unchecked(d, prev=p.prev, artist=artist.tag, aseq=entry.aseq, aprev=entry.aprev)  # type: ignore[arg-type]
        h = self._push(p, entry, leaf)
        return UseResult(r["event_id"], entry.index, decision, h, leaf=leaf)

    # --- preferences, policies, the first batch --------------------------------------------

    def current_preferences(self, p: Pending, artist_id: str) -> dict[str, Any]:
        """The artist's preferences as of the batch being built, in normal form (none set: the empty ones)."""
        return self._artist(p, artist_id).preferences or validate_preferences({})

    def preferences(self, p: Pending, artist_id: str, prefs: dict[str, Any], *, by: str,
                    service: str | None) -> tuple[int, bytes]:
        """A `preference` leaf replacing the artist's preferences (validated by the caller). A service may
        only add restrictions (SPEC §4); the artist's own token may do anything."""
        self._check_ids(artist_id, "artist_id")
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
        return entry.index, h

    def policy(self, p: Pending, policy: Policy, effective_ms: int | None) -> tuple[int, bytes]:
        """A `policy` leaf; uses logged from `effective_ms` on (default: at once) are decided under it. A
        time before the leaf's own `logged_at` is refused (SPEC §4: `effective_at` ≥ `logged_at`), and so
        is a loosening with less notice than the policy in effect promised (SPEC §4 Notice), naming the
        earliest time it may take effect. A loosening is not moved to that time silently: the operator
        chooses it."""
        if self.reader.policy(policy.id) is not None:
            raise Conflict(f"policy {policy.id!r} was already published")
        effective = p.logged_ms if effective_ms is None else effective_ms
        if effective < p.logged_ms:
            raise ValidationError(f"a policy cannot take effect before it is announced ({p.logged_at})",
                                  [{"field": "effective_at", "message": "must not be in the past"}])
        if effective >= records.MAX_LOGGED_MS:  # a leaf's time has a four-digit year
            raise ValidationError("a policy must take effect before the year 10000",
                                  [{"field": "effective_at", "message": "must be before 10000-01-01T00:00:00Z"}])
        problem = notice_problem(p.schedule, policy, p.logged_ms, effective)
        if problem is not None:
            why, earliest = problem
            when = records.format_logged_at(earliest)
            raise ValidationError(f"policy {policy.id!r} {why}",
                                  [{"field": "effective_at", "message": f"the earliest allowed is {when}"}])
        details = {"policy": policy.id, "sha256": hashlib.sha256(policy.document).hexdigest(),
                   "effective_at": records.format_logged_at(effective)}
        entry = Entry(p.size, "policy", p.logged_ms, details)
        _, h = self._add(p, entry)
        p.policies.append(PolicyRecord(policy.id, entry.index, policy.document))
        p.schedule = (*p.schedule, (effective, entry.index, policy))
        p.policy = in_effect(p.schedule, p.logged_ms)
        return entry.index, h

    def erase(self, p: Pending, artist_id: str, reason: str, leaves: Sequence[tuple[Entry, bytes]]) -> Erasure | None:
        """An `erasure` leaf for the artist's chain entries not erased before (`leaves`: each with its public
        leaf, from the store), whose private data the batch deletes (SPEC §2.2); None if there are none.
        Only the artist's chain entries may be listed, each once."""
        if not leaves:
            return None
        tag = leaves[0][0].tag
        if len({e.index for e, _ in leaves}) != len(leaves) or any(e.tag != tag or e.aseq is None for e, _ in leaves):
            raise ValueError("an erasure lists the chain entries of one artist, each once")
        entry = Entry(p.size, "erasure", p.logged_ms, {"artist": tag.hex(), "erased": len(leaves)})  # type: ignore[union-attr]
        self._add(p, entry)
        erasure = Erasure(entry.index, artist_id, tag, reason, [(e.index, public_fields(leaf)) for e, leaf in leaves])  # type: ignore[arg-type]
        p.erasures.append(erasure)
        return erasure

    def first(self, p: Pending, vrf_key: bytes, policy: Policy) -> None:
        """The first batch of a log (SPEC §2.3): the `log` leaf committing to the origin and the VRF public
        key, then the first policy; `seal` adds the map leaf."""
        if p.start:
            raise Conflict("the log has already been started")
        self._add(p, Entry(0, "log", p.logged_ms, {"origin": self.origin, "vrf": vrf_key.hex()}))
        self.policy(p, policy, None)

    # --- the batch boundary ------------------------------------------------------------------

    def seal(self, p: Pending) -> tuple[bytes, Batch]:
        """Ends the batch: the map leaf over every leaf before it (SPEC §2.3), then the signed checkpoint."""
        changed = {a.tag: MapValue(a.aseq, a.head) for a in p.artists.values() if a.aseq}
        if changed:
            p.map = p.map.update(changed)
        self._add(p, Entry(p.size, "map", p.logged_ms, {"root": p.map.root().hex()}))
        checkpoint = self.sign(p.size, p.frontier.root())
        return checkpoint, Batch(p.start, p.entries, p.nodes, list(p.artists.values()), p.policies, checkpoint, p.base,
                                 p.erasures, p.bindings)

    def sign(self, size: int, root: bytes) -> bytes:
        return sign_note(Checkpoint(self.origin, size, root).body(), tuple(self.signers))


def _names(artist_ids: frozenset[str], shown: int = 3) -> str:
    """Up to `shown` artist ids, quoted, and how many more: an error names the conflict, boundedly."""
    names = sorted(artist_ids)
    text = ", ".join(repr(a) for a in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _snapshot(artists: dict[str, ArtistState | None]) -> dict[str, ArtistState | None]:
    return {k: None if a is None else ArtistState(a.artist_id, a.tag, a.aseq, a.head, a.preferences, a.proof)
            for k, a in artists.items()}
