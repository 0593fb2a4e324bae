"""Routes for artists (their own entries only) and auditors (every entry).

An artist token asking about another artist gets 403 whether or not that artist exists, so nothing
about other artists leaks; entries are listed in log order with an opaque cursor. An erased entry (SPEC
§2.2) is shown without details, with `"erased": {"at", "reason"}`: when and why its erasure leaf erased it."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .. import merkle
from ..errors import NotFound, StorageError, Unavailable, ValidationError
from ..policy import parse_policy
from ..records import DECISIONS, PHASES, artist_tag, format_logged_at, is_platform_id, parse_time_filter, unknown_code
from ..rederive import entry_leaves, iter_leaves
from ..store.base import ArtistState, Entry, LogStore, UseFilter
from .auth import own_artist, require
from .params import MAX_INDEX, parse_decimal, path_index, query_int
from .state import State, get_state

routes = web.RouteTableDef()

CSV_COLUMNS = ("index", "type", "logged_at", "event_id", "content_id", "purpose", "phase", "decision", "basis",
               "service", "system_id", "system_model", "system_version", "occurred_at", "window_end",
               "invocations", "detail", "policy")


def find_artist(state: State, store: LogStore, artist_id: str) -> ArtistState | None:
    """The artist's state, read through `store`; for an id that was erased (and has not come back), the
    state of its tag's chain, found by the VRF (a server without the VRF key knows only ids it holds):
    its entries are still there, erased, and its audit must show them so."""
    artist = store.artist_state(artist_id)
    if artist is not None or state.log.vrf is None:
        return artist
    tag, proof = artist_tag(state.log.vrf, artist_id)
    erased = store.erased_artist(tag)
    return None if erased is None else dataclasses.replace(erased, artist_id=artist_id, proof=proof)


def _time_ms(request: web.Request, name: str) -> int | None:
    """`since` / `until`: an RFC 3339 time, or a date (SPEC §6; records.parse_time_filter)."""
    raw = request.query.get(name)
    return None if raw is None else parse_time_filter(raw, field=name)


def _cursor(raw: str | None) -> int:
    if raw is None:
        return -1
    try:
        text = base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)).decode()
        kind, _, value = text.partition(":")
        after = parse_decimal(value)
        if kind != "after" or after is None or after > MAX_INDEX:
            raise ValueError
        return after
    except (ValueError, UnicodeError):
        raise ValidationError("bad cursor: pass back the next_cursor of a previous page",
                              [{"field": "cursor", "message": "not a cursor this server issued"}]) from None


def _make_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"after:{index}".encode()).decode().rstrip("=")


def _limit(request: web.Request, default: int, maximum: int) -> int:
    return query_int(request, "limit", minimum=1, maximum=maximum, default=default)


def _filter(request: web.Request, purposes: Collection[str]) -> UseFilter:
    """The listing's filters. A code that can match nothing (a purpose no policy of the log names, a
    phase or decision that does not exist) is a typo, answered 400 naming the valid codes, never an
    empty list that reads as "no such use"."""
    q = request.query
    known = {"purpose", "phase", "content_id", "decision", "since", "until", "cursor", "limit", "format"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise ValidationError(f"unknown query parameter {unknown[0]!r}", [{"field": unknown[0], "message": "unknown"}])
    content_id = q.get("content_id")
    for name, what, codes in (("purpose", "a purpose of this log's policies", purposes), ("phase", "a phase", PHASES),
                              ("decision", "a decision", DECISIONS)):
        value = q.get(name)
        if value is not None and value not in codes:
            raise ValidationError(f"{name} {value[:40]!r} is {unknown_code(what, codes)}",
                                  [{"field": name, "message": f"not {what}"}])
    if content_id is not None and not is_platform_id(content_id):
        raise ValidationError("content_id must be a platform id", [{"field": "content_id", "message": content_id[:40]}])
    return UseFilter(purpose=q.get("purpose"), phase=q.get("phase"), content_id=content_id, decision=q.get("decision"),
                     since_ms=_time_ms(request, "since"), until_ms=_time_ms(request, "until"), after=_cursor(q.get("cursor")))


Notes = dict[int, dict[str, str]]  # erasure leaf index → {"at", "reason"}


def known_purposes(state: State) -> set[str]:
    """Every purpose code of every policy the log has published (an artist may ask about a purpose of an
    earlier policy, or of one announced but not yet in effect)."""
    return {code for p in state.store.policies() for code in parse_policy(p.document, p.policy_id).purposes}


def erasure_notes(store: LogStore, entries: list[Entry]) -> Notes:
    """What to say of the erased entries among `entries`: when and why, by their erasure leaf."""
    tags = {e.tag for e in entries if e.erased is not None and e.tag is not None}
    return {x.index: {"at": format_logged_at(x.logged_ms), "reason": x.reason}
            for tag in tags for x in store.erasures(tag)}


def _erased(e: Entry, notes: Notes) -> dict[str, str] | None:
    return None if e.erased is None else _erasure_note(e, e.erased, notes)


def _erasure_note(e: Entry, erased_by: int, notes: Notes) -> dict[str, str]:
    note = notes.get(erased_by)
    if note is None:
        raise StorageError(f"entry {e.index} is marked erased by index {erased_by}, which is no erasure leaf of its "
                           "tag: the database was altered")
    return note


def entry_json(e: Entry, notes: Notes) -> dict[str, Any]:
    return {"index": e.index, "type": e.type, "logged_at": format_logged_at(e.logged_ms), "aseq": e.aseq,
            "details": None if e.erased is not None else e.details, "erased": _erased(e, notes)}


def _csv_row(e: Entry, notes: Notes) -> list[Any]:
    """An erased entry keeps what its public leaf says (purpose, phase, decision, invocations, policy); its
    detail column says when and why it was erased."""
    d = e.details
    system = d.get("system") or {}
    flat = {**d, "index": e.index, "type": e.type, "logged_at": format_logged_at(e.logged_ms),
            "system_id": system.get("id"), "system_model": system.get("model"), "system_version": system.get("version")}
    if e.erased is not None:
        note = _erasure_note(e, e.erased, notes)
        flat = {k: flat.get(k) for k in ("index", "type", "logged_at", "purpose", "phase", "decision", "invocations", "policy")}
        flat["detail"] = f"erased on {note['at']}, reason {note['reason']}"
    return ["" if flat.get(c) is None else flat.get(c) for c in CSV_COLUMNS]


@routes.get("/v1/artists/{artist_id}/uses")
async def uses(request: web.Request) -> web.StreamResponse:
    state = get_state(request)
    artist_id = own_artist(request)
    flt = _filter(request, known_purposes(state))
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "jsonl", "csv"):
        raise ValidationError("format must be json, jsonl or csv", [{"field": "format", "message": fmt[:40]}])
    limit = _limit(request, state.limits.page_size, state.limits.max_page_size)

    def read(store: LogStore) -> tuple[list[Entry], Notes]:
        # Off the loop: a filter that matches nothing makes SQLite walk the artist's whole history.
        artist = find_artist(state, store, artist_id)
        found = [] if artist is None else store.chain_entries(artist, flt, limit + 1)
        return found, erasure_notes(store, found)

    page, notes = await state.reads.run(read)
    more = len(page) > limit
    page = page[:limit]
    next_cursor = _make_cursor(page[-1].index) if more else None
    headers = {"Cache-Control": "no-store"}
    if next_cursor:
        headers["X-Next-Cursor"] = next_cursor
    if fmt == "jsonl":
        body = b"".join(orjson.dumps(entry_json(e, notes)) + b"\n" for e in page)
        return web.Response(body=body, content_type="application/x-ndjson", headers=headers)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        w.writerows(_csv_row(e, notes) for e in page)
        return web.Response(text=buf.getvalue(), content_type="text/csv", headers=headers)
    return web.Response(
        body=orjson.dumps({"artist_id": artist_id, "entries": [entry_json(e, notes) for e in page], "next_cursor": next_cursor}),
        content_type="application/json", headers=headers,
    )


@routes.get("/v1/artists/{artist_id}/audit")
async def audit(request: web.Request) -> web.Response:
    """SPEC §6: one page of the artist's audit bundle (version 2), everything needed to check offline that
    each entry is in the log under a signed checkpoint and matches its leaf, that each decision follows
    from the policy and the artist's preferences, and (on the first page, with the map proof) that no
    entry about the artist was left out."""
    state = get_state(request)
    artist_id = own_artist(request)
    query = _audit_query(request, state)
    # A full page's thousand proofs and leaves take up to a tenth of a second with a cold cache, which
    # other requests should not wait for: built on a read thread (reads.py), encoded there too.
    vrf_key = state.log.vrf_key  # read here: the loop's connection is not the thread's to use
    body = await state.reads.run(
        lambda store: orjson.dumps(_audit_bundle(state, store, artist_id, query, vrf_key)))
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


AUDIT_PAGE = 1000  # entries per audit page unless the client asks for fewer (at most --max-page-size)
_AUDIT_PARAMS = frozenset({"size", "since", "from_aseq", "limit"})


@dataclass(frozen=True)
class _AuditQuery:
    size: int
    checkpoint: bytes  # the signed checkpoint of `size`
    published: bool  # `size` is the current published checkpoint: the page may carry the map
    since: int | None
    from_aseq: int | None
    limit: int


def _audit_query(request: web.Request, state: State) -> _AuditQuery:
    unknown = sorted(set(request.query) - _AUDIT_PARAMS)
    if unknown:
        raise ValidationError(f"unknown query parameter {unknown[0]!r}", [{"field": unknown[0], "message": "unknown"}])
    present = {name: query_int(request, name, minimum=1) for name in _AUDIT_PARAMS - {"limit"} if name in request.query}
    note = state.published_note()
    published = state.parse_checkpoint(note).size
    size = present.get("size", published)
    if size != published:
        note = _older_checkpoint(state, size, published)
    since = present.get("since")
    if since is not None and since > size:
        raise ValidationError(f"since {since} is beyond the checkpoint ({size}): pass a size you verified before",
                              [{"field": "since", "message": f"at most {size}"}])
    limit = _limit(request, min(AUDIT_PAGE, state.limits.max_page_size), state.limits.max_page_size)
    return _AuditQuery(size, note, size == published, since, present.get("from_aseq"), limit)


def _older_checkpoint(state: State, size: int, published: int) -> bytes:
    """The signed checkpoint of an earlier published size (a walk keeps the size of its first page)."""
    note = state.store.checkpoint_at(size) if size < published else None
    if note is None:
        raise ValidationError(f"size {size} is not a published checkpoint of this log (the latest is {published})",
                              [{"field": "size", "message": "not a published checkpoint size"}])
    return note


def _audit_bundle(state: State, store: LogStore, artist_id: str, q: _AuditQuery, vrf_key: bytes) -> dict[str, Any]:
    """The page, read through `store` (a read thread's own connection, never `state.store`, the loop's)."""
    artist = find_artist(state, store, artist_id)
    tag, vrf_proof = (artist.tag, artist.proof) if artist is not None else _tag_of_stranger(state, artist_id)
    entries, next_aseq = _audit_entries(store, artist, q)
    in_force = _preference_before(store, artist, entries[0]) if artist is not None and entries else None
    with_map = q.published and q.from_aseq is None
    policies = [p for p in store.policies() if p.index < q.size]
    fixed = [0, *(p.index for p in policies), *([q.size - 1] if with_map else [])]
    erasures = [x for x in store.erasures(tag) if x.index < q.size]
    fixed += [x.index for x in erasures]
    proven = _proven(store, [*entries, *([in_force] if in_force else [])], fixed, q.size)
    notes = erasure_notes(store, entries)
    return {
        "version": 2, "origin": state.log.origin, "artist_id": artist_id, "tag": tag.hex(),
        "vrf": {"key": vrf_key.hex(), "proof": vrf_proof.hex()},
        "checkpoint": q.checkpoint.decode(),
        "log": proven[0],
        "since": q.since,
        "consistency": None if q.since is None else _b64s(merkle.consistency_proof(q.since, q.size, store)),
        "entries": [{"index": e.index, **proven[e.index], "details": None if e.erased is not None else e.details,
                     "erased": _erased(e, notes)} for e in entries],
        "preferences_in_force": None if in_force is None else {
            "index": in_force.index, **proven[in_force.index],
            "details": None if in_force.erased is not None else in_force.details},
        "erasures": [{"index": x.index, **proven[x.index]} for x in erasures],
        "map": {"index": q.size - 1, **proven[q.size - 1], "map_proof": state.map_at(q.size, store).prove(tag).to_json()}
               if with_map else None,
        "policies": [{"id": p.policy_id, "index": p.index, **proven[p.index],
                      "document": base64.b64encode(p.document).decode()} for p in policies],
        "next_aseq": next_aseq,
    }


def _proven(store: LogStore, entries: list[Entry], fixed: list[int], size: int) -> dict[int, dict[str, Any]]:
    """{index: {leaf, proof}} for the entries and the leaves at `fixed` indexes, proved in the tree of
    `size`."""
    leaves = entry_leaves(store, entries) + [leaf for i in fixed for _, leaf, _ in iter_leaves(store, i, i + 1)]
    return {i: {"leaf": base64.b64encode(leaf).decode(), "proof": _b64s(merkle.inclusion_proof(i, size, store))}
            for i, leaf in zip([e.index for e in entries] + fixed, leaves)}


def _tag_of_stranger(state: State, artist_id: str) -> tuple[bytes, bytes]:
    """The tag and VRF proof of an artist the log has never seen, without storing anything: so that its
    bundle can prove, by the map, that nothing about it is logged."""
    if state.log.vrf is None:
        raise Unavailable("this server holds no VRF key, so it cannot name the tag of an artist it has never logged")
    return artist_tag(state.log.vrf, artist_id)


def _audit_entries(store: LogStore, artist: ArtistState | None, q: _AuditQuery) -> tuple[list[Entry], int | None]:
    """The page's entries (log order, under the checkpoint) and the number of the next page's first."""
    if artist is None:
        return [], None
    after = -1 if q.since is None else q.since - 1
    if q.from_aseq is not None:
        start = _aseq_index(store, artist, q.from_aseq)
        if start is None:
            return [], None
        after = max(after, start - 1)
    found = [e for e in store.chain_entries(artist, UseFilter(after=after), q.limit + 1) if e.index < q.size]
    return found[: q.limit], found[q.limit].aseq if len(found) > q.limit else None


def _aseq_index(store: LogStore, artist: ArtistState, aseq: int) -> int | None:
    """The index of the artist's entry number `aseq`, if it has one. A binary search over a cursor: the
    number of the first entry after an index grows with the index (some 20 indexed reads at 1M leaves)."""
    if aseq > artist.aseq:
        return None
    lo, hi = -1, artist.head  # the entry is after lo, at or before hi
    while lo < hi:
        mid = (lo + hi) // 2
        found = store.chain_entries(artist, UseFilter(after=mid), 1)
        number = found[0].aseq if found else None  # every entry of a chain has its number
        if number == aseq:
            return found[0].index
        if number is not None and number < aseq:
            lo = found[0].index
        else:
            hi = mid
    return None


def _preference_before(store: LogStore, artist: ArtistState, first: Entry) -> Entry | None:
    """The artist's latest preference entry before `first`, back along its chain. An artist that never
    set preferences has none stored, and its chain need not be walked."""
    if artist.preferences is None:
        return None
    index = first.aprev
    while index is not None:
        e = store.entry(index)
        if e is None:
            raise StorageError(f"entry {index} of {artist.artist_id}'s chain is missing: the database was altered")
        if e.type == "preference":
            return e
        index = e.aprev
    return None


def _b64s(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


@routes.get("/v1/entries/{index}")
async def entry(request: web.Request) -> web.Response:
    state = get_state(request)
    require(request, "auditor")
    index = path_index(request)
    e = state.store.entry(index)
    if e is None:
        raise NotFound(f"no entry {index}")
    ((_, leaf, h),) = list(iter_leaves(state.store, index, index + 1))
    return web.Response(
        body=orjson.dumps({**entry_json(e, erasure_notes(state.store, [e])), "leaf": orjson.Fragment(leaf), "leaf_hash": h.hex()}),
        content_type="application/json",
    )
