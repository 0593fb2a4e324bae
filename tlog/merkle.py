"""RFC 9162 §2.1 Merkle trees: hashes, roots, inclusion and consistency proofs, their checks, and the
append frontier. Pure: no storage, no clock. Storage is reached only through `HashReader`.

Node coordinates follow golang.org/x/mod/sumdb/tlog: node (level, n) is the root of the complete subtree
over leaves [n·2^level, (n+1)·2^level). Only complete subtrees exist in storage; the hash of any other
range is folded from the complete subtrees that tile it. Every function that reads plans all the
coordinates it needs first and reads them in one `read_nodes` call, so a proof over a log of millions of
entries costs one storage round trip of O(log n) hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tlog.errors import NotFound, ProofError, StorageError, ValidationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

# Bound once: the frontier calls it once per appended record on the sequencer's hot path.
_sha256 = hashlib.sha256

Coord = tuple[int, int]
"""(level, n): the complete subtree over leaves [n·2^level, (n+1)·2^level)."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 ‖ data): the RFC 9162 hash of one log entry."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right): the RFC 9162 hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


class HashReader(Protocol):
    """Where stored node hashes come from: a database, tiles, or memory."""

    def read_nodes(self, coords: Sequence[Coord]) -> list[bytes]:
        """The hashes of the complete nodes `coords`, in the same order, in one round trip."""
        ...


# --- planning: which complete subtrees make up a range ------------------------------------------------


def _subtree_coords(lo: int, hi: int) -> list[Coord]:
    """The complete subtrees that tile leaves [lo, hi), largest (leftmost) first.

    Folding their hashes right to left gives RFC 9162's MTH(D[lo:hi]) provided lo is a multiple of a
    power of two at least hi - lo: true of the whole tree (lo = 0) and of every subtree the RFC's
    recursive definitions visit, since each split is at the largest power of two below the width."""
    coords = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        coords.append((level, lo >> level))
        lo += 1 << level
    return coords


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Hash a range's complete subtrees (largest first) into its root: right to left, as MTH splits."""
    h = hashes[-1]
    for i in range(len(hashes) - 2, -1, -1):
        h = _sha256(b"\x01" + hashes[i] + h).digest()
    return h


def _split(width: int) -> int:
    """RFC 9162's k: the largest power of two strictly below width (width ≥ 2)."""
    return 1 << ((width - 1).bit_length() - 1)


def _read(reader: HashReader, coords: list[Coord]) -> list[bytes]:
    """The one round trip. Skipped when nothing is needed (an empty tree, a one-leaf proof)."""
    if not coords:
        return []
    hashes = reader.read_nodes(coords)
    if len(hashes) != len(coords):
        raise StorageError(f"hash reader returned {len(hashes)} hashes for {len(coords)} nodes")
    return hashes


def _range_hashes(ranges: list[tuple[int, int]], reader: HashReader) -> list[bytes]:
    """MTH of each leaf range, reading all the complete subtrees they need in one call."""
    plans = [_subtree_coords(lo, hi) for lo, hi in ranges]
    hashes = _read(reader, [c for plan in plans for c in plan])
    out, pos = [], 0
    for plan in plans:
        out.append(_fold(hashes[pos : pos + len(plan)]))
        pos += len(plan)
    return out


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """RFC 9162 PATH(index, D[0:size]) as the leaf ranges whose MTHs it lists, leaf's sibling first."""
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def _consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """RFC 9162 PROOF(old, D[0:new]) = SUBPROOF(old, D[0:new], true) as leaf ranges, deepest first.

    The RFC's flag b ("is this subtree the old tree itself?") is true exactly while lo is still 0."""
    ranges = []
    lo, hi = 0, new
    while old != hi:
        mid = lo + _split(hi - lo)
        if old <= mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    if lo != 0:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


# --- proofs -------------------------------------------------------------------------------------------


def tree_root(size: int, reader: HashReader) -> bytes:
    """MTH(D[0:size]) from the ≤ log2(size) complete subtrees that make up the tree."""
    if size < 0:
        raise ValidationError(f"tree size {size} is negative")
    if size == 0:
        return EMPTY_ROOT
    return _range_hashes([(0, size)], reader)[0]


