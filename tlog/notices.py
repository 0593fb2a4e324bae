"""What an announced policy change means for one artist, in words computed from its own preferences.
Pure: the artist feed (server/feeds.py) renders these; tests hold them to `policy.decide`.

For each purpose whose rules change (added, removed, default, override eligibility, category: not the
wording of `covers` or of the text), an `Effect` holds the decision a use of the artist's tracks gets
without a basis, before and after, by the artist's catalogue-wide settings. Tracks with settings of
their own may differ; the words say so rather than listing them. So an artist who denied a purpose is
told that nothing changes for it when the purpose becomes allowed by default, and one whose "no AI"
tag stops covering a purpose is told it becomes allowed for its tracks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

from .policy import Policy, Purpose, decide, level_verdict, policy_diff

RULE_KINDS: Final = frozenset({"added", "removed", "default", "override_eligible", "category"})
_MONTHS: Final = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                  "October", "November", "December")


@dataclass(frozen=True, slots=True)
class Effect:
    """One purpose's change for one artist's tracks. `before`/`after`: the decision of a use without a
    basis ("allowed", "flagged", "refused"), None where that policy has no such purpose. `reason`: why
    the artist's own settings decide it under the new policy ("you denied it", "your strict setting
    refuses it", …), None if the policy's default does; `old_reason` the same under the old policy.
    `overridable`/`was_overridable`: a use may go ahead over the artist's no (its settings deny the
    purpose, which is override-eligible). `own_tracks`: some of its tracks have settings of their own
    for the purpose."""

    purpose: str
    before: str | None
    after: str | None
    reason: str | None
    old_reason: str | None
    overridable: bool
    was_overridable: bool
    own_tracks: bool
    old: Purpose | None
    new: Purpose | None

    @property
    def changes(self) -> bool:
        """Whether anything changes for the artist's tracks (by its catalogue-wide settings)."""
        return self.before != self.after or self.overridable != self.was_overridable


def artist_effects(old: Policy, new: Policy, prefs: Mapping[str, Any] | None) -> list[Effect]:
    """The effect on an artist with preferences `prefs` (validated, or None) of `new` replacing `old`:
    one Effect per purpose whose rules change, in `policy_diff`'s order."""
    prefs = prefs or {}
    catalogue = {k: v for k, v in prefs.items() if k != "content"}
    tracks = list((prefs.get("content") or {}).values())
    codes: list[str] = []
    for c in policy_diff(old, new):
        if c.kind in RULE_KINDS and c.purpose not in codes:
            codes.append(c.purpose)  # type: ignore[arg-type]
    return [_effect(old, new, code, catalogue, tracks) for code in codes]


def _effect(old: Policy, new: Policy, code: str, catalogue: Mapping[str, Any], tracks: list[Mapping[str, Any]]) -> Effect:
    o, n = old.purposes.get(code), new.purposes.get(code)
    # The SPEC §4 decision itself, for a track without settings of its own and a use without a basis.
    before = None if o is None else decide(old, code, "", catalogue)
    after = None if n is None else decide(new, code, "", catalogue)
    return Effect(
        purpose=code, before=before, after=after,
        reason=None if n is None else _reason(catalogue, n), old_reason=None if o is None else _reason(catalogue, o),
        overridable=n is not None and n.override_eligible and level_verdict(catalogue, n) == "deny",
        was_overridable=o is not None and o.override_eligible and level_verdict(catalogue, o) == "deny",
        own_tracks=any(level_verdict(t, p) is not None for t in tracks for p in (o, n) if p is not None),
        old=o, new=n,
    )


def _reason(catalogue: Mapping[str, Any], p: Purpose) -> str | None:
    """Why the artist's catalogue-wide settings decide `p`, in words; None if they say nothing of it."""
    setting = level_verdict(catalogue, p)
    if setting is None:
        return None
    explicit = (catalogue.get("purposes") or {}).get(p.code)
    if explicit is not None:
        return "you allowed it" if explicit == "allow" else "you denied it"
    if catalogue.get("strict"):
        return "your strict setting refuses it"
    return "your \u201cno AI\u201d setting refuses it"


# --- words ---------------------------------------------------------------------------------------

_OUTCOME: Final = {
    "allowed": "allowed for your tracks unless you deny it",
    "flagged": "allowed for your tracks, flagged for review, unless you deny it",
    "refused": "refused for your tracks unless you allow it",
}
_DEFAULT: Final = {"allowed": "allowed", "flagged": "flagged for review", "refused": "refused"}


def when_words(ms: int) -> str:
    """A time in words: "5 January 2027", or "5 January 2027 at 14:30 UTC" when not at midnight."""
    t = datetime.fromtimestamp(ms / 1000, timezone.utc)
    day = f"{t.day} {_MONTHS[t.month - 1]} {t.year}"
    return day if (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0) else f"{day} at {t:%H:%M} UTC"


def effect_words(e: Effect, when: str) -> str:
    """The effect as one sentence for the artist, e.g. "From 5 January 2027, model_training_generative
    becomes allowed for your tracks unless you deny it." `when` is `when_words` of the effective time."""
    code = e.purpose
    if e.after is None:
        text = f"From {when}, {code} is no longer a purpose the platform may use your tracks for."
    elif e.before is None:
        text = f"From {when}, the platform may use music for a new purpose, {code} ({e.new.covers}): {_state(e)}."  # type: ignore[union-attr]
    elif e.before != e.after:
        # A tag that refused it no longer does (the purpose moved out of the categories it covers).
        released = f"is no longer covered by {e.old_reason.removesuffix(' refuses it')} and " \
            if e.old_reason and e.reason is None and e.old_reason.startswith("your") else ""
        text = f"From {when}, {code} {released}becomes {_state(e)}."
    elif e.overridable != e.was_overridable:
        text = (f"From {when}, {code} may go ahead over your opt-out, but only under a legal obligation or to protect "
                "the platform's security, and each such use is logged as an override." if e.overridable else
                f"From {when}, {code} may no longer go ahead over your opt-out.")
    else:
        because = f": {e.reason}" if e.reason else ""
        text = f"From {when}, {code} {_rule_change(e)}, but nothing changes for your tracks{because}."
    if e.own_tracks:
        text += " Tracks with settings of their own for it keep them."
    return text


def _state(e: Effect) -> str:
    if e.reason is None:
        return _OUTCOME[e.after]  # type: ignore[index]
    return f"{_DEFAULT[e.after]} for your tracks, as {e.reason}"  # type: ignore[index]


def _rule_change(e: Effect) -> str:
    o, n = e.old, e.new
    assert o is not None and n is not None
    what = []
    if o.default != n.default:
        what.append(f"becomes {_DEFAULT[n.default]} by default")
    if o.override_eligible != n.override_eligible:
        what.append("may go ahead over an opt-out" if n.override_eligible else "may no longer go ahead over an opt-out")
    if o.category != n.category:
        what.append("is counted as another kind of AI use")
    return " and ".join(what)
