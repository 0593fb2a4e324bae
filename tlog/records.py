"""Records, details and leaves (SPEC §2): validating what a service submits, completing it into private
details, and the public leaf that commits to them. Pure: time and randomness come in as arguments.

Hot path: the sequencer calls `validate_use`, `use_details`, `details_hash`, `use_leaf` and
`build_leaf` once per record, so these avoid generic machinery (a validated record is a plain dict; the
use leaf is written directly in JCS key order). The tests prove the fast forms equal the canonical ones.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final, TypedDict

import orjson

from tlog import vrf
from tlog.canonical import MAX_SAFE_INT, canonical, is_valid_unicode, join_path, problems_error
from tlog.errors import DETAILS_KEPT, ProofError, ValidationError, more_detail
from tlog.vrf import VrfSecret

PHASES: Final = frozenset({"training", "fine_tuning", "evaluation", "inference", "embedding_extraction", "indexing"})
BASES: Final = frozenset({"legal_obligation", "legitimate_interest_security"})
USE_DECISIONS: Final = frozenset({"allowed", "allowed_override", "flagged"})
DECISIONS: Final = USE_DECISIONS | {"refused"}
CHANGED_BY: Final = frozenset({"artist", "service"})
LEAF_TYPES: Final = frozenset({"use", "refusal", "preference", "policy", "binding", "erasure", "log", "map"})
# Types whose leaves carry an artist's chain fields (artist, aseq, aprev): the ones the artist map counts.
CHAIN_TYPES: Final = frozenset({"use", "refusal", "preference", "binding"})
BINDING_CHANGES: Final = frozenset({"bind", "release"})
LEAF_VERSION: Final = 2
MAX_LEAF_SIZE: Final = 65_535
MAX_FUTURE: Final = timedelta(minutes=5)
NONCE_SIZE: Final = 16
MAX_DETAIL: Final = 500
MAX_SYSTEM_FIELD: Final = 128
MAX_PLATFORM_ID: Final = 256

EVENT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
POLICY_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Purpose codes are chosen by the operator (§4) and appear unescaped in leaves, so keep them plain.
PURPOSE_CODE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_LOGGED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
# RFC 3339 §5.6 (T and Z case-insensitive, §5.6 NOTE). Fractions are capped at nanoseconds, and the
# pattern is ASCII-only: `\d` would also match other scripts' digits.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:[Zz]|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))"
)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_NS: Final = 1_000_000_000
_MS_NS: Final = 1_000_000
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
MAX_LOGGED_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z: RFC 3339 years have four digits
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)

_USE_FIELDS: Final = frozenset(
    {"event_id", "content_id", "artist_id", "purpose", "phase", "system", "occurred_at", "invocations",
     "window_end", "detail", "basis"}
)
_SYSTEM_FIELDS: Final = ("id", "model", "version")
_MISSING: Any = object()


class SystemRef(TypedDict):
    id: str
    model: str
    version: str


class UseRecord(TypedDict):
    """A validated submission (§2.1), every field present: optional ones hold their default (None, or 1
    for invocations), so every details object has one shape. Timestamps stay the strings the service
    sent, so the commitment is over what it said. A plain dict: cheapest to build, and already the
    first half of the details."""

    event_id: str
    content_id: str
    artist_id: str
    purpose: str
    phase: str
    system: SystemRef
    occurred_at: str
    invocations: int
    window_end: str | None
    detail: str | None
    basis: str | None


# ---------------------------------------------------------------------------------------------------
# Field syntax shared with policy.py and the server


def is_platform_id(value: Any) -> bool:
    """`content_id` / `artist_id` syntax, the default pattern of SPEC §2.1: 1–256 printable ASCII
    characters, none of them a space (`[!-~]{1,256}`). ASCII only, so that no Unicode look-alike of an id
    (a Cyrillic "а", a full-width digit, a zero-width joiner) is another valid id; look-alikes within
    ASCII (case, a trailing "/") are kept apart by the content's binding to its artists instead. A log
    may narrow this with its own pattern (`IdPattern`), never widen it."""
    return type(value) is str and 0 < len(value) <= MAX_PLATFORM_ID and value.isascii() and value.isprintable() and " " not in value


PLATFORM_ID_RULE: Final = "must be 1–256 printable ASCII characters without spaces"


@dataclass(frozen=True, slots=True)
class IdPattern:
    """A log's own pattern for content and artist ids (`tlog init --id-pattern`, kept in the log's meta
    as `id_pattern`), checked on top of the default one: it can narrow what the log accepts (say
    `sc:(track|user):[0-9]+`), never admit what the default refuses."""

    regex: str

    def __post_init__(self) -> None:
        try:
            re.compile(self.regex)
        except re.error as e:
            raise ValidationError(f"the id pattern {self.regex!r} is not a regular expression: {e}") from None

    def matches(self, value: str) -> bool:
        return _compiled(self.regex).fullmatch(value) is not None


@functools.lru_cache(maxsize=8)
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def is_text(value: Any) -> bool:
    """A string that is valid Unicode (no lone surrogates)."""
    return type(value) is str and is_valid_unicode(value)


# ---------------------------------------------------------------------------------------------------
# Time


def parse_rfc3339_ns(value: Any, *, field: str = "") -> int:
    """An RFC 3339 date-time with a zone (`Z` or `±hh:mm`) as nanoseconds since the Unix epoch;
    ValidationError naming `field` otherwise. Integer arithmetic, not datetime: years 0001–9999 with any
    offset are exact, even where the instant in UTC falls in year 0 or 10000 (0001-01-01T00:30:00+01:00,
    9999-12-31T23:30:00-01:00), which a datetime cannot hold. A leap second (:60) is read as the first
    instant of the next minute."""
    if type(value) is not str or not (m := _RFC3339.fullmatch(value)):
        raise problems_error([{"field": field, "message": "must be an RFC 3339 date-time with a zone, e.g. 2026-08-01T12:00:00Z"}])
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        days = date(year, month, day).toordinal() - _EPOCH_DAY
    except ValueError:
        raise problems_error([{"field": field, "message": f"{value[:10]} is not a date of the years 0001–9999"}]) from None
    if hour > 23 or minute > 59 or second > 60:
        raise problems_error([{"field": field, "message": f"{value[11:19]} is not a time of day"}])
    offset = 0
    if m.group(8) is not None:
        offset = (int(m.group(9)) * 60 + int(m.group(10))) * 60 * (-1 if m.group(8) == "-" else 1)
    seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset
    return seconds * _NS + int((m.group(7) or "").ljust(9, "0"))


def parse_rfc3339_ms(value: Any, *, field: str = "") -> int:
    """`parse_rfc3339_ns` in whole milliseconds (rounded down), the unit of `logged_at`."""
    return parse_rfc3339_ns(value, field=field) // _MS_NS


def datetime_ns(when: datetime) -> int:
    """An aware datetime as nanoseconds since the Unix epoch, to compare with `parse_rfc3339_ns`."""
    return (when - _EPOCH) // timedelta(microseconds=1) * 1_000


def unknown_code(what: str, codes: Collection[str]) -> str:
    """The problem of a code that is not one of `codes`, naming every valid one (what to type instead)."""
    return f"not {what}; use one of {', '.join(sorted(codes))}"


def parse_time_filter(value: str, *, field: str) -> int:
    """A query's `since`/`until` as milliseconds since the epoch: an RFC 3339 date-time with a zone, or a
    date (YYYY-MM-DD, UTC, as `logged_at` days are counted) meaning the start of that day for `since`
    and its end for `until`, so `since=D&until=D` is the whole of day D."""
    if _DATE.fullmatch(value):
        try:
            start = (datetime.fromisoformat(value + "T00:00:00+00:00") - _EPOCH) // _ONE_MS
        except ValueError:
            raise ValidationError(f"{field} {value} is not a date", [{"field": field, "message": "no such day"}]) from None
        return start + 86_400_000 if field == "until" else start
    try:
        ms = parse_rfc3339_ms(value, field=field)
    except ValidationError:
        raise ValidationError(f"{field} is neither a date nor a time", [{"field": field, "message":
                              "must be a date (2026-12-01) or an RFC 3339 time with a zone (2026-12-01T12:00:00Z)"}]) from None
    return ms


@functools.lru_cache(maxsize=4096)  # a batch shares one timestamp; verifiers see runs of equal ones
def format_logged_at(ms: int) -> str:
    """Milliseconds since the Unix epoch as the leaf's `logged_at`: RFC 3339 UTC with exactly three
    fraction digits, e.g. 2026-08-01T12:00:00.123Z (the one form, so leaves are reproducible)."""
    if type(ms) is not int or not 0 <= ms < MAX_LOGGED_MS:
        raise ValueError(f"logged_at milliseconds out of range: {ms!r}")
    seconds, milli = divmod(ms, 1000)
    # strftime pads %Y to four digits only from year 1000 on; ms ≥ 0 means 1970 or later.
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds)) + f"{milli:03d}Z"


def parse_logged_at(value: Any, *, field: str = "logged_at") -> int:
    """The inverse of `format_logged_at`; ValidationError for anything but that exact form."""
    if type(value) is str and _LOGGED_AT.fullmatch(value):
        try:
            ms = (datetime.fromisoformat(value) - _EPOCH) // _ONE_MS  # refuses Feb 30, hour 24…
        except ValueError:
            pass
        else:
            if ms >= 0:
                return ms
    raise problems_error([{"field": field, "message": "must be UTC with milliseconds, e.g. 2026-08-01T12:00:00.123Z"}])


# ---------------------------------------------------------------------------------------------------
# Submitted records (§2.1)


def validate_use(obj: Any, *, now: datetime, purposes: Collection[str], at: str = "") -> UseRecord:
    """Checks one submitted use record and returns it normalised. `now` (timezone-aware) bounds
    `occurred_at` and `window_end` (a window of uses that have not happened yet is refused too);
    `purposes` are the codes of the policy in force; `at` is the record's path in the request (e.g.
    "records[3]"), prefixed to every field the ValidationError names. All problems of the record are
    reported, not just the first."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if type(obj) is not dict:
        raise problems_error([{"field": at, "message": "a use record must be a JSON object"}])
    problems: list[tuple[str, str]] = []
    unlisted = 0  # unknown fields beyond DETAILS_KEPT, only counted
    if not obj.keys() <= _USE_FIELDS:
        unlisted += _unknown_fields(obj, _USE_FIELDS, "", problems)
    get = obj.get

    # Each check is written happy-path first (a type test and one cheap test); the reason is worked
    # out only for a value that fails.
    event_id = get("event_id", _MISSING)
    if type(event_id) is not str or not EVENT_ID.fullmatch(event_id):
        problems.append(("event_id", _type_problem(event_id) or "must be 1–128 characters from A–Z a–z 0–9 . _ : -"))
    content_id = get("content_id", _MISSING)
    if not is_platform_id(content_id):
        problems.append(("content_id", _type_problem(content_id) or PLATFORM_ID_RULE))
    artist_id = get("artist_id", _MISSING)
    if not is_platform_id(artist_id):
        problems.append(("artist_id", _type_problem(artist_id) or PLATFORM_ID_RULE))
    purpose = get("purpose", _MISSING)
    if type(purpose) is not str or purpose not in purposes:
        problems.append(("purpose", _type_problem(purpose) or unknown_code("a purpose of the policy in force", purposes)))
    phase = get("phase", _MISSING)
    if type(phase) is not str or phase not in PHASES:
        problems.append(("phase", _type_problem(phase) or unknown_code("a phase", PHASES)))
    system = get("system", _MISSING)
    if type(system) is dict and len(system) == 3 and all(map(_is_system_field, map(system.get, _SYSTEM_FIELDS))):
        system = {"id": system["id"], "model": system["model"], "version": system["version"]}
    else:
        unlisted += _system_problems(system, problems)

    latest = datetime_ns(now + MAX_FUTURE)
    occurred_at = get("occurred_at", _MISSING)
    start = _timestamp(occurred_at, "occurred_at", latest, problems)
    window_end = get("window_end")
    if window_end is not None:
        end = _timestamp(window_end, "window_end", latest, problems)
        if start is not None and end is not None and end < start:
            problems.append(("window_end", "must not be before occurred_at"))

    invocations = get("invocations")
    if invocations is None:
        invocations = 1
    elif type(invocations) is not int or not 1 <= invocations <= MAX_SAFE_INT:
        problems.append(("invocations", "must be an integer ≥ 1"))
    detail = get("detail")
    if detail is not None and (type(detail) is not str or len(detail) > MAX_DETAIL or not is_text(detail)):
        problems.append(("detail", f"must be a string of at most {MAX_DETAIL} characters"))
    basis = get("basis")
    if basis is not None and (type(basis) is not str or basis not in BASES):
        problems.append(("basis", f"must be null or one of {', '.join(sorted(BASES))}"))

    if problems:
        listed = [{"field": _under(at, f), "message": m} for f, m in problems]
        raise problems_error(listed + [more_detail(unlisted)] if unlisted else listed)
    return {
        "event_id": event_id,
        "content_id": content_id,
        "artist_id": artist_id,
        "purpose": purpose,
        "phase": phase,
        "system": system,  # type: ignore[typeddict-item]  # checked: not None when no problems
        "occurred_at": occurred_at,
        "invocations": invocations,
        "window_end": window_end,
        "detail": detail,
        "basis": basis,
    }