def inclusion_proof(index: int, size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof of leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size:
        raise ValidationError(f"index {index} is not in a tree of size {size}")
    return _range_hashes(_inclusion_ranges(index, size), reader)


def consistency_proof(old: int, new: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 §2.1.4.1 proof that the tree of size `old` is a prefix of the tree of size `new`.

    Empty when old is 0 or old == new (nothing to prove), as transparency-dev/merkle answers."""
    if not 0 <= old <= new:
        raise ValidationError(f"no consistency proof from size {old} to size {new}")
    if old == 0 or old == new:
        return []
    return _range_hashes(_consistency_ranges(old, new), reader)


# --- checks -------------------------------------------------------------------------------------------


def _check_hash(what: str, h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what} is {len(h)} bytes, want {HASH_SIZE}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"proof hash {i}", h)


def _inclusion_proof_len(index: int, size: int) -> int:
    """Hashes in a proof for `index` in `size`: one per level below where the paths to `index` and to the
    last leaf part (inner), plus one per left sibling above that (border)."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: check that `proof` shows leaf hash `leaf_hash` at `index` in the tree of `size`
    leaves with root `root`. Raises ProofError otherwise."""
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    _check_proof_hashes(proof)
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    want = _inclusion_proof_len(index, size)
    if len(proof) != want:
        raise ProofError(f"inclusion proof for index {index} in size {size} has {len(proof)} hashes, want {want}")
    # With the length checked, sn reaches 0 exactly at the last hash, so the RFC's sn checks cannot fail.
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if r != root:
        raise ProofError(f"inclusion proof for index {index} does not lead to the root of size {size}")


def _consistency_proof_len(old: int, new: int) -> int:
    """Hashes in a proof from `old` to `new` (0 < old < new): the inclusion path of leaf old-1 above the
    complete subtree that ends the old tree, plus that subtree's own hash unless it is the old tree."""
    inner = ((old - 1) ^ (new - 1)).bit_length()
    border = ((old - 1) >> inner).bit_count()
    shift = (old & -old).bit_length() - 1  # trailing zeros of old: the height of that last subtree
    seed = 0 if old == 1 << shift else 1
    return seed + inner - shift + border


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: check that `proof` shows the tree of size `old` with root `old_root` is a prefix
    of the tree of size `new` with root `new_root`. Raises ProofError otherwise.

    old == 0 is an error, as in transparency-dev/merkle: every tree extends the empty one, so such a
    "proof" proves nothing and a caller that asks for one has a bug; callers special-case it."""
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    _check_proof_hashes(proof)
    if not 0 <= old <= new:
        raise ProofError(f"no consistency proof from size {old} to size {new}")
    if old == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if old == new:
        if proof:
            raise ProofError(f"consistency proof between equal sizes {old} must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same size {old}")
        return
    want = _consistency_proof_len(old, new)
    if len(proof) != want:
        raise ProofError(f"consistency proof from size {old} to {new} has {len(proof)} hashes, want {want}")
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)  # the old tree is itself a complete subtree of the new one
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the root of size {old}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the root of size {new}")


# --- appending ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Frontier:
    """The compact range [0, size): the roots of the complete subtrees that tile it, largest (leftmost)
    first, one per set bit of size. It is all a writer needs to append leaves and compute roots."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.hashes) != self.size.bit_count():
            raise ValidationError(f"a frontier of size {self.size} needs {max(self.size, 0).bit_count()} hashes")

    @classmethod
    def from_reader(cls, size: int, reader: HashReader) -> Frontier:
        """The frontier of the stored tree of `size` leaves, in one read of ≤ log2(size) nodes."""
        if size < 0:
            raise ValidationError(f"tree size {size} is negative")
        return cls(size, _read(reader, _subtree_coords(0, size)))

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf. Returns every node this leaf completes as (level, n, hash), the leaf itself first:
        exactly the nodes a store must keep. Each trailing 1 bit of the old size is a complete subtree on
        the left that now has its right sibling."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValidationError(f"leaf hash is {len(leaf_hash)} bytes, want {HASH_SIZE}")
        n = self.size
        hashes = self.hashes
        h = leaf_hash
        completed = [(0, n, h)]
        level = 0
        while n & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            n >>= 1
            level += 1
            completed.append((level, n, h))
        hashes.append(h)
        self.size += 1
        return completed

    def root(self) -> bytes:
        """MTH of the whole range: the subtree roots folded right to left."""
        return _fold(self.hashes) if self.hashes else EMPTY_ROOT

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self.hashes))


class MemoryHashes(HashReader):
    """Every complete node of a tree, in memory: levels[l][n] is node (l, n). A HashReader for clients
    that hold a whole log (verifiers, tests); a store keeps the same nodes in a table."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = []
        self._frontier = Frontier()
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        return self._frontier.size

    def append(self, leaf_hash: bytes) -> None:
        # Nodes of one level complete in order of n, so each lands at the end of its level's list.
        for level, _, h in self._frontier.append(leaf_hash):
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(h)

    def read_nodes(self, coords: Sequence[Coord]) -> list[bytes]:
        levels = self._levels
        out = []
        for level, n in coords:
            if not (0 <= level < len(levels) and 0 <= n < len(levels[level])):
                raise NotFound(f"node ({level}, {n}) is not a complete subtree of a tree of size {self.size}")
            out.append(levels[level][n])
        return out
