"""Records (§2.1) and details (§2.2): validation naming every bad field, the details' fixed shape,
artist tags, time formats. The public leaf is tests/test_leaf.py."""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import timeit
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog import records
from tlog.canonical import MAX_SAFE_INT, loads_strict
from tlog.errors import ProofError, ValidationError
from tlog.leaf import build_leaf, parse_leaf, use_leaf
from tlog.records import (
    artist_tag,
    check_artist_tag,
    details_hash,
    format_logged_at,
    parse_logged_at,
    parse_rfc3339_ms,
    parse_rfc3339_ns,
    preference_details,
    use_details,
    validate_use,
)
from tlog.vrf import VrfSecret, proof_to_hash

NOW = datetime(2026, 8, 1, 12, 0, tzinfo=timezone.utc)
PURPOSES = frozenset({"recommendation", "fraud_detection", "model_training_generative"})
NONCE = bytes(range(16))
VRF = VrfSecret.from_secret(bytes(range(32)))


def submitted(**changes: Any) -> dict[str, Any]:
    record = {
        "event_id": "recs-2026-08-01-000123",
        "content_id": "sc:track:123",
        "artist_id": "sc:user:42",
        "purpose": "recommendation",
        "phase": "inference",
        "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.07.3"},
        "occurred_at": "2026-08-01T12:00:00Z",
        "invocations": 1,
        "detail": "daily candidate scoring",
        "basis": None,
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not DROP}


DROP = object()


def validate(obj: Any, **kw: Any) -> records.UseRecord:
    return validate_use(obj, now=NOW, purposes=PURPOSES, **kw)