def _under(at: str, path: str) -> str:
    """`path` (relative to the record, from join_path) as seen from the request's root."""
    if not at:
        return path
    return at + path if path.startswith("[") else f"{at}.{path}"


def _type_problem(value: Any) -> str | None:
    if value is _MISSING:
        return "required"
    if type(value) is not str:
        return "must be a string"
    return None


def _is_system_field(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_SYSTEM_FIELD and is_text(value)


def _unknown_fields(obj: dict[str, Any], known: Collection[str], parent: str, problems: list[tuple[str, str]]) -> int:
    """Adds obj's unknown fields to `problems`, at most DETAILS_KEPT of them; returns how many more there are."""
    unknown = [k for k in obj if k not in known]
    problems += [(join_path(parent, k), "unknown field") for k in unknown[:DETAILS_KEPT]]
    return max(0, len(unknown) - DETAILS_KEPT)


def _system_problems(value: Any, problems: list[tuple[str, str]]) -> int:
    """Adds the problems of `system`; returns how many unknown fields were not listed."""
    if value is _MISSING:
        problems.append(("system", "required"))
    elif type(value) is not dict:
        problems.append(("system", "must be an object with id, model and version"))
    else:
        unlisted = _unknown_fields(value, _SYSTEM_FIELDS, "system", problems)
        for name in _SYSTEM_FIELDS:
            field = value.get(name, _MISSING)
            if not _is_system_field(field):
                problems.append((f"system.{name}", _type_problem(field) or f"must be 1–{MAX_SYSTEM_FIELD} characters"))
        return unlisted
    return 0


def _timestamp(value: Any, name: str, latest: int, problems: list[tuple[str, str]]) -> int | None:
    if value is _MISSING:
        problems.append((name, "required"))
        return None
    try:
        parsed = parse_rfc3339_ns(value, field=name)
    except ValidationError as e:
        problems.append((name, e.details[0]["message"]))
        return None
    if parsed > latest:
        problems.append((name, "more than 5 minutes in the future"))
    return parsed


# ---------------------------------------------------------------------------------------------------
# Private details (§2.2)


def use_details(
    record: UseRecord, *, service: str, index: int, logged_at: str, decision: str, policy: str, nonce: bytes
) -> dict[str, Any]:
    """The details of a use or refusal leaf (a refused use has the same shape, decision "refused"):
    the normalised record plus who logged it, where, when, the decision, the policy and a nonce."""
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}")
    details: dict[str, Any] = dict(record)
    details["service"] = _name(service, "service")
    details["index"] = _index(index)
    details["logged_at"] = logged_at
    details["decision"] = decision
    details["policy"] = policy
    details["nonce"] = _nonce(nonce)
    return details


