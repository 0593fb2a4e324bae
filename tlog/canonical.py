"""RFC 8785 (JCS) encoding and strict RFC 8259 decoding of the JSON subset the SPEC allows (§2.1):
strings, integers with |n| < 2^53, booleans, null, arrays and objects. No floats anywhere.

Both directions sit on the sequencer's hot path (every record is decoded once, every details object
and leaf encoded once), so each has a fast path built on orjson and an exact, slow path that takes
over whenever the fast one has any doubt, and that alone writes error messages:

- `canonical`: orjson's string escaping is exactly JCS's (\\b \\t \\n \\f \\r \\" \\\\, lowercase
  \\u00xx for other controls, everything else raw UTF-8; the tests check this against `rfc8785`), and
  its OPT_SORT_KEYS order equals JCS's UTF-16 order for ASCII keys. A value with any non-ASCII key goes
  to a pure encoder that sorts by UTF-16 code units, since code-point order differs there (a key
  with a character ≥ U+10000 sorts before one with U+E000–U+FFFF in UTF-16).
- `loads_strict`: orjson refuses bad syntax, bad UTF-8 and lone surrogates but keeps the last of
  duplicate keys and returns floats, so the fast path also checks types and counts members (see
  `_colons`). The exact path is the standard library's scanner with marking hooks.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import orjson

from tlog.errors import DETAIL_CHARS, DETAILS_KEPT, ValidationError, bounded_details, cut, more_detail, problem_count

MAX_SAFE_INT = 2**53 - 1
_INT_DIGITS = len(str(MAX_SAFE_INT))  # 16; JSON has no leading zeros, so more digits is out of range

_SCALARS = frozenset({str, int, bool, type(None)})
_CONTAINERS = frozenset({dict, list})
_ALLOWED = _SCALARS | _CONTAINERS
_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def join_path(parent: str, key: str | int) -> str:
    """The JSON path of `key` under `parent`, as error details name it: `records[3].system.id`, or
    `content["sc:track:1"].no_ai` for keys that are not identifiers. The root's path is "". A key with
    lone surrogates is shown with them escaped, so that the error itself stays valid text. A path is cut
    to DETAIL_CHARS (ending "…"): under a megabyte-long key, a path per value would cost megabytes each."""
    if len(parent) == DETAIL_CHARS and parent.endswith("…"):
        return parent  # already cut: a child's path would be cut to the same
    if isinstance(key, int):
        return cut(f"{parent}[{key}]")
    if _IDENTIFIER.fullmatch(key):
        return cut(f"{parent}.{key}" if parent else key)
    shown = key[:DETAIL_CHARS]  # enough to fill a cut path: escaping only lengthens it
    return cut(f"{parent}[{json.dumps(shown, ensure_ascii=not is_valid_unicode(shown))}]")


def is_valid_unicode(s: str) -> bool:
    """Whether `s` is valid Unicode text (no lone surrogates), i.e. has a UTF-8 encoding. Python strings
    can hold lone surrogates; JSON text, UTF-8 and JCS cannot."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def problems_error(problems: list[dict[str, Any]]) -> ValidationError:
    """One ValidationError for a non-empty list of per-field problems (kept bounded: errors.bounded_details);
    its message names the first."""
    first = problems[0]
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    count = problem_count(problems)
    if count > 1:
        message += f" (and {count - 1} more)"
    return ValidationError(message, bounded_details(problems))


def add_problem(problems: list[dict[str, Any]], field: str, message: str) -> None:
    """Appends a problem; past DETAILS_KEPT of them only counts it, in one last `more_detail` (whose
    message problems_error writes again from the count)."""
    if len(problems) < DETAILS_KEPT:
        problems.append({"field": field, "message": message})
    elif len(problems) == DETAILS_KEPT:
        problems.append(more_detail(1))
    else:
        problems[-1]["more"] += 1


def _invalid(path: str, message: str) -> ValidationError:
    return problems_error([{"field": path, "message": message}])


class _Rejected(Exception):
    """A fast path met something it does not handle; the exact path takes over."""


# ---------------------------------------------------------------------------------------------------
# Encoding


def canonical(obj: Any) -> bytes:
    """The RFC 8785 bytes of `obj`. ValidationError for floats, other types (tuples, subclasses,
    enums…), non-string keys, integers with |n| ≥ 2^53 and lone surrogates in strings or keys."""
    try:
        _check_types(obj)
        out = orjson.dumps(obj, option=_OPTS)
        # ASCII output means ASCII keys (the common case), where orjson's key order is JCS's.
        if out.isascii() or _keys_ascii(obj):
            return out
    except (_Rejected, orjson.JSONEncodeError):
        pass  # the exact encoder below names what is wrong, and where
    except RecursionError:
        raise _invalid("", "JSON nested too deeply") from None
    try:
        return _encode_exact(obj, "")
    except RecursionError:
        raise _invalid("", "JSON nested too deeply") from None


