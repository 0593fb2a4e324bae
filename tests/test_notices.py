"""What an announced policy change means for one artist (tlog/notices.py): examples in words, and
properties that hold it to the SPEC §4 decision itself."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.notices import artist_effects, effect_words, when_words
from tlog.policy import DEFAULT_POLICY, Purpose, decide, make_policy, validate_preferences
from tlog.records import BASES

WHEN = when_words(1_799_107_200_000)  # 2027-01-05T00:00:00Z
CODES = list(DEFAULT_POLICY.purposes)


def changed(policy_id: str = "new", base=DEFAULT_POLICY, extra: tuple[Purpose, ...] = (), drop: tuple[str, ...] = (),
            **fields: dict) -> object:
    table = [dataclasses.replace(p, **fields.get(p.code, {})) for p in base.purposes.values() if p.code not in drop]
    return make_policy(policy_id, [*table, *extra], base.text)


LOOSE = changed(model_training_generative={"default": "allowed"})


def sentences(old, new, prefs) -> list[str]:
    return [effect_words(e, WHEN) for e in artist_effects(old, new, prefs)]


def test_when_words():
    assert WHEN == "5 January 2027"
    assert when_words(1_799_107_200_000 + 14 * 3_600_000 + 30 * 60_000) == "5 January 2027 at 14:30 UTC"


def test_a_purpose_allowed_by_default_is_told_to_an_artist_who_set_nothing():
    assert sentences(DEFAULT_POLICY, LOOSE, None) == [
        "From 5 January 2027, model_training_generative becomes allowed for your tracks unless you deny it."]
    (e,) = artist_effects(DEFAULT_POLICY, LOOSE, None)
    assert (e.before, e.after, e.changes) == ("refused", "allowed", True)


def test_an_artist_who_denied_it_is_told_nothing_changes():
    prefs = validate_preferences({"purposes": {"model_training_generative": "deny"}})
    assert sentences(DEFAULT_POLICY, LOOSE, prefs) == [
        "From 5 January 2027, model_training_generative becomes allowed by default, but nothing changes for your "
        "tracks: you denied it."]
    assert not artist_effects(DEFAULT_POLICY, LOOSE, prefs)[0].changes
    strict = validate_preferences({"strict": True})
    assert sentences(DEFAULT_POLICY, LOOSE, strict)[0].endswith("nothing changes for your tracks: your strict setting "
                                                                "refuses it.")
    no_ai = validate_preferences({"no_ai": True})
    assert sentences(DEFAULT_POLICY, LOOSE, no_ai)[0].endswith("nothing changes for your tracks: your \u201cno AI\u201d "
                                                               "setting refuses it.")


def test_a_tightening_and_an_opt_in():
    tighter = changed(talent_discovery={"default": "refused"})
    assert sentences(DEFAULT_POLICY, tighter, None) == [
        "From 5 January 2027, talent_discovery becomes refused for your tracks unless you allow it."]
    opted_in = validate_preferences({"purposes": {"talent_discovery": "allow"}})
    assert sentences(DEFAULT_POLICY, tighter, opted_in) == [
        "From 5 January 2027, talent_discovery becomes refused by default, but nothing changes for your tracks: you "
        "allowed it."]


def test_a_purpose_leaving_what_no_ai_covers():
    voice = Purpose("voice_models", "training voice models", "cawg.ai_training", "allowed", False)
    old = changed("old", extra=(voice,))
    new = changed(extra=(dataclasses.replace(voice, category="cawg.data_mining"),))
    no_ai = validate_preferences({"no_ai": True})
    assert sentences(old, new, no_ai) == [
        "From 5 January 2027, voice_models is no longer covered by your \u201cno AI\u201d setting and becomes allowed "
        "for your tracks unless you deny it."]
    assert sentences(old, new, None) == [
        "From 5 January 2027, voice_models is counted as another kind of AI use, but nothing changes for your tracks."]


def test_an_override_over_an_opt_out_new_and_removed_purposes_and_own_tracks():
    overridable = changed(talent_discovery={"override_eligible": True})
    denied = validate_preferences({"purposes": {"talent_discovery": "deny"}})
    assert sentences(DEFAULT_POLICY, overridable, denied) == [
        "From 5 January 2027, talent_discovery may go ahead over your opt-out, but only under a legal obligation or "
        "to protect the platform's security, and each such use is logged as an override."]
    assert sentences(overridable, DEFAULT_POLICY, denied) == [
        "From 5 January 2027, talent_discovery may no longer go ahead over your opt-out."]
    assert not artist_effects(DEFAULT_POLICY, overridable, None)[0].changes
    lyrics = Purpose("lyrics_analysis", "reading lyrics", "cawg.data_mining", "flagged", False)
    assert sentences(DEFAULT_POLICY, changed(extra=(lyrics,)), None) == [
        "From 5 January 2027, the platform may use music for a new purpose, lyrics_analysis (reading lyrics): "
        "allowed for your tracks, flagged for review, unless you deny it."]
    pre_denied = validate_preferences({"purposes": {"lyrics_analysis": "deny"}})
    assert sentences(DEFAULT_POLICY, changed(extra=(lyrics,)), pre_denied)[0].endswith(
        ": refused for your tracks, as you denied it.")
    assert sentences(DEFAULT_POLICY, changed(drop=("talent_discovery",)), None) == [
        "From 5 January 2027, talent_discovery is no longer a purpose the platform may use your tracks for."]
    one_track = validate_preferences({"content": {"sc:track:1": {"no_ai": True}}})
    assert sentences(DEFAULT_POLICY, LOOSE, one_track) == [
        "From 5 January 2027, model_training_generative becomes allowed for your tracks unless you deny it. Tracks "
        "with settings of their own for it keep them."]


def test_only_the_rules_count_not_the_wording():
    reworded = changed(recommendation={"covers": "other words"})
    assert artist_effects(DEFAULT_POLICY, reworded, None) == []
    assert artist_effects(DEFAULT_POLICY, DEFAULT_POLICY, None) == []


# --- properties -----------------------------------------------------------------------------------

settings_ = st.fixed_dictionaries({}, optional={
    "no_ai": st.booleans(), "strict": st.booleans(),
    "purposes": st.dictionaries(st.sampled_from(CODES), st.sampled_from(["allow", "deny"]), max_size=4)})
preferences = st.builds(lambda top, content: validate_preferences({**top, "content": content}), settings_,
                        st.dictionaries(st.sampled_from(["sc:track:1", "sc:track:2"]), settings_, max_size=2))


@st.composite
def policies(draw, policy_id: str):
    table = []
    for p in DEFAULT_POLICY.purposes.values():
        if draw(st.integers(0, 9)) == 0:
            continue  # removed
        table.append(dataclasses.replace(p, default=draw(st.sampled_from(["allowed", "flagged", "refused"])),
                                         override_eligible=draw(st.booleans())))
    return make_policy(policy_id, table or [DEFAULT_POLICY.purposes["recommendation"]], "t")


@settings(max_examples=300, deadline=None)
@given(policies("old"), policies("new"), preferences, st.sampled_from([None, *sorted(BASES)]))
def test_every_change_of_a_decision_is_told_and_only_those_say_it_changes(old, new, prefs, basis):
    """For a track without settings of its own: whenever the decision of some use (with or without a
    basis) differs between the two policies, that purpose has an effect that says it changes; an effect
    that says nothing changes has the same decisions under both; and the words agree."""
    effects = {e.purpose: e for e in artist_effects(old, new, prefs)}
    for code in old.purposes.keys() & new.purposes.keys():
        before, after = (decide(p, code, "sc:track:other", prefs, basis) for p in (old, new))
        e = effects.get(code)
        if before != after:
            assert e is not None and e.changes, (code, before, after)
        if e is not None and not e.changes:
            assert before == after
        if e is not None and basis is None:
            assert (e.before, e.after) == (before, after)
    for e in effects.values():
        words = effect_words(e, WHEN)
        assert words.startswith(f"From {WHEN}, ") and e.purpose in words
        assert ("nothing changes for your tracks" in words) == (not e.changes and e.before is not None
                                                                and e.after is not None)
        denied = (prefs.get("purposes") or {}).get(e.purpose) == "deny"
        if denied:  # an artist who denied a purpose is never told it becomes allowed for its tracks
            assert "becomes allowed for your tracks" not in words and e.after in (None, "refused")
