"""Routes for artists (their own entries only) and auditors (every entry).

An artist token asking about another artist gets 403 whether or not that artist exists, so nothing
about other artists leaks; entries are listed in log order with an opaque cursor."""

from __future__ import annotations

import base64
import csv
import io
from typing import Any

import orjson
from aiohttp import web

from .. import merkle
from ..checkpoint import Checkpoint
from ..errors import Forbidden, NotFound, ValidationError
from ..leaves import iter_leaves
from ..note import parse_note
from ..records import DECISIONS, PURPOSE_CODE, format_logged_at, is_platform_id, parse_rfc3339
from ..store.base import Entry, UseFilter
from .auth import require
from .service import MAX_INDEX, check_artist_id, parse_index
from .state import get_state

routes = web.RouteTableDef()

CSV_COLUMNS = ("index", "type", "logged_at", "event_id", "content_id", "purpose", "phase", "decision", "basis",
               "service", "system_id", "system_model", "system_version", "occurred_at", "window_end",
               "invocations", "detail", "policy")


def _own(request: web.Request) -> str:
    artist_id = request.match_info["artist_id"]
    who = require(request, "artist", "auditor")
    if who.role == "artist" and who.subject != artist_id:
        raise Forbidden("an artist token may only read its own entries")
    return check_artist_id(artist_id)


def _time_ms(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    dt = parse_rfc3339(raw, field=name)
    return int(dt.timestamp() * 1000)


def _cursor(raw: str | None) -> int:
    if raw is None:
        return -1
    try:
        text = base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "after" or not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) > MAX_INDEX:
            raise ValueError
        return int(value)
    except (ValueError, UnicodeError):
        raise ValidationError("bad cursor: pass back the next_cursor of a previous page",
                              [{"field": "cursor", "message": "not a cursor this server issued"}]) from None


def _make_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"after:{index}".encode()).decode().rstrip("=")


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw[:7]) <= maximum:
        raise ValidationError(f"limit must be 1 to {maximum}", [{"field": "limit", "message": raw[:40]}])
    return int(raw)


def _filter(request: web.Request) -> UseFilter:
    q = request.query
    known = {"purpose", "content_id", "decision", "since", "until", "cursor", "limit", "format"}
    unknown = sorted(set(q) - known)
    if unknown:
        raise ValidationError(f"unknown query parameter {unknown[0]!r}", [{"field": unknown[0], "message": "unknown"}])
    # A filter value that can match nothing is a typo, not an empty answer.
    purpose, content_id, decision = q.get("purpose"), q.get("content_id"), q.get("decision")
    if purpose is not None and not PURPOSE_CODE.fullmatch(purpose):
        raise ValidationError("purpose must be a purpose code", [{"field": "purpose", "message": purpose[:40]}])
    if content_id is not None and not is_platform_id(content_id):
        raise ValidationError("content_id must be a platform id", [{"field": "content_id", "message": content_id[:40]}])
    if decision is not None and decision not in DECISIONS:
        raise ValidationError(f"decision must be one of {', '.join(sorted(DECISIONS))}",
                              [{"field": "decision", "message": decision[:40]}])
    return UseFilter(purpose=purpose, content_id=content_id, decision=decision,
                     since_ms=_time_ms(request, "since"), until_ms=_time_ms(request, "until"), after=_cursor(q.get("cursor")))


def _entry_json(e: Entry) -> dict[str, Any]:
    return {"index": e.index, "type": e.type, "logged_at": format_logged_at(e.logged_ms), "aseq": e.aseq, "details": e.details}


def _csv_row(e: Entry) -> list[Any]:
    d = e.details
    system = d.get("system") or {}
    flat = {**d, "index": e.index, "type": e.type, "logged_at": format_logged_at(e.logged_ms),
            "system_id": system.get("id"), "system_model": system.get("model"), "system_version": system.get("version")}
    return ["" if flat.get(c) is None else flat.get(c) for c in CSV_COLUMNS]


@routes.get("/v1/artists/{artist_id}/uses")
async def uses(request: web.Request) -> web.StreamResponse:
    state = get_state(request)
    artist_id = _own(request)
    flt = _filter(request)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "jsonl", "csv"):
        raise ValidationError("format must be json, jsonl or csv", [{"field": "format", "message": fmt[:40]}])
    limit = _limit(request, state.limits.page_size, state.limits.max_page_size)
    page = state.store.artist_entries(artist_id, flt, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    next_cursor = _make_cursor(page[-1].index) if more else None
    headers = {"Cache-Control": "no-store"}
    if next_cursor:
        headers["X-Next-Cursor"] = next_cursor
    if fmt == "jsonl":
        body = b"".join(orjson.dumps(_entry_json(e)) + b"\n" for e in page)
        return web.Response(body=body, content_type="application/x-ndjson", headers=headers)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        w.writerows(_csv_row(e) for e in page)
        return web.Response(text=buf.getvalue(), content_type="text/csv", headers=headers)
    return web.Response(
        body=orjson.dumps({"artist_id": artist_id, "entries": [_entry_json(e) for e in page], "next_cursor": next_cursor}),
        content_type="application/json", headers=headers,
    )


@routes.get("/v1/artists/{artist_id}/audit")
async def audit(request: web.Request) -> web.Response:
    """Everything an artist needs to check, offline, that each of its entries is in the log under a
    signed checkpoint, matches its public leaf, and that its chain from aseq 1 to the head has no gap."""
    state = get_state(request)
    artist_id = _own(request)
    signed = state.store.latest_checkpoint() or b""
    size = _size(signed)
    head = state.store.artist_state(artist_id)
    entries = state.store.artist_entries(artist_id, UseFilter(), 10_000_000) if head else []
    entries = [e for e in entries if e.index < size]
    out = []
    for e in entries:
        ((_, leaf, _),) = list(iter_leaves(state.store, e.index, e.index + 1))
        proof = merkle.inclusion_proof(e.index, size, state.store)
        out.append({"index": e.index, "leaf": base64.b64encode(leaf).decode(), "details": e.details,
                    "proof": [base64.b64encode(h).decode() for h in proof]})
    bundle = {
        "version": 1, "origin": state.log.origin, "artist_id": artist_id,
        "tag": head.tag.hex() if head else None, "checkpoint": signed.decode(),
        "entries": out, "head": {"aseq": len(out), "index": out[-1]["index"] if out else None},
    }
    return web.Response(body=orjson.dumps(bundle), content_type="application/json", headers={"Cache-Control": "no-store"})


def _size(signed: bytes) -> int:
    return Checkpoint.parse(parse_note(signed)[0]).size


@routes.get("/v1/entries/{index}")
async def entry(request: web.Request) -> web.Response:
    state = get_state(request)
    require(request, "auditor")
    index = parse_index(request.match_info["index"])
    e = state.store.entry(index)
    if e is None:
        raise NotFound(f"no entry {index}")
    ((_, leaf, h),) = list(iter_leaves(state.store, index, index + 1))
    return web.Response(
        body=orjson.dumps({**_entry_json(e), "leaf": orjson.Fragment(leaf), "leaf_hash": h.hex()}),
        content_type="application/json",
    )