def _check_types(obj: Any) -> None:
    """Raises _Rejected on a value type outside the JSON subset. Non-string keys and out-of-range
    integers are left to orjson (OPT_STRICT_INTEGER), which refuses them in C."""
    if type(obj) is dict:
        values: Any = obj.values()
    elif type(obj) is list:
        values = obj
    elif type(obj) in _SCALARS:
        return
    else:
        raise _Rejected
    kinds = set(map(type, values))  # one C-level pass rather than a Python loop over the scalars
    if kinds <= _SCALARS:
        return
    if not kinds <= _ALLOWED:
        raise _Rejected
    for value in values:
        if type(value) in _CONTAINERS:
            _check_types(value)


def _keys_ascii(obj: Any) -> bool:
    if type(obj) is dict:
        return "".join(obj).isascii() and all([_keys_ascii(v) for v in obj.values()])
    if type(obj) is list:
        return all([_keys_ascii(v) for v in obj])
    return True


def _encode_exact(obj: Any, path: str) -> bytes:
    """The slow encoder: JCS key order by UTF-16 code units, and errors that name the path."""
    t = type(obj)
    if t is str:
        try:
            return orjson.dumps(obj)
        except orjson.JSONEncodeError:
            raise _invalid(path, "string holds a lone surrogate") from None
    if t is bool or obj is None:
        return orjson.dumps(obj)
    if t is int:
        if not -MAX_SAFE_INT <= obj <= MAX_SAFE_INT:
            raise _invalid(path, "integer out of range (|n| must be < 2^53)")
        return str(obj).encode()
    if t is list:
        return b"[" + b",".join([_encode_exact(v, join_path(path, i)) for i, v in enumerate(obj)]) + b"]"
    if t is dict:
        members = sorted((_utf16_key(key, path), key) for key in obj)
        return (
            b"{"
            + b",".join([_encode_exact(k, path) + b":" + _encode_exact(obj[k], join_path(path, k)) for _, k in members])
            + b"}"
        )
    if t is float:
        raise _invalid(path, "floats are not allowed; use an integer")
    raise _invalid(path, f"cannot encode {t.__name__} as canonical JSON")


def _utf16_key(key: Any, path: str) -> bytes:
    if type(key) is not str:
        raise _invalid(path, f"object key {key!r} is not a string")
    try:
        return key.encode("utf-16-be")  # big-endian bytes compare like UTF-16 code units
    except UnicodeEncodeError:
        raise _invalid(join_path(path, key), "object key holds a lone surrogate") from None


# ---------------------------------------------------------------------------------------------------
# Decoding


def loads_strict(data: bytes | str) -> Any:
    """Parses RFC 8259 JSON, refusing everything the SPEC does: duplicate keys, floats and exponents,
    NaN/Infinity, integers with |n| ≥ 2^53, lone surrogates (raw or escaped), invalid UTF-8, a BOM.
    ValidationError names every bad JSON path (e.g. `records[3].system.id`)."""
    try:
        obj = orjson.loads(data)
        _check_no_floats(obj)
        again = orjson.dumps(obj, option=orjson.OPT_STRICT_INTEGER)
        if _colons(data) == again.count(b":"):
            return obj
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, _Rejected, RecursionError):
        pass
    return _loads_exact(_text(data))


def _check_no_floats(obj: Any) -> None:
    """Raises _Rejected if orjson decoded a float: a fraction, an exponent or an integer beyond 64
    bits. (Integers between 2^53 and 2^64 are caught by OPT_STRICT_INTEGER when re-encoding.)"""
    if type(obj) is dict:
        values: Any = obj.values()
    elif type(obj) is list:
        values = obj
    elif type(obj) is float:
        raise _Rejected
    else:
        return
    kinds = set(map(type, values))
    if float in kinds:
        raise _Rejected
    if dict in kinds or list in kinds:
        for value in values:
            if type(value) is dict or type(value) is list:
                _check_no_floats(value)