def problems(obj: Any, **kw: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as e:
        validate(obj, **kw)
    return {d["field"]: d["message"] for d in e.value.details}


# ---------------------------------------------------------------------------------------------------
# validate_use


def test_valid_record_is_normalised():
    record = validate(submitted(invocations=DROP, detail=DROP, basis=DROP, system={"version": "1", "model": "m", "id": "i"}))
    assert record == {
        "event_id": "recs-2026-08-01-000123",
        "content_id": "sc:track:123",
        "artist_id": "sc:user:42",
        "purpose": "recommendation",
        "phase": "inference",
        "system": {"id": "i", "model": "m", "version": "1"},
        "occurred_at": "2026-08-01T12:00:00Z",
        "invocations": 1,
        "window_end": None,
        "detail": None,
        "basis": None,
    }
    assert list(record["system"]) == ["id", "model", "version"]


def test_optional_fields_may_be_null():
    record = validate(submitted(invocations=None, detail=None, window_end=None))
    assert (record["invocations"], record["detail"], record["window_end"]) == (1, None, None)


def test_timestamps_are_kept_as_sent():
    record = validate(submitted(occurred_at="2026-08-01t13:00:00.5+01:00", window_end="2026-08-01T12:01:00.000Z"))
    assert record["occurred_at"] == "2026-08-01t13:00:00.5+01:00"
    assert record["window_end"] == "2026-08-01T12:01:00.000Z"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"event_id": DROP}, "event_id"),
        ({"event_id": ""}, "event_id"),
        ({"event_id": "a" * 129}, "event_id"),
        ({"event_id": "has space"}, "event_id"),
        ({"event_id": "é"}, "event_id"),
        ({"event_id": 5}, "event_id"),
        ({"content_id": ""}, "content_id"),
        ({"content_id": "x" * 257}, "content_id"),
        ({"content_id": "a b"}, "content_id"),
        ({"content_id": "a\u00a0b"}, "content_id"),  # no-break space is a separator
        ({"content_id": "a\x00"}, "content_id"),
        ({"content_id": "a\u200bb"}, "content_id"),  # zero-width space (format character)
        ({"content_id": "a\ud800"}, "content_id"),
        # SPEC §2.1's default pattern is printable ASCII: no Unicode look-alike of an id is another id.
        ({"content_id": "sc:track:ü-\U0001f3b5"}, "content_id"),
        ({"artist_id": "sc:us\u0435r:42"}, "artist_id"),  # a Cyrillic е
        ({"artist_id": "sc:user:４2"}, "artist_id"),  # a full-width digit
        ({"artist_id": "sc:user:42\x7f"}, "artist_id"),  # DEL
        ({"artist_id": None}, "artist_id"),
        ({"artist_id": ["sc:user:42"]}, "artist_id"),
        ({"purpose": "playlist_generation"}, "purpose"),  # a code, but not of this policy
        ({"purpose": ["recommendation"]}, "purpose"),
        ({"phase": "Inference"}, "phase"),
        ({"phase": DROP}, "phase"),
        ({"system": DROP}, "system"),
        ({"system": "recs"}, "system"),
        ({"system": {"id": "i", "model": "m"}}, "system.version"),
        ({"system": {"id": "", "model": "m", "version": "v"}}, "system.id"),
        ({"system": {"id": "i", "model": "m" * 129, "version": "v"}}, "system.model"),
        ({"system": {"id": "i", "model": "m", "version": 3}}, "system.version"),
        ({"system": {"id": "i", "model": "m", "version": "\udc00"}}, "system.version"),
        ({"system": {"id": "i", "model": "m", "version": "v", "extra": 1}}, "system.extra"),
        ({"system": {"id": "i", "model": "m", "version": "v", "a b": 1}}, 'system["a b"]'),
        ({"occurred_at": DROP}, "occurred_at"),
        ({"occurred_at": "2026-08-01T12:00:00"}, "occurred_at"),  # no zone
        ({"occurred_at": "2026-08-01 12:00:00Z"}, "occurred_at"),
        ({"occurred_at": "2026-08-01T12:00Z"}, "occurred_at"),
        ({"occurred_at": "2026-02-30T12:00:00Z"}, "occurred_at"),
        ({"occurred_at": "2026-08-01T24:00:00Z"}, "occurred_at"),
        ({"occurred_at": "2026-08-01T12:00:00+05:60"}, "occurred_at"),
        ({"occurred_at": "2026-08-01T12:00:00.Z"}, "occurred_at"),
        ({"occurred_at": "２026-08-01T12:00:00Z"}, "occurred_at"),  # a non-ASCII digit
        ({"occurred_at": "2026-08-01T12:05:01Z"}, "occurred_at"),  # 5 min 1 s ahead
        ({"occurred_at": "2026-08-01T14:05:01+02:00"}, "occurred_at"),
        ({"occurred_at": 1785585600}, "occurred_at"),
        ({"window_end": "2026-08-01T11:59:59Z"}, "window_end"),  # before occurred_at
        ({"window_end": "2026-08-01T12:06:00Z"}, "window_end"),  # in the future
        ({"window_end": "yesterday"}, "window_end"),
        ({"invocations": 0}, "invocations"),
        ({"invocations": -1}, "invocations"),
        ({"invocations": True}, "invocations"),
        ({"invocations": "1"}, "invocations"),
        ({"invocations": 2**53}, "invocations"),
        ({"detail": "d" * 501}, "detail"),
        ({"detail": 5}, "detail"),
        ({"detail": "\ud800"}, "detail"),
        ({"basis": "because"}, "basis"),
        ({"basis": ["legal_obligation"]}, "basis"),
        ({"basis": True}, "basis"),
        ({"surprise": 1}, "surprise"),
        ({"a.b": 1}, '["a.b"]'),
        ({"\ud800": 1}, '["\\ud800"]'),  # named with the surrogate escaped, so the error is valid text
    ],
)
def test_each_bad_field_is_named(changes, field):
    assert list(problems(submitted(**changes))) == [field]


