"""The AI policy in plain words, for artists and the public, and what changed between two versions.
Pure: the server renders these into the public page; the same facts are in the policy documents that
`GET /v1/policies/{id}` serves, so a script can derive every word from the JSON API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..policy import NO_AI_CATEGORIES, Policy, PolicyChange, Purpose
from ..policy import policy_diff as diff

if TYPE_CHECKING:
    from ..witness.quorum import WitnessQuorum

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
    """What changed from `old` to `new` in words, purpose by purpose, each change marked if it loosens the
    policy as `policy.policy_diff` decides (the text itself is not compared here: the page shows it)."""
    return [Change(c.purpose or c.kind, change_words(c), c.loosens) for c in diff(old, new) if c.kind != "text"]


def diff_json(old: Policy, new: Policy) -> dict[str, Any]:
    """The diff as `GET /v1/policies/{a}/diff/{b}` and `tlog policy diff --json` give it."""
    changes = diff(old, new)
    return {"from": old.id, "to": new.id, "loosens": any(c.loosens for c in changes),
            "changes": [{**c.as_json(), "words": change_words(c)} for c in changes]}


def change_words(c: PolicyChange) -> str:
    """One change of a policy in plain words, e.g. "default changed from refused to allowed"."""
    if c.kind == "added":
        return f"new purpose ({c.new.covers}): {SHORT_DEFAULT[c.new.default]} by default" + \
               (", and may override an opt-out" if c.new.override_eligible else "")
    if c.kind == "removed":
        return "removed: no longer allowed for any use"
    if c.kind == "default":
        return f"default changed from {SHORT_DEFAULT[c.old]} to {SHORT_DEFAULT[c.new]}"
    if c.kind == "override_eligible":
        return "may now override an opt-out" if c.new else "may no longer override an opt-out"
    if c.kind == "category":
        return f"now counted as {CATEGORY_WORDS.get(c.new, c.new)}" + \
               (": the \u201cno AI\u201d tag no longer refuses it" if c.loosens else "")
    if c.kind == "covers":
        return f"now covers: {c.new}"
    if c.kind == "notice_days":
        return f"changes are announced {c.new} days ahead, not {c.old}"
    return "the policy's text changed"


def and_list(names: Sequence[str]) -> str:
    """["a", "b", "c"] → "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def quorum_words(quorum: "WitnessQuorum", name: str | None = None) -> str:
    """A witness quorum file's quorum (or the group `name`) in words: "w1", "2 of w1, w2 and w3",
    "both of w1 and (any one of w2 and w3)". The same words as quorumWords in static/witnesses.js."""
    name = quorum.quorum if name is None else name
    group = quorum.groups.get(name)
    if group is None:
        return name
    members = [quorum_words(quorum, m) for m in group.members]
    members = [f"({w})" if " of " in w else w for w in members]  # names hold no spaces: only groups do
    if len(members) == 1:
        return members[0]
    k, n = group.threshold, len(members)
    how = ("both" if n == 2 else "all") if k == n else "any one" if k == 1 else str(k)
    return f"{how} of {and_list(members)}"
