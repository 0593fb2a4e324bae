"""Erasure on request (SPEC §2.2, §7 `tlog erase`): an artist's private data deleted, every proof kept.

What goes: every stored private field of the artist's entries (ids, content and event ids, free text,
nonces, preferences), its id, VRF proof and preferences in the artists table, and its tokens. What stays:
each entry's public leaf (so its details commitment), the tag and its chain head, every tree node,
checkpoint and statistic. The sequencer writes it as one batch ending in the `erasure` leaf, which names
the tag and how many entries were erased; then the store scrubs the freed data off the disk.

Idempotent: a second run finds nothing left and appends nothing (it still deletes tokens made since,
and scrubs). An artist whose id comes back is the same tag, and its chain goes on (builder.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .errors import ValidationError
from .log import LocalLog
from .records import is_platform_id, is_text
from .sequencer import erasable
from .store.base import Backend, Erasure

MAX_REASON = 500
_NOUNS = {"use": ("use", "uses"), "refusal": ("refusal", "refusals"), "preference": ("preference change", "preference changes"),
          "binding": ("content binding", "content bindings")}


@dataclass(frozen=True)
class Plan:
    """What an erasure of `artist_id` would remove now."""

    artist_id: str
    entries: Counter[str]  # not erased yet, by type
    preferences: bool
    tokens: int

    @property
    def empty(self) -> bool:
        return not self.entries and not self.tokens

    def describe(self) -> str:
        if self.empty:
            return f"nothing to erase: the log holds no private data of artist {self.artist_id} (never logged, or erased before)"
        parts = []
        if self.entries:
            kinds = ", ".join(_count(n, *_NOUNS.get(t, (f"{t} entry", f"{t} entries"))) for t, n in sorted(self.entries.items()))
            parts.append(f"the private details of {_count(sum(self.entries.values()), 'entry', 'entries')} ({kinds})")
        if self.preferences:
            parts.append("its current preferences")
        if self.tokens:
            parts.append(_count(self.tokens, "token", "tokens"))
        kept = ("; the entries' public leaves stay, and an erasure leaf naming its tag and the count is appended"
                if self.entries else "")
        return f"this erases, for artist {self.artist_id}: its id, {', '.join(parts)}{kept}"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def check_reason(reason: str, artist_id: str) -> str:
    """The reason is kept after the erasure and shown with every erased entry, so it must not name the
    artist."""
    if not is_text(reason) or not reason.strip() or len(reason) > MAX_REASON or not reason.isprintable():
        raise ValidationError(f"the reason must be 1–{MAX_REASON} printable characters, e.g. \"account deleted\"")
    if artist_id in reason:
        raise ValidationError("the reason must not name the artist: it is kept, and shown with the erased entries")
    return reason


def plan(store: Backend, artist_id: str) -> Plan:
    if not is_platform_id(artist_id):
        raise ValidationError(f"{artist_id!r} is not an artist id (1–256 printable characters without spaces)")
    state = store.artist_state(artist_id)
    entries = Counter(e.type for e, _ in erasable(store, artist_id)) if state is not None else Counter()
    tokens = sum(t.role == "artist" and artist_id in (t.subject or "").split(" ") for t in store.tokens())
    return Plan(artist_id, entries, state is not None and state.preferences is not None, tokens)


def erase(log: LocalLog, artist_id: str, reason: str) -> tuple[Erasure | None, int]:
    """Erases the artist (module docstring): the erasure, or None if no entry was left to erase, and
    how many tokens were deleted without one. Scrubs the database files last."""
    check_reason(reason, artist_id)
    seq = log.sequencer()
    try:
        done = seq.erase(artist_id, reason)
    finally:
        seq.close()
    tokens = log.store.forget_artist(artist_id) if done is None else 0
    log.store.scrub()
    return done, tokens
