"""Purposes, AI policies, artists' preferences and the decision for each use (SPEC §3–§4). Pure.

Choices where the SPEC leaves room (each is also noted where the code keeps it):

- `no_ai` refuses every purpose whose CAWG category is training (`cawg.ai_training`,
  `cawg.ai_generative_training`) or decided per use (`third_party_ai_access`): for the §3 table that is
  exactly the three purposes §4 names, and a code an operator adds later for, say, voice-model training
  is covered too. So that no policy can dodge the tag by re-labelling, a §3 code keeps its §3 category.
- Precedence (§4) is by level: the content's settings, if they say anything about the purpose, decide;
  else the artist's; else the policy default. Within a level an explicit "allow"/"deny" beats the tags.
  So an artist-wide "allow" does not beat a content-level tag (content settings beat artist settings),
  and a content "allow" beats an artist-wide `strict`.
- A `basis` lifts only a refusal that comes from a preference, and only for an override-eligible purpose
  (§4: "a preference refuses it"). A refusal by the policy default is the platform's own rule; a service
  cannot lift it by claiming a basis, the operator changes the policy instead.
- `flagged` is the policy default's verdict; an artist's explicit "allow" replaces it with `allowed`
  (the artist opted in, so there is nothing to look at), unless a basis was claimed needlessly.
- A policy document must state its `notice_days` (0–3650): it is the promise artists rely on, so it is
  never implied by its absence. A purpose a new policy removes does not loosen it (its uses can no
  longer be logged at all).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from tlog.canonical import canonical, join_path, loads_strict, problems_error
from tlog.errors import TooLarge, ValidationError
from tlog.records import BASES, MAX_LOGGED_MS, POLICY_ID, PURPOSE_CODE, format_logged_at, is_platform_id, is_text

# The CAWG training-and-data-mining entries §3 maps purposes onto. `None` stands for the table's
# "(per use)": which of these a third party's processing falls under depends on what it does in each
# use, so the policy cannot fix one.
CATEGORIES: Final = frozenset({"cawg.ai_inference", "cawg.data_mining", "cawg.ai_training", "cawg.ai_generative_training"})
NO_AI_CATEGORIES: Final = frozenset({"cawg.ai_training", "cawg.ai_generative_training", None})
DEFAULTS: Final = ("allowed", "flagged", "refused")
SETTINGS: Final = ("allow", "deny")
MAX_COVERS: Final = 500
MAX_NOTICE_DAYS: Final = 3650
DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class Purpose:
    code: str
    covers: str
    category: str | None  # None: "(per use)", see CATEGORIES
    default: str  # "allowed" | "flagged" (allowed, to be looked at) | "refused"
    override_eligible: bool

    def as_json(self) -> dict[str, Any]:
        return {"covers": self.covers, "category": self.category, "default": self.default,
                "override_eligible": self.override_eligible}


@dataclass(frozen=True, slots=True)
class Policy:
    """One version of the AI policy. `document` is the canonical JSON of the purpose table, text and
    notice period; its SHA-256 (`digest`) is what the policy leaf commits to, so the log binds the whole
    table and the notice promised, not only the prose."""

    id: str
    purposes: Mapping[str, Purpose]
    text: str
    notice_days: int  # how long before a loosening takes effect it must be announced (SPEC §4)
    document: bytes = field(repr=False)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.document).digest()


def make_policy(policy_id: str, purposes: Iterable[Purpose], text: str, *, notice_days: int = 30) -> Policy:
    """A policy from its parts, under the same rules as a published document (`parse_policy`); the
    purposes keep the order given, for display. The notice period defaults to the §3 table's."""
    table = {p.code: p for p in purposes}
    document = _document(table.values(), text, notice_days)
    checked = parse_policy(document, policy_id)
    return Policy(id=policy_id, purposes=table, text=text, notice_days=notice_days, document=checked.document)


