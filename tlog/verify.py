"""Re-derive and check everything: from a local store (the fsck) or from a remote log's public tiles.

Both paths feed leaves, in index order, to one `ChainChecker`, which holds the rules anyone can check
from public leaves: the hash chain, `logged_at` never decreasing, every artist chain contiguous, and the
Merkle tree against every signed checkpoint. The local path adds what only the operator can check: each
stored details row against its leaf, artist tags against the tag key, every stored tree node, the
artist heads, statistics and policies tables. Every failure names the first bad index."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import merkle
from .checkpoint import Checkpoint, open_checkpoint
from .errors import NoteError, NotFound, ProofError, StorageError, ValidationError, VerificationError
from .leaves import checked_entry_leaf
from .log import LocalLog
from .note import Verifier
from .records import Leaf, artist_tag, format_logged_at, parse_leaf
from .remote import TileClient, cancel
from .tiles import TILE_HEIGHT, TILE_WIDTH, Tile, hash_tiles_for_size, tile_path

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

    def summary(self) -> str:
        rate = f", {self.leaves / self.seconds:,.0f} leaves/s" if self.seconds > 0 and self.leaves else ""
        extra = "".join(f"; {n}" for n in self.notes)
        return (f"ok: {self.origin} size {self.size}: {self.leaves} leaves, {self.artists} artist chains, "
                f"{self.checkpoints} checkpoints verified in {self.seconds:.2f}s{rate}{extra}")


def _fail(index: int | None, message: str) -> VerificationError:
    where = f"index {index}: " if index is not None else ""
    return VerificationError(f"{where}{message}", index=index)


class ChainChecker:
    """Public-leaf rules, applied leaf by leaf in index order.

    From index 0 (the default) it also rebuilds the tree. For a range of a log checked on its own
    (`start`, `prev`: the hash of the leaf before it, `tree=False`), an artist's first leaf in the range
    cannot be checked against history it has not seen: it is kept in `firsts` for the caller to stitch."""

    def __init__(self, *, start: int = 0, prev: bytes = bytes(32), tree: bool = True) -> None:
        self.frontier: merkle.Frontier | None = merkle.Frontier() if tree else None
        self._next = start
        self.prev = prev
        self.logged_at = ""
        self.first_logged_at: str | None = None
        self.artists: dict[bytes, tuple[int, int]] = {}  # tag → (aseq, index of the latest leaf)
        self.firsts: dict[bytes, tuple[int, int | None, int | None]] | None = None if tree and not start else {}

    @property
    def size(self) -> int:
        return self.frontier.size if self.frontier is not None else self._next

    def add(self, h: bytes, prev: bytes, logged_at: str, tag: bytes | None, aseq: int | None,
            aprev: int | None) -> list[tuple[int, int, bytes]]:
        index = self.size
        if prev != self.prev:
            raise _fail(index, "prev does not match the hash of the leaf before it (the hash chain is broken)")
        if logged_at < self.logged_at:  # fixed-width RFC 3339 UTC strings order like the times they name
            raise _fail(index, f"logged_at {logged_at} goes back before {self.logged_at}")
        if tag is not None:
            last = self.artists.get(tag)
            if last is None and self.firsts is not None:
                self.firsts[tag] = (index, aseq, aprev)
            else:
                last_seq, last_index = last or (0, None)
                if aseq != last_seq + 1 or aprev != last_index:
                    raise _fail(index, f"artist chain broken: aseq {aseq}, aprev {aprev}; expected aseq "
                                       f"{last_seq + 1}, aprev {last_index}")
            self.artists[tag] = (aseq, index)  # type: ignore[assignment]
        if self.first_logged_at is None:
            self.first_logged_at = logged_at
        self.prev = h
        self.logged_at = logged_at
        if self.frontier is None:
            self._next += 1
            return []
        return self.frontier.append(h)


def _verifier(key: str) -> Verifier:
    try:
        return Verifier.from_key(key)
    except NoteError as exc:
        raise VerificationError(f"bad verifier key: {exc.message}") from None


def _open(signed: bytes, verifier: Verifier, origin: str, what: str) -> Checkpoint:
    try:
        cp, _ = open_checkpoint(signed, [verifier])
    except ProofError as exc:
        raise VerificationError(f"{what} does not verify: {exc.message}") from None
    if cp.origin != origin:
        raise VerificationError(f"{what} is for origin {cp.origin!r}, not {origin!r}")
    return cp


# --- local: the fsck ------------------------------------------------------------------------------


def verify_log(log: LocalLog, *, vkey: str | None = None, trusted: bytes | None = None,
               progress: Progress | None = None, workers: int | None = None, range_size: int = RANGE) -> Report:
    """The fsck. Leaves are re-derived range by range (in parallel on a large log), the tree is rebuilt
    from the stored hashes, and the ranges are stitched together in order; the first bad index wins."""
    t0 = time.perf_counter()
    store = log.store
    if vkey is not None and vkey != log.verifier.key:
        raise VerificationError(f"the database's verifier key is {log.verifier.key}, not the one named")
    latest = _open(store.latest_checkpoint() or b"", log.verifier, log.origin, "the latest checkpoint")
    size = store.size()
    if latest.size != size:
        raise _fail(min(latest.size, size), f"the latest checkpoint covers {latest.size} leaves but the store holds {size}")
    notes = list(store.iter_checkpoints())
    if range_size < 1 or range_size & (range_size - 1):
        raise ValueError(f"range_size must be a power of two, not {range_size}")
    ranges = [(lo, min(lo + range_size, size)) for lo in range(0, size, range_size)]
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
            old = _open(trusted, log.verifier, log.origin, "the trusted checkpoint")
            if old.size > size:
                raise VerificationError(f"the trusted checkpoint has size {old.size}, larger than the log ({size}): a rollback or a fork")
            if old.size in want_roots and want_roots[old.size][0] != old.root:
                raise _fail(old.size - 1, "the trusted checkpoint's root differs from the stored checkpoint at its size: a fork")
            want_roots[old.size] = (old.root, "the trusted checkpoint (a fork)")
        if want_roots.get(0, (merkle.EMPTY_ROOT,))[0] != merkle.EMPTY_ROOT:
            raise VerificationError("the checkpoint at size 0 does not have the empty tree's root")
        results, tree_error = _check_leaves_and_tree(log, store, size, ranges, want_roots, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    merged = _stitch(results)
    errors = list(merged.errors)
    if tree_error is not None:
        # A stored interior node that differs spans leaves [lo, hi): a bad leaf in that span explains it.
        lo, message, hi = tree_error
        if not any(i is not None and lo <= i < hi for i, _ in errors):
            errors.append((lo, message))
    if errors:
        index, message = min(errors, key=lambda e: (e[0] is None, e[0] or 0))
        raise _fail(index, message)
    try:
        _check_tables(log, merged.artists, merged.stats, merged.policies, merged.preferences)
    except StorageError as exc:  # a table row that cannot even be read
        raise VerificationError(exc.message) from None
    report = Report(log.origin, size, size, len(merged.artists), report_checkpoints + (trusted is not None),
                    time.perf_counter() - t0)
    if log.tag_key is None:
        report.notes.append("artist tags not checked (tag key not readable)")
    return report


def _open_all(notes: list[tuple[int, bytes]], vkey: str, origin: str) -> list[tuple[int, bytes]]:
    """(size, root) of each stored checkpoint, each signature verified (in a worker process)."""
    verifier = Verifier.from_key(vkey)
    out = []
    for size, note in notes:
        cp = _open(note, verifier, origin, f"checkpoint at size {size}")
        if cp.size != size:
            raise VerificationError(f"the checkpoint stored at size {size} says size {cp.size}")
        out.append((size, cp.root))
    return out


def _check_leaves_and_tree(log: LocalLog, store: Any, size: int, ranges: list[tuple[int, int]],
                           want_roots: dict[int, tuple[bytes, str]], pool: ProcessPoolExecutor | None,
                           progress: Progress | None) -> tuple[list["_Range"], tuple[int, str, int] | None]:
    """Each range is a subtree (ranges are aligned powers of two): its leaves are re-derived, its nodes
    rebuilt and the signed roots within it checked, in the pool's processes when there is one; this
    process then checks the few stored nodes above the ranges."""
    block = (ranges[0][1] - ranges[0][0]).bit_length() - 1 if len(ranges) > 1 else 64
    tasks = [(lo, hi, {s: r for s, r in want_roots.items() if lo < s <= hi}) for lo, hi in ranges]
    results: list[_Range] = []
    if pool is not None:
        futures = [pool.submit(_check_range, str(log.path), log.tag_key, lo, hi, block, roots) for lo, hi, roots in tasks]
        for f in futures:
            results.append(f.result())
            if progress:
                progress(results[-1].end, size)
    else:
        for lo, hi, roots in tasks:
            results.append(_check_range_in(store, log.tag_key, lo, hi, block, roots))
            if progress:
                progress(hi, size)
    return results, _check_top(store, size, block)


@dataclass
class _Range:
    """What one range of leaves showed: its first failure, and what the ranges around it must agree with."""

    start: int
    end: int
    error: tuple[int, str] | None = None
    first_logged_at: str | None = None
    last_logged_at: str = ""
    firsts: dict[bytes, tuple[int, int | None, int | None]] = field(default_factory=dict)
    lasts: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    stats: dict[tuple[str, str, str, str], list[int]] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    preferences: dict[str, tuple[int, Any]] = field(default_factory=dict)


_worker_stores: dict[str, Any] = {}
_worker_tags: dict[bytes | None, dict[str, bytes]] = {}
TAG_CACHE = 1 << 20  # artist tags a process keeps between ranges (most artists recur in every range)


def _tag_cache(tag_key: bytes | None) -> dict[str, bytes]:
    tags = _worker_tags.setdefault(tag_key, {})
    if len(tags) > TAG_CACHE:
        tags.clear()
    return tags


def _check_range(path: str, tag_key: bytes | None, start: int, end: int, block: int,
                 roots: dict[int, tuple[bytes, str]]) -> _Range:
    """In a worker process: its own read-only connection, kept for the next range."""
    from .store.sqlite import SqliteStore

    store = _worker_stores.get(path)
    if store is None:
        store = _worker_stores[path] = SqliteStore(path, readonly=True)
    return _check_range_in(store, tag_key, start, end, block, roots)


def _check_range_in(store: Any, tag_key: bytes | None, start: int, end: int, block: int,
                    roots: dict[int, tuple[bytes, str]]) -> _Range:
    """Re-derives leaves [start, end) from the stored details, against the stored leaf hashes; rebuilds
    the range's stored nodes up to level `block` (the range is an aligned subtree) and the tree's root
    at each size in `roots`, from the frontier stored before the range."""
    r = _Range(start, end)
    tags = _tag_cache(tag_key)
    checker: ChainChecker | None = None
    try:
        stored = store.leaf_hashes(max(start - 1, 0), end)
        prev = stored[0] if start else bytes(32)
        hashes = stored[1:] if start else stored
        checker = ChainChecker(start=start, prev=prev, tree=False)
        frontier = merkle.Frontier.from_reader(start, store)
        nodes = _StoredNodes(store, start)
        for e in store.entries(start, end):
            i = checker.size
            if e.index != i or i - start >= len(hashes):
                raise _fail(i, "entry is missing from the store")
            leaf = checked_entry_leaf(e, checker.prev)
            h = merkle.leaf_hash(leaf)
            if hashes[i - start] != h:
                raise _fail(i, "the stored leaf hash does not match the leaf derived from the stored details "
                               "(details or tree altered)")
            if e.type not in ("policy", "preference"):
                kind = "refusal" if e.details.get("decision") == "refused" else "use"
                if e.type != kind:  # the type is stored beside the details; statistics count by it
                    raise _fail(i, f"the stored type {e.type!r} differs from the leaf's {kind!r}")
            elif e.type == "preference":
                r.preferences[e.artist_id] = (i, e.details.get("preferences"))  # type: ignore[index]
            if e.tag is not None and tag_key is not None:
                want = tags.get(e.artist_id)  # type: ignore[arg-type]
                if want is None:
                    want = tags[e.artist_id] = artist_tag(tag_key, e.artist_id)  # type: ignore[index,arg-type]
                if e.tag != want:
                    raise _fail(i, f"artist tag does not match HMAC(tag key, artist id) for {e.artist_id!r} "
                                   "(the stored tag, or the tag key file, was altered)")
            checker.add(h, checker.prev, format_logged_at(e.logged_ms), e.tag, e.aseq, e.aprev)
            for level, n, node in frontier.append(h)[1:]:
                if level <= block:  # nodes above the range are checked by _check_top
                    nodes.check(level, n, node)
            want = roots.get(i + 1)
            if want is not None and frontier.root() != want[0]:
                raise _fail(i, f"the tree of size {i + 1} does not match {want[1]}")
            _count(r.stats, e)
            if e.type == "policy":
                r.policies[e.details["policy"]] = e.details["sha256"]
        if checker.size != end:
            raise _fail(checker.size, "entry is missing from the store")
    except VerificationError as exc:
        r.error = (exc.index, exc.message)  # type: ignore[assignment]
    except StorageError as exc:  # an entry that cannot be read fails at the index it should have had
        r.error = (checker.size if checker else start, exc.message)
    if checker is not None:
        r.first_logged_at, r.last_logged_at = checker.first_logged_at, checker.logged_at
        r.firsts, r.lasts = checker.firsts or {}, checker.artists
    return r


@dataclass
class _Merged:
    errors: list[tuple[int, str]] = field(default_factory=list)
    artists: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    stats: dict[tuple[str, str, str, str], list[int]] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    preferences: dict[str, tuple[int, Any]] = field(default_factory=dict)


def _stitch(results: list[_Range]) -> _Merged:
    """Joins ranges in order: each range's first logged_at and each artist's first leaf in it must
    follow on from the ranges before."""
    m = _Merged()
    last_logged = ""
    for r in results:
        if r.error is not None:
            m.errors.append(r.error)
        if r.first_logged_at is not None and r.first_logged_at < last_logged:
            m.errors.append((r.start, f"logged_at {r.first_logged_at} goes back before {last_logged}"))
        for tag, (i, aseq, aprev) in r.firsts.items():
            last_seq, last_index = m.artists.get(tag, (0, None))  # type: ignore[arg-type]
            if aseq != last_seq + 1 or aprev != last_index:
                m.errors.append((i, f"artist chain broken: aseq {aseq}, aprev {aprev}; expected aseq "
                                    f"{last_seq + 1}, aprev {last_index}"))
        m.artists.update(r.lasts)
        last_logged = r.last_logged_at or last_logged
        for k, (n, u) in r.stats.items():
            slot = m.stats.setdefault(k, [0, 0])
            slot[0] += n
            slot[1] += u
        m.policies.update(r.policies)
        m.preferences.update(r.preferences)
    return m


def _check_top(store: Any, size: int, block: int) -> tuple[int, str, int] | None:
    """The stored nodes above the ranges, rebuilt from the stored level-`block` nodes (each the root of
    a range, checked there), and no stored node beyond the log's size. A failure comes back as (first
    index, message, end of the leaves it covers)."""
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
        return exc.index, exc.message, nodes.span_end or exc.index + 1  # type: ignore[return-value,operator]
    except StorageError as exc:
        return frontier.size << block, exc.message, (frontier.size + 1) << block
    return None


def _count(stats: dict[tuple[str, str, str, str], list[int]], e) -> None:  # type: ignore[no-untyped-def]
    d = e.details
    use = e.type in ("use", "refusal")
    key = (format_logged_at(e.logged_ms)[:10], e.type, d.get("purpose", "") if use else "", d.get("decision", "") if use else "")
    slot = stats.setdefault(key, [0, 0])
    slot[0] += 1
    slot[1] += d["invocations"] if use else 0


class _StoredNodes:
    """Walks the stored interior nodes level by level, in step with the recomputed tree."""

    def __init__(self, store, start: int = 0) -> None:  # type: ignore[no-untyped-def]
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


def _check_tables(log: LocalLog, chains, stats, policy_hashes, preferences) -> None:  # type: ignore[no-untyped-def]
    store = log.store
    artists = store.artists()
    heads = {a.tag: (a.aseq, a.head) for a in artists}
    if heads != chains:
        bad = sorted(v[1] for t, v in chains.items() if heads.get(t) != v) or [None]
        raise _fail(bad[0], "the stored artist heads do not match the artist chains in the leaves")
    # The preferences the sequencer decides by must be those the artist's latest preference leaf committed to.
    for a in artists:
        index, want = preferences.get(a.artist_id, (a.head, None))
        if a.preferences != want:
            raise _fail(index, f"the stored preferences of artist {a.artist_id!r} differ from its latest preference leaf")
    for rec in store.policies():
        want = policy_hashes.get(rec.policy_id)
        if want is None or hashlib.sha256(rec.document).hexdigest() != want:
            raise _fail(rec.index, f"stored policy {rec.policy_id!r} does not match its policy leaf")
    stored_stats = {(d, k, p, dec): [n, u] for d, k, p, dec, n, u in store.stats()}
    if stored_stats != stats:
        raise VerificationError("the statistics table does not match a recount of the leaves")


# --- remote: from the public tiles alone ----------------------------------------------------------


def verify_remote(url: str, vkey: str, *, trusted: bytes | None = None, progress: Progress | None = None) -> Report:
    """Verifies the log served at `url` from its public checkpoint and tiles alone, trusting only `vkey`:
    the checkpoint's signature, every leaf (strictly parsed, hashed against the level-0 tiles), the hash
    chain, `logged_at` order, every artist chain, the tiles above level 0 and the tree against the signed
    root; with `trusted` (an older signed checkpoint), that the log still holds the tree it signed."""
    return asyncio.run(_verify_remote(url, _verifier(vkey), trusted, progress))


async def _verify_remote(url: str, verifier: Verifier, trusted: bytes | None, progress: Progress | None) -> Report:
    t0 = time.perf_counter()
    origin = verifier.name  # a log's key is named after its origin (SPEC §5)
    async with TileClient(url) as client:
        cp = _open(await client.checkpoint(), verifier, origin, "the log's checkpoint")
        roots = {cp.size: (cp.root, "the signed checkpoint")}
        if trusted is not None:
            old = _open(trusted, verifier, origin, "the trusted checkpoint")
            if old.size > cp.size:
                raise VerificationError(f"rollback: the log's checkpoint has size {cp.size}, smaller than the "
                                        f"trusted checkpoint's {old.size}")
            if old.size == cp.size and old.root != cp.root:
                raise _fail(max(old.size - 1, 0), "fork: the log's checkpoint and the trusted one have the same size "
                                                  "but different roots")
            roots.setdefault(old.size, (old.root, "the trusted checkpoint (a fork)"))
        checker = ChainChecker()
        await check_remote_leaves(client, checker, cp.size, roots=roots, progress=progress)
    return Report(origin, cp.size, cp.size, len(checker.artists), 1 + (trusted is not None), time.perf_counter() - t0)


async def check_remote_leaves(client: TileClient, checker: ChainChecker, size: int, *,
                              roots: dict[int, tuple[bytes, str]], progress: Progress | None = None,
                              on_leaf: Callable[[Leaf], None] | None = None) -> None:
    """Extends `checker` over the leaves [checker.size, size) of a remote log (`size` a checkpoint's):
    each leaf's hash against its level-0 hash tile, the leaf parsed strictly, then the chain rules; every
    node it completes at a tile level (tree levels 8, 16, …) against the hash tile serving it; the tree at
    each size in `roots` against the (root, what) given. Tiles are fetched ahead and checked in order, so
    the error names the first bad index."""
    start = checker.size
    _check_root(checker, roots)
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
                    for level, n, node in checker.add(h, leaf.prev, leaf.logged_at, leaf.artist, leaf.aseq, leaf.aprev)[1:]:
                        if level % TILE_HEIGHT == 0:
                            await upper.check(level, n, node)
                    _check_root(checker, roots)
                    if on_leaf is not None:
                        on_leaf(leaf)
                if progress:
                    progress(checker.size - start, size - start)
    except (NotFound, ValidationError) as exc:  # a bundle or level-0 tile the checkpoint implies
        raise _fail(checker.size, f"the log does not serve its tiles: {exc.message}") from None
    finally:
        await upper.close()


def _check_root(checker: ChainChecker, roots: dict[int, tuple[bytes, str]]) -> None:
    want = roots.get(checker.size)
    if want is not None and checker.frontier.root() != want[0]:
        raise _fail(max(checker.size - 1, 0), f"the tree of size {checker.size} does not match {want[1]}")


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
