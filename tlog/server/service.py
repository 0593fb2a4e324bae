"""Routes for internal services: log uses, fetch receipts, read and restrict preferences.

`POST /v1/uses` answers only after its records are committed and a checkpoint covering them is stored.
A single-record request gets its tlog-proof receipt inline: the sequencer signs a checkpoint at the end
of every batch, so the proof exists the moment the answer is sent and costs one O(log n) read. A
multi-record request gets `receipt_url`s instead: a thousand proofs per request would cost the batch
path more than the append itself, and a service that wants them fetches them when it needs them."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from .. import merkle
from ..canonical import join_path, loads_strict
from ..checkpoint import Receipt
from ..errors import Forbidden, NotFound, TooEarly, TooLarge, Unavailable, ValidationError
from ..rederive import iter_leaves
from ..builder import MAX_CONTENT_ARTISTS
from ..records import PLATFORM_ID_RULE, format_logged_at, is_platform_id
from ..tokens import MAX_ISSUED_TTL_S, Principal, artist_subject, new_token
from .auth import require, require_artist, require_right
from .errors import UnsupportedMediaType
from .params import check_artist_id, path_index, platform_id
from .state import State, get_state

routes = web.RouteTableDef()
log = logging.getLogger("tlog.server")


JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"  # RFC 7396


def _json_content(request: web.Request, media: tuple[str, ...] = (JSON,)) -> None:
    if request.content_type not in media:
        raise UnsupportedMediaType(f"send the body as {' or '.join(media)}")


async def read_json(request: web.Request, max_bytes: int | None = None, *, media: tuple[str, ...] = (JSON,)) -> Any:
    """The body as strict JSON; 415 for a content type not in `media`, 413 beyond `max_bytes` (the app's
    own limit, --max-body, bounds what is read), 400 for anything malformed."""
    _json_content(request, media)
    body = await request.read()
    if max_bytes is not None and len(body) > max_bytes:
        raise TooLarge(f"the body may be at most {max_bytes:,} bytes")
    return loads_strict(body)


@routes.post("/v1/uses")
async def post_uses(request: web.Request) -> web.Response:
    state = get_state(request)
    who = require(request, "service")
    _json_content(request)
    appended = await state.appender.append_uses(who.service, await request.read(), max_records=state.limits.max_records)
    # Without a witness policy the checkpoint the appender answered with covers every leaf of the results
    # (appender.py), so it serves as the receipt's checkpoint without a read. With one,
    # a receipt rests only on a checkpoint the public can see (SPEC §6): a leaf that the published one
    # does not cover yet gets its receipt_url alone (425 there until the witnesses have cosigned).
    signed = None if appended.batch else _published(state) if state.witnessed else appended.checkpoint
    out = []
    for r in appended.results:
        item: dict[str, Any] = {
            "event_id": r.event_id, "index": r.index, "decision": r.decision, "leaf_hash": r.leaf_hash.hex(),
            "duplicate": r.duplicate, "receipt_url": f"/v1/receipts/{r.index}",
        }
        if signed and r.index < state.parse_checkpoint(signed).size:
            item["receipt"] = receipt_for(state, r.index, signed, leaf=r.leaf).format().decode()
        out.append(item)
    return web.Response(body=orjson.dumps({"results": out}), content_type="application/json")


def receipt_for(state: State, index: int, signed: bytes | None = None, *, leaf: bytes | None = None) -> Receipt:
    """A c2sp.org/tlog-proof for leaf `index` against `signed` (default: the published checkpoint, which
    with a witness policy is the latest its quorum cosigned). A leaf the log signed but the witnesses
    have not yet cosigned is TooEarly (425): a receipt on a checkpoint the public cannot see would show
    the holder a view of the log that may never be published. `leaf` saves re-deriving a leaf the caller
    already holds."""
    signed = signed or _published(state)
    if index >= (state.parse_checkpoint(signed).size if signed else 0):
        if index < state.signed_size():
            raise TooEarly(f"leaf {index} is logged, but no checkpoint covering it is published yet (the witnesses "
                           "have not cosigned one); ask again in a moment")
        raise NotFound(f"no leaf {index} under the published checkpoint")
    cp = state.parse_checkpoint(signed)
    if leaf is None:
        ((_, leaf, _),) = list(iter_leaves(state.store, index, index + 1))
    return Receipt(extra=leaf, index=index, proof=merkle.inclusion_proof(index, cp.size, state.store), checkpoint=signed)


def _published(state: State) -> bytes:
    """The published checkpoint, or b"" while a witness policy's quorum has cosigned none."""
    try:
        return state.published_note()
    except Unavailable:
        return b""