def preference_details(
    artist_id: str,
    preferences: Mapping[str, Any],
    *,
    by: str,
    service: str | None,
    index: int,
    logged_at: str,
    nonce: bytes,
) -> dict[str, Any]:
    """The details of a preference leaf: the artist, its new (validated) preferences document, who
    changed them (`by` "artist", or "service" together with the service's name), where and when."""
    if not is_platform_id(artist_id):
        raise ValueError("artist_id is not a platform id")
    if by not in CHANGED_BY or (service is None) != (by == "artist"):
        raise ValueError('by must be "artist" (service None) or "service" (with the service name)')
    return {"artist_id": artist_id, "preferences": preferences, "by": by,
            **_who_where_when(service, index, logged_at, nonce)}


def binding_details(
    artist_id: str, content_id: str, *, change: str, service: str | None, index: int, logged_at: str, nonce: bytes
) -> dict[str, Any]:
    """The details of a binding leaf (SPEC §2.1): the artist in whose chain it sits, the content bound to
    it or released from it (`change` "bind" or "release"), the `catalog` service that did it (None: the
    operator, `tlog content bind`), where and when."""
    if not is_platform_id(artist_id) or not is_platform_id(content_id):
        raise ValueError("artist_id and content_id must be platform ids")
    if change not in BINDING_CHANGES:
        raise ValueError(f"change must be one of {', '.join(sorted(BINDING_CHANGES))}")
    return {"artist_id": artist_id, "content_id": content_id, "change": change,
            **_who_where_when(service, index, logged_at, nonce)}


