"""Re-derive and check everything: from a local store (the fsck) or from a remote log's public tiles.

Both paths feed leaves, in index order, to one `ChainChecker`, which holds the rules anyone can check
from public leaves: the hash chain, `logged_at` never decreasing, every artist chain contiguous, and the
Merkle tree against every signed checkpoint. The local path adds what only the operator can check: each
stored details row against its leaf, artist tags against the tag key, every stored tree node, the
artist heads, statistics and policies tables. Every failure names the first bad index."""

from __future__ import annotations

import asyncio
import hashlib
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import merkle
from .checkpoint import Checkpoint, open_checkpoint
from .errors import NoteError, NotFound, ProofError, StorageError, TlogError, ValidationError, VerificationError
from .leaves import checked_entry_leaf
from .log import LocalLog
from .note import Verifier
from .records import Leaf, artist_tag, format_logged_at, parse_leaf
from .remote import TileClient, cancel
from .tiles import TILE_HEIGHT, TILE_WIDTH, Tile, hash_tiles_for_size, tile_path

Progress = Callable[[int, int], None]
CHUNK = 16384


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
    """Public-leaf rules, applied leaf by leaf from index 0."""

    def __init__(self) -> None:
        self.frontier = merkle.Frontier()
        self.prev = bytes(32)
        self.logged_at = ""
        self.artists: dict[bytes, tuple[int, int]] = {}  # tag → (aseq, index of the latest leaf)

    @property
    def size(self) -> int:
        return self.frontier.size

    def add(self, h: bytes, prev: bytes, logged_at: str, tag: bytes | None, aseq: int | None,
            aprev: int | None) -> list[tuple[int, int, bytes]]:
        index = self.frontier.size
        if prev != self.prev:
            raise _fail(index, "prev does not match the hash of the leaf before it (the hash chain is broken)")
        if logged_at < self.logged_at:  # fixed-width RFC 3339 UTC strings order like the times they name
            raise _fail(index, f"logged_at {logged_at} goes back before {self.logged_at}")
        if tag is not None:
            last_seq, last_index = self.artists.get(tag, (0, None))
            if aseq != last_seq + 1 or aprev != last_index:
                raise _fail(index, f"artist chain broken: aseq {aseq}, aprev {aprev}; expected aseq "
                                   f"{last_seq + 1}, aprev {last_index}")
            self.artists[tag] = (aseq, index)
        self.prev = h
        self.logged_at = logged_at
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
               progress: Progress | None = None) -> Report:
    t0 = time.perf_counter()
    store = log.store
    if vkey is not None and vkey != log.verifier.key:
        raise VerificationError(f"the database's verifier key is {log.verifier.key}, not the one named")
    latest = _open(store.latest_checkpoint() or b"", log.verifier, log.origin, "the latest checkpoint")
    size = store.size()
    if latest.size != size:
        raise _fail(min(latest.size, size), f"the latest checkpoint covers {latest.size} leaves but the store holds {size}")
    checkpoints = {s: _open(store.checkpoint_at(s) or b"", log.verifier, log.origin, f"checkpoint at size {s}")
                   for s in store.checkpoint_sizes()}
    want_roots = {s: (cp.root, f"its signed checkpoint") for s, cp in checkpoints.items()}
    if trusted is not None:
        old = _open(trusted, log.verifier, log.origin, "the trusted checkpoint")
        if old.size > size:
            raise VerificationError(f"the trusted checkpoint has size {old.size}, larger than the log ({size}): a rollback or a fork")
        if old.size in want_roots and want_roots[old.size][0] != old.root:
            raise _fail(old.size - 1, "the trusted checkpoint's root differs from the stored checkpoint at its size: a fork")
        want_roots[old.size] = (old.root, "the trusted checkpoint (a fork)")
    if want_roots.get(0, (merkle.EMPTY_ROOT,))[0] != merkle.EMPTY_ROOT:
        raise VerificationError("the checkpoint at size 0 does not have the empty tree's root")

    checker = ChainChecker()
    nodes = _StoredNodes(store)
    tags: dict[str, bytes] = {}
    tag_key = log.tag_key
    stats: dict[tuple[str, str, str, str], list[int]] = {}
    policy_hashes: dict[str, str] = {}
    preferences: dict[str, tuple[int, Any]] = {}  # artist id → (index, preferences) of its latest preference leaf
    stored_hashes: Iterator[tuple[int, bytes]] = store.iter_nodes(0)
    for start in range(0, size, CHUNK):
        end = min(start + CHUNK, size)
        try:  # an entry that cannot be read, or cannot make a leaf, fails at the index it should have had
            for e in store.entries(start, end):
                i = checker.size
                if e.index != i:
                    raise _fail(i, "entry is missing from the store")
                leaf = checked_entry_leaf(e, checker.prev)
                h = merkle.leaf_hash(leaf)
                n, stored = next(stored_hashes, (None, None))
                if n != i or stored != h:
                    raise _fail(i, "the stored leaf hash does not match the leaf derived from the stored details "
                                   "(details or tree altered)")
                if e.type not in ("policy", "preference"):
                    kind = "refusal" if e.details.get("decision") == "refused" else "use"
                    if e.type != kind:  # the type is stored beside the details; statistics count by it
                        raise _fail(i, f"the stored type {e.type!r} differs from the leaf's {kind!r}")
                elif e.type == "preference":
                    preferences[e.artist_id] = (i, e.details.get("preferences"))  # type: ignore[index]
                if e.tag is not None and tag_key is not None:
                    want = tags.get(e.artist_id)
                    if want is None:
                        want = tags[e.artist_id] = artist_tag(tag_key, e.artist_id)
                    if e.tag != want:
                        raise _fail(i, f"artist tag does not match HMAC(tag key, artist id) for {e.artist_id!r} "
                                       "(the stored tag, or the tag key file, was altered)")
                for level, n_, hash_ in checker.add(h, checker.prev, format_logged_at(e.logged_ms), e.tag, e.aseq, e.aprev)[1:]:
                    nodes.check(level, n_, hash_)
                _count(stats, e)
                if e.type == "policy":
                    policy_hashes[e.details["policy"]] = e.details["sha256"]
                want = want_roots.get(i + 1)
                if want is not None and checker.frontier.root() != want[0]:
                    raise _fail(i, f"the tree of size {i + 1} does not match {want[1]}")
        except StorageError as exc:
            raise _fail(checker.size, exc.message) from None
        if checker.size != end:
            raise _fail(checker.size, "entry is missing from the store")
        if progress:
            progress(end, size)
    nodes.finish(size)
    try:
        _check_tables(log, checker, stats, policy_hashes, preferences)
    except StorageError as exc:  # a table row that cannot even be read
        raise VerificationError(exc.message) from None
    report = Report(log.origin, size, size, len(checker.artists), len(checkpoints) + (trusted is not None),
                    time.perf_counter() - t0)
    if tag_key is None:
        report.notes.append("artist tags not checked (tag key not readable)")
    return report


