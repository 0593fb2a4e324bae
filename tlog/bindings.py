"""Content bound to its artists (SPEC §2.1), replayed from a log's private side in index order. Pure.

The sequencer binds a content to the artist its first use names (no leaf of its own) unless the
catalogue bound it first, and `binding` leaves bind and release (builder.py). Replaying the same events
gives the bindings the store must hold, and which uses concern content bound to several artists: such a
use is logged once per rightsholder (SPEC §2.1), so an auditor (`tlog verify --db`) looks for the same
use logged for every artist bound to its content, and reports the ones that were not.

"The same use" is the same service, content, purpose, phase, system, `occurred_at` and `window_end`:
what a service sends for each rightsholder, apart from the artist and the event id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

UseKey = tuple[Any, ...]  # (content_id, service, purpose, phase, system id, model, version, occurred_at, window_end)


def use_key(details: dict[str, Any]) -> UseKey:
    s = details["system"]
    return (details["content_id"], details["service"], details["purpose"], details["phase"], s["id"], s["model"],
            s["version"], details["occurred_at"], details["window_end"])


@dataclass(frozen=True)
class Unshared:
    """A use of content bound to several artists that was not logged for each of them."""

    index: int  # the first leaf of the use
    key: UseKey
    logged_for: tuple[str, ...]
    missing: tuple[str, ...]

    def message(self) -> str:
        content_id, service, purpose, _, _, _, _, occurred_at, _ = self.key
        return (f"index {self.index}: {service}'s {purpose} use of {content_id!r} at {occurred_at} was logged for "
                f"{', '.join(self.logged_for)} but not for {', '.join(self.missing)}, also bound to it")


@dataclass
class BindingReplay:
    """Feed it a log's use, refusal and binding entries in index order (`use`, `binding`); then `bound`
    holds each content's artists with the index that bound each, and `co_owned` the index and bound
    artists of every use made while its content had several (`co_owned_contents` their contents)."""

    bound: dict[str, dict[str, int]] = field(default_factory=dict)
    co_owned: dict[int, frozenset[str]] = field(default_factory=dict)
    co_owned_contents: set[str] = field(default_factory=set)

    def use(self, index: int, content_id: str, artist_id: str) -> None:
        artists = self.bound.get(content_id)
        if artists is None:  # first sight
            self.bound[content_id] = {artist_id: index}
        elif len(artists) > 1:
            self.co_owned[index] = frozenset(artists)
            self.co_owned_contents.add(content_id)

    def binding(self, index: int, content_id: str, artist_id: str, change: str) -> None:
        artists = self.bound.setdefault(content_id, {})
        if change == "bind":
            artists[artist_id] = index
        else:
            artists.pop(artist_id, None)
            if not artists:
                del self.bound[content_id]


def unshared(uses: list[tuple[int, str, UseKey]], co_owned: dict[int, frozenset[str]]) -> list[Unshared]:
    """The uses of co-owned content not logged for every artist bound to it. `uses` are (index, artist,
    key) of the co-owned uses and of every use that might be their counterpart (same content), in index
    order; a group of the same use needs every artist bound when any of its uses was made."""
    groups: dict[UseKey, tuple[int, set[str], set[str]]] = {}
    for index, artist_id, key in uses:
        first, named, needed = groups.setdefault(key, (index, set(), set()))
        named.add(artist_id)
        needed |= co_owned.get(index, frozenset())
    out = [Unshared(first, key, tuple(sorted(named)), tuple(sorted(needed - named)))
           for key, (first, named, needed) in groups.items() if needed - named]
    return sorted(out, key=lambda u: u.index)