def _who_where_when(service: str | None, index: int, logged_at: str, nonce: bytes) -> dict[str, Any]:
    """The fields every artist-change leaf's details end with: the service that made the change (None:
    the artist or the operator), the leaf's index and time, and the nonce that makes the commitment hiding."""
    return {"service": None if service is None else _name(service, "service"), "index": _index(index),
            "logged_at": logged_at, "nonce": _nonce(nonce)}


def details_hash(details: Mapping[str, Any]) -> bytes:
    """The leaf's commitment to its details: SHA-256 of their JCS bytes.

    Details are built by this module from validated values (or read back from the store, where any
    altered value changes the hash anyway), so the per-record path skips canonical()'s type check:
    orjson's sorted output is JCS whenever it is ASCII (ASCII keys sort the same by code point and by
    UTF-16 unit). Anything else takes the exact encoder."""
    out = orjson.dumps(details, option=_DETAILS_OPTS)
    if not out.isascii():
        out = canonical(details)
    return hashlib.sha256(out).digest()


_DETAILS_OPTS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def artist_alpha(artist_id: str) -> bytes:
    """The VRF input of an artist's tag (SPEC §2.2): UTF-8 of "artist:" + artist_id."""
    return b"artist:" + artist_id.encode()


def artist_tag(secret: VrfSecret, artist_id: str) -> tuple[bytes, bytes]:
    """(tag, VRF proof) of an artist: the tag is the first 32 bytes of the ECVRF output on
    `artist_alpha(artist_id)`; the 80-byte proof lets anyone holding the id check it is the only tag."""
    beta, proof = secret.evaluate(artist_alpha(artist_id))
    return beta[:32], proof