def _document(purposes: Iterable[Purpose], text: str, notice_days: int) -> bytes:
    return canonical({"purposes": {p.code: p.as_json() for p in purposes}, "text": text, "notice_days": notice_days})


def parse_policy(data: bytes, policy_id: str) -> Policy:
    """A policy document `{"purposes": {code: {covers, category, default, override_eligible}},
    "text": "…", "notice_days": n}`, strictly: every field present and well-formed, categories only
    those of §3, the codes of §3 keeping their §3 category, `notice_days` an integer 0–3650.
    ValidationError names every problem."""
    obj = loads_strict(data)
    problems: list[dict[str, str]] = []
    if type(policy_id) is not str or not POLICY_ID.fullmatch(policy_id):
        problems.append({"field": "id", "message": "must be 1–64 characters from A–Z a–z 0–9 . _ : -"})
    if type(obj) is not dict:
        raise problems_error(problems + [{"field": "", "message": "a policy document is a JSON object"}])
    problems += [{"field": join_path("", k), "message": "unknown field"} for k in obj if k not in _POLICY_FIELDS]
    text = obj.get("text")
    if not is_text(text):
        problems.append({"field": "text", "message": "required: a string"})
    notice_days = obj.get("notice_days")
    if type(notice_days) is not int or not 0 <= notice_days <= MAX_NOTICE_DAYS:
        problems.append({"field": "notice_days", "message": f"required: an integer of days, 0–{MAX_NOTICE_DAYS}"})
    table = obj.get("purposes")
    purposes: list[Purpose] = []
    if type(table) is not dict or not table:
        problems.append({"field": "purposes", "message": "required: an object with at least one purpose"})
    else:
        for code, spec in table.items():
            purpose = _purpose(code, spec, join_path("purposes", code), problems)
            if purpose is not None:
                purposes.append(purpose)
    if problems:
        raise problems_error(problems)
    text, notice_days = cast(str, text), cast(int, notice_days)  # both checked above
    return Policy(id=policy_id, purposes={p.code: p for p in purposes}, text=text, notice_days=notice_days,
                  document=_document(purposes, text, notice_days))


_POLICY_FIELDS: Final = ("purposes", "text", "notice_days")
_PURPOSE_FIELDS: Final = ("covers", "category", "default", "override_eligible")


def _purpose(code: str, spec: Any, path: str, problems: list[dict[str, str]]) -> Purpose | None:
    before = len(problems)
    if not PURPOSE_CODE.fullmatch(code):
        problems.append({"field": path, "message": "a purpose code is 1–64 of a–z 0–9 _, starting with a letter"})
    if type(spec) is not dict:
        problems.append({"field": path, "message": "must be an object with " + ", ".join(_PURPOSE_FIELDS)})
        return None
    problems += [{"field": join_path(path, k), "message": "unknown field"} for k in spec if k not in _PURPOSE_FIELDS]
    problems += [{"field": join_path(path, k), "message": "required"} for k in _PURPOSE_FIELDS if k not in spec]
    covers, category = spec.get("covers", "-"), spec.get("category")
    default, eligible = spec.get("default", "allowed"), spec.get("override_eligible", False)  # absent: reported above
    if not is_text(covers) or not 0 < len(covers) <= MAX_COVERS:
        problems.append({"field": join_path(path, "covers"), "message": f"must be 1–{MAX_COVERS} characters"})
    if category is not None and (type(category) is not str or category not in CATEGORIES):
        problems.append({"field": join_path(path, "category"),
                         "message": f"must be null (per use) or one of {', '.join(sorted(CATEGORIES))}"})
    elif code in _SPEC_CATEGORIES and category != _SPEC_CATEGORIES[code]:
        problems.append({"field": join_path(path, "category"),
                         "message": f"{code} is a §3 purpose; its category is {_SPEC_CATEGORIES[code]}"})
    if type(default) is not str or default not in DEFAULTS:
        problems.append({"field": join_path(path, "default"), "message": f"must be one of {', '.join(DEFAULTS)}"})
    if type(eligible) is not bool:
        problems.append({"field": join_path(path, "override_eligible"), "message": "must be true or false"})
    if len(problems) > before:
        return None
    return Purpose(code=code, covers=covers, category=category, default=default, override_eligible=eligible)