@pytest.mark.parametrize(
    "changes",
    [
        {"occurred_at": "2026-08-01T12:05:00Z"},  # exactly 5 minutes ahead
        {"occurred_at": "2026-08-01T14:05:00+02:00"},
        {"occurred_at": "2026-08-01T12:00:00.123456789Z"},
        {"occurred_at": "2016-12-31T23:59:60Z"},  # leap second
        {"occurred_at": "1999-01-01T00:00:00-12:00"},
        {"window_end": "2026-08-01T12:00:00Z"},  # equal to occurred_at
        {"invocations": MAX_SAFE_INT},
        {"detail": "d" * 500},
        {"detail": ""},
        {"detail": "line\nbreak \U0001f3b5"},
        {"basis": "legal_obligation"},
        {"basis": "legitimate_interest_security"},
        {"content_id": "sc:track:!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "artist_id": "~" * 256},
        {"event_id": "A-z_0.9:" + "x" * 120},
        {"system": {"id": "x" * 128, "model": "m m", "version": "\u00e9"}},
    ],
)
def test_accepts_edges(changes):
    validate(submitted(**changes))


def test_every_problem_is_reported_and_prefixed():
    found = problems(
        submitted(event_id="", phase="nope", system={"id": "i"}, invocations=0, extra=1),
        at="records[3]",
    )
    assert set(found) == {
        "records[3].event_id",
        "records[3].phase",
        "records[3].system.model",
        "records[3].system.version",
        "records[3].invocations",
        "records[3].extra",
    }


def test_not_an_object():
    assert problems([submitted()], at="records[0]") == {"records[0]": "a use record must be a JSON object"}


def test_validates_what_loads_strict_returns():
    raw = json.dumps(submitted()).encode()
    assert validate(loads_strict(raw))["event_id"] == "recs-2026-08-01-000123"


# ---------------------------------------------------------------------------------------------------
# details


def test_use_details_shape_and_hash():
    record = validate(submitted())
    details = use_details(
        record, service="recs", index=7, logged_at="2026-08-01T12:00:00.123Z", decision="allowed", policy="default", nonce=NONCE
    )
    assert set(details) == set(record) | {"service", "index", "logged_at", "decision", "policy", "nonce"}
    assert base64.b64decode(details["nonce"], validate=True) == NONCE
    assert details_hash(details) == hashlib.sha256(rfc8785.dumps(details)).digest()
    assert record == validate(submitted())  # the record itself is not changed


@pytest.mark.parametrize(
    "changes",
    [{"decision": "maybe"}, {"nonce": b"short"}, {"nonce": "AAAA"}, {"index": -1}, {"index": True}, {"service": ""}],
)
def test_use_details_refuses_bad_arguments(changes):
    args = dict(service="recs", index=7, logged_at="2026-08-01T12:00:00.123Z", decision="allowed", policy="default", nonce=NONCE)
    with pytest.raises(ValueError):
        use_details(validate(submitted()), **(args | changes))


def test_preference_details():
    prefs = {"no_ai": True, "strict": False, "purposes": {}, "content": {}}
    by_artist = preference_details("sc:user:42", prefs, by="artist", service=None, index=3, logged_at="2026-08-01T12:00:00.000Z", nonce=NONCE)
    assert by_artist == {
        "artist_id": "sc:user:42", "preferences": prefs, "by": "artist", "service": None,
        "index": 3, "logged_at": "2026-08-01T12:00:00.000Z", "nonce": base64.b64encode(NONCE).decode(),
    }
    by_service = preference_details("sc:user:42", prefs, by="service", service="recs", index=3, logged_at="2026-08-01T12:00:00.000Z", nonce=NONCE)
    assert by_service["service"] == "recs"
    for by, service in (("artist", "recs"), ("service", None), ("someone", None)):
        with pytest.raises(ValueError):
            preference_details("sc:user:42", prefs, by=by, service=service, index=3, logged_at="x", nonce=NONCE)


def test_artist_tag():
    """SPEC §2.2: the tag is the first 32 bytes of the VRF output on "artist:" + id, and the proof
    checks against the VRF public key for that id only."""
    tag, proof = artist_tag(VRF, "sc:user:42")
    assert tag == proof_to_hash(VRF.prove(b"artist:sc:user:42"))[:32]
    check_artist_tag(VRF.pk, "sc:user:42", tag, proof)
    assert artist_tag(VRF, "sc:user:43")[0] != tag
    assert artist_tag(VrfSecret.from_secret(b"j" * 32), "sc:user:42")[0] != tag
    assert artist_tag(VRF, "ü")[0] == proof_to_hash(VRF.prove("artist:ü".encode()))[:32]
    with pytest.raises(ProofError):
        check_artist_tag(VRF.pk, "sc:user:43", tag, proof)  # another id
    with pytest.raises(ProofError):
        check_artist_tag(VRF.pk, "sc:user:42", artist_tag(VRF, "sc:user:43")[0], proof)  # another tag
    with pytest.raises(ProofError):
        check_artist_tag(VrfSecret.from_secret(b"j" * 32).pk, "sc:user:42", tag, proof)  # another key


# ---------------------------------------------------------------------------------------------------
# time


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1785585600123, "2026-08-01T12:00:00.123Z"),
        (951782400000, "2000-02-29T00:00:00.000Z"),
        (253402300799999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_logged_at_examples(ms, text):
    assert format_logged_at(ms) == text
    assert parse_logged_at(text) == ms


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=253402300799999))
def test_logged_at_roundtrip(ms):
    text = format_logged_at(ms)
    assert parse_logged_at(text) == ms
    assert datetime.fromisoformat(text) == datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)