def _colons(data: bytes | str) -> int:
    """The number of ':' in the raw JSON: one per object member plus those inside strings. orjson
    keeps only the last of duplicate keys, so re-encoding what it decoded gives fewer colons exactly
    when a key was duplicated. A colon written as an escape (\\u003a) only shows after decoding, so
    its presence (-1) sends the caller down the exact path."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return -1 if b"\\u003" in raw else raw.count(b":")


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        if not is_valid_unicode(data):
            raise _invalid("", "the text holds a lone surrogate")
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _invalid("", f"invalid UTF-8 at byte {e.start}") from None
    if text.startswith("\ufeff"):
        raise _invalid("", "a byte order mark is not allowed before JSON")
    return text


class _Bad:
    """What the exact decoder puts where a forbidden value stood, so that a walk can name its path."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _Object(dict[str, Any]):
    """A decoded object that saw some key more than once: `shadowed` keeps the members a later one
    replaced, so that problems inside them are reported too."""

    shadowed: list[tuple[str, Any]]


def _exact_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Object(pairs)
    last = {k: i for i, (k, _) in enumerate(pairs)}
    marked.shadowed = [(k, v) for i, (k, v) in enumerate(pairs) if last[k] != i]
    return marked


def _exact_int(text: str) -> int | None:
    # Checking the length first keeps int() away from huge literals.
    if len(text.lstrip("-")) <= _INT_DIGITS and -MAX_SAFE_INT <= (n := int(text)) <= MAX_SAFE_INT:
        return n
    return None


class _Marks:
    """The hooks of the standard library's scanner for one text: they mark, rather than refuse, what the
    SPEC forbids, so that one pass finds every bad path, and count the marks (duplicate keys included),
    so that the walk naming them can stop at DETAILS_KEPT. Slower than orjson, so used only when the
    fast path objects."""

    def __init__(self) -> None:
        self.count = 0
        self.decoder = json.JSONDecoder(object_pairs_hook=self._object, parse_float=self._float,
                                        parse_int=self._int, parse_constant=self._constant)

    def _bad(self, message: str) -> _Bad:
        self.count += 1
        return _Bad(message)

    def _float(self, _: str) -> _Bad:
        return self._bad("floats are not allowed; use an integer")

    def _int(self, text: str) -> int | _Bad:
        n = _exact_int(text)
        return self._bad("integer out of range (|n| must be < 2^53)") if n is None else n

    def _constant(self, name: str) -> _Bad:
        return self._bad(f"{name} is not allowed in JSON")

    def _object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = _exact_object(pairs)
        self.count += len(pairs) - len(obj)
        return obj


class _Enough(Exception):
    """The walk has named DETAILS_KEPT problems; the rest are only counted."""


def _loads_exact(text: str) -> Any:
    marks = _Marks()
    try:
        obj = marks.decoder.decode(text)
    except json.JSONDecodeError as e:
        raise _invalid("", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise _invalid("", "JSON nested too deeply") from None
    problems: list[dict[str, Any]] = []
    if marks.count:
        with contextlib.suppress(_Enough):
            _marked_paths(obj, "", problems)
        if marks.count > len(problems):
            problems.append(more_detail(marks.count - len(problems)))
    # Only an escape can bring in a lone surrogate ("\ud800"); raw ones already failed UTF-8 decoding.
    if _ESCAPED_SURROGATE.search(text):
        _surrogate_paths(obj, "", problems)
    if problems:
        raise problems_error(problems)
    return obj


def _marked_paths(obj: Any, path: str, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Names the marked values and duplicate keys in document order; raises _Enough at DETAILS_KEPT."""
    if isinstance(obj, _Bad):
        _name(out, path, obj.message)
    elif isinstance(obj, dict):
        for key, value in getattr(obj, "shadowed", ()):
            _name(out, join_path(path, key), "duplicate key")
            _marked_paths(value, join_path(path, key), out)
        for key, value in obj.items():
            _marked_paths(value, join_path(path, key), out)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _marked_paths(value, join_path(path, i), out)
    return out


def _name(out: list[dict[str, Any]], path: str, message: str) -> None:
    out.append({"field": path, "message": message})
    if len(out) >= DETAILS_KEPT:
        raise _Enough


def _surrogate_paths(obj: Any, path: str, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(obj, str):
        if not is_valid_unicode(obj):
            add_problem(out, path, "string holds a lone surrogate")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if is_valid_unicode(key):
                _surrogate_paths(value, join_path(path, key), out)
            else:
                add_problem(out, join_path(path, key), "object key holds a lone surrogate")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _surrogate_paths(value, join_path(path, i), out)
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: `patch` applied to `target`, neither changed. An object patch merges
    member by member (null removes a member); any other patch replaces the target whole."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out
