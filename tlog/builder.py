"""Building a batch: the integration step of the sequencer, apart from the pipeline that writes batches.

A `BatchBuilder` turns submissions into a `Pending` batch on top of a `Head` (where the log ends: size,
frontier, last leaf hash, time, policies, artist map): it decides each use, assigns indexes, builds the
public leaves and their chain, extends the tree and every touched artist chain, and `seal` ends the batch
with its map leaf (SPEC §2.3) and signed checkpoint. It reads storage only through `BuildReader` (four
lookups), so it is tested without SQLite (tests/test_builder.py), as tessera's `Integrate` is tested
without storage. The pipeline (sequencer.py) decides when batches are built, written and settled.

Invariants kept here:
- Indexes are dense: each batch starts at `Head.size` and `advance` moves the head past it.
- `logged_at` never decreases along the log (`max(clock, last)`).
- A batch ends with a `map` leaf committing to the artist map over every leaf before it, then the
  checkpoint over the whole batch: the last leaf of every checkpoint is a map leaf.
- Artist tags are VRF outputs (SPEC §2.2), computed once at an artist's first sight with their proof.
- A batch is decided by the policy in effect at its `logged_at` (SPEC §4, `policy.in_effect`).
- A rejected submission leaves nothing behind: its staged entries, nodes, artist states and remembered
  events are undone, and the submissions before it in the batch stand.
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
from .leaves import entry_leaf, public_fields
from .note import Signer, sign_note
from .policy import Policy, decide, in_effect, loosenings, notice_problem, phase_problem
from .store.base import ArtistState, Batch, Entry, Erasure, PolicyRecord
from .vrf import VrfSecret

# The submitted fields of a use record; the rest of its details are the server's.
SUBMITTED_FIELDS = (
    "event_id", "content_id", "artist_id", "purpose", "phase", "system", "occurred_at", "invocations",
    "window_end", "detail", "basis",
)
Schedule = tuple[tuple[int, int, Policy], ...]  # every published policy: (effective_at ms, leaf index, policy)


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


class BuildReader(Protocol):
    """What building a batch reads from storage: artists' states, earlier events (idempotency), a stored
    leaf hash (a duplicate's answer) and whether a policy id is taken."""

    def artist_states(self, artist_ids: Sequence[str]) -> dict[str, ArtistState]: ...
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

    @property
    def size(self) -> int:
        return self.start + len(self.entries)


class BatchBuilder:
    def __init__(self, reader: BuildReader, head: Head, *, origin: str, signers: list[Signer], vrf: VrfSecret,
                 clock: Callable[[], float]) -> None:
        self.reader = reader
        self.head = head
        self.origin = origin
        self.signers = signers  # by reference: LocalLog.reload_keys swaps a running server's keys in place
        self.vrf = vrf
        self.clock = clock
        self._artists: dict[str, ArtistState | None] = {}  # artists read from storage or built, as of `head`
        # Events of batches built and not yet settled, so an event_id sent again meanwhile is a duplicate
        # of the first, not a second leaf (the store's unique index is the backstop).
        self.recent: dict[tuple[str, str], tuple[Any, UseResult]] = {}

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

    def policy_now(self) -> Policy | None:
        return in_effect(self.head.schedule, max(int(self.clock() * 1000), self.head.logged_ms))

    def forget(self, start: int, end: int | None) -> None:
        """Drops the remembered events of leaves start..end (end None: all from start). They were
        remembered in index order, so a settled batch's are at the front and an abandoned one's last."""
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
        stored: dict[str, dict[str, Entry]] = {}
        for service in {sub.service for sub in submissions}:
            ids = [r["event_id"] for sub in submissions if sub.service == service for r in sub.records
                   if (service, r["event_id"]) not in seen]
            stored[service] = self.reader.find_events(service, ids)
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
            res = self._append_use(p, sub.service, r, policy, nonces[16 * k : 16 * k + 16])
            results.append(res)
            seen[key] = (r, res)
        return results

    def _append_use(self, p: Pending, service: str, r: dict[str, Any], policy: Policy, nonce: bytes) -> UseResult:
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

    # --- preferences, policies, the first batch --------------------------------------------

    def preferences(self, p: Pending, artist_id: str, prefs: dict[str, Any], *, by: str,
                    service: str | None) -> tuple[int, bytes]:
        """A `preference` leaf replacing the artist's preferences (validated by the caller). A service may
        only add restrictions (SPEC §4); the artist's own token may do anything."""
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
                                 p.erasures)

    def sign(self, size: int, root: bytes) -> bytes:
        return sign_note(Checkpoint(self.origin, size, root).body(), tuple(self.signers))


def _snapshot(artists: dict[str, ArtistState | None]) -> dict[str, ArtistState | None]:
    return {k: None if a is None else ArtistState(a.artist_id, a.tag, a.aseq, a.head, a.preferences, a.proof)
            for k, a in artists.items()}