# ---------------------------------------------------------------------------------------------------
# The default policy: the §3 table


def _p(code: str, covers: str, category: str | None, default: str, eligible: bool) -> Purpose:
    return Purpose(code=code, covers=covers, category=category, default=default, override_eligible=eligible)


_SPEC_TABLE: Final = (
    _p("recommendation", "personalised recommendations, ranking", "cawg.ai_inference", "allowed", False),
    _p("playlist_generation", "generated playlists", "cawg.ai_inference", "allowed", False),
    _p("search_indexing", "search and discovery", "cawg.ai_inference", "allowed", False),
    _p("content_organization", "tagging, genre/mood classification", "cawg.data_mining", "allowed", False),
    _p("talent_discovery", "finding emerging artists", "cawg.data_mining", "flagged", False),
    _p("fraud_detection", "stream manipulation, abuse", "cawg.ai_inference", "allowed", True),
    _p("content_identification", "fingerprinting, duplicate/infringement matching", "cawg.data_mining", "allowed", True),
    _p("customer_support", "support tooling reading the content", "cawg.ai_inference", "allowed", False),
    _p("model_training_discriminative", "training rankers, taggers, fingerprint models on the content",
       "cawg.ai_training", "refused", False),
    _p("model_training_generative", "training generative models on the content",
       "cawg.ai_generative_training", "refused", False),
    _p("generative_input", "artist-triggered generative tools", "cawg.ai_inference", "allowed", False),
    _p("third_party_ai_access", "vendor or partner AI processing", None, "refused", False),
)
_SPEC_CATEGORIES: Final = {p.code: p.category for p in _SPEC_TABLE}

DEFAULT_POLICY_ID: Final = "default"
DEFAULT_POLICY_TEXT: Final = (
    "The platform uses AI on artists' content only for the purposes in this table. Each use is logged "
    "publicly, without identities. Without a preference, a purpose's default applies: allowed, allowed "
    "and flagged for review, or refused. Artists may opt out of any purpose, mark their catalogue or a "
    "single work \"no AI\" (no model training, no third-party AI) or \"strict\" (no AI use at all), and "
    "opt in to purposes refused by default. Only fraud detection and content identification may "
    "override an opt-out, and only under a legal obligation or a legitimate security interest, which "
    "is logged with the use."
)
DEFAULT_POLICY: Final = make_policy(DEFAULT_POLICY_ID, _SPEC_TABLE, DEFAULT_POLICY_TEXT)


# ---------------------------------------------------------------------------------------------------
# Preferences (§4)

_LEVEL_FIELDS: Final = ("no_ai", "strict", "purposes")


@dataclass(frozen=True)
class PreferenceLimits:
    """How large an artist's preferences may be (`tlog serve --max-preferences`, `--max-content-overrides`).
    Every decision about the artist reads them, and every audit page carries them."""

    max_bytes: int = 64 << 10  # of the document's canonical JSON
    max_content: int = 1000  # per-content settings


