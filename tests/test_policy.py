"""Purposes and policies (§3), preferences and decisions (§4): the default table, strict policy
documents, the precedence rules row by row, and their invariants under random preferences."""

from __future__ import annotations

import hashlib
import json
import timeit
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.canonical import canonical, merge_patch
from tlog.errors import TooLarge, ValidationError
from tlog.policy import (
    DEFAULT_POLICY,
    PreferenceLimits,
    Purpose,
    accepted_purposes,
    decide,
    dropped_settings,
    loosenings,
    make_policy,
    notice_problem,
    parse_policy,
    phase_problem,
    policy_loosenings,
    validate_preferences,
)
from tlog.records import PHASES, format_logged_at
from tlog.server.errors import http_status

# §3, transcribed: code, category, default, override-eligible.
SPEC_TABLE = [
    ("recommendation", "cawg.ai_inference", "allowed", False),
    ("playlist_generation", "cawg.ai_inference", "allowed", False),
    ("search_indexing", "cawg.ai_inference", "allowed", False),
    ("content_organization", "cawg.data_mining", "allowed", False),
    ("talent_discovery", "cawg.data_mining", "flagged", False),
    ("fraud_detection", "cawg.ai_inference", "allowed", True),
    ("content_identification", "cawg.data_mining", "allowed", True),
    ("customer_support", "cawg.ai_inference", "allowed", False),
    ("model_training_discriminative", "cawg.ai_training", "refused", False),
    ("model_training_generative", "cawg.ai_generative_training", "refused", False),
    ("generative_input", "cawg.ai_inference", "allowed", False),
    ("third_party_ai_access", None, "refused", False),
]


def test_default_policy_is_the_spec_table():
    got = [(p.code, p.category, p.default, p.override_eligible) for p in DEFAULT_POLICY.purposes.values()]
    assert got == SPEC_TABLE
    assert DEFAULT_POLICY.digest == hashlib.sha256(DEFAULT_POLICY.document).digest()
    assert DEFAULT_POLICY.document == canonical(json.loads(DEFAULT_POLICY.document))
    assert DEFAULT_POLICY.notice_days == json.loads(DEFAULT_POLICY.document)["notice_days"] == 30  # SPEC §3


def test_policy_document_roundtrip():
    again = parse_policy(DEFAULT_POLICY.document, DEFAULT_POLICY.id)
    assert again.digest == DEFAULT_POLICY.digest
    assert dict(again.purposes) == dict(DEFAULT_POLICY.purposes)
    spaced = json.dumps(json.loads(DEFAULT_POLICY.document), indent=2).encode()
    assert parse_policy(spaced, "v2").document == DEFAULT_POLICY.document  # the digest ignores spelling
    assert parse_policy(DEFAULT_POLICY.document, "v2").notice_days == 30


def _document(notice_days: Any = 30, **purposes: Any) -> bytes:
    table = {code: spec for code, spec in purposes.items()}
    return json.dumps({"purposes": table, "text": "terms", "notice_days": notice_days}).encode()


def _spec(category: Any = "cawg.ai_inference", default: Any = "allowed", eligible: Any = False, **extra: Any) -> dict[str, Any]:
    return {"covers": "something", "category": category, "default": default, "override_eligible": eligible, **extra}


def test_new_codes_may_map_onto_spec_categories():
    policy = parse_policy(
        _document(voice_model_training=_spec("cawg.ai_generative_training", "refused"), vendor_x=_spec(None, "flagged")),
        "2026-09:b",
    )
    assert policy.purposes["vendor_x"].category is None
    assert policy.id == "2026-09:b"


