"""The public leaf (SPEC §2.2, format version 2): `Leaf`, the builders that commit a leaf to its private
details (`use_leaf`, `preference_leaf`, `binding_leaf`), its canonical bytes (`build_leaf`) and their
strict decoding (`parse_leaf`). Pure: no I/O. The vocabulary a leaf shares with records and policies
(phases, decisions, purpose codes, policy ids, `logged_at`, `details_hash`) belongs to `records`, which
this module imports and which never imports it.

Invariants, and what keeps them:
- Nothing is written that a verifier refuses: `build_leaf` checks every field of its type (`_LEAF_CHECKS`)
  before encoding, and `parse_leaf` calls `build_leaf` on what it decoded. The one way around the check,
  `use_leaf_unchecked`, is for callers that vouch for every value otherwise (the sequencer, from
  validated records; readers of stored entries, which compare the leaf with its stored hash).
- One spelling per leaf: `parse_leaf` accepts bytes only if they are exactly `build_leaf` of what they
  decode to, so spacing, key order, escapes, uppercase hex or duplicate keys are refused, and a leaf
  hash names one leaf.
- One version: a leaf whose `v` is not `LEAF_VERSION` is refused, a version 1 leaf by name
  (`_version_message`), never misread.

Hot path: the sequencer builds one use leaf per record, so `_use_leaf_bytes` writes it directly in JCS
key order rather than through `canonical`, and `_use_leaf_ok` checks its fields in one expression rather
than field by field. tests/test_leaf.py holds the fast forms to the canonical ones (byte-equal to the
RFC 8785 reference encoder; `_use_leaf_ok` agreeing with `_leaf_problems`; `use_leaf_unchecked` equal to
`build_leaf(use_leaf(...))`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from tlog.canonical import MAX_SAFE_INT, canonical, problems_error
from tlog.errors import ValidationError
from tlog.records import (CHANGED_BY, MAX_PLATFORM_ID, PHASES, POLICY_ID, PURPOSE_CODE, USE_DECISIONS, details_hash,
                          parse_logged_at)

LEAF_VERSION: Final = 2
MAX_LEAF_SIZE: Final = 65_535
LEAF_TYPES: Final = frozenset({"use", "refusal", "preference", "policy", "binding", "erasure", "log", "map"})
# Types whose leaves carry an artist's chain fields (artist, aseq, aprev): the ones the artist map counts.
CHAIN_TYPES: Final = frozenset({"use", "refusal", "preference", "binding"})


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
_ALL_LEAF_FIELDS: Final = tuple(f for f in Leaf.__slots__ if f != "type")
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
    if type(kind) is not str or (fields := _FIELDS_BY_TYPE.get(kind)) is None:
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
