"""Records and details (SPEC §2.1, §2.2): validating what a service submits, completing it into the
private details a public leaf commits to (`details_hash`), artist VRF tags, time formats. Pure: time and
randomness come in as arguments. The public leaf itself is `tlog.leaf`.

This module also owns the vocabulary a record shares with policies and public leaves: phases, decisions,
purpose codes, policy ids, who changed preferences, the `logged_at` form. `tlog.leaf` and `tlog.policy`
import it from here; this module imports neither, so the three cannot form a cycle.

Hot path: the sequencer calls `validate_use`, `use_details` and `details_hash` once per record, so these
avoid generic machinery (a validated record is a plain dict; `details_hash` takes orjson's sorted output
whenever it is ASCII). The tests prove the fast forms equal the canonical ones.
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
BINDING_CHANGES: Final = frozenset({"bind", "release"})
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
        "system": system,  # checked: not None when no problems
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