@pytest.mark.parametrize(
    ("data", "policy_id", "fields"),
    [
        (_document(x=_spec("cawg.something_else")), "p", ["purposes.x.category"]),
        (_document(x=_spec("ai_inference")), "p", ["purposes.x.category"]),
        (_document(model_training_generative=_spec("cawg.ai_inference", "refused")), "p", ["purposes.model_training_generative.category"]),
        (_document(third_party_ai_access=_spec("cawg.data_mining")), "p", ["purposes.third_party_ai_access.category"]),
        (_document(x=_spec(default="maybe")), "p", ["purposes.x.default"]),
        (_document(x=_spec(default="allowed, flagged")), "p", ["purposes.x.default"]),
        (_document(x=_spec(eligible="yes")), "p", ["purposes.x.override_eligible"]),
        (_document(x=_spec(extra=1)), "p", ["purposes.x.extra"]),
        (_document(x={"covers": "c", "default": "allowed", "override_eligible": False}), "p", ["purposes.x.category"]),
        (_document(x={**_spec(), "covers": ""}), "p", ["purposes.x.covers"]),
        (_document(X=_spec()), "p", ["purposes.X"]),
        (_document(x=[]), "p", ["purposes.x"]),
        (_document(), "p", ["purposes"]),
        (_document(x=_spec()), "has space", ["id"]),
        (_document(x=_spec()), "x" * 65, ["id"]),
        (_document(x=_spec(), y=_spec("nope", "nope", 0)), "", ["id", "purposes.y.category", "purposes.y.default", "purposes.y.override_eligible"]),
        (json.dumps({"purposes": {"x": _spec()}, "notice_days": 0}).encode(), "p", ["text"]),
        (json.dumps({"purposes": {"x": _spec()}, "text": "t", "notice_days": 0, "id": "p"}).encode(), "p", ["id"]),
        # The notice period is a promise: stated, a whole number of days, at most ten years.
        (json.dumps({"purposes": {"x": _spec()}, "text": "t"}).encode(), "p", ["notice_days"]),
        (_document(notice_days=-1, x=_spec()), "p", ["notice_days"]),
        (_document(notice_days=3651, x=_spec()), "p", ["notice_days"]),
        (_document(notice_days=True, x=_spec()), "p", ["notice_days"]),
        (_document(notice_days="30", x=_spec()), "p", ["notice_days"]),
        (_document(notice_days=None, x=_spec()), "p", ["notice_days"]),
        (b"[]", "p", [""]),
        (b'{"purposes":{"x":{"covers":"c","category":null,"default":"allowed","override_eligible":false}},"text":"t","text":"u","notice_days":0}', "p", ["text"]),
    ],
)
def test_bad_policies_are_refused_naming_fields(data, policy_id, fields):
    with pytest.raises(ValidationError) as e:
        parse_policy(data, policy_id)
    assert sorted(d["field"] for d in e.value.details) == sorted(fields)


# ---------------------------------------------------------------------------------------------------
# Preferences


def test_preferences_normal_form():
    prefs = validate_preferences({"purposes": {"search_indexing": "allow", "fraud_detection": "deny"},
                                  "content": {"sc:t:2": {"no_ai": True}, "sc:t:1": {}, "sc:t:3": {"strict": False}}})
    assert prefs == {
        "no_ai": False,
        "strict": False,
        "purposes": {"fraud_detection": "deny", "search_indexing": "allow"},
        "content": {"sc:t:2": {"no_ai": True, "strict": False, "purposes": {}}},
    }
    assert list(prefs["purposes"]) == ["fraud_detection", "search_indexing"]
    assert validate_preferences({}) == {"no_ai": False, "strict": False, "purposes": {}, "content": {}}


@pytest.mark.parametrize(
    ("doc", "fields"),
    [
        ({"no_ai": 1}, ["no_ai"]),
        ({"strict": "true"}, ["strict"]),
        ({"purposes": {"recommendation": "yes"}}, ["purposes.recommendation"]),
        ({"purposes": {"recommendation": True}}, ["purposes.recommendation"]),
        ({"purposes": {"made_up": "deny"}}, ["purposes.made_up"]),
        ({"purposes": ["recommendation"]}, ["purposes"]),
        ({"content": {"a b": {"no_ai": True}}}, ['content["a b"]']),
        ({"content": {"sc:t:1": {"no_ai": True, "extra": 1}}}, ['content["sc:t:1"].extra']),
        ({"content": {"sc:t:1": {"purposes": {"recommendation": "deny", "nope": "deny"}}}}, ['content["sc:t:1"].purposes.nope']),
        ({"content": {"sc:t:1": True}}, ['content["sc:t:1"]']),
        ({"content": []}, ["content"]),
        ({"artist": "x", "no_ai": None}, ["artist", "no_ai"]),
    ],
)
def test_bad_preferences_name_every_field(doc, fields):
    with pytest.raises(ValidationError) as e:
        validate_preferences(doc, purposes=DEFAULT_POLICY.purposes)
    assert sorted(d["field"] for d in e.value.details) == sorted(fields)


def test_preferences_without_a_policy_accept_any_wellformed_code():
    assert validate_preferences({"purposes": {"made_up": "deny"}})["purposes"] == {"made_up": "deny"}
    with pytest.raises(ValidationError):
        validate_preferences({"purposes": {"Made Up": "deny"}})
    with pytest.raises(ValidationError):
        validate_preferences([])


# ---------------------------------------------------------------------------------------------------
# Decisions, rule by rule. C is the content the use concerns; other content ids must not matter.

C, OTHER = "sc:track:1", "sc:track:2"
LO, LIS = "legal_obligation", "legitimate_interest_security"

