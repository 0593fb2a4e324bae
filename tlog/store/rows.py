"""What the SQL backends (sqlite.py, postgres.py) share: how an entry becomes a row and back, the names
its repeated strings are interned as, and the arithmetic of the public figures over a period.

Invariants kept here for both backends:
- A name's id, once committed, never changes and is never deleted: a cache of names is never stale, only
  incomplete, so a miss reloads it (`Names`). Ids a batch allocates (`NewNames`) join the cache only after
  the batch commits.
- An entry row holds the private details of a use or refusal as columns (its repeated strings as name
  ids); any other entry, and an erased one, as canonical JSON in `extra`. `decode_entry(encode_entry(e))`
  gives back the same `Entry`; a row that cannot be decoded is a StorageError naming its index.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from ..errors import StorageError
from ..leaf import CHAIN_TYPES
from ..records import format_logged_at
from ..stats import StatRow, Tally
from .base import Batch, Entry, TokenRecord

DAY_MS = 86_400_000
# The fixed shape of use and refusal details (records.use_details always fills every field).
USE_TYPES = ("use", "refusal")
USE_KEYS = frozenset(
    "event_id content_id artist_id purpose phase system occurred_at invocations window_end detail basis "
    "service index logged_at decision policy nonce".split()
)
SYSTEM_KEYS = frozenset(("id", "model", "version"))
ENTRY_COLUMNS = (
    "idx, type, logged_ms, artist, aseq, aprev, service, event_id, content_id, purpose, phase, system, "
    "occurred_at, window_end, invocations, detail, basis, decision, policy, nonce, extra, hash"
)
ENTRY_COLUMN_COUNT = 22

NameRow = tuple[int, str, str]  # (id, kind, value)
LEVEL_SHIFT = 40  # node id = level << 40 | n: room for 2^40 leaves
FIRST_NODE = 1 << LEVEL_SHIFT  # ids below are leaf hashes, kept in `entries`
NODE_MASK = FIRST_NODE - 1


def node_id(level: int, n: int) -> int:
    return (level << LEVEL_SHIFT) | n


def node_span(level: int, start: int, end: int | None) -> tuple[str, str, int, int]:
    """Where the nodes [start, end) of `level` are stored (end None: the whole level): (table, key column,
    lowest id, id past the last). Leaf hashes live in `entries` by index, inner nodes in `nodes` by id."""
    lo = node_id(level, start)
    hi = node_id(level + 1, 0) if end is None else node_id(level, end)
    return ("entries", "idx", lo, hi) if level == 0 else ("nodes", "id", lo, hi)


NodeFetch = Callable[[list[int], list[int]], dict[int, bytes]]  # (leaf ids, inner ids) → the stored hashes


def read_cached(coords: Sequence[tuple[int, int]], cache: dict[int, bytes], limit: int, fetch: NodeFetch,
                where: str) -> list[bytes]:
    """Tree nodes, from `cache` or `fetch`. Stored nodes never change (the tree only grows), so the ones
    proofs keep asking for (the right edge, the upper levels) are cached, at most `limit` of them; only
    what was never read is fetched. One dict operation per node: another thread (the server's writer,
    through `remember`) may add to or clear the cache meanwhile."""
    if not coords:
        return []
    ids = [node_id(level, n) for level, n in coords]
    out = [cache.get(i) for i in ids]
    missing = [i for i, h in zip(ids, out) if h is None]
    if not missing:
        return out  # type: ignore[return-value]
    found = fetch([i for i in missing if i < FIRST_NODE], [i for i in missing if i >= FIRST_NODE])
    if len(found) < len(set(missing)):
        level, n = next(c for c, i, h in zip(coords, ids, out) if h is None and i not in found)
        raise StorageError(f"tree node ({level}, {n}) is missing from {where}")
    if len(cache) + len(found) > limit:
        cache.clear()
    cache.update(found)
    return [found[i] if h is None else h for i, h in zip(ids, out)]


def remember(cache: dict[int, bytes], limit: int, nodes: Sequence[tuple[int, int, bytes]]) -> None:
    """Adds committed nodes to a node cache; safe from another thread (see read_cached)."""
    if len(cache) + len(nodes) > limit:
        cache.clear()
    cache.update((node_id(level, n), h) for level, n, h in nodes)


class Names:
    """The interned names of one connection: (kind, value) ↔ id, loaded with `load` (all rows of `names`)."""

    def __init__(self, load: Callable[[], Iterable[NameRow]]) -> None:
        self._load = load
        self.ids: dict[tuple[str, str], int] = {}
        self.of: dict[int, tuple[str, str]] = {}
        self.profiles: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # name ids → decoded names, for decode_entry

    def reload(self) -> None:
        self.ids.clear()
        self.of.clear()
        self.profiles.clear()
        for i, kind, value in self._load():
            self.ids[(kind, value)] = i
            self.of[i] = (kind, value)

    @property
    def top(self) -> int:
        """The largest id known here (0 if none)."""
        return max(self.of, default=0)

    def name(self, i: int | None) -> str | None:
        if i is None:
            return None
        got = self.of.get(i)
        if got is None:  # written by another connection since we loaded
            self.reload()
            got = self.of[i]
        return got[1]

    def id_of(self, kind: str, value: str | None) -> int | None:
        """Id of a name, or None when it was never written (so nothing can match it)."""
        if value is None:
            return None
        i = self.ids.get((kind, value))
        if i is None:
            self.reload()
            i = self.ids.get((kind, value))
        return i

    def commit(self, new: "NewNames") -> None:
        """Adds the names a batch allocated, once it committed."""
        for key, i in new.new.items():
            self.ids[key] = i
            self.of[i] = key


class NewNames:
    """The name ids one batch uses: known ones from `names`, new ones numbered from `top` (the largest id
    stored, read inside the batch's transaction). Callable as `encode_entry`'s `name_id`."""

    def __init__(self, names: Names, top: int) -> None:
        self.names = names
        self.top = top
        self.new: dict[tuple[str, str], int] = {}

    def __call__(self, kind: str, value: str | None) -> int | None:
        if value is None:
            return None
        key = (kind, value)
        i = self.names.ids.get(key) or self.new.get(key)
        if i is None:
            self.top += 1
            i = self.new[key] = self.top
        return i

    def rows(self) -> list[tuple[int, str, str]]:
        return [(i, k, v) for (k, v), i in self.new.items()]


def encode_entry(e: Entry, leaf_hash: bytes, name_id: Callable[[str, str | None], int | None],
                 artist_ids: Mapping[str, int], profiles: dict[tuple[Any, ...], tuple[Any, ...]]) -> tuple[Any, ...]:
    """The row of `e` in ENTRY_COLUMNS order. `profiles` memoises the name ids of a combination of names,
    which most records of a batch share."""
    d = e.details
    artist = artist_ids.get(e.artist_id) if e.artist_id is not None else None
    if e.artist_id is not None and artist is None:
        raise StorageError(f"entry {e.index} names artist {e.artist_id!r} with no state in the batch")
    if e.type in USE_TYPES and d.keys() == USE_KEYS and d["system"].keys() == SYSTEM_KEYS:
        s = d["system"]
        key = (e.type, d["service"], d["purpose"], d["phase"], s["id"], s["model"], s["version"], d["basis"],
               d["decision"], d["policy"])
        ids = profiles.get(key)
        if ids is None:
            ids = profiles[key] = (
                name_id("type", e.type), name_id("service", d["service"]), name_id("purpose", d["purpose"]),
                name_id("phase", d["phase"]), name_id("system", orjson.dumps([s["id"], s["model"], s["version"]]).decode()),
                name_id("basis", d["basis"]), name_id("decision", d["decision"]), name_id("policy", d["policy"]),
            )
        t, service, purpose, phase, system, basis, decision, policy = ids
        return (
            e.index, t, e.logged_ms, artist, e.aseq, e.aprev, service, d["event_id"], d["content_id"], purpose,
            phase, system, d["occurred_at"], d["window_end"], d["invocations"], d["detail"], basis, decision,
            policy, binascii.a2b_base64(d["nonce"]), None, leaf_hash,
        )
    # A binding's content id also goes in its column, so an artist's listing filtered by content shows it.
    content_id = d.get("content_id") if e.type == "binding" else None
    return (
        e.index, name_id("type", e.type), e.logged_ms, artist, e.aseq, e.aprev,
        None, None, content_id, None, None, None, None, None, None, None, None, None, None, None,
        orjson.dumps(d, option=orjson.OPT_SORT_KEYS).decode(), leaf_hash,
    )


def decode_entry(row: Sequence[Any], names: Names, where: str) -> Entry:
    """The Entry of one row of an entries select (idx, type, logged_ms, artist id, tag, aseq, aprev, then
    ENTRY_COLUMNS from service to extra). A row that cannot be decoded (edited by hand, bit rot) is a
    StorageError naming its index and `where` (the database), never a crash: `tlog verify` reports it,
    the server answers 503."""
    (idx, type_, logged_ms, artist_id, tag, aseq, aprev, service, event_id, content_id, purpose, phase,
     system, occurred_at, window_end, invocations, detail, basis, decision, policy, nonce, extra) = row
    name = names.name
    erased = None
    try:
        kind = name(type_)
        if extra is not None:
            details = orjson.loads(extra)
            if kind in CHAIN_TYPES and "erased" in details:  # {"erased": index, "leaf": public fields}
                erased, details = details["erased"], details["leaf"]
        else:
            ids = (purpose, phase, system, basis, service, decision, policy)
            decoded = names.profiles.get(ids)
            if decoded is None:  # rows of one batch share these: decode each combination once
                decoded = names.profiles[ids] = (
                    name(purpose), name(phase), tuple(orjson.loads(name(system))), name(basis),  # type: ignore[arg-type]
                    name(service), name(decision), name(policy),
                )
            purpose_, phase_, (sys_id, model, version), basis_, service_, decision_, policy_ = decoded
            details = {
                "event_id": event_id, "content_id": content_id, "artist_id": artist_id,
                "purpose": purpose_, "phase": phase_,
                "system": {"id": sys_id, "model": model, "version": version},
                "occurred_at": occurred_at, "invocations": invocations, "window_end": window_end,
                "detail": detail, "basis": basis_, "service": service_, "index": idx,
                "logged_at": format_logged_at(logged_ms), "decision": decision_,
                "policy": policy_, "nonce": binascii.b2a_base64(blob(nonce), newline=False).decode(),
            }
    except (KeyError, TypeError, ValueError) as exc:  # JSON and base64 errors are ValueErrors
        raise StorageError(f"entry {idx} cannot be read from {where} (the database was altered): "
                           f"{type(exc).__name__}: {exc}") from None
    return Entry(idx, kind, logged_ms, details, artist_id, None if tag is None else blob(tag), aseq, aprev, erased)  # type: ignore[arg-type]


@dataclass
class ArtistRows:
    """The artist rows a batch writes: (id, artist id, tag, proof, preferences) of new artists, (artist id,
    proof, preferences, id) of erased ones whose id came back, (preferences, id) of changed preferences,
    and (id, aseq, head) of every head the batch moves."""

    inserts: list[tuple[Any, ...]] = field(default_factory=list)
    restores: list[tuple[Any, ...]] = field(default_factory=list)
    prefs: list[tuple[Any, ...]] = field(default_factory=list)
    heads: list[tuple[int, int, int]] = field(default_factory=list)


def plan_artists(batch: Batch, ids: dict[str, int], returning: Mapping[bytes, int], next_id: int) -> ArtistRows:
    """The rows of the batch's artists, given the row `ids` of those stored with their id (extended here
    with the others'), the rows of erased artists among the rest by tag (`returning`), and the largest row
    id stored. Preferences are written only for the artists the batch has a preference leaf for."""
    changed = {e.artist_id for e in batch.entries if e.type == "preference"}
    out = ArtistRows()
    for a in batch.artists:
        i = ids.get(a.artist_id)
        if i is None and a.tag in returning:  # an erased artist's id came back: same row, same chain
            i = ids[a.artist_id] = returning[a.tag]
            out.restores.append((a.artist_id, a.proof, dump_preferences(a.preferences), i))
        elif i is None:
            next_id += 1
            i = ids[a.artist_id] = next_id
            out.inserts.append((i, a.artist_id, a.tag, a.proof, dump_preferences(a.preferences)))
        elif a.artist_id in changed:
            out.prefs.append((dump_preferences(a.preferences), i))
        out.heads.append((i, a.aseq, a.head))
    return out


def erased_details(erasure_index: int, public: dict[str, Any]) -> str:
    """The `extra` of an erased entry: its public fields, and the erasure leaf that erased it."""
    return orjson.dumps({"erased": erasure_index, "leaf": public}, option=orjson.OPT_SORT_KEYS).decode()


def binding_change(idx: int, extra: str, where: str) -> str:
    """The `change` of a binding entry's stored details."""
    try:
        return str(orjson.loads(extra)["change"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"entry {idx} cannot be read from {where} (the database was altered): "
                           f"{type(exc).__name__}: {exc}") from None


def narrow_tokens(found: Iterable[tuple[int, str]], artist_ids: Sequence[str]) -> tuple[list[tuple[str, int]], list[tuple[int]]]:
    """Takes the erased `artist_ids` out of the artist tokens `found` ((id, subject) of each that covers
    one): a token of those alone is deleted (revoked would still name them), one that also covers other
    artists (a label's) keeps covering those. Returns (subject, id) of the narrowed and (id,) of the deleted."""
    narrowed: dict[int, str] = {}
    deleted: dict[int, None] = {}
    for token_id, subject in found:
        rest = " ".join(a for a in subject.split(" ") if a not in artist_ids)
        if rest:
            narrowed[token_id] = rest
        else:
            deleted[token_id] = None
    return [(s, i) for i, s in narrowed.items()], [(i,) for i in deleted]


def token(row: Sequence[Any]) -> TokenRecord:
    token_id, role, subject, created_ms, revoked_ms, digest, rights, expires_ms = row
    return TokenRecord(token_id, role, subject, created_ms, revoked_ms, blob(digest), frozenset((rights or "").split()),
                       expires_ms)


def dump_preferences(prefs: dict[str, Any] | None) -> str | None:
    return None if prefs is None else orjson.dumps(prefs, option=orjson.OPT_SORT_KEYS).decode()


def preferences(artist_id: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        prefs = orjson.loads(value)
    except orjson.JSONDecodeError:
        prefs = None
    if not isinstance(prefs, dict):
        raise StorageError(f"the stored preferences of artist {artist_id!r} are not a JSON object (the database was altered)")
    return prefs


def blob(value: Any) -> bytes:
    """A binary column's value; a row edited by hand may have turned it into text, which then fails to
    verify instead of crashing the reader."""
    return value.encode() if isinstance(value, str) else bytes(value)


def stat_rows(entries: Iterable[Entry]) -> list[StatRow]:
    tally = Tally()
    for e in entries:
        tally.add_details(e.logged_ms, e.type, e.details)
    return tally.rows()


def usage_day(ms: int) -> str:
    return format_logged_at(ms)[:10]


def first_logged(logged_ms: Callable[[int], int], ms: int, total: int) -> int:
    """The first index logged at or after `ms` (`total` if none): `logged_at` never decreases along the
    log, so a binary search over indexes finds it."""
    lo, hi = 0, total
    while lo < hi:
        mid = (lo + hi) // 2
        if logged_ms(mid) < ms:
            lo = mid + 1
        else:
            hi = mid
    return lo


UsageRows = Callable[[str, str], Iterable[Sequence[Any]]]  # (first day, last day) → usage rows of those days


def period_stats(total: int, size: int | None, since_ms: int | None, until_ms: int | None, *,
                 logged_ms: Callable[[int], int], usage: UsageRows,
                 entries: Callable[[int, int], Iterator[Entry]]) -> list[StatRow]:
    """The public figures of leaves [0, size) logged in [since_ms, until_ms) of a log of `total` leaves, by
    day, type, purpose, phase and decision. Whole days come from the `usage` rows; the parts of the first
    and last day outside the range (a time within a day, leaves beyond `size`) are recounted from their
    entries and taken off, so the cost is that of at most two days' leaves. The caller reads all of it in
    one snapshot."""
    size = total if size is None else min(size, total)
    lo = 0 if since_ms is None else first_logged(logged_ms, since_ms, total)
    hi = size if until_ms is None else min(size, first_logged(logged_ms, until_ms, total))
    if lo >= hi:
        return []
    first_ms, last_ms = logged_ms(lo), logged_ms(hi - 1)
    day_lo, day_hi = first_ms - first_ms % DAY_MS, last_ms - last_ms % DAY_MS
    counts = {tuple(row[:5]): [row[5], row[6]] for row in usage(usage_day(day_lo), usage_day(day_hi))}
    outside = [*entries(first_logged(logged_ms, day_lo, total), lo),
               *entries(hi, first_logged(logged_ms, day_hi + DAY_MS, total))]
    for *key, leaves, uses in stat_rows(outside):
        slot = counts.setdefault(tuple(key), [0, 0])
        slot[0] -= leaves
        slot[1] -= uses
    return sorted((*k, n, u) for k, (n, u) in counts.items() if n)
