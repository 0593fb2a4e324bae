"""`GET /v1/artists/{artist_id}/summary` (SPEC §6): an artist's counts and latest entries, for the artist
page's first view, and `GET /v1/whoami`, which tells a token's holder whom it speaks for (the artist page
is given a token only, by a sign-in link).

The summary covers the artist's entries under the published checkpoint, the ones its audit bundle
proves: so the page's first figures and its verified verdict are about the same entries. It is built once
per (artist, published size) and kept in a small cache, since an artist reloading its page asks again."""

from __future__ import annotations

import weakref
from collections import OrderedDict, defaultdict
from datetime import date, timedelta
from typing import Any

import orjson
from aiohttp import web

from ..records import format_logged_at
from ..store.base import MAX_ENTRIES, Entry, LogStore, UseFilter
from .artist import Notes, entry_json, erasure_notes, find_artist
from .auth import own_artist, require
from .state import State, get_state

routes = web.RouteTableDef()

LATEST = 20  # entries shown before the full list is asked for
MAX_TRACKS = 1000  # tracks listed, most used first
CACHE_ENTRIES = 256
_caches: dict[tuple[int, str], tuple["weakref.ref[State]", Any]] = {}


def per_state(state: State, name: str, make: Any) -> Any:
    """The object called `name` kept for this app's State (which is unhashable): made by `make()` on first
    use, and dropped with the State, so a later State that reuses its id() starts afresh."""
    found = _caches.get((id(state), name))
    if found is None or found[0]() is not state:
        for key in [k for k, (ref, _) in _caches.items() if ref() is None]:
            del _caches[key]
        found = _caches[(id(state), name)] = (weakref.ref(state), make())
    return found[1]


def _week(logged_at: str) -> str:
    d = date.fromisoformat(logged_at[:10])
    return (d - timedelta(days=d.weekday())).isoformat()


def summarize(artist_id: str, entries: list[Entry], size: int, preferences: dict[str, Any] | None,
              notes: Notes | None = None) -> dict[str, Any]:
    """The summary of an artist's entries (log order, all under the checkpoint of `size`). Pure. Erased
    entries are counted by what their public leaves say (purpose, decision, invocations), their tracks
    are not known any more, and `notes` (erasure_notes) says when and why they were erased."""
    # Leaves and invocations by (purpose, decision), by (week, purpose, decision) and by (month, …).
    by_purpose: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
    by_week: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
    by_month: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
    tracks: dict[str, dict[str, Any]] = {}
    changes = 0
    for e in entries:
        d = e.details
        if e.type == "preference":
            changes += 1
        if e.type not in ("use", "refusal"):
            continue
        logged_at = format_logged_at(e.logged_ms)
        purpose, decision, runs = d["purpose"], d["decision"], d.get("invocations", 1)
        for bucket, key in ((by_purpose, (purpose, decision)), (by_week, (_week(logged_at), purpose, decision)),
                            (by_month, (logged_at[:7], purpose, decision))):
            bucket[key][0] += 1
            bucket[key][1] += runs
        if e.erased is not None:
            continue
        t = tracks.setdefault(d["content_id"], {"content_id": d["content_id"], "leaves": 0, "invocations": 0,
                                                "refused": 0, "last": logged_at})
        t["leaves"] += 1
        t["invocations"] += runs
        t["refused"] += decision == "refused"
        t["last"] = logged_at
    uses = [e for e in entries if e.type in ("use", "refusal")]
    last = entries[-1] if entries else None
    return {
        "artist_id": artist_id,
        "size": size,
        "entries": len(entries),
        "head": None if last is None else {"aseq": last.aseq, "index": last.index},
        "uses": {"leaves": sum(v[0] for v in by_purpose.values()), "invocations": sum(v[1] for v in by_purpose.values())},
        "by_purpose": [{"purpose": p, "decision": d, "leaves": n, "invocations": i}
                       for (p, d), (n, i) in sorted(by_purpose.items())],
        "by_week": [{"week": w, "purpose": p, "decision": d, "leaves": n, "invocations": i}
                    for (w, p, d), (n, i) in sorted(by_week.items())],
        "by_month": [{"month": m, "purpose": p, "decision": d, "leaves": n, "invocations": i}
                     for (m, p, d), (n, i) in sorted(by_month.items())],
        "tracks": sorted(tracks.values(), key=lambda t: (-t["leaves"], t["content_id"]))[:MAX_TRACKS],
        "track_count": len(tracks),
        "latest": [entry_json(e, notes or {}) for e in reversed(uses[-LATEST:])],
        "erased": sum(e.erased is not None for e in entries),
        "preferences": preferences or {},
        "preference_changes": changes,
    }


@routes.get("/v1/artists/{artist_id}/summary")
async def summary(request: web.Request) -> web.Response:
    state = get_state(request)
    artist_id = own_artist(request)
    size = state.published_size()
    cache = per_state(state, "summaries", OrderedDict)
    body = cache.get((artist_id, size))
    if body is None:
        # Every entry of the artist is read: off the loop (reads.py), for an artist with a long history.
        body = await state.reads.run(lambda store: _summary(state, store, artist_id, size))
        cache[(artist_id, size)] = body
        while len(cache) > CACHE_ENTRIES:
            cache.popitem(last=False)
    else:
        cache.move_to_end((artist_id, size))
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


def _summary(state: State, store: LogStore, artist_id: str, size: int) -> bytes:
    artist = find_artist(state, store, artist_id)
    entries = []
    if artist is not None:
        entries = [e for e in store.chain_entries(artist, UseFilter(), MAX_ENTRIES) if e.index < size]
    notes = erasure_notes(store, entries)
    return orjson.dumps(summarize(artist_id, entries, size, artist.preferences if artist else None, notes))


@routes.get("/v1/whoami")
async def whoami(request: web.Request) -> web.Response:
    """Whom the bearer token speaks for: {"role", "artist_id", "artist_ids", "expires_at"}: an artist
    token's ids (a label's token covers several; `artist_id` is the first), else null and []. Any valid
    token; 401 without one."""
    who = require(request, "service", "artist", "auditor")
    ids = list(who.artist_ids)
    expires = None if who.expires_ms is None else format_logged_at(who.expires_ms)
    return web.Response(body=orjson.dumps({"role": who.role, "artist_id": ids[0] if ids else None, "artist_ids": ids,
                                           "expires_at": expires}),
                        content_type="application/json", headers={"Cache-Control": "no-store"})