DECISIONS = [
    # (why, preferences, purpose, basis, decision)
    ("no preference: the default", {}, "recommendation", None, "allowed"),
    ("default flagged", {}, "talent_discovery", None, "flagged"),
    ("default refused", {}, "model_training_generative", None, "refused"),
    ("default refused, third party", {}, "third_party_ai_access", None, "refused"),
    ("basis where none needed", {}, "recommendation", LO, "flagged"),
    ("basis where none needed, eligible", {}, "fraud_detection", LIS, "flagged"),
    ("basis on a flagged default", {}, "talent_discovery", LO, "flagged"),
    ("basis never lifts a default refusal", {}, "model_training_generative", LO, "refused"),
    ("no_ai: discriminative training", {"no_ai": True}, "model_training_discriminative", None, "refused"),
    ("no_ai: generative training", {"no_ai": True}, "model_training_generative", None, "refused"),
    ("no_ai: third party", {"no_ai": True}, "third_party_ai_access", None, "refused"),
    ("no_ai leaves inference alone", {"no_ai": True}, "recommendation", None, "allowed"),
    ("no_ai leaves the flag alone", {"no_ai": True}, "talent_discovery", None, "flagged"),
    ("no_ai false is no tag", {"no_ai": False}, "recommendation", None, "allowed"),
    ("strict refuses everything", {"strict": True}, "recommendation", None, "refused"),
    ("strict refuses a flagged purpose", {"strict": True}, "talent_discovery", None, "refused"),
    ("strict, eligible purpose, basis", {"strict": True}, "fraud_detection", LO, "allowed_override"),
    ("strict, eligible purpose, other basis", {"strict": True}, "content_identification", LIS, "allowed_override"),
    ("strict, eligible purpose, no basis", {"strict": True}, "fraud_detection", None, "refused"),
    ("basis never lifts a non-eligible purpose", {"strict": True}, "recommendation", LO, "refused"),
    ("explicit deny", {"purposes": {"recommendation": "deny"}}, "recommendation", None, "refused"),
    ("explicit deny of another purpose", {"purposes": {"recommendation": "deny"}}, "search_indexing", None, "allowed"),
    ("explicit deny of a flagged purpose", {"purposes": {"talent_discovery": "deny"}}, "talent_discovery", None, "refused"),
    ("explicit deny, eligible, basis", {"purposes": {"fraud_detection": "deny"}}, "fraud_detection", LO, "allowed_override"),
    ("explicit deny, not eligible, basis", {"purposes": {"customer_support": "deny"}}, "customer_support", LIS, "refused"),
    ("opt-in beats the default refusal", {"purposes": {"model_training_generative": "allow"}}, "model_training_generative", None, "allowed"),
    ("opt-in, basis claimed needlessly", {"purposes": {"model_training_generative": "allow"}}, "model_training_generative", LO, "flagged"),
    ("opt-in replaces the flag", {"purposes": {"talent_discovery": "allow"}}, "talent_discovery", None, "allowed"),
    ("opt-in beats no_ai", {"no_ai": True, "purposes": {"model_training_generative": "allow"}}, "model_training_generative", None, "allowed"),
    ("opt-in to one, no_ai keeps the other", {"no_ai": True, "purposes": {"model_training_generative": "allow"}}, "model_training_discriminative", None, "refused"),
    ("opt-in beats strict", {"strict": True, "purposes": {"recommendation": "allow"}}, "recommendation", None, "allowed"),
    ("strict keeps the rest", {"strict": True, "purposes": {"recommendation": "allow"}}, "playlist_generation", None, "refused"),
    ("explicit allow of a default", {"purposes": {"recommendation": "allow"}}, "recommendation", None, "allowed"),
    ("content strict", {"content": {C: {"strict": True}}}, "recommendation", None, "refused"),
    ("content no_ai", {"content": {C: {"no_ai": True}}}, "model_training_generative", None, "refused"),
    ("content deny", {"content": {C: {"purposes": {"search_indexing": "deny"}}}}, "search_indexing", None, "refused"),
    ("content settings of other content", {"content": {OTHER: {"strict": True}}}, "recommendation", None, "allowed"),
    ("content allow beats artist strict", {"strict": True, "content": {C: {"purposes": {"recommendation": "allow"}}}}, "recommendation", None, "allowed"),
    ("content allow beats artist deny", {"purposes": {"recommendation": "deny"}, "content": {C: {"purposes": {"recommendation": "allow"}}}}, "recommendation", None, "allowed"),
    ("content deny beats artist allow", {"purposes": {"recommendation": "allow"}, "content": {C: {"purposes": {"recommendation": "deny"}}}}, "recommendation", None, "refused"),
    ("content tag beats artist allow", {"purposes": {"model_training_generative": "allow"}, "content": {C: {"no_ai": True}}}, "model_training_generative", None, "refused"),
    ("content strict beats artist allow", {"purposes": {"recommendation": "allow"}, "content": {C: {"strict": True}}}, "recommendation", None, "refused"),
    ("content opt-in beats content tag", {"content": {C: {"no_ai": True, "purposes": {"third_party_ai_access": "allow"}}}}, "third_party_ai_access", None, "allowed"),
    ("content opt-in beats content strict", {"content": {C: {"strict": True, "purposes": {"generative_input": "allow"}}}}, "generative_input", None, "allowed"),
    ("content silent: artist strict applies", {"strict": True, "content": {C: {"no_ai": True}}}, "recommendation", None, "refused"),
    ("content silent: artist allow applies", {"purposes": {"model_training_generative": "allow"}, "content": {C: {"no_ai": True}}}, "model_training_discriminative", None, "refused"),
    ("content no_ai false does not lift artist no_ai", {"no_ai": True, "content": {C: {"no_ai": False}}}, "model_training_generative", None, "refused"),
    ("content strict false does not lift artist strict", {"strict": True, "content": {C: {"strict": False}}}, "recommendation", None, "refused"),
    ("content opt-in of the other content", {"strict": True, "content": {OTHER: {"purposes": {"recommendation": "allow"}}}}, "recommendation", None, "refused"),
    ("content strict, eligible, basis", {"content": {C: {"strict": True}}}, "content_identification", LO, "allowed_override"),
    ("content deny, eligible, basis", {"content": {C: {"purposes": {"fraud_detection": "deny"}}}}, "fraud_detection", LIS, "allowed_override"),
]