def validate_preferences(obj: Any, *, purposes: Collection[str] | None = None,
                         limits: PreferenceLimits | None = PreferenceLimits()) -> dict[str, Any]:
    """Checks an artist's preferences document and returns its normal form: every field present
    (`false`, `{}`), purposes and content ids sorted, content entries that set nothing dropped, so that
    documents meaning the same are equal. `purposes`, if given, are the codes a setting may name (those
    of the policy in effect or announced: `accepted_purposes`); otherwise any well-formed code is accepted.
    ValidationError names every problem; TooLarge (413) if the document is beyond `limits` (None: no limit,
    for reading back what a log holds). The one check for every way preferences are set (PUT, PATCH, CLI)."""
    problems: list[dict[str, str]] = []
    if type(obj) is not dict:
        raise problems_error([{"field": "", "message": "preferences are a JSON object"}])
    content = obj.get("content", {})
    if limits is not None and type(content) is dict and len(content) > limits.max_content:  # before work per entry
        raise ValidationError(
            f"preferences may set at most {limits.max_content} pieces of content one by one, not {len(content)}; "
            "set the rest by the artist-wide no_ai, strict or purposes",
            [{"field": "content", "message": f"at most {limits.max_content} entries"}])
    problems += [{"field": join_path("", k), "message": "unknown field"} for k in obj if k not in (*_LEVEL_FIELDS, "content")]
    normal = _level(obj, "", purposes, problems)
    entries: dict[str, Any] = {}
    if type(content) is not dict:
        problems.append({"field": "content", "message": "must be an object of content ids"})
    else:
        for content_id in content:
            path = join_path("content", str(content_id))
            if not is_platform_id(content_id):
                problems.append({"field": path, "message": "not a content id (1–256 printable characters, no spaces)"})
            settings = content[content_id]
            if type(settings) is not dict:
                problems.append({"field": path, "message": "must be an object with no_ai, strict, purposes"})
                continue
            problems += [{"field": join_path(path, k), "message": "unknown field"} for k in settings if k not in _LEVEL_FIELDS]
            level = _level(settings, path, purposes, problems)
            if level["no_ai"] or level["strict"] or level["purposes"]:
                entries[content_id] = level
    if problems:
        raise problems_error(problems)
    normal["content"] = dict(sorted(entries.items()))
    if limits is not None and (size := len(canonical(normal))) > limits.max_bytes:
        raise TooLarge(f"preferences may take at most {limits.max_bytes:,} bytes as canonical JSON, not {size:,}",
                       [{"field": "", "message": f"at most {limits.max_bytes} bytes"}])
    return normal


def accepted_purposes(schedule: Iterable[tuple[int, int, Policy]], ms: int) -> frozenset[str]:
    """The purpose codes preferences may name at `ms` (SPEC §4): those of the policy in effect and of
    every policy announced to take effect later, so that an artist can deny a purpose before it applies.
    A code only an earlier, replaced policy had is no longer accepted."""
    current = in_effect(schedule, ms)
    announced = [policy for effective, _, policy in schedule if effective > ms]
    return frozenset(code for policy in [*([current] if current else []), *announced] for code in policy.purposes)


def _level(obj: dict[str, Any], path: str, purposes: Collection[str] | None, problems: list[dict[str, str]]) -> dict[str, Any]:
    level: dict[str, Any] = {}
    for tag in ("no_ai", "strict"):
        value = obj.get(tag, False)
        if type(value) is not bool:
            problems.append({"field": join_path(path, tag), "message": "must be true or false"})
        level[tag] = value is True
    settings = obj.get("purposes", {})
    level["purposes"] = {}
    if type(settings) is not dict:
        problems.append({"field": join_path(path, "purposes"), "message": 'must be an object of purpose codes to "allow" or "deny"'})
        return level
    chosen = {}
    for code, value in settings.items():
        where = join_path(join_path(path, "purposes"), str(code))
        if type(code) is not str or not PURPOSE_CODE.fullmatch(code):
            problems.append({"field": where, "message": "not a purpose code"})
        elif purposes is not None and code not in purposes:
            problems.append({"field": where, "message": "not a purpose of the policy in effect or of an announced one"})
        elif type(value) is not str or value not in SETTINGS:
            problems.append({"field": where, "message": 'must be "allow" or "deny"'})
        else:
            chosen[code] = value
    level["purposes"] = dict(sorted(chosen.items()))
    return level


# ---------------------------------------------------------------------------------------------------
# Decisions (§4)


TRAINING_PHASES: Final = frozenset({"training", "fine_tuning"})


