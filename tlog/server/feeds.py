"""Policy announcements for everyone and each artist (SPEC §4, §6): the diff between two policies, the
public Atom feed of announcements, the artist's own feed and its feed keys.

The public feed and the diff are built from the policy leaves and documents alone. An artist's feed
holds only that artist's entries (looked up by its own id) and, for each announced change, what it
means for that artist's preferences: nothing of any other artist. A feed key is the only credential
the feed takes (a feed reader cannot send headers); it is stored as its SHA-256 and looked up at
every request, so a revoked key gets 404 from the next request on, and a wrong, revoked or other
artist's key gets the same 404 as an artist who does not exist."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from ..atom import CONTENT_TYPE, AtomEntry, AtomFeed, render, tag_uri
from ..errors import Forbidden, NotFound, ValidationError
from ..notices import artist_effects, effect_words, when_words
from ..records import format_logged_at, parse_logged_at
from ..store.base import Entry
from ..tokens import FEED_KEY_PREFIX, digest, new_token
from ..web import words
from .auth import require
from .pages import PolicyVersion, published_policies, replaced_policies
from .params import check_artist_id, path_index, query_int
from .state import State, get_state

routes = web.RouteTableDef()  # public: the diff and the feeds
key_routes = web.RouteTableDef()  # the artist's own feed keys (a server with a writer)

FEED_PAGE = 50  # items (entries and announcements) per page of an artist's feed; older pages by `before`
NO_FEED = "no such feed (check the key in the feed's address: it may have been revoked)"


@dataclass(frozen=True)
class Announcement:
    """A published policy with what it replaces: the policy that would be in effect at its
    `effective_at` among the earlier policy leaves (SPEC §4 Notice's O); None for the log's first."""

    version: PolicyVersion
    replaces: PolicyVersion | None

    @property
    def effective_ms(self) -> int:
        return parse_logged_at(self.version.effective)


def announcements(state: State, size: int) -> list[Announcement]:
    """Every policy leaf under the checkpoint of `size`, in log order."""
    pols = published_policies(state, size)
    return [Announcement(v, old) for v, old in zip(pols, replaced_policies(pols))]


def _known_policy(state: State, policy_id: str) -> PolicyVersion:
    found = [v for v in published_policies(state, state.published_size()) if v.id == policy_id]
    if not found:
        raise NotFound(f"no published policy {policy_id!r}", [{"field": "policy_id", "message": policy_id[:80]}])
    return found[0]


@routes.get("/v1/policies/{a}/diff/{b}")
async def diff(request: web.Request) -> web.Response:
    state = get_state(request)
    a, b = (_known_policy(state, request.match_info[k]) for k in ("a", "b"))
    return web.Response(body=orjson.dumps(words.diff_json(a.policy, b.policy)), content_type="application/json",
                        headers={"Cache-Control": "public, max-age=60"})


# --- the public feed -------------------------------------------------------------------------------


def _first_day(state: State) -> str:
    first = state.store.entry(0)
    return format_logged_at(first.logged_ms if first else 0)[:10]


def _feed_response(feed: AtomFeed) -> web.Response:
    return web.Response(body=render(feed), content_type=CONTENT_TYPE, charset="utf-8",
                        headers={"Cache-Control": "no-store"})


@routes.get("/feeds/policies.atom")
async def policies_feed(request: web.Request) -> web.Response:
    state = get_state(request)
    day, origin = _first_day(state), state.log.origin
    items = announcements(state, state.published_size())
    entries = [_announcement_entry(origin, day, a) for a in reversed(items)]
    return _feed_response(AtomFeed(
        id=tag_uri(origin, day, "feeds", "policies"), title=f"AI policy announcements of {origin}",
        subtitle="Every change of the platform's AI policy, announced in the log before it applies, with what changed.",
        updated=entries[0].updated if entries else f"{day}T00:00:00.000Z", self_url=str(request.url),
        alternate_url=str(request.url.with_path("/").with_query(None)), entries=entries,
    ))


def _announcement_entry(origin: str, day: str, a: Announcement) -> AtomEntry:
    v, when = a.version, when_words(a.effective_ms)
    if a.replaces is None:
        title = f"Policy {v.id}, the log's first, in effect from {when}"
        lines = [f"{v.id} is the log's first AI policy, in effect from {when}. Changes to it are announced "
                 f"{v.policy.notice_days} days before they loosen it."]
    else:
        changes = words.policy_diff(a.replaces.policy, v.policy)
        loosens = any(c.loosens for c in changes)
        title = f"Policy {v.id} from {when}, replacing {a.replaces.id}" + (": more use of music" if loosens else "")
        lines = [f"Announced {when_words(parse_logged_at(v.announced))}; in effect from {when}, replacing {a.replaces.id}."]
        lines += [f"- {words.purpose_name(c.code) if c.code != 'notice_days' else 'Notice period'}: {c.what}"
                  + (" (more use of music)" if c.loosens else "") for c in changes] or ["No change to the purposes (only the wording)."]
    lines.append(f"The policy's text: {v.policy.text}")
    return AtomEntry(id=tag_uri(origin, day, "policies", v.id), title=title, updated=v.announced,
                     published=v.announced, content="\n".join(lines))


# --- an artist's feed ------------------------------------------------------------------------------


def _feed_artist(request: web.Request) -> str:
    """The artist whose feed the key opens: the same 404 for a missing, wrong, revoked or another
    artist's key, and for an artist that does not exist."""
    artist_id = request.match_info["artist_id"]
    key = request.query.get("key", "")
    found = get_state(request).store.feed_key(digest(key)) if 0 < len(key) <= 256 else None
    if found is None or found[1] != artist_id:
        raise NotFound(NO_FEED)
    return artist_id


@routes.get("/feeds/artists/{artist_id}.atom")
async def artist_feed(request: web.Request) -> web.Response:
    state = get_state(request)
    artist_id = _feed_artist(request)
    unknown = sorted(set(request.query) - {"key", "before"})
    if unknown:
        raise ValidationError(f"unknown query parameter {unknown[0]!r}", [{"field": unknown[0], "message": "unknown"}])
    size = state.published_size()
    before = min(query_int(request, "before", minimum=1, default=size), size)
    day, origin = _first_day(state), state.log.origin
    artist = state.store.artist_state(artist_id)
    prefs = artist.preferences if artist else None
    items: list[tuple[int, AtomEntry]] = [
        (e.index, _entry(origin, day, e)) for e in state.store.artist_latest(artist_id, before, FEED_PAGE + 1)]
    now_ms = int(time.time() * 1000)
    items += [(a.version.index, _effect_entry(origin, day, artist_id, a, old, prefs, now_ms))
              for a in announcements(state, before) if (old := a.replaces) is not None]
    items.sort(key=lambda item: item[0], reverse=True)
    page = items[:FEED_PAGE]
    more = len(items) > FEED_PAGE
    return _feed_response(AtomFeed(
        id=tag_uri(origin, day, "feeds", "artists", artist_id), title=f"Your music in the AI log of {origin}",
        subtitle=f"Every AI use of {artist_id}'s music the platform logged, and what each announced policy change "
                 "means for it.",
        updated=max((e.updated for _, e in page), default=f"{day}T00:00:00.000Z"),
        self_url=str(request.url), alternate_url=str(request.url.with_path("/artist").with_query(None)),
        next_url=str(request.url.update_query(before=page[-1][0])) if more else None,
        entries=[e for _, e in page],
    ))


def _effect_entry(origin: str, day: str, artist_id: str, a: Announcement, old: PolicyVersion,
                  prefs: dict[str, Any] | None, now_ms: int) -> AtomEntry:
    """What announcement `a`, replacing policy `old`, changes for the artist."""
    v, when = a.version, when_words(a.effective_ms)
    effects = artist_effects(old.policy, v.policy, prefs)
    changing = [e for e in effects if e.changes]
    title = (f"From {when}, policy {v.id} changes {len(changing)} purpose{'s' * (len(changing) != 1)} for your music"
             if changing else f"From {when}, policy {v.id}: nothing changes for your music")
    lines = [effect_words(e, when) for e in effects] or [f"From {when}, {v.id} changes only the policy's wording."]
    lines.append(f"Announced {when_words(parse_logged_at(v.announced))}, replacing {old.id}"
                 + ("; you can change your choices on your artist page before then." if a.effective_ms > now_ms else "."))
    return AtomEntry(id=tag_uri(origin, day, "artists", artist_id, "policies", v.id), title=title, updated=v.announced,
                     published=v.announced, content="\n".join(lines))


def _entry(origin: str, day: str, e: Entry) -> AtomEntry:
    d = e.details
    logged = format_logged_at(e.logged_ms)
    if e.erased is not None:  # its private details are gone: say only what its public leaf says
        title = f"An entry erased on request ({e.type})"
        content = f"The details of this {e.type} entry were erased on request (erasure at entry {e.erased})."
    elif e.type in ("use", "refusal"):
        decision = words.DECISION_WORDS.get(d["decision"], d["decision"])
        system = d["system"]
        title = f"{words.purpose_name(d['purpose'])} of {d['content_id']}: {decision}"
        times = d.get("invocations") or 1
        content = (f"{d['service']} {'asked to use' if e.type == 'refusal' else 'used'} {d['content_id']} for "
                   f"{d['purpose']} ({d['phase']}) with {system['id']} ({system['model']} {system['version']})"
                   f"{f', {times} times' if times != 1 else ''}; decision: {decision}, under policy {d['policy']}."
                   + (f" Basis claimed: {d['basis']}." if d.get("basis") else "")
                   + (f" Detail: {d['detail'].rstrip('.')}." if d.get("detail") else ""))
    elif e.type == "preference":
        who = "you" if d.get("by") == "artist" else f"the service {d.get('service')}"
        title, content = "Your AI choices changed", f"Your AI choices were changed by {who}."
    else:
        title, content = f"A {e.type} entry about your music", f"The log holds a {e.type} entry about your music."
    return AtomEntry(id=tag_uri(origin, day, "entries", str(e.index)), title=title, updated=logged,
                     content=f"{content} Logged at {logged}, entry {e.index} of the log.")


# --- feed keys ---------------------------------------------------------------------------------------


def _own_artist(request: web.Request) -> str:
    artist_id = request.match_info["artist_id"]
    if not require(request, "artist").is_artist(artist_id):
        raise Forbidden("an artist token may only manage its own feed keys")
    return check_artist_id(artist_id)


@key_routes.post("/v1/artists/{artist_id}/feed-keys")
async def make_feed_key(request: web.Request) -> web.Response:
    state = get_state(request)
    artist_id = _own_artist(request)
    key, want = new_token(FEED_KEY_PREFIX)
    key_id = await state.appender.add_feed_key(artist_id, want, int(time.time() * 1000))
    # The key is shown this once; the store keeps its SHA-256 only.
    return web.Response(body=orjson.dumps({"id": key_id, "key": key, "url": f"/feeds/artists/{quote(artist_id, safe=':')}.atom?key={key}"}),
                        content_type="application/json", headers={"Cache-Control": "no-store"})


@key_routes.delete("/v1/artists/{artist_id}/feed-keys/{key_id}")
async def revoke_feed_key(request: web.Request) -> web.Response:
    state = get_state(request)
    artist_id = _own_artist(request)
    key_id = path_index(request, "key_id")
    if not await state.appender.revoke_feed_key(artist_id, key_id, int(time.time() * 1000)):
        raise NotFound(f"no feed key {key_id} to revoke (already revoked, or never made by this artist)")
    return web.Response(body=orjson.dumps({"id": key_id, "revoked": True}), content_type="application/json")