@pytest.mark.parametrize(("why", "prefs", "purpose", "basis", "expected"), DECISIONS, ids=[row[0] for row in DECISIONS])
def test_decide(why, prefs, purpose, basis, expected):
    normal = validate_preferences(prefs, purposes=DEFAULT_POLICY.purposes)
    assert decide(DEFAULT_POLICY, purpose, C, normal, basis) == expected


VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def _decision_vectors() -> list[dict[str, Any]]:
    path = VECTORS / "decisions.json"
    if not path.exists():
        pytest.skip(f"the shared decision vectors are not here ({path})")
    return json.loads(path.read_bytes())["cases"]


def test_decide_agrees_with_the_shared_vectors():
    """SPEC v2 §4 decisions from an independent implementation of the rule, under the default policy:
    every case must come out the same (each disagreement is listed)."""
    cases = _decision_vectors()
    assert len(cases) == 484
    wrong = []
    for i, case in enumerate(cases):
        assert set(case) == {"purpose", "content_id", "preferences", "basis", "decision"}, case
        prefs = case["preferences"]
        normal = None if prefs is None else validate_preferences(prefs, purposes=DEFAULT_POLICY.purposes)
        got = decide(DEFAULT_POLICY, case["purpose"], case["content_id"], normal, case["basis"])
        if got != case["decision"]:
            wrong.append(f"case {i}: {case} -> {got}")
    assert not wrong, "\n".join(wrong)
    # The vectors reach every decision, every purpose and both bases.
    assert {c["decision"] for c in cases} == {"allowed", "flagged", "refused", "allowed_override"}
    assert {c["purpose"] for c in cases} == set(DEFAULT_POLICY.purposes)
    assert {c["basis"] for c in cases} == {None, "legal_obligation", "legitimate_interest_security"}


def test_decide_without_preferences_document():
    assert decide(DEFAULT_POLICY, "recommendation", C, None) == "allowed"
    assert decide(DEFAULT_POLICY, "model_training_generative", C, None, LO) == "refused"


def test_decide_refuses_unknown_purpose_and_basis():
    with pytest.raises(ValidationError):
        decide(DEFAULT_POLICY, "mind_reading", C, None)
    with pytest.raises(ValueError):
        decide(DEFAULT_POLICY, "recommendation", C, None, "because")


def _custom_policy() -> Any:
    return make_policy(
        "custom-1",
        [
            Purpose("voice_model_training", "training voice models", "cawg.ai_generative_training", "allowed", False),
            Purpose("vendor_tagging", "a vendor tags tracks", None, "allowed", False),
            Purpose("abuse_scan", "abuse scanning", "cawg.ai_inference", "refused", True),
            Purpose("recommendation", "ranking", "cawg.ai_inference", "allowed", False),
        ],
        "custom terms",
    )


def test_no_ai_covers_new_training_and_per_use_codes():
    policy = _custom_policy()
    no_ai = validate_preferences({"no_ai": True})
    assert decide(policy, "voice_model_training", C, no_ai) == "refused"
    assert decide(policy, "vendor_tagging", C, no_ai) == "refused"
    assert decide(policy, "recommendation", C, no_ai) == "allowed"
    assert decide(policy, "voice_model_training", C, None) == "allowed"


