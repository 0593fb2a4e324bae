"""The AI policy in plain words, for artists and the public, and what changed between two versions.
Pure: the server renders these into the public page; the same facts are in the policy documents that
`GET /v1/policies/{id}` serves, so a script can derive every word from the JSON API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..policy import NO_AI_CATEGORIES, Policy, Purpose

if TYPE_CHECKING:
    from ..witnessing import WitnessPolicy

DEFAULT_WORDS: Final = {
    "allowed": "Allowed",
    "flagged": "Allowed, and flagged for human review",
    "refused": "Refused, unless the artist opts in",
}
SHORT_DEFAULT: Final = {"allowed": "allowed", "flagged": "flagged for review", "refused": "refused"}
CATEGORY_WORDS: Final = {
    "cawg.ai_inference": "an AI feature that uses the music",
    "cawg.data_mining": "analysing the music",
    "cawg.ai_training": "training AI models",
    "cawg.ai_generative_training": "training generative AI",
    None: "decided for each use",
}
DECISION_WORDS: Final = {
    "allowed": "allowed",
    "flagged": "flagged for review",
    "allowed_override": "allowed over an opt-out",
    "refused": "refused",
}
DECISIONS: Final = ("allowed", "flagged", "allowed_override", "refused")
TRAINING_CATEGORIES: Final = frozenset({"cawg.ai_training", "cawg.ai_generative_training"})
OVERRIDE_WORDS: Final = ("Yes: only under a legal obligation or to protect the platform's security, "
                         "and every such use is logged as an override")
_RANK: Final = {"refused": 0, "flagged": 1, "allowed": 2}


def purpose_name(code: str) -> str:
    """`model_training_generative` → "Model training generative"."""
    return code.replace("_", " ").capitalize()


def no_ai_applies(p: Purpose) -> bool:
    """Whether the artist's "no AI" tag refuses this purpose (SPEC §4)."""
    return p.category in NO_AI_CATEGORIES


@dataclass(frozen=True)
class Change:
    code: str
    what: str
    loosens: bool  # toward more use of artists' music (SPEC §4 "loosens")


def policy_diff(old: Policy, new: Policy) -> list[Change]:
    """What changed from `old` to `new`, purpose by purpose, each change marked if it loosens the policy
    (a default toward allowed, a new override, a purpose leaving the "no AI" tag's reach, a new
    purpose that is not refused or may override, or a shorter notice period)."""
    out: list[Change] = []
    for code, p in new.purposes.items():
        o = old.purposes.get(code)
        if o is None:
            loosens = p.default != "refused" or p.override_eligible
            out.append(Change(code, f"new purpose ({p.covers}): {SHORT_DEFAULT[p.default]} by default", loosens))
            continue
        if o.default != p.default:
            out.append(Change(code, f"default changed from {SHORT_DEFAULT[o.default]} to {SHORT_DEFAULT[p.default]}", _RANK[p.default] > _RANK[o.default]))
        if o.override_eligible != p.override_eligible:
            out.append(Change(code, "may now override an opt-out" if p.override_eligible else
                                    "may no longer override an opt-out", p.override_eligible))
        if o.category != p.category:
            left = no_ai_applies(o) and not no_ai_applies(p)
            out.append(Change(code, f"now counted as {CATEGORY_WORDS.get(p.category, p.category)}"
                                    + (": the \u201cno AI\u201d tag no longer refuses it" if left else ""), left))
        if o.covers != p.covers:
            out.append(Change(code, f"now covers: {p.covers}", False))
    for code in old.purposes:
        if code not in new.purposes:
            out.append(Change(code, "removed: no longer allowed for any use", False))
    if old.notice_days != new.notice_days:  # a shorter notice is a loosening too (SPEC §4)
        out.append(Change("notice_days", f"changes are announced {new.notice_days} days ahead, not {old.notice_days}",
                          new.notice_days < old.notice_days))
    return out


def and_list(names: Sequence[str]) -> str:
    """["a", "b", "c"] → "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def quorum_words(policy: "WitnessPolicy", name: str | None = None) -> str:
    """A witness policy's quorum (or the group `name`) in words: "w1", "2 of w1, w2 and w3",
    "both of w1 and (any one of w2 and w3)". The same words as quorumWords in static/witnesses.js."""
    name = policy.quorum if name is None else name
    group = policy.groups.get(name)
    if group is None:
        return name
    members = [quorum_words(policy, m) for m in group.members]
    members = [f"({w})" if " of " in w else w for w in members]  # names hold no spaces: only groups do
    if len(members) == 1:
        return members[0]
    k, n = group.threshold, len(members)
    how = ("both" if n == 2 else "all") if k == n else "any one" if k == 1 else str(k)
    return f"{how} of {and_list(members)}"