def _count(stats: dict[tuple[str, str, str, str], list[int]], e) -> None:  # type: ignore[no-untyped-def]
    d = e.details
    use = e.type in ("use", "refusal")
    key = (format_logged_at(e.logged_ms)[:10], e.type, d.get("purpose", "") if use else "", d.get("decision", "") if use else "")
    slot = stats.setdefault(key, [0, 0])
    slot[0] += 1
    slot[1] += d["invocations"] if use else 0


class _StoredNodes:
    """Walks the stored interior nodes level by level, in step with the recomputed tree."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self.store = store
        self.iters: dict[int, Iterator[tuple[int, bytes]]] = {}

    def check(self, level: int, n: int, h: bytes) -> None:
        it = self.iters.get(level)
        if it is None:
            it = self.iters[level] = self.store.iter_nodes(level)
        got = next(it, None)
        if got != (n, h):
            raise _fail(n << level, f"stored tree node ({level}, {n}) differs from the recomputed one")

    def finish(self, size: int) -> None:
        for level in range(0, 64):
            extra = next(iter(self.store.iter_nodes(level, size >> level)), None)
            if extra is not None:
                raise _fail(size, f"the store holds tree node ({level}, {extra[0]}) beyond the log's size")
            if size >> level == 0:
                break


def _check_tables(log: LocalLog, checker: ChainChecker, stats, policy_hashes, preferences) -> None:  # type: ignore[no-untyped-def]
    store = log.store
    artists = store.artists()
    heads = {a.tag: (a.aseq, a.head) for a in artists}
    if heads != checker.artists:
        bad = sorted(v[1] for t, v in checker.artists.items() if heads.get(t) != v) or [None]
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