def test_basis_does_not_lift_a_policy_default_refusal():
    policy = _custom_policy()
    assert decide(policy, "abuse_scan", C, None, LO) == "refused"
    assert decide(policy, "abuse_scan", C, validate_preferences({"strict": True}), LO) == "allowed_override"
    assert decide(policy, "abuse_scan", C, validate_preferences({"purposes": {"abuse_scan": "allow"}})) == "allowed"


def test_make_policy_checks_like_parse_policy():
    with pytest.raises(ValidationError):
        make_policy("p", [Purpose("x", "c", "cawg.bogus", "allowed", False)], "t")
    assert list(_custom_policy().purposes) == ["voice_model_training", "vendor_tagging", "abuse_scan", "recommendation"]


# ---------------------------------------------------------------------------------------------------
# Invariants under random preferences

CODES = ["recommendation", "talent_discovery", "fraud_detection", "model_training_generative", "third_party_ai_access"]
CONTENT = [C, OTHER]
_level_fields = {
    "no_ai": st.booleans(),
    "strict": st.booleans(),
    "purposes": st.dictionaries(st.sampled_from(CODES), st.sampled_from(["allow", "deny"]), max_size=3),
}
raw_prefs = st.fixed_dictionaries(
    {}, optional={**_level_fields, "content": st.dictionaries(st.sampled_from(CONTENT), st.fixed_dictionaries({}, optional=_level_fields), max_size=2)}
)
prefs_strategy = raw_prefs.map(validate_preferences)
bases = st.sampled_from([None, LO, LIS])


def _settings(prefs: dict, content_id: str | None) -> dict:
    return prefs if content_id is None else prefs["content"].get(content_id, {})


@settings(max_examples=300, deadline=None)
@given(prefs_strategy, st.sampled_from(CODES))
def test_strict_refuses_unless_allowed_at_same_or_more_specific_level(prefs, code):
    decision = decide(DEFAULT_POLICY, code, C, prefs)
    content = _settings(prefs, C)
    content_allows = content.get("purposes", {}).get(code) == "allow"
    if content.get("strict"):
        assert decision == "refused" or content_allows
    if prefs["strict"]:
        assert decision == "refused" or content_allows or prefs["purposes"].get(code) == "allow"


@settings(max_examples=300, deadline=None)
@given(prefs_strategy, st.sampled_from(CODES), bases)
def test_decision_depends_only_on_this_contents_settings(prefs, code, basis):
    alone = dict(prefs, content={k: v for k, v in prefs["content"].items() if k == C})
    assert decide(DEFAULT_POLICY, code, C, prefs, basis) == decide(DEFAULT_POLICY, code, C, alone, basis)


@settings(max_examples=300, deadline=None)
@given(prefs_strategy, st.sampled_from(CODES), st.sampled_from([LO, LIS]))
def test_basis_rules(prefs, code, basis):
    without = decide(DEFAULT_POLICY, code, C, prefs)
    with_basis = decide(DEFAULT_POLICY, code, C, prefs, basis)
    assert with_basis != "allowed"  # a basis is always looked at
    eligible = DEFAULT_POLICY.purposes[code].override_eligible
    if without == "refused":
        assert with_basis == ("allowed_override" if eligible and DEFAULT_POLICY.purposes[code].default != "refused" else "refused")
    else:
        assert with_basis == "flagged"
    assert without != "allowed_override"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CODES), bases)
def test_no_preferences_means_the_policy_default(code, basis):
    purpose = DEFAULT_POLICY.purposes[code]
    expected = {"allowed": "allowed", "flagged": "flagged", "refused": "refused"}[purpose.default]
    if basis is not None and expected == "allowed":
        expected = "flagged"
    assert decide(DEFAULT_POLICY, code, C, validate_preferences({}), basis) == expected


@settings(max_examples=300, deadline=None)
@given(prefs_strategy, prefs_strategy)
def test_no_loosenings_means_nothing_gets_less_restricted(old, new):
    if loosenings(old, new):
        return
    for code in CODES:
        for content_id in CONTENT:
            before, after = decide(DEFAULT_POLICY, code, content_id, old), decide(DEFAULT_POLICY, code, content_id, new)
            if before == "refused":
                assert after == "refused"
            if before == "flagged":
                assert after in ("flagged", "refused")


@settings(max_examples=200, deadline=None)
@given(prefs_strategy)
def test_preferences_normal_form_is_stable(prefs):
    assert validate_preferences(prefs) == prefs
    assert validate_preferences(json.loads(canonical(prefs))) == prefs
    assert loosenings(prefs, prefs) == []


