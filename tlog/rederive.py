"""Public leaves re-derived from stored entries (the leaf format itself is `tlog.leaf`).

The store keeps each entry's private details and the tree, not the leaf bytes: a leaf is a function of
its details (committed by hash), the previous leaf's hash, and the artist link. Every leaf that leaves the
store is re-derived here and checked against the stored leaf hash, so a tampered details row is refused
rather than served."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import orjson

from . import merkle
from .canonical import canonical
from .errors import StorageError, TlogError
from .leaf import LEAF_VERSION, Leaf, binding_leaf, build_leaf, parse_leaf, preference_leaf, use_leaf_unchecked
from .records import format_logged_at
from .store.base import Entry, LogStore

# The fields of a chained leaf that its entry's columns hold; an erased entry keeps the others (Entry.erased).
_COLUMN_FIELDS = frozenset({"v", "type", "prev", "logged_at", "artist", "aseq", "aprev"})


def entry_leaf(entry: Entry, prev: bytes) -> bytes:
    """The canonical public leaf of `entry`, given the hash of the leaf before it. Use and refusal leaves
    skip the leaf's re-check: every reader compares what this returns with the stored leaf hash, and
    the sequencer builds them from validated values."""
    d = entry.details
    if entry.erased is not None:
        return _erased_leaf(entry, prev)
    if entry.type in ("use", "refusal"):
        return use_leaf_unchecked(d, prev=prev, artist=entry.tag, aseq=entry.aseq, aprev=entry.aprev)  # type: ignore[arg-type]
    logged_at = format_logged_at(entry.logged_ms)
    if entry.type == "erasure":
        leaf = Leaf("erasure", prev, logged_at, artist=bytes.fromhex(d["artist"]), erased=d["erased"])
    elif entry.type == "map":
        leaf = Leaf("map", prev, logged_at, root=bytes.fromhex(d["root"]))
    elif entry.type == "preference":
        leaf = preference_leaf(d, prev=prev, artist=entry.tag, aseq=entry.aseq, aprev=entry.aprev)  # type: ignore[arg-type]
    elif entry.type == "binding":
        leaf = binding_leaf(d, prev=prev, artist=entry.tag, aseq=entry.aseq, aprev=entry.aprev)  # type: ignore[arg-type]
    elif entry.type == "policy":
        leaf = Leaf("policy", prev, logged_at, details=bytes.fromhex(d["sha256"]), policy=d["policy"],
                    effective_at=d["effective_at"])
    elif entry.type == "log":
        leaf = Leaf("log", prev, logged_at, origin=d["origin"], vrf=bytes.fromhex(d["vrf"]))
    else:
        raise ValueError(f"unknown entry type {entry.type!r}")
    return build_leaf(leaf)


def public_fields(leaf: bytes) -> dict[str, Any]:
    """What an erased entry keeps of its chained leaf: the fields its columns do not hold."""
    return {k: v for k, v in orjson.loads(leaf).items() if k not in _COLUMN_FIELDS}


def _erased_leaf(entry: Entry, prev: bytes) -> bytes:
    """An erased entry's leaf, from the public fields it kept and its columns; parsed, so that only a
    well-formed leaf is ever derived (its hash is then checked against the stored one like any other)."""
    data = canonical({**entry.details, "v": LEAF_VERSION, "type": entry.type, "prev": prev.hex(),
                      "logged_at": format_logged_at(entry.logged_ms), "artist": entry.tag.hex(),  # type: ignore[union-attr]
                      "aseq": entry.aseq, "aprev": entry.aprev})
    parse_leaf(data)
    return data


def checked_entry_leaf(entry: Entry, prev: bytes) -> bytes:
    """`entry_leaf` for stored entries: details that cannot make a leaf at all (a key missing, a wrong
    type: the database was altered) are a StorageError naming the index, not a crash."""
    try:
        return entry_leaf(entry, prev)
    except (KeyError, TypeError, ValueError, TlogError) as exc:
        why = exc.message if isinstance(exc, TlogError) else f"{type(exc).__name__}: {exc}"
        raise StorageError(f"leaf {entry.index} cannot be derived from its stored details (the database was "
                           f"altered): {why}") from None


def iter_leaves(store: LogStore, start: int, end: int) -> Iterator[tuple[Entry, bytes, bytes]]:
    """(entry, leaf bytes, leaf hash) for indexes [start, end), each checked against the stored hash."""
    stored = store.leaf_hashes(max(start - 1, 0), end)
    prev = stored[0] if start else bytes(32)
    hashes = stored[1:] if start else stored
    count = 0
    for entry, want in zip(store.entries(start, end), hashes):
        leaf = checked_entry_leaf(entry, prev)
        h = merkle.leaf_hash(leaf)
        if h != want:
            raise StorageError(f"leaf {entry.index} does not match its stored hash: the database was altered")
        yield entry, leaf, h
        prev = h
        count += 1
    if count != end - start or len(hashes) != end - start:
        raise StorageError(f"entries [{start}, {end}) are incomplete in the store: the database was altered")


def entry_leaves(store: LogStore, entries: Sequence[Entry]) -> list[bytes]:
    """The public leaves of entries anywhere in the log (never index 0, the log leaf), re-derived and
    checked against their stored hashes, reading every hash they need (theirs and the one before each)
    at once."""
    coords = [(0, i) for e in entries for i in (e.index - 1, e.index)]
    hashes = store.read_nodes(coords)
    out = []
    for k, e in enumerate(entries):
        leaf = checked_entry_leaf(e, hashes[2 * k])
        if merkle.leaf_hash(leaf) != hashes[2 * k + 1]:
            raise StorageError(f"leaf {e.index} does not match its stored hash: the database was altered")
        out.append(leaf)
    return out
