"""canonical(): byte-equal to the `rfc8785` reference for everything in the SPEC's JSON subset, and
refusing everything outside it. loads_strict(): RFC 8259 plus the SPEC's refusals, naming paths."""

from __future__ import annotations

import enum
import json
import timeit

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.canonical import MAX_SAFE_INT, canonical, join_path, loads_strict, merge_patch
from tlog.errors import DETAIL_CHARS, DETAILS_KEPT, ValidationError, bounded_details, cut, more_detail, problem_count

# Valid Unicode text (no lone surrogates), with astral and U+E000–U+FFFF characters well represented,
# since that is where JCS order (UTF-16) and code-point order part.
_chars = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["\ue000", "\uffff", "\U0001f600", "\U00010000", "\x00", "\x1f", "\x7f", '"', "\\", "/", "\u2028"]),
)
texts = st.text(_chars, max_size=12)
safe_ints = st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT)
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def field_paths(excinfo: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [d["field"] for d in excinfo.value.details]


# ---------------------------------------------------------------------------------------------------
# canonical


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_equals_reference(value):
    assert canonical(value) == rfc8785.dumps(value)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(texts, safe_ints, min_size=2, max_size=6))
def test_key_order_is_utf16_code_units(obj):
    assert canonical(obj) == rfc8785.dumps(obj)


def test_astral_key_sorts_before_private_use_key():
    # Code-point order would put U+E000 first; UTF-16 puts the surrogate pair (0xD83D…) first.
    obj = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert canonical(obj) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()
    assert canonical(obj) == rfc8785.dumps(obj)


def test_string_escaping_matches_jcs():
    every_control = "".join(chr(c) for c in range(0x20))
    value = every_control + '"\\/\x7f\u2028\u2029é\U0001f600'
    out = canonical(value)
    assert out == rfc8785.dumps(value)
    assert b"\\b\\t\\n\\u000b\\f\\r" in out and b"\\u001f" in out  # short forms, lowercase hex
    assert "/\x7f\u2028".encode() in out  # neither '/' nor DEL nor U+2028 is escaped


@pytest.mark.parametrize("n", [0, -0, 1, -1, MAX_SAFE_INT, -MAX_SAFE_INT])
def test_safe_integers(n):
    assert canonical(n) == str(n).encode()


class Colour(enum.Enum):
    RED = 1


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyDict(dict):
    pass


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (1.0, ""),
        ({"a": 0.5}, "a"),
        ({"a": [1, {"b": float("nan")}]}, "a[1].b"),
        ({"a": float("inf")}, "a"),
        (2**53, ""),
        (-(2**53), ""),
        ({"n": 2**64}, "n"),
        ((1, 2), ""),
        ({"t": (1,)}, "t"),
        ({"s": {1, 2}}, "s"),
        ({"b": b"bytes"}, "b"),
        ({"e": Colour.RED}, "e"),
        ({"x": MyStr("x")}, "x"),
        ({"x": MyInt(1)}, "x"),
        ({"x": MyDict()}, "x"),
        ({"x": object()}, "x"),
        ({1: "a"}, ""),
        ({"a": {None: 1}}, "a"),
        ({"s": "\ud800"}, "s"),
        ({"s": ["ok", "a\udfffb"]}, "s[1]"),
        ({"\udc00": 1}, '["\\udc00"]'),
        ({"é": 1.5}, '["é"]'),  # non-ASCII keys take the exact path; errors are the same
    ],
)
def test_canonical_rejects_outside_subset(value, path):
    with pytest.raises(ValidationError) as e:
        canonical(value)
    assert field_paths(e) == [path]


def test_canonical_rejects_deep_nesting_cleanly():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValidationError):
        canonical(deep)


def test_join_path():
    assert join_path("", "records") == "records"
    assert join_path(join_path("records", 3), "system") == "records[3].system"
    assert join_path("content", "sc:track:1") == 'content["sc:track:1"]'
    assert join_path("", "a b") == '["a b"]'


# ---------------------------------------------------------------------------------------------------
# loads_strict


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_loads_roundtrip(value):
    assert loads_strict(canonical(value)) == value
    # Other spellings of the same value: \u escapes everywhere (ensure_ascii), spaces, str input.
    assert loads_strict(json.dumps(value, ensure_ascii=True, indent=1)) == value
    assert loads_strict(json.dumps(value, ensure_ascii=False).encode()) == value


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(texts, json_values, min_size=1, max_size=4), st.data())
def test_any_duplicate_key_is_found(obj, data):
    key = data.draw(st.sampled_from(sorted(obj)))
    dup = data.draw(json_values)
    members = [json.dumps(k) + ":" + json.dumps(v) for k, v in obj.items()]
    members.insert(data.draw(st.integers(0, len(members))), json.dumps(key) + ":" + json.dumps(dup))
    raw = "{" + ",".join(members) + "}"
    with pytest.raises(ValidationError) as e:
        loads_strict(raw.encode())
    assert e.value.details == [{"field": join_path("", key), "message": "duplicate key"}]