@pytest.mark.parametrize(
    "text",
    [
        "2026-08-01T12:00:00Z", "2026-08-01T12:00:00.12Z", "2026-08-01T12:00:00.1234Z", "2026-08-01T12:00:00.123+00:00",
        "2026-08-01t12:00:00.123z", "2026-02-30T12:00:00.000Z", "2026-08-01T12:00:60.000Z", "0000-01-01T00:00:00.000Z",
        "1969-12-31T23:59:59.999Z", " 2026-08-01T12:00:00.123Z", "2026-08-01T12:00:00.123Z\n", 5,
    ],
)
def test_logged_at_rejects(text):
    with pytest.raises(ValidationError):
        parse_logged_at(text)


@pytest.mark.parametrize("ms", [-1, 253402300800000, 1.5, True])
def test_format_logged_at_range(ms):
    with pytest.raises(ValueError):
        format_logged_at(ms)


def test_parse_rfc3339():
    assert parse_rfc3339_ms("2026-08-01T14:00:00+02:00") == 1785585600000
    assert parse_rfc3339_ms("2016-12-31T23:59:60Z") == parse_rfc3339_ms("2017-01-01T00:00:00Z")
    assert parse_rfc3339_ns("2026-08-01T12:00:00.5z") % 10**9 == 500_000_000
    assert parse_rfc3339_ms("2026-08-01T12:00:00.001Z") % 1000 == 1  # exact: no float on the way
    with pytest.raises(ValidationError) as e:
        parse_rfc3339_ms("2026-08-01", field="since")
    assert e.value.details[0]["field"] == "since"


@pytest.mark.parametrize("text, utc", [
    ("9999-12-31T23:59:60Z", (10000, 1, 1, 0, 0, 0)),  # the leap second runs into year 10000
    ("9999-12-31T23:30:00-01:00", (10000, 1, 1, 0, 30, 0)),
    ("0001-01-01T00:30:00+01:00", (0, 12, 31, 23, 30, 0)),  # the UTC instant is in year 0
    ("0001-01-01T00:00:00Z", (1, 1, 1, 0, 0, 0)),
    ("9999-12-31T23:59:59.999999999Z", (9999, 12, 31, 23, 59, 59)),
])
def test_rfc3339_edges_are_exact(text, utc):
    """Instants a datetime cannot hold are still exact integers (proleptic Gregorian, as RFC 3339)."""
    assert parse_rfc3339_ns(text) // 10**9 == _utc_seconds(*utc)


def _utc_seconds(y: int, mo: int, d: int, h: int, mi: int, sec: int) -> int:
    """calendar.timegm, extended to years 0 and 10000 by the 400-year Gregorian cycle (146,097 days)."""
    shift = 400 if y < 1 else -400 if y > 9999 else 0
    return calendar.timegm((y + shift, mo, d, h, mi, sec)) - shift // 400 * 146_097 * 86_400


@st.composite
def rfc3339_parts(draw):
    """Every field over its whole range and a bit beyond (day 31 of every month, second 60, hour 24…)."""
    year = draw(st.sampled_from([0, 1, 2, 1969, 1970, 2016, 2024, 2100, 9998, 9999]) | st.integers(0, 9999))
    month = draw(st.integers(1, 12))
    day = draw(st.sampled_from([1, 28, 29, 30, 31]) | st.integers(1, 31))
    hour, minute, second = draw(st.integers(0, 24)), draw(st.integers(0, 59)), draw(st.integers(0, 60))
    frac = draw(st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9)))
    zone = draw(st.one_of(st.sampled_from(["Z", "z", "+00:00", "-00:00", "+23:59", "-23:59", "+01:00", "-01:00"]),
                          st.tuples(st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59))))
    return year, month, day, hour, minute, second, frac, zone, draw(st.sampled_from("Tt"))