def check_artist_tag(vrf_key: bytes, artist_id: str, tag: bytes, proof: bytes) -> None:
    """ProofError unless `proof` is a valid VRF proof under `vrf_key` for the artist id and gives `tag`."""
    beta = vrf.verify(vrf_key, artist_alpha(artist_id), proof)
    if beta[:32] != tag:
        raise ProofError(f"the VRF proof for {artist_id!r} gives another tag than the one logged")


def _name(value: Any, what: str) -> str:
    if type(value) is not str or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return value


def _index(index: Any) -> int:
    if type(index) is not int or not 0 <= index <= MAX_SAFE_INT:
        raise ValueError(f"index out of range: {index!r}")
    return index


def _nonce(nonce: Any) -> str:
    if type(nonce) is not bytes or len(nonce) != NONCE_SIZE:
        raise ValueError(f"the nonce must be {NONCE_SIZE} bytes")
    return binascii.b2a_base64(nonce, newline=False).decode()


# ---------------------------------------------------------------------------------------------------
# Public leaves (§2.2)


@dataclass(slots=True)
class Leaf:
    """A public leaf (version 2), decoded. Hashes and keys are raw bytes (hex in the JSON). Which fields
    a type carries:

    - use, refusal: prev, logged_at, purpose, phase, decision, policy, artist, aseq, aprev, invocations, details
    - preference:   prev, logged_at, artist, aseq, aprev, by, details
    - binding:      prev, logged_at, artist, aseq, aprev, details (the content id and the change)
    - policy:       prev, logged_at, policy, effective_at, details (SHA-256 of the policy document)
    - erasure:      prev, logged_at, artist, erased
    - log:          prev, logged_at, origin, vrf (index 0 only)
    - map:          prev, logged_at, root (ends every batch, §2.3)

    Fields a type does not carry are None here and omitted from the JSON. `aprev` is None both when
    omitted and for an artist's first leaf (aseq 1), where the JSON says null."""

    type: str
    prev: bytes
    logged_at: str
    details: bytes | None = None
    purpose: str | None = None
    phase: str | None = None
    decision: str | None = None
    policy: str | None = None
    artist: bytes | None = None
    aseq: int | None = None
    aprev: int | None = None
    invocations: int | None = None
    by: str | None = None
    effective_at: str | None = None
    erased: int | None = None
    origin: str | None = None
    vrf: bytes | None = None
    root: bytes | None = None

    @property
    def chained(self) -> bool:
        """Whether the leaf is in its artist's chain (and so in the artist map)."""
        return self.aseq is not None


