"""Routes anyone may call: checkpoint, tiles, leaves, proofs, log info, statistics, policies.

Everything here is answered against the latest *published* checkpoint, never the store's raw size, so a
reader can never see a leaf before a signed checkpoint covers it. Tiles and policy documents are the
exceptions, in the direction that keeps that promise: with a witness policy they go up to the latest
checkpoint the log signed, so that witnesses can replay its leaves (and check the notice rule on the
policies they announce) before they cosign it."""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import re
import time
from typing import Any

import orjson
from aiohttp import web

from .. import export as exporter
from .. import merkle, tiles
from ..errors import NotFound, StorageError, ValidationError
from ..policy import Policy, in_effect, parse_policy
from ..records import parse_logged_at
from ..rederive import iter_leaves
from ..stats import answer as stats_answer
from ..stats import parse_query as stats_query
from ..stats import purposes_of
from ..store.base import Backend
from .errors import Handler
from .params import path_index, query_int
from .state import State, get_state

routes = web.RouteTableDef()
_TAG = re.compile(r"[0-9a-f]{64}")

IMMUTABLE = "public, max-age=31536000, immutable"
EXPORT_SLICE = 2048  # leaves of GET /v1/export built per read
SHORT = "public, max-age=2"
# The reads anyone may make, which a verifier running in a browser on another site must be able to fetch
# (CORS). They need no credentials, so `*` exposes nothing a plain GET would not.
_PUBLIC_EXACT = frozenset({"/checkpoint", "/v1/log", "/v1/stats", "/v1/export", "/v1/map/proof", "/healthz",
                           "/openapi.json", "/v1/policies"})
_PUBLIC_PREFIXES = ("/tile/", "/v1/proof/", "/v1/leaves/", "/v1/policies/")
_CORS_PREFLIGHT = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD",
    "Access-Control-Allow-Headers": "If-None-Match",
    "Access-Control-Max-Age": "86400",
}


def _public_read(request: web.BaseRequest) -> bool:
    path = request.path
    return path in _PUBLIC_EXACT or path.startswith(_PUBLIC_PREFIXES)


@web.middleware
async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The answer to a browser's preflight of a public read (sent when it adds If-None-Match)."""
    if request.method == "OPTIONS" and _public_read(request):
        return web.Response(status=204, headers=_CORS_PREFLIGHT)
    return await handler(request)


async def cors_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """`Access-Control-Allow-Origin: *` on every answer to a public read, errors and streams included
    (an `on_response_prepare` signal: a streamed answer's headers are sent before its handler returns)."""
    if _public_read(request):
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = "ETag, Retry-After, X-Export-End"


def _json(obj: Any, *, cache: str = "no-store") -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type="application/json", headers={"Cache-Control": cache})


def _within(state: State, size: int, what: str) -> None:
    published = state.published_size()
    if size > published:
        raise ValidationError(
            f"{what} {size} is beyond the published checkpoint ({published})",
            [{"field": what, "message": f"at most {published}"}],
        )