def _format(parts) -> str:
    year, month, day, hour, minute, second, frac, zone, t = parts
    if isinstance(zone, tuple):
        zone = f"{zone[0]}{zone[1]:02d}:{zone[2]:02d}"
    return f"{year:04d}-{month:02d}-{day:02d}{t}{hour:02d}:{minute:02d}:{second:02d}{'.' + frac if frac else ''}{zone}"


def _offset_seconds(zone) -> int:
    if not isinstance(zone, tuple):
        zone = (zone[0], int(zone[1:3]), int(zone[4:6])) if zone not in "Zz" else ("+", 0, 0)
    return (-1 if zone[0] == "-" else 1) * (zone[1] * 3600 + zone[2] * 60)


@settings(max_examples=2000)
@given(rfc3339_parts())
def test_rfc3339_parser_is_exact_or_names_the_field(parts):
    """Property: a valid date-time parses to exactly its instant (a leap second being the next minute's
    first instant), anything else is a ValidationError naming the field, never another exception."""
    year, month, day, hour, minute, second, frac, zone, _ = parts
    text = _format(parts)
    valid = 1 <= year and day <= calendar.monthrange(year or 2000, month)[1] and hour < 24
    if not valid:
        with pytest.raises(ValidationError) as e:
            parse_rfc3339_ns(text, field="occurred_at")
        assert e.value.details[0]["field"] == "occurred_at"
        return
    want = _utc_seconds(year, month, day, hour, minute, second) - _offset_seconds(zone)
    got = parse_rfc3339_ns(text)
    assert got == want * 10**9 + int(frac.ljust(9, "0") or 0)
    assert parse_rfc3339_ms(text) == got // 10**6
    if second < 60 and 2 <= year <= 9998:  # the same instant as the standard library reads it
        dt = datetime(year, month, day, hour, minute, second, tzinfo=timezone(timedelta(seconds=_offset_seconds(zone))))
        assert (dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(seconds=1) == want


@given(rfc3339_parts(), st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)))
def test_occurred_at_at_any_edge_is_a_field_problem_or_accepted(parts, now):
    """validate_use never raises anything but a ValidationError naming occurred_at, whatever the time."""
    text = _format(parts)
    try:
        validate_use(submitted(occurred_at=text), now=now, purposes=PURPOSES)
    except ValidationError as e:
        assert [d["field"] for d in e.details] == ["occurred_at"]
    else:
        assert parse_rfc3339_ns(text) <= (now + timedelta(minutes=5) - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1) * 1000


# ---------------------------------------------------------------------------------------------------
# Micro-benchmark of the per-record path: `python tests/test_records.py`. Not a test.


def benchmark() -> dict[str, float]:
    """Best-of-7 microseconds per call."""
    obj = submitted()
    record = validate(obj)
    details = use_details(record, service="recs", index=5, logged_at="2026-08-01T12:00:00.123Z", decision="allowed", policy="default", nonce=NONCE)
    tag, _ = artist_tag(VRF, "sc:user:42")
    prev = b"\x01" * 32
    leaf = use_leaf(details, prev=prev, artist=tag, aseq=7, aprev=1041)
    data = build_leaf(leaf)

    def us(fn, number: int = 20_000) -> float:
        return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6

    return {
        "validate_use": us(lambda: validate(obj)),
        "use_details": us(lambda: use_details(record, service="recs", index=5, logged_at="2026-08-01T12:00:00.123Z", decision="allowed", policy="default", nonce=NONCE)),
        "details_hash": us(lambda: details_hash(details)),
        "artist_tag (VRF prove)": us(lambda: artist_tag(VRF, "sc:user:42"), number=2_000),
        "use_leaf (incl. details_hash)": us(lambda: use_leaf(details, prev=prev, artist=tag, aseq=7, aprev=1041)),
        "build_leaf": us(lambda: build_leaf(leaf)),
        "parse_leaf": us(lambda: parse_leaf(data)),
        "format_logged_at": us(lambda: format_logged_at(1785585600123)),
    }


if __name__ == "__main__":
    for name, micros in benchmark().items():
        print(f"{name:32s} {micros:6.2f} µs")