_CHAIN: Final = frozenset({"artist", "aseq", "aprev"})
_FIELDS_BY_TYPE: Final = {
    "use": frozenset({"prev", "logged_at", "purpose", "phase", "decision", "policy", "invocations", "details"}) | _CHAIN,
    "preference": frozenset({"prev", "logged_at", "by", "details"}) | _CHAIN,
    "binding": frozenset({"prev", "logged_at", "details"}) | _CHAIN,
    "policy": frozenset({"prev", "logged_at", "policy", "effective_at", "details"}),
    "erasure": frozenset({"prev", "logged_at", "artist", "erased"}),
    "log": frozenset({"prev", "logged_at", "origin", "vrf"}),
    "map": frozenset({"prev", "logged_at", "root"}),
}
_FIELDS_BY_TYPE["refusal"] = _FIELDS_BY_TYPE["use"]
_ALL_LEAF_FIELDS: Final = tuple(f for f in Leaf.__slots__ if f != "type")  # type: ignore[attr-defined]
_HASH_FIELDS: Final = frozenset({"prev", "details", "artist", "root", "vrf"})


def use_leaf(details: Mapping[str, Any], *, prev: bytes, artist: bytes, aseq: int, aprev: int | None) -> Leaf:
    """The use or refusal leaf committing to `details` (from `use_details`): the sequencer builds it
    when logging, an auditor rebuilds it from the details to check the public leaf."""
    decision = details["decision"]
    return Leaf(
        type="refusal" if decision == "refused" else "use",
        prev=prev,
        logged_at=details["logged_at"],
        details=details_hash(details),
        purpose=details["purpose"],
        phase=details["phase"],
        decision=decision,
        policy=details["policy"],
        artist=artist,
        aseq=aseq,
        aprev=aprev,
        invocations=details["invocations"],
    )


def preference_leaf(details: Mapping[str, Any], *, prev: bytes, artist: bytes, aseq: int, aprev: int | None) -> Leaf:
    """The preference leaf committing to `details` (from `preference_details`)."""
    return Leaf(
        type="preference",
        prev=prev,
        logged_at=details["logged_at"],
        details=details_hash(details),
        artist=artist,
        aseq=aseq,
        aprev=aprev,
        by=details["by"],
    )


def binding_leaf(details: Mapping[str, Any], *, prev: bytes, artist: bytes, aseq: int, aprev: int | None) -> Leaf:
    """The binding leaf committing to `details` (from `binding_details`)."""
    return Leaf(type="binding", prev=prev, logged_at=details["logged_at"], details=details_hash(details),
                artist=artist, aseq=aseq, aprev=aprev)


def build_leaf(leaf: Leaf) -> bytes:
    """The leaf's JCS bytes. ValidationError if it is not a leaf `parse_leaf` would accept (so the log
    can never hold one that verifiers refuse). The field syntax bounds most leaves to about 500 bytes,
    far under the SPEC's 65,535, which `parse_leaf` enforces on what it is given."""
    if (leaf.type == "use" or leaf.type == "refusal") and _use_leaf_ok(leaf):
        return _use_leaf_bytes(leaf.type, leaf.prev, leaf.logged_at, leaf.details, leaf.purpose, leaf.phase,  # type: ignore[arg-type]
                               leaf.decision, leaf.policy, leaf.artist, leaf.aseq, leaf.aprev, leaf.invocations)  # type: ignore[arg-type]
    problems = _leaf_problems(leaf)
    if problems:
        raise problems_error(problems)
    return canonical(_leaf_object(leaf))


def use_leaf_unchecked(details: Mapping[str, Any], *, prev: bytes, artist: bytes, aseq: int, aprev: int | None) -> bytes:
    """`build_leaf(use_leaf(...))` without the leaf's own re-check, for callers that vouch for every
    value another way: the sequencer (the record passed `validate_use` against the policy in force, the
    rest it made itself) and readers of stored entries, which compare the leaf with its stored hash, so
    an altered value cannot pass as a leaf. A test holds the two to the same bytes."""
    decision = details["decision"]
    return _use_leaf_bytes("refusal" if decision == "refused" else "use", prev, details["logged_at"],
                           details_hash(details), details["purpose"], details["phase"], decision,
                           details["policy"], artist, aseq, aprev, details["invocations"])


def _use_leaf_bytes(type_: str, prev: bytes, logged_at: str, details: bytes, purpose: str, phase: str,
                    decision: str, policy: str, artist: bytes, aseq: int, aprev: int | None, invocations: int) -> bytes:
    # Every value is known to need no escaping, and the keys are in JCS order (note "artist" < "aseq"),
    # so this is the canonical form without the generic encoder; the tests compare it with canonical().
    return (
        f'{{"aprev":{"null" if aprev is None else aprev},"artist":"{artist.hex()}",'
        f'"aseq":{aseq},"decision":"{decision}","details":"{details.hex()}","invocations":{invocations},'
        f'"logged_at":"{logged_at}","phase":"{phase}","policy":"{policy}",'
        f'"prev":"{prev.hex()}","purpose":"{purpose}","type":"{type_}","v":2}}'
    ).encode()