def may_read_entry(who: Principal, details: dict[str, Any]) -> bool:
    """The logging service, the artist it concerns, or an auditor."""
    if who.role == "auditor":
        return True
    if who.role == "service":
        return details.get("service") == who.subject
    artist_id = details.get("artist_id")
    return isinstance(artist_id, str) and who.is_artist(artist_id)


@routes.get("/v1/receipts/{index}")
async def get_receipt(request: web.Request) -> web.Response:
    state = get_state(request)
    who = require(request, "service", "artist", "auditor")
    index = path_index(request)
    entry = state.store.entry(index)
    if entry is None:
        raise NotFound(f"no leaf {index}")
    if not may_read_entry(who, entry.details):
        raise Forbidden("this receipt belongs to another service or artist")
    return web.Response(body=receipt_for(state, index).format(), content_type="text/plain", charset="utf-8")


@routes.get("/v1/artists/{artist_id}/preferences")
async def get_preferences(request: web.Request) -> web.Response:
    state = get_state(request)
    artist_id = request.match_info["artist_id"]
    require_artist(request, artist_id, "service", "artist", "auditor")
    check_artist_id(artist_id)
    a = state.store.artist_state(artist_id)
    prefs = a.preferences if a and a.preferences is not None else {}
    return web.Response(body=orjson.dumps({"artist_id": artist_id, "preferences": prefs}), content_type="application/json")


@routes.put("/v1/artists/{artist_id}/preferences")
async def put_preferences(request: web.Request) -> web.Response:
    """Replaces the whole document. The answer's `dropped` lists the settings the replacement removed or
    changed (an allow, strict, a per-content setting…), so that nobody drops a choice without seeing it."""
    return await _change_preferences(request, patch=False)


@routes.patch("/v1/artists/{artist_id}/preferences")
async def patch_preferences(request: web.Request) -> web.Response:
    """Changes part of the document: an RFC 7396 merge patch (`null` removes a setting), applied to the
    preferences in force when the sequencer takes it. Same rights as PUT."""
    return await _change_preferences(request, patch=True)


async def _change_preferences(request: web.Request, *, patch: bool) -> web.Response:
    state = get_state(request)
    artist_id = request.match_info["artist_id"]
    who = require_artist(request, artist_id, "service", "artist")
    check_artist_id(artist_id)
    doc = await read_json(request, state.limits.max_preferences, media=(MERGE_PATCH, JSON) if patch else (JSON,))
    by, service = ("artist", None) if who.role == "artist" else ("service", who.service)
    change = await state.appender.set_preferences(artist_id, doc, by=by, service=service, patch=patch)
    return web.Response(
        body=orjson.dumps({"artist_id": artist_id, "index": change.index, "leaf_hash": change.leaf_hash.hex(),
                           "by": by, "preferences": change.preferences, "dropped": change.dropped}),
        content_type="application/json",
    )