@pytest.mark.parametrize(
    ("old", "new", "found"),
    [
        ({"no_ai": True}, {}, ["no_ai: cleared"]),
        ({"strict": True}, {"no_ai": True}, ["strict: cleared"]),
        ({"purposes": {"recommendation": "deny"}}, {}, ["purposes.recommendation: deny removed"]),
        ({"purposes": {"recommendation": "deny"}}, {"purposes": {"recommendation": "allow"}}, ["purposes.recommendation: deny changed to allow"]),
        ({}, {"purposes": {"recommendation": "allow"}}, ["purposes.recommendation: allow added"]),
        ({"content": {C: {"strict": True}}}, {}, ['content["sc:track:1"].strict: cleared']),
        ({}, {"content": {C: {"purposes": {"model_training_generative": "allow"}}}},
         ['content["sc:track:1"].purposes.model_training_generative: allow added']),
        # Tightening, or dropping an allow, is not a loosening.
        ({}, {"strict": True, "no_ai": True, "purposes": {"recommendation": "deny"}, "content": {C: {"strict": True}}}, []),
        ({"purposes": {"recommendation": "allow"}}, {}, []),
        ({"purposes": {"recommendation": "allow"}}, {"purposes": {"recommendation": "deny"}}, []),
        ({"content": {C: {"purposes": {"recommendation": "allow"}}}}, {"strict": True}, []),
    ],
)
def test_loosenings(old, new, found):
    assert loosenings(validate_preferences(old), validate_preferences(new)) == found


@settings(max_examples=200, deadline=None)
@given(prefs_strategy, prefs_strategy)
def test_dropped_settings_are_the_old_settings_the_new_document_does_not_keep(old, new):
    assert dropped_settings(old, old) == []
    dropped = dropped_settings(old, new)
    assert all(d["was"] not in (None, False) and d["now"] != d["was"] for d in dropped)
    # old merged over new keeps every old setting: nothing of old is dropped from it
    assert dropped_settings(old, validate_preferences(merge_patch(new, old))) == []
    # and a new document that only adds to old drops nothing
    assert dropped_settings(old, validate_preferences(merge_patch(old, {"purposes": {"search_indexing": "deny"}}))) in (
        [], [{"setting": "purposes.search_indexing", "was": "allow", "now": "deny"}])


@pytest.mark.parametrize(("old", "new", "dropped"), [
    ({"strict": True, "purposes": {"fraud_detection": "allow"}}, {"no_ai": True},
     [{"setting": "strict", "was": True, "now": None}, {"setting": "purposes.fraud_detection", "was": "allow", "now": None}]),
    ({"purposes": {"recommendation": "allow"}}, {"purposes": {"recommendation": "deny"}},
     [{"setting": "purposes.recommendation", "was": "allow", "now": "deny"}]),
    ({"content": {"sc:track:1": {"strict": True}}}, {},
     [{"setting": 'content["sc:track:1"].strict', "was": True, "now": None}]),
    ({"no_ai": True}, {"no_ai": True, "strict": True}, []),
])
def test_dropped_settings(old, new, dropped):
    assert dropped_settings(validate_preferences(old), validate_preferences(new)) == dropped


# ---------------------------------------------------------------------------------------------------
# Notice (§4): what loosens a policy, and how much notice a loosening needs

DAY = 86_400_000
T = 1_790_000_000_000  # ms


def _changed(policy_id: str = "new", notice_days: int = 30, **changes: dict[str, Any]) -> Any:
    """The default policy with some purposes changed ({code: {field: value}}); a code it lacks is added."""
    table = {code: p.as_json() for code, p in DEFAULT_POLICY.purposes.items()}
    for code, fields in changes.items():
        table[code] = {**table.get(code, {"covers": "something new"}), **fields}
    document = json.dumps({"purposes": table, "text": DEFAULT_POLICY.text, "notice_days": notice_days}).encode()
    return parse_policy(document, policy_id)


