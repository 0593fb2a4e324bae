"""Public leaves (SPEC §2.2, tlog/leaf.py): every type byte-equal to the JCS reference, the per-record
fast forms equal to the checked ones, the builders from details, strict parsing, version 1 refused by name."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.canonical import MAX_SAFE_INT
from tlog.errors import ValidationError
from tlog.leaf import (
    _ALL_LEAF_FIELDS,
    MAX_LEAF_SIZE,
    Leaf,
    _leaf_problems,
    _use_leaf_ok,
    build_leaf,
    parse_leaf,
    preference_leaf,
    use_leaf,
    use_leaf_unchecked,
)
from tlog.records import (
    DECISIONS,
    PHASES,
    POLICY_ID,
    PURPOSE_CODE,
    artist_tag,
    details_hash,
    format_logged_at,
    preference_details,
    use_details,
    validate_use,
)

from .test_records import DROP, NONCE, NOW, VRF, submitted, validate

H1, H2, H3 = b"\x01" * 32, b"\xab" * 32, bytes(range(32))


def use_example(**changes: Any) -> Leaf:
    leaf = Leaf(
        type="use", prev=H1, logged_at="2026-08-01T12:00:00.123Z", details=H2, purpose="recommendation",
        phase="inference", decision="allowed", policy="default", artist=H3, aseq=7, aprev=1041, invocations=240,
    )
    return replace(leaf, **changes)


EXAMPLES = [
    use_example(),
    use_example(aseq=1, aprev=None),
    use_example(type="refusal", decision="refused", aseq=2, aprev=0),
    Leaf(type="preference", prev=H1, logged_at="2026-08-01T12:00:00.000Z", details=H2, artist=H3, aseq=1, aprev=None, by="artist"),
    Leaf(type="preference", prev=H1, logged_at="2026-08-01T12:00:00.000Z", details=H2, artist=H3, aseq=9, aprev=5, by="service"),
    Leaf(type="policy", prev=bytes(32), logged_at="2026-08-01T12:00:00.000Z", details=H2, policy="v2.2026-08",
         effective_at="2026-08-01T12:00:00.000Z"),
    Leaf(type="policy", prev=H1, logged_at="2026-08-01T12:00:00.000Z", details=H2, policy="v3",
         effective_at="2027-01-05T00:00:00.000Z"),
    Leaf(type="binding", prev=H1, logged_at="2026-08-01T12:00:00.000Z", details=H2, artist=H3, aseq=4, aprev=2),
    Leaf(type="erasure", prev=H1, logged_at="2026-08-01T12:00:00.000Z", artist=H3, erased=12),
    Leaf(type="log", prev=bytes(32), logged_at="2026-08-01T12:00:00.000Z", origin="example.com/ai-log", vrf=H2),
    Leaf(type="map", prev=H1, logged_at="2026-08-01T12:00:00.000Z", root=H2),
]


def reference_json(leaf: Leaf) -> bytes:
    """What §2.2 says the leaf is, spelt out field by field, through the reference encoder."""
    obj: dict[str, Any] = {"v": 2, "type": leaf.type, "prev": leaf.prev.hex(), "logged_at": leaf.logged_at}
    if leaf.type in ("use", "refusal"):
        obj |= {"purpose": leaf.purpose, "phase": leaf.phase, "decision": leaf.decision, "policy": leaf.policy,
                "invocations": leaf.invocations}
    if leaf.type in ("use", "refusal", "preference", "binding"):
        obj |= {"artist": leaf.artist.hex(), "aseq": leaf.aseq, "aprev": leaf.aprev}
    if leaf.type == "preference":
        obj["by"] = leaf.by
    if leaf.type == "policy":
        obj |= {"policy": leaf.policy, "effective_at": leaf.effective_at}
    if leaf.type == "erasure":
        obj |= {"artist": leaf.artist.hex(), "erased": leaf.erased}
    if leaf.type == "log":
        obj |= {"origin": leaf.origin, "vrf": leaf.vrf.hex()}
    if leaf.type == "map":
        obj["root"] = leaf.root.hex()
    elif leaf.type not in ("erasure", "log"):
        obj["details"] = leaf.details.hex()
    return rfc8785.dumps(obj)


@pytest.mark.parametrize("leaf", EXAMPLES, ids=lambda leaf: leaf.type)
def test_leaf_roundtrip(leaf):
    data = build_leaf(leaf)
    assert data == reference_json(leaf)
    assert parse_leaf(data) == leaf


def test_spec_example_shape():
    data = json.loads(build_leaf(use_example()))
    assert data == {
        "v": 2, "type": "use", "prev": H1.hex(), "logged_at": "2026-08-01T12:00:00.123Z", "purpose": "recommendation",
        "phase": "inference", "decision": "allowed", "policy": "default", "artist": H3.hex(), "aseq": 7, "aprev": 1041,
        "invocations": 240, "details": H2.hex(),
    }


hashes = st.binary(min_size=32, max_size=32)
use_leaves = st.builds(
    Leaf,
    type=st.just("use"),
    prev=hashes,
    logged_at=st.integers(0, 253402300799999).map(format_logged_at),
    details=hashes,
    purpose=st.from_regex(PURPOSE_CODE, fullmatch=True),
    phase=st.sampled_from(sorted(PHASES)),
    decision=st.sampled_from(sorted(DECISIONS)),
    policy=st.from_regex(POLICY_ID, fullmatch=True),
    artist=hashes,
    aseq=st.integers(1, MAX_SAFE_INT),
    aprev=st.integers(0, MAX_SAFE_INT),
    invocations=st.integers(1, MAX_SAFE_INT),
).map(lambda leaf: replace(
    leaf,
    type="refusal" if leaf.decision == "refused" else "use",
    aprev=None if leaf.aseq == 1 else leaf.aprev,
))


@settings(max_examples=300, deadline=None)
@given(use_leaves)
def test_fast_use_leaf_equals_canonical(leaf):
    data = build_leaf(leaf)
    assert data == reference_json(leaf)
    assert parse_leaf(data) == leaf


@settings(max_examples=300, deadline=None)
@given(use_leaves, st.sampled_from(["recs", "fraud-ml"]), st.integers(0, MAX_SAFE_INT))
def test_the_sequencers_leaf_is_the_checked_leaf(leaf, service, index):
    """The sequencer skips the leaf's re-check (it vouches for every value): its bytes must be those the
    checked path builds, for every decision, first leaf (aprev null) or not."""
    record = validate_use(submitted(purpose=leaf.purpose, phase=leaf.phase, invocations=leaf.invocations), now=NOW,
                          purposes={leaf.purpose})
    details = use_details(record, service=service, index=index, logged_at=leaf.logged_at, decision=leaf.decision,
                          policy=leaf.policy, nonce=NONCE)
    checked = build_leaf(use_leaf(details, prev=leaf.prev, artist=leaf.artist, aseq=leaf.aseq, aprev=leaf.aprev))
    fast = use_leaf_unchecked(details, prev=leaf.prev, artist=leaf.artist, aseq=leaf.aseq, aprev=leaf.aprev)
    assert fast == checked
    assert parse_leaf(fast).details == details_hash(details)


# Field values that are wrong for a use leaf in one way or another, to hold the per-record fast check
# to the field-by-field one that explains failures.
odd_values = st.sampled_from([None, "", 0, -1, 1, True, 1.0, b"", b"\x00" * 31, b"\x00" * 33, "x" * 65, "Refused", "A", ["use"]])


@settings(max_examples=300, deadline=None)
@given(use_leaves, st.sampled_from(_ALL_LEAF_FIELDS), odd_values)
def test_fast_check_agrees_with_field_checks(leaf, name, value):
    odd = replace(leaf, **{name: value})
    assert _use_leaf_ok(odd) == (not _leaf_problems(odd))
    if _leaf_problems(odd):
        with pytest.raises(ValidationError):
            build_leaf(odd)


@pytest.mark.parametrize(
    ("leaf", "field"),
    [
        (use_example(decision="refused"), "decision"),
        (use_example(type="refusal"), "decision"),
        (use_example(aseq=0), "aseq"),
        (use_example(aseq=1), "aprev"),  # aprev must be null at aseq 1
        (use_example(aprev=None), "aprev"),
        (use_example(by="artist"), "by"),
        (use_example(prev=b"\x00" * 31), "prev"),
        (use_example(details="ab" * 32), "details"),
        (use_example(logged_at="2026-08-01T12:00:00Z"), "logged_at"),
        (use_example(purpose="Bad code"), "purpose"),
        (use_example(policy="a" * 65), "policy"),
        (use_example(phase="thinking"), "phase"),
        (use_example(type="other"), "type"),
        (Leaf(type="policy", prev=H1, logged_at="2026-08-01T12:00:00.000Z", details=H2, policy="p", artist=H3), "artist"),
        (use_example(invocations=0), "invocations"),
        (use_example(invocations=None), "invocations"),
        (Leaf(type="map", prev=H1, logged_at="2026-08-01T12:00:00.000Z", root=None), "root"),
        (Leaf(type="policy", prev=H1, logged_at="2026-08-01T12:00:00.000Z", details=H2, policy="p",
              effective_at="2026-07-31T12:00:00.000Z"), "effective_at"),  # before it was announced
        (Leaf(type="log", prev=H1, logged_at="2026-08-01T12:00:00.000Z", origin="o", vrf=H2), "prev"),
        (Leaf(type="log", prev=bytes(32), logged_at="2026-08-01T12:00:00.000Z", origin="a b", vrf=H2), "origin"),
        (Leaf(type="erasure", prev=H1, logged_at="2026-08-01T12:00:00.000Z", artist=H3, erased=0), "erased"),
        (Leaf(type="erasure", prev=H1, logged_at="2026-08-01T12:00:00.000Z", artist=H3, erased=1, aseq=1), "aseq"),
        (Leaf(type="preference", prev=H1, logged_at="2026-08-01T12:00:00.000Z", details=H2, artist=H3, aseq=1, by="auditor"), "by"),
    ],
)
def test_build_refuses_bad_leaves(leaf, field):
    with pytest.raises(ValidationError) as e:
        build_leaf(leaf)
    assert field in [d["field"] for d in e.value.details]


def _leaf_text(**changes: Any) -> bytes:
    obj = json.loads(build_leaf(use_example()))
    obj.update(changes)
    return rfc8785.dumps({k: v for k, v in obj.items() if v is not DROP})


@pytest.mark.parametrize(
    "data",
    [
        build_leaf(use_example()).replace(b",", b", ", 1),  # not canonical whitespace
        json.dumps(json.loads(build_leaf(use_example()))).encode(),  # not canonical order or spacing
        build_leaf(use_example())[:-1] + b',"v":2}',  # duplicate key
        _leaf_text(v=1),
        _leaf_text(v=3),
        _leaf_text(v=True),
        _leaf_text(extra="x"),
        _leaf_text(by="artist"),
        _leaf_text(aprev=DROP),
        _leaf_text(details=DROP),
        _leaf_text(prev="AB" * 32),  # uppercase hex
        _leaf_text(prev="ab" * 31),
        _leaf_text(artist=5),
        _leaf_text(aseq=1),  # aprev 1041 at aseq 1
        _leaf_text(aseq="7"),
        _leaf_text(invocations=DROP),
        _leaf_text(invocations=0),
        _leaf_text(decision="refused"),
        _leaf_text(type="refusal"),
        _leaf_text(type="nope"),
        _leaf_text(type=["use"]),
        _leaf_text(phase=["inference"]),
        _leaf_text(logged_at="2026-08-01T12:00:00.123+00:00"),
        build_leaf(use_example()).replace(b'"aseq":7', b'"aseq":7.0'),
        b"[]",
        b"not json",
        b"{" + b" " * MAX_LEAF_SIZE + b"}",
    ],
)
def test_parse_leaf_rejects(data):
    with pytest.raises(ValidationError):
        parse_leaf(data)


def test_a_version_1_leaf_is_refused_by_name():
    """A leaf of a log made by tlog 0.1 is never misread as version 2: the error says which version it is."""
    v1 = _leaf_text(v=1, invocations=DROP)
    with pytest.raises(ValidationError) as e:
        parse_leaf(v1)
    assert "version 1 leaf" in e.value.details[0]["message"]


def test_use_and_preference_leaf_from_details():
    record = validate(submitted())
    details = use_details(record, service="recs", index=9, logged_at="2026-08-01T12:00:00.123Z", decision="refused", policy="default", nonce=NONCE)
    tag, _ = artist_tag(VRF, record["artist_id"])
    leaf = use_leaf(details, prev=H1, artist=tag, aseq=2, aprev=4)
    assert (leaf.type, leaf.decision, leaf.purpose, leaf.phase, leaf.details) == (
        "refusal", "refused", "recommendation", "inference", details_hash(details))
    assert parse_leaf(build_leaf(leaf)) == leaf

    prefs = preference_details("sc:user:42", {"no_ai": True}, by="artist", service=None, index=10, logged_at="2026-08-01T12:00:00.200Z", nonce=NONCE)
    pleaf = preference_leaf(prefs, prev=H1, artist=tag, aseq=3, aprev=9)
    assert (pleaf.type, pleaf.by, pleaf.details) == ("preference", "artist", details_hash(prefs))
    assert parse_leaf(build_leaf(pleaf)) == pleaf