def phase_problem(policy: Policy, purpose: str, phase: str) -> str | None:
    """SPEC §3: the phases `training` and `fine_tuning` belong only to purposes whose category is training
    (or decided per use, as third-party access), so that training cannot be logged, and counted in public,
    as a recommendation or the like. The message names the purposes to log it under."""
    p = policy.purposes.get(purpose)
    if phase not in TRAINING_PHASES or p is None or p.category in NO_AI_CATEGORIES:
        return None
    fits = ", ".join(c for c, q in policy.purposes.items() if q.category in NO_AI_CATEGORIES)
    return f"phase {phase!r} is training, which is logged under a training purpose ({fits}), not under {purpose!r}"


def in_effect(schedule: Iterable[tuple[int, int, Policy]], ms: int) -> Policy | None:
    """The policy in effect at `ms` (SPEC §4): among published policies, given as (effective_at in ms,
    index of the policy leaf, policy), the one with the latest `effective_at` not after `ms`; ties go to
    the later leaf. None before the first takes effect."""
    due = [(effective, index, policy) for effective, index, policy in schedule if effective <= ms]
    return max(due, key=lambda s: (s[0], s[1]))[2] if due else None


# ---------------------------------------------------------------------------------------------------
# Notice (§4): a policy that loosens the one it replaces must be announced that long in advance