@pytest.mark.parametrize(
    ("raw", "paths"),
    [
        (b'{"a":1,"a":1}', ["a"]),
        (b'{"records":[{},{},{},{"system":{"id":"x","id":"y"}}]}', ["records[3].system.id"]),
        (b'{"a:":1,"a\\u003a":2}', ['["a:"]']),  # an escaped colon cannot hide a duplicate
        (b'{"x":{"b":"c:d","b":"e"}}', ["x.b"]),
        (b"1.0", [""]),
        (b'{"n":1e5}', ["n"]),
        (b'{"n":1E-2}', ["n"]),
        (b'{"n":-0.0}', ["n"]),
        (b'{"n":[1,2.5]}', ["n[1]"]),
        (b'{"n":9007199254740992}', ["n"]),
        (b'{"n":-9007199254740992}', ["n"]),
        (b'{"n":18446744073709551616}', ["n"]),
        (b'{"n":' + b"9" * 5000 + b"}", ["n"]),
        (b'{"n":NaN}', ["n"]),
        (b'{"n":Infinity}', ["n"]),
        (b'{"n":-Infinity}', ["n"]),
        (b'{"s":"\\ud800"}', ["s"]),
        (b'{"s":"\\udc00\\ud800"}', ["s"]),
        (b'{"s":["\\uD83D"]}', ["s[0]"]),
        (b'{"\\ud800":1}', ['["\\ud800"]']),
        (b'{"a":1.5,"b":[NaN],"a":2}', ["a", "a", "b[0]"]),  # every problem, not just the first
    ],
)
def test_loads_rejects_values_naming_paths(raw, paths):
    with pytest.raises(ValidationError) as e:
        loads_strict(raw)
    assert sorted(field_paths(e)) == sorted(paths)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"{",
        b'{"a":1,}',
        b"[1,]",
        b"{'a':1}",
        b'{"a":1} x',
        b"// c\n1",
        b"01",
        b"+1",
        b".5",
        b"1.",
        b"0x10",
        b'"\x01"',  # raw control character in a string
        b'"\xff"',  # invalid UTF-8
        b'"\xc0\xaf"',  # overlong encoding
        b'"\xed\xa0\x80"',  # a UTF-8-encoded surrogate
        b"\xef\xbb\xbf{}",  # BOM
        b"[" * 100_000,
        b"[" * 2000 + b"]" * 2000,
        b"tru",
        b"True",
        b"None",
        b'"\\x41"',
        b'"\\u12"',
    ],
)
def test_loads_rejects_malformed(raw):
    with pytest.raises(ValidationError) as e:
        loads_strict(raw)
    assert field_paths(e) == [""]


def test_loads_rejects_lone_surrogate_in_str_input():
    with pytest.raises(ValidationError):
        loads_strict('"\ud800"')


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'"\\ud83d\\ude00"', "\U0001f600"),
        (b'"\\u0000"', "\x00"),
        (b"-0", 0),
        (b" \t\n\r[ ] ", []),
        (b'{"a":"x\\u003ay"}', {"a": "x:y"}),
        (b'{"a:":1}', {"a:": 1}),
        (b"9007199254740991", MAX_SAFE_INT),
        (b"-9007199254740991", -MAX_SAFE_INT),
        (b'"\\/"', "/"),
        (bytearray(b"[1]"), [1]),
        (memoryview(b"[true,false,null]"), [True, False, None]),
    ],
)
def test_loads_accepts(raw, value):
    assert loads_strict(raw) == value


# ---------------------------------------------------------------------------------------------------
# Micro-benchmark: `python tests/test_canonical.py`. Not a test (the machine is shared and noisy).


def _details() -> dict:
    return {
        "event_id": "recs-2026-08-01-000123", "content_id": "sc:track:123", "artist_id": "sc:user:42",
        "purpose": "recommendation", "phase": "inference",
        "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.07.3"},
        "occurred_at": "2026-08-01T12:00:00Z", "invocations": 1, "window_end": None,
        "detail": "daily candidate scoring", "basis": None, "service": "recs", "index": 123456,
        "logged_at": "2026-08-01T12:00:00.123Z", "decision": "allowed", "policy": "default",
        "nonce": "AAECAwQFBgcICQoLDA0ODw==",
    }