@pytest.mark.parametrize(("changes", "found"), [
    # A default moving toward allowed, by one step or two.
    ({"model_training_generative": {"default": "flagged"}}, ["model_training_generative: refused → flagged"]),
    ({"model_training_generative": {"default": "allowed"}}, ["model_training_generative: refused → allowed"]),
    ({"talent_discovery": {"default": "allowed"}}, ["talent_discovery: flagged → allowed"]),
    # Becoming override-eligible.
    ({"recommendation": {"override_eligible": True}}, ["recommendation: becomes override-eligible"]),
    # Moving out of the categories `no_ai` denies (a code the operator added: §3 codes keep their category).
    ({"voice_training": {"category": "cawg.ai_training", "default": "refused", "override_eligible": False}}, []),
    # A new purpose, unless refused by default and not override-eligible.
    ({"voice_training": {"category": "cawg.ai_training", "default": "allowed", "override_eligible": False}},
     ["voice_training: new purpose, allowed by default"]),
    ({"voice_training": {"category": "cawg.ai_inference", "default": "flagged", "override_eligible": False}},
     ["voice_training: new purpose, flagged by default"]),
    ({"abuse_scan": {"category": "cawg.ai_inference", "default": "refused", "override_eligible": True}},
     ["abuse_scan: new purpose, override-eligible"]),
    # Tightening is not loosening: a default toward refused, an override withdrawn, a purpose removed.
    ({"recommendation": {"default": "flagged"}, "talent_discovery": {"default": "refused"}}, []),
    ({"fraud_detection": {"override_eligible": False}}, []),
    # Several at once, each named, in the new policy's order.
    ({"talent_discovery": {"default": "allowed"}, "fraud_detection": {"default": "flagged"},
      "customer_support": {"override_eligible": True}},
     ["talent_discovery: flagged → allowed", "customer_support: becomes override-eligible"]),
])
def test_each_clause_of_loosens(changes, found):
    assert policy_loosenings(DEFAULT_POLICY, _changed(**changes)) == found


def test_a_purpose_leaving_what_no_ai_denies_loosens():
    old = _changed("old", voice_training={"category": "cawg.ai_generative_training", "default": "refused",
                                          "override_eligible": False})
    moved = _changed(voice_training={"category": "cawg.data_mining", "default": "refused", "override_eligible": False})
    assert policy_loosenings(old, moved) == [
        "voice_training: category cawg.ai_generative_training → cawg.data_mining, which no_ai does not deny"]
    per_use = _changed("old", vendor={"category": None, "default": "refused", "override_eligible": False})
    assert policy_loosenings(per_use, _changed(vendor={"category": "cawg.ai_inference", "default": "refused",
                                                       "override_eligible": False})) == [
        "vendor: category per use → cawg.ai_inference, which no_ai does not deny"]
    # Between two categories no_ai denies, or two it does not, nothing changes for an artist's tag.
    assert policy_loosenings(old, _changed(voice_training={"category": "cawg.ai_training", "default": "refused",
                                                           "override_eligible": False})) == []
    removed = make_policy("gone", [p for p in old.purposes.values() if p.code != "voice_training"], old.text)
    assert policy_loosenings(old, removed) == []


def test_a_shorter_notice_period_loosens_and_a_longer_one_does_not():
    assert policy_loosenings(DEFAULT_POLICY, _changed(notice_days=29)) == ["notice_days: 30 → 29"]
    assert policy_loosenings(DEFAULT_POLICY, _changed(notice_days=31)) == []
    assert policy_loosenings(DEFAULT_POLICY, _changed("same")) == []


LOOSE = _changed("loose", model_training_generative={"default": "allowed"})


def test_a_loosening_needs_the_notice_the_policy_in_effect_promised():
    schedule = [(T - DAY, 1, DEFAULT_POLICY)]
    why, earliest = notice_problem(schedule, LOOSE, T, T)  # type: ignore[misc]
    assert earliest == T + 30 * DAY
    assert why == ("loosens 'default' — model_training_generative: refused → allowed — but takes "
                   f"effect at {format_logged_at(T)}, before the 30 days' notice 'default' promised (not before "
                   f"{format_logged_at(T + 30 * DAY)})")
    assert notice_problem(schedule, LOOSE, T, T + 30 * DAY - 1) is not None
    assert notice_problem(schedule, LOOSE, T, T + 30 * DAY) is None  # at the earliest allowed time
    assert notice_problem(schedule, LOOSE, T, T + 400 * DAY) is None
    assert notice_problem(schedule, _changed("stricter", recommendation={"default": "refused"}), T, T) is None
    assert notice_problem([], LOOSE, T, T) is None  # the log's first policy replaces none
    one_day = _changed("brief", notice_days=1)
    assert "before the 1 day's notice 'brief' promised" in notice_problem([(T, 1, one_day)], LOOSE, T, T)[0]  # type: ignore[index]
    assert notice_problem([(T, 1, _changed("none", notice_days=0))], LOOSE, T, T) is None


