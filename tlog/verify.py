"""Re-derive and check everything: from a local store (the fsck) or from a remote log's public tiles.

Both paths apply the public-leaf rules of `replay.ChainChecker` (the hash chain, `logged_at` order, the
log leaf, every artist chain, every map root, checkpoints ending at map leaves, the policy each use
names, each policy's document and the notice rule: documents from the policies table locally, from
`GET /v1/policies/{id}` remotely) and check the Merkle tree against every signed checkpoint. The local
path adds what only the operator can check: each stored details row against its leaf, each artist's stored VRF proof against
the log leaf's key, every use's decision re-derived from its policy and the artist's preferences,
every stored tree node, the artist heads, statistics, policies and erasures tables. Every failure names
the first bad index.

Erased entries (SPEC §2.2) have no details to re-derive their leaf from: their stored public fields give
it, checked against the stored leaf hash like any other. An entry is accepted as erased only where the
leaves say so: a later erasure leaf of its tag, whose count the chain rules check. The other way round,
an entry that such a leaf covers and that still holds details is an erasure left half done."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import merkle
from .bindings import BindingReplay, Unshared, unshared, use_key
from .checkpoint import Checkpoint, open_checkpoint
from .errors import NoteError, NotFound, ProofError, StorageError, ValidationError, VerificationError
from .leaf import Leaf, parse_leaf
from .log import LocalLog
from .note import Verifier
from .policy import Policy, decide, parse_policy
from .records import check_artist_tag, format_logged_at, parse_logged_at
from .rederive import checked_entry_leaf
from .remote import TileClient, cancel
from .replay import ChainChecker, Sequential, chain_message
from .replay import fail as _fail
from .stats import StatsQuery, Tally
from .stats import answer as stats_answer
from .store.base import ArtistState, Entry, LogStore
from .tiles import TILE_HEIGHT, TILE_WIDTH, Tile, hash_tiles_for_size, tile_path
from .vrf import validate_key

Progress = Callable[[int, int], None]
RANGE = 1 << 15  # leaves a verify worker re-derives at a time (a power of two: a range is a subtree)
CHECKPOINTS_PER_TASK = 2_000


@dataclass
class Report:
    origin: str
    size: int
    leaves: int = 0
    artists: int = 0
    checkpoints: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # Uses of content bound to several artists not logged for each (SPEC §2.1): the log holds, the
    # services that logged them did not; `tlog verify` names them and exits 1.
    unshared: list[Unshared] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "origin": self.origin, "size": self.size, "leaves": self.leaves, "artists": self.artists,
                "checkpoints": self.checkpoints, "seconds": round(self.seconds, 3), "notes": self.notes}

    def summary(self) -> str:
        rate = f", {self.leaves / self.seconds:,.0f} leaves/s" if self.seconds > 0 and self.leaves else ""
        extra = "".join(f"; {n}" for n in self.notes)
        return (f"ok: {self.origin} size {self.size}: {self.leaves} leaves, {self.artists} artist chains, "
                f"{self.checkpoints} checkpoints verified in {self.seconds:.2f}s{rate}{extra}")


def _check_checkpoint(checker: ChainChecker, root: Callable[[], bytes], roots: dict[int, tuple[bytes, str]]) -> None:
    """If the checker has reached the size of a checkpoint in `roots` ((root, whose) by size): the tree
    must have that root, and its last leaf must be a map leaf."""
    size = checker.size
    want = roots.get(size)
    if want is not None:
        checker.check_end(size)
        if root() != want[0]:
            raise _fail(size - 1, f"the tree of size {size} does not match {want[1]}")


def _verifier(key: str) -> Verifier:
    try:
        return Verifier.from_key(key)
    except NoteError as exc:
        raise ValidationError(f"bad verifier key: {exc.message}") from None


def verified_checkpoint(signed: bytes, verifier: Verifier, origin: str, what: str) -> Checkpoint:
    """The checkpoint `signed` carries, signed by `verifier` for `origin`; VerificationError naming `what`
    otherwise (a verifier's failure, unlike a malformed input)."""
    try:
        cp, _ = open_checkpoint(signed, [verifier])
    except ProofError as exc:
        raise VerificationError(f"{what} does not verify: {exc.message}") from None
    if cp.origin != origin:
        raise VerificationError(f"{what} is for origin {cp.origin!r}, not {origin!r}")
    return cp


# --- local: the fsck ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What every range check needs from beyond its range. It goes to the worker processes."""

    origin: str
    documents: dict[str, bytes]  # every stored policy document, as stored: the chain rules check it against its leaf
    policies: dict[str, Policy]  # the same, parsed
    with_preferences: frozenset[str]  # artists whose stored preferences are set: see _Decisions
    erased: dict[bytes, int]  # tag → index of its last erasure leaf, by the erasures table (checked against the leaves)


def verify_log(log: LocalLog, *, vkey: str | None = None, trusted: bytes | None = None,
               progress: Progress | None = None, workers: int | None = None, range_size: int = RANGE) -> Report:
    """The fsck. Leaves are re-derived range by range (in parallel on a large log), the tree is rebuilt
    from the stored hashes, and the ranges are stitched together in order; the first bad index wins."""
    t0 = time.perf_counter()
    store = log.store
    if vkey is not None and vkey != log.verifier.key:
        raise VerificationError(f"the database's verifier key is {log.verifier.key}, not the one named")
    latest = verified_checkpoint(store.latest_checkpoint() or b"", log.verifier, log.origin, "the latest checkpoint")
    size = store.size()
    if latest.size != size:
        raise _fail(min(latest.size, size), f"the latest checkpoint covers {latest.size} leaves but the store holds {size}")
    notes = list(store.iter_checkpoints())
    if range_size < 1 or range_size & (range_size - 1):
        raise ValueError(f"range_size must be a power of two, not {range_size}")
    # An empty log still gets its range, where its checkpoint of size 0 is refused (it ends at no map leaf).
    ranges = [(lo, min(lo + range_size, size)) for lo in range(0, size, range_size)] or [(0, 0)]
    try:
        artists = store.artists()
        ctx = _context(log, artists)
        errors: list[VerificationError] = []
        vrf_key = _vrf_key(log, errors)
    except StorageError as exc:  # a table row that cannot even be read
        raise VerificationError(exc.message) from None
    parallel = len(ranges) > 1 and (workers or os.cpu_count() or 1) > 1
    # Every stored checkpoint's signature is checked (a busy server stores one per batch: tens of
    # thousands), in the worker processes when there are any.
    pool = (ProcessPoolExecutor(max_workers=workers or os.cpu_count(), mp_context=multiprocessing.get_context("fork"))
            if parallel else None)
    try:
        chunks = [notes[k : k + CHECKPOINTS_PER_TASK] for k in range(0, len(notes), CHECKPOINTS_PER_TASK)]
        args = (log.verifier.key, log.origin)
        opened = ([f.result() for f in [pool.submit(_open_all, c, *args) for c in chunks]] if pool
                  else [_open_all(c, *args) for c in chunks])
        want_roots = {sz: (root, "its signed checkpoint") for part in opened for sz, root in part}
        report_checkpoints = len(want_roots)
        if trusted is not None:
            old = verified_checkpoint(trusted, log.verifier, log.origin, "the trusted checkpoint")
            if old.size > size:
                raise VerificationError(f"the trusted checkpoint has size {old.size}, larger than the log ({size}): a rollback or a fork")
            if old.size in want_roots and want_roots[old.size][0] != old.root:
                raise _fail(old.size - 1, "the trusted checkpoint's root differs from the stored checkpoint at its size: a fork")
            want_roots[old.size] = (old.root, "the trusted checkpoint (a fork)")
        merged, tags, tree_error = _check_leaves_and_tree(log, ctx, vrf_key, artists, ranges, want_roots, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    errors += merged.errors
    errors += [_fail(merged.first_index.get(tag), f"the stored VRF proof of artist {artist_id!r} does not give its tag "
                                                  "under the log's VRF key (the stored tag or proof was altered)")
               for artist_id, tag in tags]
    if tree_error is not None:
        # A stored interior node that differs spans leaves [lo, hi): a bad leaf in that span explains it.
        node_error, hi = tree_error
        lo: int = node_error.index  # type: ignore[assignment]
        if not any(e.index is not None and lo <= e.index < hi for e in errors):
            errors.append(node_error)
    errors += _check_erasures(merged)
    if errors:
        raise min(errors, key=lambda e: (e.index is None, e.index or 0))
    try:
        _check_tables(log, artists, merged)
        missing = _check_bindings(store, size)
    except StorageError as exc:  # a table row that cannot even be read
        raise VerificationError(exc.message) from None
    return Report(log.origin, size, size, len(merged.artists), report_checkpoints + (trusted is not None),
                  time.perf_counter() - t0, unshared=missing)


def _context(log: LocalLog, artists: list[ArtistState]) -> _Context:
    """The range checks' context. A stored document that is not a policy is left out of `policies` (its
    uses are not decided): the chain rules name it at its policy leaf."""
    documents, policies = {}, {}
    for rec in log.store.policies():
        documents[rec.policy_id] = rec.document
        try:
            policies[rec.policy_id] = parse_policy(rec.document, rec.policy_id)
        except ValidationError:
            continue
    with_preferences = frozenset(a.artist_id for a in artists if a.preferences is not None)
    erased = {x.tag: x.index for x in log.store.erasures()}
    return _Context(log.origin, documents, policies, with_preferences, erased)


def _vrf_key(log: LocalLog, errors: list[VerificationError]) -> bytes | None:
    """The VRF key the log leaf commits to, if it is a valid one (if not, checking leaf 0 says why)."""
    try:
        entry = log.store.entry(0)
        key = bytes.fromhex(entry.details["vrf"]) if entry is not None and entry.type == "log" else b""
        validate_key(key)
    except (StorageError, KeyError, TypeError, ValueError, ProofError):
        return None
    if log.store.get_meta("vrf") != key.hex():
        # The server and the sequencer trust the key kept beside the log; the log leaf is what users trust.
        errors.append(_fail(0, "the VRF public key stored in the database differs from the one the log leaf commits to"))
    return key


def _open_all(notes: list[tuple[int, bytes]], vkey: str, origin: str) -> list[tuple[int, bytes]]:
    """(size, root) of each stored checkpoint, each signature verified (in a worker process)."""
    verifier = Verifier.from_key(vkey)
    out = []
    for size, note in notes:
        cp = verified_checkpoint(note, verifier, origin, f"checkpoint at size {size}")
        if cp.size != size:
            raise VerificationError(f"the checkpoint stored at size {size} says size {cp.size}")
        out.append((size, cp.root))
    return out


def _check_leaves_and_tree(log: LocalLog, ctx: _Context, vrf_key: bytes | None, artists: list[ArtistState],
                           ranges: list[tuple[int, int]], want_roots: dict[int, tuple[bytes, str]],
                           pool: ProcessPoolExecutor | None, progress: Progress | None,
                           ) -> tuple[_Merged, list[tuple[str, bytes]], tuple[VerificationError, int] | None]:
    """Each range is a subtree (ranges are aligned powers of two): its leaves are re-derived, its nodes
    rebuilt and the signed roots within it checked; the artists' VRF proofs are checked in as many
    parts. Both run in the pool's processes when there is one, a part of the artists after each range
    so that progress tracks both. This process stitches the ranges as they come, then checks the few
    stored nodes above them. Returns the stitched ranges, the (artist id, tag) of each artist whose
    proof fails, and the failure above the ranges."""
    store = log.store
    size = ranges[-1][1]
    block = (ranges[0][1] - ranges[0][0]).bit_length() - 1 if len(ranges) > 1 else 64
    tasks = [(lo, hi, {s: r for s, r in want_roots.items() if lo < s <= hi or s == lo == 0}) for lo, hi in ranges]
    parts = len(ranges)
    proofs = [[(a.artist_id, a.tag, a.proof) for a in artists[k::parts]] if vrf_key else [] for k in range(parts)]
    stitched = _Stitcher(ctx)
    tags: list[tuple[str, bytes]] = []
    if pool is not None:
        futures: list[tuple[Future[_Range], Future[list[tuple[str, bytes]]]]] = [
            (pool.submit(_check_range, str(log.path), ctx, lo, hi, block, roots), pool.submit(_check_tags, vrf_key, part))
            for (lo, hi, roots), part in zip(tasks, proofs)]
        for leaves, checked in futures:
            result = leaves.result()
            stitched.add(result)
            tags += checked.result()
            if progress:
                progress(result.end, size)
    else:
        for (lo, hi, roots), part in zip(tasks, proofs):
            stitched.add(_check_range_in(store, ctx, lo, hi, block, roots))
            tags += _check_tags(vrf_key, part)
            if progress:
                progress(hi, size)
    return stitched.m, tags, _check_top(store, size, block)


def _check_tags(vrf_key: bytes | None, artists: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes]]:
    """(artist id, tag) of each artist whose stored VRF proof, under the log leaf's key, does not give its
    stored tag: the tags in the leaves are the stored ones, so this is the one check each tag needs."""
    bad = []
    for artist_id, tag, proof in artists:
        try:
            check_artist_tag(vrf_key, artist_id, tag, proof)  # type: ignore[arg-type]
        except ProofError:
            bad.append((artist_id, tag))
    return bad


@dataclass
class _Range:
    """What one range of leaves showed: its first failure, and what the ranges around it must agree with."""

    start: int
    end: int
    error: VerificationError | None = None
    first_logged_at: str | None = None
    last_logged_at: str = ""
    firsts: dict[bytes, tuple[int, int | None, int | None]] = field(default_factory=dict)
    lasts: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    deferred: Any = None  # the map and policy rules' records (replay.Deferred), replayed in order
    stats: Tally = field(default_factory=Tally)
    policies: dict[str, int] = field(default_factory=dict)  # id → index of its policy leaf
    preferences: dict[str, tuple[int, Any]] = field(default_factory=dict)  # the last preference leaf of each artist
    unresolved: dict[str, list[_Use]] = field(default_factory=dict)  # see _Decisions
    erasures: dict[int, bytes] = field(default_factory=dict)  # index → tag of each erasure leaf
    erased: dict[bytes, int] = field(default_factory=dict)  # tag → index of its last erased entry


_worker_stores: dict[str, LogStore] = {}


def _check_range(path: str, ctx: _Context, start: int, end: int, block: int,
                 roots: dict[int, tuple[bytes, str]]) -> _Range:
    """In a worker process: its own read-only connection, kept for the next range."""
    from .store import open_store

    store = _worker_stores.get(path)
    if store is None:
        store = _worker_stores[path] = open_store(path, readonly=True)
    return _check_range_in(store, ctx, start, end, block, roots)


def _check_range_in(store: LogStore, ctx: _Context, start: int, end: int, block: int,
                    roots: dict[int, tuple[bytes, str]]) -> _Range:
    """Re-derives leaves [start, end) from the stored details, against the stored leaf hashes, applies the
    public-leaf rules and re-derives each use's decision; rebuilds the range's stored nodes up to level
    `block` (the range is an aligned subtree) and the tree's root at each size in `roots`, from the
    frontier stored before the range."""
    r = _Range(start, end)
    checker: ChainChecker | None = None
    try:
        stored = store.leaf_hashes(max(start - 1, 0), end)
        prev = stored[0] if start else bytes(32)
        hashes = stored[1:] if start else stored
        checker = ChainChecker(ctx.origin, start=start, prev=prev, tree=False)
        frontier = merkle.Frontier.from_reader(start, store)
        nodes = _StoredNodes(store, start)
        decisions = _Decisions(ctx, r.unresolved)
        _check_checkpoint(checker, frontier.root, roots)
        for e in store.entries(start, end):
            i = checker.size
            if e.index != i or i - start >= len(hashes):
                raise _fail(i, "entry is missing from the store")
            leaf = checked_entry_leaf(e, checker.prev)
            h = merkle.leaf_hash(leaf)
            if hashes[i - start] != h:
                raise _fail(i, "the stored leaf hash does not match the leaf derived from the stored details "
                               "(details or tree altered)")
            document = ctx.documents.get(e.details["policy"]) if e.type == "policy" else None
            checker.add(h, _public(e, checker.prev, leaf), document)
            _check_entry(i, e, r, decisions)
            for level, n, node in frontier.append(h)[1:]:
                if level <= block:  # nodes above the range are checked by _check_top
                    nodes.check(level, n, node)
            _check_checkpoint(checker, frontier.root, roots)
            r.stats.add_details(e.logged_ms, e.type, e.details)
        if checker.size != end:
            raise _fail(checker.size, "entry is missing from the store")
    except VerificationError as exc:
        r.error = exc
    except StorageError as exc:  # an entry that cannot be read fails at the index it should have had
        r.error = _fail(checker.size if checker else start, exc.message)
    if checker is not None:
        r.first_logged_at, r.last_logged_at = checker.first_logged_at, checker.logged_at
        r.firsts, r.lasts, r.deferred = checker.firsts or {}, checker.artists, checker.sequential
    return r


def _check_entry(i: int, e: Entry, r: _Range, decisions: _Decisions) -> None:
    """What the stored entry at `i` (already matched to its leaf) holds beyond its leaf."""
    if e.erased is not None:  # believed only if a later erasure leaf of its tag says so: _check_erasures
        r.erased[e.tag] = i  # type: ignore[index]
        return
    last = decisions.ctx.erased.get(e.tag) if e.tag is not None else None
    if last is not None and i < last:
        raise _fail(i, f"the entry still holds private details, though the erasure leaf at index {last} erased "
                       "every earlier entry of its artist")
    if e.type == "use" or e.type == "refusal":
        kind = "refusal" if e.details.get("decision") == "refused" else "use"
        if e.type != kind:  # the type is stored beside the details; statistics count by it
            raise _fail(i, f"the stored type {e.type!r} differs from the leaf's {kind!r}")
        decisions.use(i, e)
    elif e.type == "preference":
        r.preferences[e.artist_id] = (i, e.details.get("preferences"))  # type: ignore[index]
        decisions.preference(e)
    elif e.type == "policy":
        r.policies[e.details["policy"]] = i
    elif e.type == "erasure":
        r.erasures[i] = bytes.fromhex(e.details["artist"])


def _public(e: Entry, prev: bytes, leaf: bytes) -> Leaf:
    """The public leaf of entry `e` (its bytes `leaf`, just matched to the stored hash), as the chain rules
    read it. A use's is made from the entry directly: parsing its bytes would cost more than deriving them."""
    if e.type == "use" or e.type == "refusal":
        return Leaf(e.type, prev, format_logged_at(e.logged_ms), policy=e.details["policy"], artist=e.tag,
                    aseq=e.aseq, aprev=e.aprev)
    return parse_leaf(leaf)


_Use = tuple[int, str, str, str, "str | None", str]  # (index, policy, purpose, content_id, basis, decision)


class _Decisions:
    """Re-derives each use's decision (SPEC §4 "Decisions are checkable") from the policy it names and the
    artist's preferences as of its latest earlier preference leaf. (The policy it names is the one in
    effect: the chain rules check that.)

    A range does not see preference leaves before it. For an artist with no preference leaf anywhere,
    known from the stored preferences being unset, the preferences are none. The uses of any other
    artist before its first preference leaf in the range are `unresolved`, for `_Stitcher` to decide with
    the preferences of the ranges before. `_Stitcher` also refuses a preference leaf of an artist whose
    stored preferences are unset, so a wrong artists row cannot make a decision look wrong, or right."""

    def __init__(self, ctx: _Context, unresolved: dict[str, list[_Use]]) -> None:
        self.ctx = ctx
        self.prefs: dict[str, Any] = {}  # artist → preferences, from its latest preference leaf in the range
        self.unresolved = unresolved

    def preference(self, e: Entry) -> None:
        self.prefs[e.artist_id] = e.details.get("preferences")  # type: ignore[index]

    def use(self, i: int, e: Entry) -> None:
        d = e.details
        use: _Use = (i, d["policy"], d["purpose"], d["content_id"], d["basis"], d["decision"])
        artist = e.artist_id
        if artist in self.prefs:
            prefs = self.prefs[artist]
        elif artist in self.ctx.with_preferences:
            self.unresolved.setdefault(artist, []).append(use)
            return
        else:
            prefs = None
        message = _decision_error(self.ctx.policies, use, prefs)
        if message is not None:
            raise _fail(i, message)


def _decision_error(policies: dict[str, Policy], use: _Use, prefs: Any) -> str | None:
    """Why the use's decision does not follow from its policy and `prefs`, or None if it does."""
    _, policy_id, purpose, content_id, basis, decision = use
    policy = policies.get(policy_id)
    if policy is None:
        # Fails elsewhere: a policy that was in effect has a policy leaf, whose stored document the chain
        # rules check against it; one that was not in effect fails the chain rules too.
        return None
    if purpose not in policy.purposes:
        return f"the use's purpose {purpose!r} is not in policy {policy_id!r}, which it names"
    try:
        want = decide(policy, purpose, content_id, prefs, basis)
    except ValueError as exc:  # a basis the SPEC does not know
        return f"the use cannot be decided under policy {policy_id!r}: {exc}"
    if want != decision:
        return (f"the decision {decision!r} does not follow from policy {policy_id!r} and the artist's preferences, "
                f"which give {want!r}")
    return None


@dataclass
class _Merged:
    errors: list[VerificationError] = field(default_factory=list)
    artists: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    first_index: dict[bytes, int] = field(default_factory=dict)  # tag → index of its first chained leaf
    stats: Tally = field(default_factory=Tally)
    policies: dict[str, int] = field(default_factory=dict)
    preferences: dict[str, tuple[int, Any]] = field(default_factory=dict)
    erasures: dict[int, bytes] = field(default_factory=dict)
    erased: dict[bytes, int] = field(default_factory=dict)


class _Stitcher:
    """Joins range results in order, each as it comes (so that this process replays the map while the
    workers check later ranges): each range's first logged_at, each artist's first leaf in it and the
    decisions it left unresolved must follow on from the ranges before, and its map and policy records
    are replayed onto the rules' state. After a range that failed the replay stops: later ranges would
    only fail against the state the failure left."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.m = _Merged()
        self.sequential: Sequential | None = Sequential()
        self.last_logged = ""

    def add(self, r: _Range) -> None:
        """Errors at one index are kept public rules first (the first of equals is reported): a use that
        names the wrong policy is reported as that, not as a decision its policy does not give."""
        m = self.m
        if r.first_logged_at is not None and r.first_logged_at < self.last_logged:
            m.errors.append(_fail(r.start, f"logged_at {r.first_logged_at} goes back before {self.last_logged}"))
        for tag, (i, aseq, aprev) in r.firsts.items():
            last_seq, last_index = m.artists.get(tag, (0, None))
            if aseq != last_seq + 1 or aprev != last_index:
                m.errors.append(_fail(i, chain_message(aseq, aprev, last_seq, last_index)))  # type: ignore[arg-type]
            m.first_index.setdefault(tag, i)
        m.artists.update(r.lasts)
        self.last_logged = r.last_logged_at or self.last_logged
        self._replay(r)
        if r.error is not None:
            m.errors.append(r.error)
        self._decisions(r)
        m.stats.merge(r.stats)
        m.policies.update(r.policies)
        m.erasures.update(r.erasures)
        m.erased.update(r.erased)

    def _decisions(self, r: _Range) -> None:
        """Decides the range's unresolved uses with each artist's preferences from the ranges before, then
        takes in the range's own preference leaves."""
        m, ctx = self.m, self.ctx
        for artist, uses in r.unresolved.items():
            prefs = m.preferences.get(artist, (None, None))[1]
            for use in uses:
                message = _decision_error(ctx.policies, use, prefs)
                if message is not None:
                    m.errors.append(_fail(use[0], message))
                    break
        for artist, (i, _) in r.preferences.items():
            if artist not in ctx.with_preferences:
                m.errors.append(_fail(i, f"the stored preferences of artist {artist!r} differ from its latest preference leaf"))
        m.preferences.update(r.preferences)

    def _replay(self, r: _Range) -> None:
        if self.sequential is not None and r.deferred is not None:
            try:
                self.sequential.replay(r.deferred)
            except VerificationError as exc:
                self.m.errors.append(exc)
                self.sequential = None
        if r.error is not None:
            self.sequential = None


def _check_top(store: LogStore, size: int, block: int) -> tuple[VerificationError, int] | None:
    """The stored nodes above the ranges, rebuilt from the stored level-`block` nodes (each the root of
    a range, checked there), and no stored node beyond the log's size. A failure comes back with the
    end of the leaves it covers."""
    nodes = _StoredNodes(store)
    frontier = merkle.Frontier()
    try:
        if size >> block:
            for k, h in store.iter_nodes(block, 0, size >> block):
                if k != frontier.size:
                    raise _fail(frontier.size << block, f"tree node ({block}, {frontier.size}) is missing from the store")
                for level, n, node in frontier.append(h)[1:]:
                    nodes.check(level + block, n, node)
            if frontier.size != size >> block:
                raise _fail(frontier.size << block, f"tree node ({block}, {frontier.size}) is missing from the store")
        nodes.finish(size)
    except VerificationError as exc:
        return exc, nodes.span_end or exc.index + 1  # type: ignore[operator]
    except StorageError as exc:
        return _fail(frontier.size << block, exc.message), (frontier.size + 1) << block
    return None


class _StoredNodes:
    """Walks the stored interior nodes level by level, in step with the recomputed tree."""

    def __init__(self, store: LogStore, start: int = 0) -> None:
        self.store = store
        self.start = start  # the first leaf whose nodes are checked: at each level, from node start >> level
        self.iters: dict[int, Iterator[tuple[int, bytes]]] = {}
        self.span_end: int | None = None  # of the node that failed

    def check(self, level: int, n: int, h: bytes) -> None:
        it = self.iters.get(level)
        if it is None:
            it = self.iters[level] = self.store.iter_nodes(level, self.start >> level)
        got = next(it, None)
        if got != (n, h):
            self.span_end = (n + 1) << level
            raise _fail(n << level, f"stored tree node ({level}, {n}) differs from the recomputed one")

    def finish(self, size: int) -> None:
        for level in range(0, 64):
            extra = next(iter(self.store.iter_nodes(level, size >> level)), None)
            if extra is not None:
                raise _fail(size, f"the store holds tree node ({level}, {extra[0]}) beyond the log's size")
            if size >> level == 0:
                break


def _check_erasures(m: _Merged) -> list[VerificationError]:
    """Every entry stored as erased has a later erasure leaf of its tag (whose count the chain rules
    checked): the leaves, not the database, say an entry was erased."""
    last: dict[bytes, int] = {}
    for index, tag in m.erasures.items():
        last[tag] = max(index, last.get(tag, -1))
    return [_fail(i, "the entry's details are gone, but no erasure leaf of its artist follows it: erased without "
                     "an erasure leaf, or altered") for tag, i in m.erased.items() if last.get(tag, -1) < i]


def _check_tables(log: LocalLog, artists: list[ArtistState], m: _Merged) -> None:
    heads = log.store.heads()
    if heads != m.artists:
        bad = sorted(v[1] for t, v in m.artists.items() if heads.get(t) != v)
        raise _fail(bad[0] if bad else None, "the stored artist heads do not match the artist chains in the leaves")
    # The preferences the sequencer decides by must be those the artist's latest preference leaf committed to.
    for a in artists:
        index, want = m.preferences.get(a.artist_id, (a.head, None))
        if a.preferences != want:
            raise _fail(index, f"the stored preferences of artist {a.artist_id!r} differ from its latest preference leaf")
    # Each policy leaf's stored document was checked against it by the chain rules; what is left is a
    # stored policy that is not where its leaf is.
    for rec in log.store.policies():
        if m.policies.get(rec.policy_id) != rec.index:
            raise _fail(rec.index, f"stored policy {rec.policy_id!r} does not match its policy leaf")
    # The erasures table names each erasure leaf's tag (with its reason); an artist row without an id was
    # erased, so an erasure leaf of its tag comes after its whole chain.
    stored = {x.index: x.tag for x in log.store.erasures()}
    if stored != m.erasures:
        bad = sorted(i for i in stored.keys() | m.erasures.keys() if stored.get(i) != m.erasures.get(i))
        raise _fail(bad[0], "the erasures table does not match the erasure leaves")
    named = {a.tag for a in artists}
    last = {tag: i for i, tag in sorted(m.erasures.items())}
    for tag, (_, head) in heads.items():
        if tag not in named and last.get(tag, -1) < head:
            raise _fail(head, "an artist's id is gone from the artists table, but no erasure leaf of its tag follows "
                              "its chain")
    if log.store.stats() != m.stats.rows():
        raise VerificationError("the statistics table does not match a recount of the leaves")


def _check_bindings(store: LogStore, size: int) -> list[Unshared]:
    """The bindings table against a replay of the first uses and binding leaves (both already matched
    to their leaves), then the uses of co-owned content that were not logged for every bound artist."""
    replay = BindingReplay()
    for index, content_id, artist_id, change in store.content_events(size):
        if change is None:
            replay.use(index, content_id, artist_id)
        else:
            replay.binding(index, content_id, artist_id, change)
    stored: dict[str, dict[str, int]] = {}
    for content_id, artist_id, index in store.iter_bindings():
        stored.setdefault(content_id, {})[artist_id] = index
    differ = [c for c in stored.keys() | replay.bound.keys() if stored.get(c) != replay.bound.get(c)]
    if differ:
        first = min(differ, key=lambda c: min([*stored.get(c, {}).values(), *replay.bound.get(c, {}).values()]))
        at = min([*stored.get(first, {}).values(), *replay.bound.get(first, {}).values()])
        raise _fail(at, f"the stored artists of content {first!r} differ from what its first use and binding "
                        "leaves say")
    if not replay.co_owned:
        return []
    uses = [(e.index, e.artist_id, use_key(e.details)) for e in store.content_uses(sorted(replay.co_owned_contents), size)]
    return unshared(uses, replay.co_owned)  # type: ignore[arg-type]


# --- remote: from the public tiles alone ----------------------------------------------------------


def verify_remote(url: str, vkey: str, *, trusted: bytes | None = None, progress: Progress | None = None) -> Report:
    """Verifies the log served at `url` from its public checkpoint and tiles alone, trusting only `vkey`:
    the checkpoint's signature, every leaf (strictly parsed, hashed against the level-0 tiles), the
    public-leaf rules (`replay.ChainChecker`: hash chain, `logged_at` order, log leaf, artist chains, map
    roots, policies in effect, each policy's document and the notice rule), the tiles above level 0 and the tree against the signed root, which must
    end at a map leaf; with `trusted` (an older signed checkpoint), that the log still holds the tree it
    signed."""
    return asyncio.run(_verify_remote(url, _verifier(vkey), trusted, progress))


async def _verify_remote(url: str, verifier: Verifier, trusted: bytes | None, progress: Progress | None) -> Report:
    t0 = time.perf_counter()
    origin = verifier.name  # a log's key is named after its origin (SPEC §5)
    async with TileClient(url) as client:
        cp = verified_checkpoint(await client.checkpoint(), verifier, origin, "the log's checkpoint")
        roots = {cp.size: (cp.root, "the signed checkpoint")}
        if trusted is not None:
            old = verified_checkpoint(trusted, verifier, origin, "the trusted checkpoint")
            if old.size > cp.size:
                raise VerificationError(f"rollback: the log's checkpoint has size {cp.size}, smaller than the "
                                        f"trusted checkpoint's {old.size}")
            if old.size == cp.size and old.root != cp.root:
                raise _fail(max(old.size - 1, 0), "fork: the log's checkpoint and the trusted one have the same size "
                                                  "but different roots")
            roots.setdefault(old.size, (old.root, "the trusted checkpoint (a fork)"))
        checker = ChainChecker(origin)
        tally = Tally()
        await check_remote_leaves(client, checker, cp.size, roots=roots, progress=progress, on_leaf=lambda leaf: tally.add(
            parse_logged_at(leaf.logged_at), leaf.type, leaf.purpose, leaf.phase, leaf.decision, leaf.invocations or 0))
        note = await _compare_stats(client, cp.size, tally)
    return Report(origin, cp.size, cp.size, len(checker.artists), 1 + (trusted is not None), time.perf_counter() - t0,
                  [note])


async def _compare_stats(client: TileClient, size: int, tally: Tally) -> str:
    """The log's published figures (`GET /v1/stats`) against the recount of the leaves just verified: a
    difference is a failed verification. Figures of another size (the log grew meanwhile) are not
    comparable, and the report says they were not compared."""
    try:
        claimed = await client.json("v1/stats")
        if not isinstance(claimed, dict) or claimed.get("size") != size:
            return f"/v1/stats is at size {claimed.get('size') if isinstance(claimed, dict) else '?'}, not {size}: not compared"
    except (NotFound, ValidationError) as exc:
        raise VerificationError(f"the log's /v1/stats cannot be read: {exc.message}") from None
    recount = stats_answer(tally.rows(), size, StatsQuery())
    for part in ("totals", "by_day"):
        if claimed.get(part) != recount[part]:
            wrong = [row for row in recount[part] if row not in (claimed.get(part) or [])]
            raise VerificationError(f"/v1/stats {part} differ from the recount of the leaves"
                                    + (f", e.g. the leaves hold {wrong[0]}" if wrong else ""))
    return "/v1/stats agrees with the recount of every leaf"


async def check_remote_leaves(client: TileClient, checker: ChainChecker, size: int, *,
                              roots: dict[int, tuple[bytes, str]], progress: Progress | None = None,
                              on_leaf: Callable[[Leaf], None] | None = None) -> None:
    """Extends `checker` over the leaves [checker.size, size) of a remote log (`size` a checkpoint's):
    each leaf's hash against its level-0 hash tile, the leaf parsed strictly, then the chain rules (with
    each policy leaf's document, as `GET /v1/policies/{id}` serves it); every
    node it completes at a tile level (tree levels 8, 16, …) against the hash tile serving it; the tree at
    each size in `roots` against the (root, whose) given, and its last leaf a map leaf. Tiles are fetched ahead and checked in order, so
    the error names the first bad index."""
    start = checker.size
    _check_checkpoint(checker, checker.frontier.root, roots)  # type: ignore[union-attr]
    upper = _UpperTiles(client, start, size)
    try:
        async with aclosing(client.leaves(start, size)) as bundles:
            async for bundle in bundles:
                for data, tile_hash in zip(bundle.leaves, bundle.hashes):
                    i = checker.size
                    h = merkle.leaf_hash(data)
                    if h != tile_hash:
                        raise _fail(i, "the leaf's hash differs from the one in the level-0 hash tile")
                    try:
                        leaf = parse_leaf(data)
                    except ValidationError as exc:
                        raise _fail(i, f"malformed leaf: {exc.message}") from None
                    document = await _policy_document(client, i, leaf.policy) if leaf.type == "policy" else None  # type: ignore[arg-type]
                    for level, n, node in checker.add(h, leaf, document)[1:]:
                        if level % TILE_HEIGHT == 0:
                            await upper.check(level, n, node)
                    _check_checkpoint(checker, checker.frontier.root, roots)  # type: ignore[union-attr]
                    if on_leaf is not None:
                        on_leaf(leaf)
                if progress:
                    progress(checker.size - start, size - start)
    except (NotFound, ValidationError) as exc:  # a bundle or level-0 tile the checkpoint implies
        raise _fail(checker.size, f"the log does not serve its tiles: {exc.message}") from None
    finally:
        await upper.close()


async def _policy_document(client: TileClient, index: int, policy_id: str) -> bytes:
    """The document of the policy leaf at `index`, which the notice rule needs and the leaf only commits to."""
    try:
        return await client.policy(policy_id)
    except (NotFound, ValidationError) as exc:
        raise _fail(index, f"the log does not serve the document of policy {policy_id!r}: {exc.message}") from None


class _UpperTiles:
    """The hash tiles above level 0 holding the nodes that leaves [start, end) complete, fetched ahead.

    Each tile-level node the checker completes is compared with its tile: the root check alone would
    pass a log whose tiles lie about nodes no proof of the latest tree happens to use."""

    def __init__(self, client: TileClient, start: int, end: int) -> None:
        self.tiles: dict[tuple[int, int], tuple[Tile, asyncio.Future[bytes]]] = {}
        for t in hash_tiles_for_size(end):
            if t.level and t.index * TILE_WIDTH + t.width > start >> (TILE_HEIGHT * t.level):
                self.tiles[t.level, t.index] = (t, asyncio.ensure_future(client.tile(t)))

    async def check(self, level: int, n: int, h: bytes) -> None:
        tile, fetch = self.tiles[level // TILE_HEIGHT, n // TILE_WIDTH]
        try:
            data = await fetch
        except (NotFound, ValidationError) as exc:
            raise _fail(n << level, f"the log does not serve its tiles: {exc.message}") from None
        k = n % TILE_WIDTH * merkle.HASH_SIZE
        if data[k : k + merkle.HASH_SIZE] != h:
            raise _fail(n << level, f"hash tile {tile_path(tile)} differs from the recomputed tree at node ({level}, {n})")

    async def close(self) -> None:
        await cancel([fetch for _, fetch in self.tiles.values()])