def benchmark() -> dict[str, float]:
    """Best-of-7 microseconds per call."""
    details = _details()
    record = {k: details[k] for k in list(details)[:11]}
    one = json.dumps(record).encode()
    batch = json.dumps({"records": [dict(record, event_id=f"e{i}") for i in range(1000)]}).encode()

    def us(fn, number: int, per: int = 1) -> float:
        return min(timeit.repeat(fn, number=number, repeat=7)) / number / per * 1e6

    return {
        "canonical(details)": us(lambda: canonical(details), 20_000),
        "loads_strict(record)": us(lambda: loads_strict(one), 20_000),
        "loads_strict(1000 records) per record": us(lambda: loads_strict(batch), 10, 1000),
    }


if __name__ == "__main__":
    for name, micros in benchmark().items():
        print(f"{name:42s} {micros:6.2f} µs")


# ---------------------------------------------------------------------------------------------------
# Bounded errors (issue 15): a path and a list of problems never grow with the input


@given(parent=st.text(max_size=400), key=st.one_of(st.integers(0, 10**9), st.text(max_size=5000)))
def test_join_path_is_bounded(parent, key):
    path = join_path(cut(parent), key)
    assert len(path) <= DETAIL_CHARS
    if len(parent) + len(str(key)) < DETAIL_CHARS // 3:
        assert not path.endswith("…")  # short paths are never cut


@settings(max_examples=50, deadline=None)
@given(key_chars=st.integers(0, 50_000), floats=st.integers(1, 20_000), depth=st.integers(0, 50))
def test_problems_of_any_body_are_bounded_and_counted(key_chars, floats, depth):
    body = (b"[" * depth + b'{"' + b"k" * key_chars + b'": [' + b",".join([b"1.5"] * floats) + b"]}"
            + b"]" * depth)
    with pytest.raises(ValidationError) as e:
        loads_strict(body)
    details = e.value.details
    assert len(details) <= DETAILS_KEPT + 1
    assert all(len(d["field"]) <= DETAIL_CHARS and len(d["message"]) <= DETAIL_CHARS for d in details)
    assert problem_count(details) == floats  # every float is counted, listed or not
    assert len(e.value.message) <= 2 * DETAIL_CHARS + 40


@given(n=st.integers(0, 500), limit=st.integers(1, 50), more=st.integers(0, 10**6))
def test_bounded_details_keep_the_first_and_count_the_rest(n, limit, more):
    details = [{"field": f"f{i}" * 100, "message": "m"} for i in range(n)] + ([more_detail(more)] if more else [])
    shown = bounded_details(details, limit)
    assert problem_count(shown) == n + more
    listed = [d for d in shown if "more" not in d]
    assert len(listed) == min(n, limit) and len(shown) <= limit + 1
    assert [d["field"] for d in listed] == [cut(f"f{i}" * 100) for i in range(min(n, limit))]
    assert all(len(d["field"]) <= DETAIL_CHARS for d in shown)


def test_problems_past_the_cap_are_counted_whatever_their_kind():
    members = [f'"k{i % 75}":{i}' for i in range(150)]  # 75 duplicate keys
    members += [f'"big{i}":{2**60}' for i in range(60)] + [f'"nan{i}":NaN' for i in range(5)]
    with pytest.raises(ValidationError) as e:
        loads_strict("{" + ",".join(members) + "}")
    details = e.value.details
    assert problem_count(details) == 75 + 60 + 5 and len(details) == DETAILS_KEPT + 1
    assert details[0] == {"field": "k0", "message": "duplicate key"}

# --- RFC 7396 JSON merge patch ---------------------------------------------------------------------------

# RFC 7396 Appendix A, every example.
@pytest.mark.parametrize(("target", "patch", "result"), [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_rfc7396_examples(target, patch, result):
    before = json.dumps(target)
    assert merge_patch(target, patch) == result
    assert json.dumps(target) == before  # the target is not changed


patch_values = st.recursive(st.none() | st.booleans() | st.integers(-9, 9) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                           max_leaves=12)


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


@settings(max_examples=300, deadline=None)
@given(patch_values, patch_values)
def test_merge_patch_properties(target, patch):
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once  # idempotent (RFC 7396 §1: a patch describes the result)
    if isinstance(patch, dict):
        assert isinstance(once, dict)
        for key, value in patch.items():
            assert (key not in once) if value is None else once[key] == merge_patch(
                target.get(key) if isinstance(target, dict) else None, value)
        if isinstance(target, dict):
            assert all(once[k] == v for k, v in target.items() if k not in patch)
    else:
        assert once == patch
    assert merge_patch({}, _without_nulls(patch)) == _without_nulls(patch) or not isinstance(patch, dict)