def _use_leaf_ok(leaf: Leaf) -> bool:
    """`not _leaf_problems(leaf)` for a use or refusal leaf, as one expression: the per-record path.
    (A test holds the two to agreeing.)"""
    aseq, aprev, decision, invocations = leaf.aseq, leaf.aprev, leaf.decision, leaf.invocations
    return bool(
        type(leaf.prev) is bytes and len(leaf.prev) == 32
        and type(leaf.artist) is bytes and len(leaf.artist) == 32
        and type(leaf.details) is bytes and len(leaf.details) == 32
        and type(decision) is str
        and (decision == "refused" if leaf.type == "refusal" else decision in USE_DECISIONS)
        and type(leaf.phase) is str and leaf.phase in PHASES
        and type(leaf.purpose) is str and PURPOSE_CODE.fullmatch(leaf.purpose)
        and type(leaf.policy) is str and POLICY_ID.fullmatch(leaf.policy)
        and type(aseq) is int and 1 <= aseq <= MAX_SAFE_INT
        and (aprev is None if aseq == 1 else type(aprev) is int and 0 <= aprev <= MAX_SAFE_INT)
        and type(invocations) is int and 1 <= invocations <= MAX_SAFE_INT
        and leaf.by is None and leaf.root is None and leaf.effective_at is None and leaf.erased is None
        and leaf.origin is None and leaf.vrf is None
        and _is_logged_at(leaf.logged_at)
    )


def _leaf_object(leaf: Leaf) -> dict[str, Any]:
    obj: dict[str, Any] = {"v": LEAF_VERSION, "type": leaf.type}
    for name in _FIELDS_BY_TYPE[leaf.type]:
        value = getattr(leaf, name)
        obj[name] = value.hex() if name in _HASH_FIELDS else value
    return obj


def _leaf_problems(leaf: Leaf) -> list[dict[str, str]]:
    fields = _FIELDS_BY_TYPE.get(leaf.type)
    if fields is None:
        return [{"field": "type", "message": f"must be one of {', '.join(sorted(LEAF_TYPES))}"}]
    problems = []
    for name in _ALL_LEAF_FIELDS:
        value = getattr(leaf, name)
        if name not in fields:
            if value is not None:
                problems.append({"field": name, "message": f"not a field of a {leaf.type} leaf"})
        elif (message := _LEAF_CHECKS[name](value, leaf)) is not None:
            problems.append({"field": name, "message": message})
    return problems


def _check_hash(value: Any, leaf: Leaf) -> str | None:
    return None if type(value) is bytes and len(value) == 32 else "must be 32 bytes"


def _check_prev(value: Any, leaf: Leaf) -> str | None:
    if leaf.type == "log":  # index 0: nothing before it
        return None if value == bytes(32) else "must be 64 zeros: a log leaf is the first leaf"
    return _check_hash(value, leaf)


def _is_logged_at(value: Any) -> bool:
    return type(value) is str and _logged_at_ok(value)


@functools.lru_cache(maxsize=4096)  # leaves of one batch share one timestamp
def _logged_at_ok(value: str) -> bool:
    try:
        parse_logged_at(value)
    except ValidationError:
        return False
    return True


def _check_logged_at(value: Any, leaf: Leaf) -> str | None:
    return None if _is_logged_at(value) else "must be UTC with milliseconds, e.g. 2026-08-01T12:00:00.123Z"


def _check_effective_at(value: Any, leaf: Leaf) -> str | None:
    if not _is_logged_at(value):
        return "must be UTC with milliseconds, e.g. 2026-08-01T12:00:00.123Z"
    if _is_logged_at(leaf.logged_at) and parse_logged_at(value) < parse_logged_at(leaf.logged_at):
        return "must not be before the leaf's logged_at"
    return None


def _check_purpose(value: Any, leaf: Leaf) -> str | None:
    return None if type(value) is str and PURPOSE_CODE.fullmatch(value) else "not a purpose code"


def _check_phase(value: Any, leaf: Leaf) -> str | None:
    return None if type(value) is str and value in PHASES else "not a phase"