_TOWARD_ALLOWED: Final = {"refused": 0, "flagged": 1, "allowed": 2}


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One difference between two policy versions. `purpose` is the code it concerns (None for the policy's
    `notice_days` and `text`); `kind` is one of CHANGE_KINDS; `old`/`new` are the values before and after
    (a whole Purpose for `added`/`removed`, None on the side where it does not exist); `loosens` says
    whether this change alone makes the new policy loosen the old one (SPEC §4 "loosens")."""

    purpose: str | None
    kind: str
    old: Any
    new: Any
    loosens: bool

    def summary(self) -> str:
        """One line, e.g. "model_training_generative: refused → allowed"."""
        code, old, new = self.purpose, self.old, self.new
        if self.kind == "added":
            what = ([f"{new.default} by default"] if new.default != "refused" or not new.override_eligible else []) + \
                   (["override-eligible"] if new.override_eligible else [])
            return f"{code}: new purpose, {' and '.join(what)}"
        if self.kind == "removed":
            return f"{code}: removed"
        if self.kind == "override_eligible":
            return f"{code}: {'becomes' if new else 'no longer'} override-eligible"
        if self.kind == "category":
            denied = ", which no_ai does not deny" if self.loosens else ""
            return f"{code}: category {old or 'per use'} → {new or 'per use'}{denied}"
        if self.kind == "covers":
            return f"{code}: now covers {new!r}"
        if self.kind == "text":
            return "text: changed"
        return f"{code or self.kind}: {old} → {new}"  # default, notice_days

    def as_json(self) -> dict[str, Any]:
        def value(v: Any) -> Any:
            return v.as_json() if isinstance(v, Purpose) else v
        return {"purpose": self.purpose, "change": self.kind, "from": value(self.old), "to": value(self.new),
                "loosens": self.loosens, "summary": self.summary()}


CHANGE_KINDS: Final = ("added", "removed", "default", "override_eligible", "category", "covers", "notice_days", "text")


def policy_diff(old: Policy, new: Policy) -> list[PolicyChange]:
    """What changed from `old` to `new`, purpose by purpose in the new policy's order (then the purposes
    it removes, the notice period and the text), each change marked if it loosens: this is the one place
    that says what "loosens" (SPEC §4) means. A default moving toward allowed, a purpose becoming
    override-eligible, one moving out of the categories `no_ai` denies, a new purpose with a default
    other than refused or override-eligible, a lower `notice_days`. A removed purpose does not loosen
    (its uses can no longer be logged at all)."""
    found = []
    for code, p in new.purposes.items():
        o = old.purposes.get(code)
        if o is None:
            found.append(PolicyChange(code, "added", None, p, p.default != "refused" or p.override_eligible))
            continue
        if p.default != o.default:
            found.append(PolicyChange(code, "default", o.default, p.default,
                                      _TOWARD_ALLOWED[p.default] > _TOWARD_ALLOWED[o.default]))
        if p.override_eligible != o.override_eligible:
            found.append(PolicyChange(code, "override_eligible", o.override_eligible, p.override_eligible,
                                      p.override_eligible))
        if p.category != o.category:
            found.append(PolicyChange(code, "category", o.category, p.category,
                                      o.category in NO_AI_CATEGORIES and p.category not in NO_AI_CATEGORIES))
        if p.covers != o.covers:
            found.append(PolicyChange(code, "covers", o.covers, p.covers, False))
    found += [PolicyChange(code, "removed", o, None, False) for code, o in old.purposes.items() if code not in new.purposes]
    if new.notice_days != old.notice_days:
        found.append(PolicyChange(None, "notice_days", old.notice_days, new.notice_days, new.notice_days < old.notice_days))
    if new.text != old.text:
        found.append(PolicyChange(None, "text", old.text, new.text, False))
    return found


def policy_loosenings(old: Policy, new: Policy) -> list[str]:
    """How `new` loosens `old` (SPEC §4 "loosens"), one line per change, e.g.
    "model_training_generative: refused → allowed"; empty if it does not. (Not to be confused with
    `loosenings`, which compares an artist's preferences.)"""
    return [c.summary() for c in policy_diff(old, new) if c.loosens]


def notice_problem(schedule: Iterable[tuple[int, int, Policy]], new: Policy, announced_ms: int,
                   effective_ms: int) -> tuple[str, int] | None:
    """SPEC §4 Notice, for a policy `new` announced at `announced_ms` (its leaf's logged_at) to take
    effect at `effective_ms`, given `schedule`: the policy leaves before its own, as for `in_effect`
    (announced ones not yet in effect included, so several may be pending at once). O is the policy
    that would be in effect at `effective_ms` among them; if `new` loosens O, it must take effect no
    sooner than the `notice_days` of the policy in effect at `announced_ms` after it. Returns why not,
    to follow the policy's name ("loosens 'default' — … — but takes effect at …"), and the earliest
    allowed effective time (ms); or None if the rule holds.

    A log's first policy replaces none. With no policy in effect at `announced_ms` no notice was ever
    promised (only in a hand-made log: the builder publishes the first policy at once)."""
    earlier = list(schedule)
    old = in_effect(earlier, effective_ms)
    promiser = in_effect(earlier, announced_ms)
    if old is None or promiser is None:
        return None
    loosened = policy_loosenings(old, new)
    earliest = announced_ms + promiser.notice_days * DAY_MS
    if not loosened or effective_ms >= earliest:
        return None
    n = promiser.notice_days
    days = "1 day's" if n == 1 else f"{n} days'"
    return (f"loosens {old.id!r} — {'; '.join(loosened)} — but takes effect at "
            f"{_when(effective_ms)}, before the {days} notice {promiser.id!r} promised (not before "
            f"{_when(earliest)})", earliest)


def _when(ms: int) -> str:
    # A hand-made log may announce a policy so near year 10000 that its notice ends beyond RFC 3339.
    return format_logged_at(ms) if ms < MAX_LOGGED_MS else "the year 10000"


def decide(policy: Policy, purpose: str, content_id: str, prefs: Mapping[str, Any] | None, basis: str | None = None) -> str:
    """The decision for one use: "allowed", "refused", "allowed_override" or "flagged" (see the module
    docstring for the precedence). `prefs` is a validated preferences document, or None for none."""
    entry = policy.purposes.get(purpose)
    if entry is None:
        raise problems_error([{"field": "purpose", "message": f"not a purpose of policy {policy.id}"}])
    if basis is not None and basis not in BASES:
        raise ValueError(f"unknown basis {basis!r}")
    verdict = preference_verdict(entry, content_id, prefs)
    if verdict == "deny":
        return "allowed_override" if basis is not None and entry.override_eligible else "refused"
    if verdict is None:
        if entry.default == "refused":
            return "refused"  # a basis never lifts the policy's own refusal
        if entry.default == "flagged":
            return "flagged"
    return "allowed" if basis is None else "flagged"  # a basis claimed where none was needed


def preference_verdict(purpose: Purpose, content_id: str, prefs: Mapping[str, Any] | None) -> str | None:
    """What the artist's preferences say about this purpose for this content: "allow", "deny" or None
    (nothing; the policy default applies). The content's settings are asked first."""
    if not prefs:
        return None
    content = prefs.get("content")
    if content:
        settings = content.get(content_id)
        if settings:
            verdict = level_verdict(settings, purpose)
            if verdict is not None:
                return verdict
    return level_verdict(prefs, purpose)


def level_verdict(settings: Mapping[str, Any], purpose: Purpose) -> str | None:
    """What one settings object (an artist's, or one content id's) says about a purpose: "allow", "deny"
    or None (§4 `level`)."""
    explicit = settings.get("purposes")
    if explicit and purpose.code in explicit:
        return explicit[purpose.code]  # an explicit allow (an opt-in) or deny beats the tags
    if settings.get("strict"):
        return "deny"
    if settings.get("no_ai") and purpose.category in NO_AI_CATEGORIES:
        return "deny"
    return None


def loosenings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The changes from `old` to `new` (validated preferences) that loosen them: a tag cleared, a
    "deny" removed or an "allow" added, at the artist level or for a content id. A service may only
    make changes for which this is empty. Adding an "allow" counts even where a tag still refuses, and
    removing a "deny" even where another setting still refuses: a service may not rearrange an
    artist's choices, only add to them."""
    found = _level_loosenings("", old, new)
    old_content, new_content = old.get("content", {}), new.get("content", {})
    for content_id in sorted(old_content.keys() | new_content.keys()):
        found += _level_loosenings(
            join_path("content", content_id), old_content.get(content_id, {}), new_content.get(content_id, {})
        )
    return found


def _level_loosenings(path: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    found = [f"{join_path(path, tag)}: cleared" for tag in ("no_ai", "strict") if old.get(tag) and not new.get(tag)]
    old_settings, new_settings = old.get("purposes", {}), new.get("purposes", {})
    for code in sorted(old_settings.keys() | new_settings.keys()):
        before, after = old_settings.get(code), new_settings.get(code)
        where = join_path(join_path(path, "purposes"), code)
        if before == "deny" and after != "deny":
            found.append(f"{where}: deny {'changed to allow' if after == 'allow' else 'removed'}")
        elif after == "allow" and before != "allow":
            found.append(f"{where}: allow added")
    return found


def dropped_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The settings of `old` (validated preferences) that `new` no longer holds as they were: a tag set,
    a purpose's allow or deny, at the artist level or for a content id. A whole-document PUT answers
    with them, so that an artist (or a service overwriting the artist's choices with restrictions) sees
    what the replacement dropped: `{"setting": path, "was": value, "now": value or null}`."""
    before, after = _settings(old), _settings(new)
    return [{"setting": path, "was": was, "now": after.get(path)}
            for path, was in before.items() if after.get(path) != was]


def _settings(prefs: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting of a preferences document by its path: tags that are set, and purpose settings."""
    levels = [("", prefs)] + [(join_path("content", c), s) for c, s in prefs.get("content", {}).items()]
    out: dict[str, Any] = {}
    for path, level in levels:
        out.update({join_path(path, tag): True for tag in ("no_ai", "strict") if level.get(tag)})
        out.update({join_path(join_path(path, "purposes"), code): v for code, v in level.get("purposes", {}).items()})
    return out