@routes.get("/checkpoint")
async def checkpoint(request: web.Request) -> web.Response:
    state = get_state(request)
    # Briefly cacheable: a reader a second or two behind is still served a valid signed checkpoint.
    return web.Response(body=state.published_note(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": SHORT})


@routes.get(r"/tile/{path:.+}")
async def tile(request: web.Request) -> web.Response:
    state = get_state(request)
    path = "tile/" + request.match_info["path"]
    try:
        t = tiles.parse_tile_path(path)
    except ValidationError as exc:
        raise NotFound(f"no such tile: {exc.message}") from None
    # Tiles go up to the latest *signed* checkpoint, not only the cosigned one, so that a witness can
    # replay the leaves of a checkpoint before it cosigns it (witness/replay.py), as Tessera's tiles
    # precede witnessing. A tile never changes once it exists, partial ones included (the first W leaves
    # or hashes of a tile are fixed), so every tile is cached as immutable, here and by clients.
    # Entry bundles (JSON leaves) shrink several times under gzip; hash tiles (random bytes) do not, so
    # only bundles are compressed, once, and kept compressed.
    gzip_it = t.entries and "gzip" in request.headers.get("Accept-Encoding", "")
    key = path + ("|gzip" if gzip_it else "")
    cached = state.tile_cache.get(key)
    if cached is None:
        body = _build_tile(state, t, state.signed_size())
        if gzip_it:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        cached = (body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"')
        if t.width == tiles.TILE_WIDTH:  # a log's growth makes each partial tile wanted only briefly
            state.tile_cache.put(key, cached)
    body, etag = cached
    headers = {"Cache-Control": IMMUTABLE, "ETag": etag}
    if t.entries:
        headers["Vary"] = "Accept-Encoding"
    if gzip_it:
        headers["Content-Encoding"] = "gzip"
    if _matches(request.headers.get("If-None-Match", ""), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/octet-stream", headers=headers)


def _matches(header: str, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (RFC 9110 §13.1.2: weak tags compare as strong ones do
    for a GET, and `*` matches any)."""
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag in tags or "*" in tags


def _build_tile(state: State, t: tiles.Tile, size: int) -> bytes:
    level, first, count = tiles.tile_coords(t)
    if t.entries:
        if first + count > size:
            raise NotFound(f"entry bundle {tiles.tile_path(t)} is beyond the latest checkpoint's size {size}")
        return tiles.encode_bundle([leaf for _, leaf, _ in iter_leaves(state.store, first, first + count)])
    if (first + count) << level > size:
        raise NotFound(f"tile {tiles.tile_path(t)} is beyond the latest checkpoint's size {size}")
    return b"".join(h for _, h in state.store.iter_nodes(level, first, first + count))


@routes.get("/v1/leaves/{index}")
async def leaf(request: web.Request) -> web.Response:
    state = get_state(request)
    index = path_index(request)
    if index >= state.published_size():
        raise NotFound(f"no leaf {index} in the published log")
    ((_, data, _),) = list(iter_leaves(state.store, index, index + 1))
    return web.Response(body=data, content_type="application/json", headers={"Cache-Control": IMMUTABLE})


@routes.get("/v1/proof/inclusion")
async def proof_inclusion(request: web.Request) -> web.Response:
    state = get_state(request)
    index = query_int(request, "index")
    # SPEC §6: without `size`, the published checkpoint's (what a client holding /checkpoint can check).
    size = query_int(request, "size", minimum=1, default=state.published_size())
    _within(state, size, "size")
    if index >= size:
        raise ValidationError(f"index {index} is not below size {size}", [{"field": "index", "message": "must be < size"}])
    proof = merkle.inclusion_proof(index, size, state.store)
    return _json({"index": index, "size": size, "proof": [base64.b64encode(h).decode() for h in proof]},
                 cache=IMMUTABLE if "size" in request.query else SHORT)


@routes.get("/v1/proof/consistency")
async def proof_consistency(request: web.Request) -> web.Response:
    state = get_state(request)
    old, new = query_int(request, "old", minimum=1), query_int(request, "new", minimum=1)
    _within(state, new, "new")
    if old > new:
        raise ValidationError(f"old {old} is larger than new {new}", [{"field": "old", "message": "must be <= new"}])
    proof = merkle.consistency_proof(old, new, state.store)
    return _json({"old": old, "new": new, "proof": [base64.b64encode(h).decode() for h in proof]}, cache=IMMUTABLE)


@routes.get("/v1/map/proof")
async def map_proof(request: web.Request) -> web.Response:
    """SPEC §2.3: the map proof of a tag at the map leaf ending checkpoint `size` (the published one by
    default, or the latest). Tags are public, so this says nothing about who an artist is."""
    state = get_state(request)
    raw = request.query.get("tag", "")
    if not _TAG.fullmatch(raw):
        raise ValidationError("tag must be 64 lowercase hex digits", [{"field": "tag", "message": raw[:80] or "required"}])
    published = state.published_size()
    if "size" in request.query:
        size = query_int(request, "size", minimum=1)
    else:
        state.published_note()  # 503, as /checkpoint, until a witness policy's quorum has cosigned one
        size = published
    latest = state.latest_size()
    if size not in (published, latest):
        raise NotFound(f"map proofs are served for the published checkpoint ({published}) and the latest ({latest}), "
                       f"not size {size}")
    amap = state.map_at(size)
    return _json({"size": size, "map_index": size - 1, "root": amap.root().hex(),
                  "proof": amap.prove(bytes.fromhex(raw)).to_json()}, cache=SHORT)


def policy_in_effect(state: State, size: int, now_ms: int) -> Policy | None:
    """The policy in effect at `now_ms` (SPEC §4: the latest `effective_at` not after it, ties to the
    later leaf) among the policy leaves of the published log: one announced for later, or not yet under
    the published checkpoint, is not the one in force."""
    schedule = []
    for rec in state.store.policies():
        if rec.index >= size:
            break
        entry = state.store.entry(rec.index)
        if entry is None or entry.type != "policy":
            raise StorageError(f"policy {rec.policy_id!r} names index {rec.index}, which is not its policy leaf")
        schedule.append((parse_logged_at(entry.details["effective_at"]), rec.index, parse_policy(rec.document, rec.policy_id)))
    return in_effect(schedule, now_ms)


@routes.get("/v1/log")
async def log_info(request: web.Request) -> web.Response:
    state = get_state(request)
    size = state.published_size()
    current = policy_in_effect(state, size, int(time.time() * 1000))
    return _json({
        "origin": state.log.origin,
        "verifier_keys": state.verifier_keys(),
        "vrf_key": state.log.vrf_key.hex(),
        "size": size,
        "policy": current.id if current else None,
        "purposes": [{"code": p.code, **p.as_json()} for p in current.purposes.values()] if current else [],
        "witness_policy": state.witness_quorum.as_json() if state.witness_quorum else None,
    })


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.Response:
    """The figures of the published log by `logged_at` (stats.py), as anyone can recount from its leaves."""
    state = get_state(request)
    query = stats_query(request.query, purposes_of(state.store.policies()))
    size = state.published_size()
    # Off the loop (reads.py): a period's edges are recounted from their entries, up to two days' worth.
    rows = await state.reads.run(lambda store: store.stats(size, query.since_ms, query.until_ms))
    return _json(stats_answer(rows, size, query), cache=SHORT)


@routes.get("/v1/export")
async def export(request: web.Request) -> web.StreamResponse:
    """The public leaves [start, end) of the published log as JSON Lines or CSV (export.py), streamed. At
    most `--max-export` leaves per request: a longer range is cut there, and the client asks again from
    where the answer ended (`tlog export --url` does)."""
    state = get_state(request)
    unknown = sorted(set(request.query) - {"start", "end", "format"})
    if unknown:
        raise ValidationError(f"unknown query parameter {unknown[0]!r}; use start, end, format",
                              [{"field": unknown[0], "message": "unknown"}])
    fmt = request.query.get("format", "jsonl")
    if fmt not in exporter.FORMATS:
        raise ValidationError("format must be jsonl or csv", [{"field": "format", "message": fmt[:40]}])
    published = state.published_size()
    start = query_int(request, "start", default=0)
    end = query_int(request, "end", minimum=1, default=published)
    _within(state, end, "end")
    if start > end:
        raise ValidationError(f"start {start} is beyond end {end}", [{"field": "start", "message": f"at most {end}"}])
    end = min(end, start + state.limits.max_export)
    response = web.StreamResponse(headers={"Content-Type": f"{exporter.FORMATS[fmt]}; charset=utf-8",
                                           "Cache-Control": SHORT, "X-Export-End": str(end)})
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    # Built a slice at a time on a read thread (reads.py), so the loop answers other requests meanwhile.
    try:
        for first in range(start, max(end, start + 1), EXPORT_SLICE):
            last = min(first + EXPORT_SLICE, end)
            chunk = await state.reads.run(functools.partial(_export_chunk, first=first, last=last, fmt=fmt,
                                                            header=first == start))
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the reader went away: nothing left to answer
    return response


def _export_chunk(store: Backend, *, first: int, last: int, fmt: str, header: bool) -> bytes:
    return b"".join(exporter.rows(store, first, last, fmt, header=header))


@routes.get("/v1/policies")
async def policies(request: web.Request) -> web.Response:
    state = get_state(request)
    size = state.published_size()  # a policy leaf not yet under the published checkpoint is not shown
    return _json([{"id": p.policy_id, "index": p.index, "url": f"/v1/policies/{p.policy_id}"}
                  for p in state.store.policies() if p.index < size])


@routes.get("/v1/policies/{policy_id}")
async def policy_doc(request: web.Request) -> web.Response:
    state = get_state(request)
    rec = state.store.policy(request.match_info["policy_id"])
    # As tiles: up to the latest signed checkpoint, for witnesses that check the notice rule before they
    # cosign it. The bytes are the stored document, whose SHA-256 the policy leaf holds.
    if rec is None or rec.index >= state.signed_size():
        raise NotFound("no such policy")
    return web.Response(body=rec.document, content_type="application/json", headers={"Cache-Control": IMMUTABLE})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    state = get_state(request)
    return _json({"ok": True, "size": state.published_size()})