def _check_decision(value: Any, leaf: Leaf) -> str | None:
    expected = USE_DECISIONS if leaf.type == "use" else {"refused"}
    return None if type(value) is str and value in expected else f"a {leaf.type} leaf's decision must be {' or '.join(sorted(expected))}"


def _check_policy(value: Any, leaf: Leaf) -> str | None:
    return None if type(value) is str and POLICY_ID.fullmatch(value) else "not a policy id"


def _check_count(value: Any, leaf: Leaf) -> str | None:
    return None if type(value) is int and 1 <= value <= MAX_SAFE_INT else "must be an integer ≥ 1"


def _check_aprev(value: Any, leaf: Leaf) -> str | None:
    if leaf.aseq == 1:
        return None if value is None else "must be null for an artist's first leaf (aseq 1)"
    return None if type(value) is int and 0 <= value <= MAX_SAFE_INT else "must be the index of the artist's previous leaf"


def _check_by(value: Any, leaf: Leaf) -> str | None:
    return None if type(value) is str and value in CHANGED_BY else 'must be "artist" or "service"'


def _check_origin(value: Any, leaf: Leaf) -> str | None:
    # The origin is the checkpoint's first line and the note key's name (SPEC §5): no spaces, no "+".
    ok = type(value) is str and 0 < len(value) <= MAX_PLATFORM_ID and value.isprintable() and not set(value) & {" ", "+"}
    return None if ok else "must be the log's origin: printable, no spaces, no '+'"


_LEAF_CHECKS: Final = {
    "prev": _check_prev,
    "logged_at": _check_logged_at,
    "details": _check_hash,
    "purpose": _check_purpose,
    "phase": _check_phase,
    "decision": _check_decision,
    "policy": _check_policy,
    "artist": _check_hash,
    "aseq": _check_count,
    "aprev": _check_aprev,
    "invocations": _check_count,
    "by": _check_by,
    "effective_at": _check_effective_at,
    "erased": _check_count,
    "origin": _check_origin,
    "vrf": _check_hash,
    "root": _check_hash,
}


def parse_leaf(data: bytes) -> Leaf:
    """Decodes a public leaf strictly: the right fields for its type, each well-formed, and the bytes
    exactly canonical (the encoding of what they decode to). ValidationError otherwise; a leaf of
    another format version says which, so a v1 log is refused by name, never misread."""
    data = bytes(data)
    if len(data) > MAX_LEAF_SIZE:
        raise problems_error([{"field": "", "message": f"leaf larger than {MAX_LEAF_SIZE} bytes"}])
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise problems_error([{"field": "", "message": f"leaf is not JSON: {e}"}]) from None
    if type(obj) is not dict:
        raise problems_error([{"field": "", "message": "a leaf is a JSON object"}])
    version = obj.get("v")
    if version != LEAF_VERSION:
        raise problems_error([{"field": "v", "message": _version_message(version)}])
    kind = obj.get("type")
    fields = _FIELDS_BY_TYPE.get(kind) if type(kind) is str else None
    if fields is None:
        raise problems_error([{"field": "type", "message": f"must be one of {', '.join(sorted(LEAF_TYPES))}"}])
    if obj.keys() != fields | {"v", "type"}:
        raise problems_error(
            [{"field": k, "message": f"not a field of a {kind} leaf"} for k in obj if k not in fields | {"v", "type"}]
            + [{"field": k, "message": "required"} for k in sorted(fields | {"v"}) if k not in obj]
        )
    values = {name: obj[name] for name in fields}
    for name in fields & _HASH_FIELDS:
        values[name] = _hash_from_hex(values[name], name)
    leaf = Leaf(type=kind, **values)
    # build_leaf checks every field. Comparing bytes refuses every other spelling: spacing, key order,
    # escapes, uppercase hex, duplicate keys, 7.0.
    if build_leaf(leaf) != data:
        raise problems_error([{"field": "", "message": "leaf is not in canonical form (RFC 8785)"}])
    return leaf


def _version_message(version: Any) -> str:
    if version == 1:
        return ("a version 1 leaf: this log was made by tlog 0.1 (HMAC artist tags, no artist map), which this "
                "version does not read; verify it with tlog 0.1, or start a new log with `tlog init`")
    return f"must be {LEAF_VERSION} (tlog leaf format version {LEAF_VERSION})"


def _hash_from_hex(value: Any, name: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        raise problems_error([{"field": name, "message": "must be 64 lowercase hex digits"}]) from None