def test_the_notice_is_the_one_promised_when_announced_and_the_comparison_with_what_it_replaces():
    """Several announcements pending at once: O is what would be in effect at E among the earlier policy
    leaves (maybe one announced and not yet in effect); the notice is that of the policy in effect at t."""
    # "week" (announced at T - 1 day with default's 30 days' notice) flags recommendation and promises 7 days.
    week = _changed("week", notice_days=7, recommendation={"default": "flagged"})
    schedule = [(T - DAY, 1, DEFAULT_POLICY), (T + 29 * DAY, 5, week)]
    # Announced at T, before "week" takes effect, for after it does: compared with "week", under default's notice.
    why, earliest = notice_problem(schedule, LOOSE, T, T + 29 * DAY + DAY // 2)  # type: ignore[misc]
    assert earliest == T + 30 * DAY
    assert why.startswith("loosens 'week' — recommendation: flagged → allowed; "
                          "model_training_generative: refused → allowed — but") and "the 30 days' notice 'default' promised" in why
    assert notice_problem(schedule, LOOSE, T, T + 30 * DAY) is None
    # Announced once "week" is in effect: its 7 days' notice is enough.
    assert notice_problem(schedule, LOOSE, T + 29 * DAY, T + 36 * DAY) is None
    why, earliest = notice_problem(schedule, LOOSE, T + 29 * DAY, T + 36 * DAY - 1)  # type: ignore[misc]
    assert earliest == T + 36 * DAY and "the 7 days' notice 'week' promised" in why
    # Taking effect before "week", a copy of default replaces default: no loosening, so at once is fine…
    assert notice_problem(schedule, _changed("undo"), T + DAY, T + DAY) is None
    # …but taking effect after "week", it loosens "week" back and needs default's 30 days.
    why, earliest = notice_problem(schedule, _changed("undo"), T + DAY, T + 29 * DAY)  # type: ignore[misc]
    assert earliest == T + 31 * DAY and why.startswith("loosens 'week' — recommendation: flagged → allowed — but")


def test_a_notice_beyond_the_year_9999_is_named_in_words():
    late = _changed("late", notice_days=3650)
    announced = 253_402_300_799_000 - DAY  # 9999-12-30T23:59:59Z
    why, _ = notice_problem([(0, 1, late)], LOOSE, announced, announced)  # type: ignore[misc]
    assert why.endswith("(not before the year 10000)")


# ---------------------------------------------------------------------------------------------------
# Micro-benchmark: `python tests/test_policy.py`. Not a test.


def benchmark() -> dict[str, float]:
    prefs = validate_preferences({"no_ai": True, "purposes": {"recommendation": "allow"}, "content": {C: {"strict": True}}})

    def us(fn, number: int = 50_000) -> float:
        return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6

    return {
        "decide (no preferences)": us(lambda: decide(DEFAULT_POLICY, "recommendation", C, None)),
        "decide (content + artist settings)": us(lambda: decide(DEFAULT_POLICY, "recommendation", OTHER, prefs)),
    }


if __name__ == "__main__":
    for name, micros in benchmark().items():
        print(f"{name:36s} {micros:6.2f} µs")


@pytest.mark.parametrize("phase", sorted(PHASES))
@pytest.mark.parametrize("code", list(DEFAULT_POLICY.purposes))
def test_training_phases_belong_to_training_purposes(code, phase):
    """SPEC §3: training and fine_tuning only under the two training purposes and third-party access."""
    problem = phase_problem(DEFAULT_POLICY, code, phase)
    allowed = phase not in ("training", "fine_tuning") or code in (
        "model_training_discriminative", "model_training_generative", "third_party_ai_access")
    assert (problem is None) == allowed
    if problem:
        assert "model_training_generative" in problem and repr(code) in problem


def test_preferences_size_and_content_limits():
    small = PreferenceLimits(max_bytes=300, max_content=2)
    two = {"content": {"sc:t:1": {"no_ai": True}, "sc:t:2": {"strict": True}}}
    assert len(validate_preferences(two, limits=small)["content"]) == 2
    with pytest.raises(ValidationError) as e:
        validate_preferences({"content": {**two["content"], "sc:t:3": {}}}, limits=small)
    assert "at most 2 pieces of content" in e.value.message and http_status(e.value) == 400
    with pytest.raises(TooLarge) as big:
        validate_preferences({"purposes": {c: "deny" for c in DEFAULT_POLICY.purposes}}, limits=small)
    assert http_status(big.value) == 413 and "at most 300 bytes" in big.value.message
    # What a log already holds is read back whatever the limits were when it was set.
    validate_preferences({"content": {f"sc:t:{i}": {"no_ai": True} for i in range(5000)}}, limits=None)


def test_accepted_purposes_are_those_in_effect_and_announced():
    def policy(pid: str, *codes: str):
        return make_policy(pid, [Purpose(c, c, "cawg.ai_inference", "allowed", False) for c in codes], "t")

    schedule = ((0, 1, policy("old", "a", "gone")), (1000, 5, policy("now", "a", "b")),
                (5000, 9, policy("later", "a", "c")))
    assert accepted_purposes(schedule, 2000) == {"a", "b", "c"}  # "gone" was replaced, "c" is announced
    assert accepted_purposes(schedule, 6000) == {"a", "c"}
    assert accepted_purposes(schedule, 500) == {"a", "gone", "b", "c"}
    assert accepted_purposes((), 0) == frozenset()