@routes.put("/v1/content/{content_id}/artists")
async def put_content_artists(request: web.Request) -> web.Response:
    """The catalogue binds a content id to its rightsholders (SPEC §2.1): the list replaces the content's
    artists, and each artist bound or released gets a `binding` leaf in its chain."""
    state = get_state(request)
    who = require_right(request, "catalog")
    content_id = platform_id(request.match_info["content_id"], "content_id")
    artists = _artists_body(await read_json(request))
    changes = await state.appender.set_content_artists(content_id, artists, service=who.service)
    body = {"content_id": content_id, "artists": sorted(set(artists)),
            "changes": [{"artist_id": c.artist_id, "change": c.change, "index": c.index, "leaf_hash": c.leaf_hash.hex()}
                        for c in changes]}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _artists_body(body: Any) -> list[str]:
    """`{"artists": [ids]}`: 1–MAX_CONTENT_ARTISTS distinct platform ids."""
    if type(body) is not dict:
        raise ValidationError('the body must be {"artists": [artist ids]}', [{"field": "", "message": "must be a JSON object"}])
    problems = [{"field": join_path("", k), "message": "unknown field"} for k in body if k != "artists"]
    if "artists" not in body:
        problems.append({"field": "artists", "message": "required"})
    if problems:
        raise ValidationError('the body must be {"artists": [artist ids]}', problems)
    artists = body["artists"]
    if type(artists) is not list or not 1 <= len(artists) <= MAX_CONTENT_ARTISTS:
        raise ValidationError(f"artists must be a list of 1–{MAX_CONTENT_ARTISTS} artist ids",
                              [{"field": "artists", "message": f"a list of 1–{MAX_CONTENT_ARTISTS} artist ids"}])
    problems = [{"field": f"artists[{i}]", "message": PLATFORM_ID_RULE} for i, a in enumerate(artists) if not is_platform_id(a)]
    if not problems and len(set(artists)) != len(artists):
        problems.append({"field": "artists", "message": "an artist id appears twice"})
    if problems:
        raise ValidationError("artists rejected", problems)
    return artists


@routes.post("/v1/tokens")
async def post_token(request: web.Request) -> web.Response:
    """A short-lived artist token, minted by a service with the `issuer` right for the platform's own
    sign-in (SPEC §6), which hands it to the artist page as `/artist#token=…`. Shown once, here."""
    state = get_state(request)
    who = require_right(request, "issuer")
    artist_ids, ttl_s = _token_request(await read_json(request))
    secret, digest = new_token()
    now_ms = int(time.time() * 1000)
    expires_ms = now_ms + ttl_s * 1000
    token_id = await state.appender.add_token("artist", artist_subject(artist_ids), digest, now_ms, expires_ms=expires_ms)
    log.info("token %d: artist token for %d artist id(s), issued by service token %d", token_id, len(artist_ids),
             who.token_id)
    return web.Response(
        body=orjson.dumps({"token": secret, "token_id": token_id, "artist_ids": artist_ids,
                           "expires_at": format_logged_at(expires_ms)}),
        content_type="application/json", headers={"Cache-Control": "no-store"}, status=201,
    )


def _token_request(body: Any) -> tuple[list[str], int]:
    """(artist ids, ttl_s) of a POST /v1/tokens body: `artist_id` or `artist_ids`, and `ttl_s`."""
    if type(body) is not dict:
        raise ValidationError("the body is a JSON object: {\"artist_id\" or \"artist_ids\", \"ttl_s\"}")
    unknown = sorted(set(body) - {"artist_id", "artist_ids", "ttl_s"})
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", [{"field": unknown[0], "message": "unknown field"}])
    if ("artist_id" in body) == ("artist_ids" in body):
        raise ValidationError("name the artist: either artist_id (one id) or artist_ids (a list)")
    ids = [body["artist_id"]] if "artist_id" in body else body["artist_ids"]
    if type(ids) is not list or any(type(a) is not str for a in ids):
        raise ValidationError("artist_ids is a list of artist ids", [{"field": "artist_ids", "message": "not a list of strings"}])
    artist_subject(ids)  # the ids' checks, with their messages
    ttl = body.get("ttl_s")
    if type(ttl) is not int or not 1 <= ttl <= MAX_ISSUED_TTL_S:
        raise ValidationError(f"ttl_s is the token's life in seconds, 1 to {MAX_ISSUED_TTL_S}",
                              [{"field": "ttl_s", "message": str(ttl)[:40]}])
    return list(dict.fromkeys(ids)), ttl
