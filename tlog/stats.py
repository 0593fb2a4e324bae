"""The public figures (SPEC §6 `GET /v1/stats`, `tlog stats`): leaves and invocations by day (of
`logged_at`, the only public time), type, purpose, phase and decision. Everything counted is in the public
leaves, so anyone can recount them: `Tally` is the one count, which the store keeps, the fsck and
`tlog verify --url` redo, and `answer` the one JSON shape the API and the CLI print. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError
from .policy import parse_policy
from .records import MAX_LOGGED_MS, PHASES, format_logged_at, parse_time_filter, unknown_code

StatRow = tuple[str, str, str, str, str, int, int]  # (day, type, purpose, phase, decision, leaves, uses); "" where none
USE_TYPES = ("use", "refusal")
MAX_DAYS = 366  # `by_day` lists at most the period's latest year of days: the answer's size is bounded
_PARAMS = ("since", "until", "purpose", "phase")
_DAY_MS = 86_400_000


@dataclass
class Tally:
    """Counts per (day, type, purpose, phase, decision): [leaves, uses]. Only uses and refusals carry
    purpose, phase, decision and invocations; other leaves count by day and type alone."""

    counts: dict[tuple[str, str, str, str, str], list[int]] = field(default_factory=dict)
    _days: dict[int, str] = field(default_factory=dict)

    def add(self, logged_ms: int, type_: str, purpose: str | None = None, phase: str | None = None,
            decision: str | None = None, invocations: int = 0) -> None:
        day = self._days.get(logged_ms // _DAY_MS)
        if day is None:
            day = self._days[logged_ms // _DAY_MS] = format_logged_at(logged_ms)[:10]
        use = type_ in USE_TYPES
        key = (day, type_, purpose or "", phase or "", decision or "") if use else (day, type_, "", "", "")
        slot = self.counts.get(key)
        if slot is None:
            slot = self.counts[key] = [0, 0]
        slot[0] += 1
        slot[1] += invocations if use else 0

    def add_details(self, logged_ms: int, type_: str, details: Mapping[str, Any]) -> None:
        """An entry, from its (private) details: only their public fields are counted."""
        self.add(logged_ms, type_, details.get("purpose"), details.get("phase"), details.get("decision"),
                 details.get("invocations", 0))

    def merge(self, other: Tally) -> None:
        for key, (n, u) in other.counts.items():
            slot = self.counts.setdefault(key, [0, 0])
            slot[0] += n
            slot[1] += u

    def rows(self) -> list[StatRow]:
        return sorted((*k, n, u) for k, (n, u) in self.counts.items())


@dataclass(frozen=True)
class StatsQuery:
    """A period of `logged_at` ([since, until), milliseconds) and optional purpose and phase."""

    since_ms: int | None = None
    until_ms: int | None = None
    purpose: str | None = None
    phase: str | None = None


def purposes_of(policies: Iterable[Any]) -> set[str]:
    """Every purpose code of the published policies (store `PolicyRecord`s): a filter may name a purpose
    of any policy the log ever had, not only of the one in force."""
    return {code for rec in policies for code in parse_policy(rec.document, rec.policy_id).purposes}


def parse_query(params: Mapping[str, str], purposes: Collection[str]) -> StatsQuery:
    """The query of `GET /v1/stats` (or `tlog stats`'s options). `since`/`until` are a date or an RFC 3339
    time; a purpose not among `purposes` (every purpose of every published policy) or an unknown phase is
    an error naming the valid codes, never an empty answer that reads as "none"."""
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise ValidationError(f"unknown query parameter {unknown[0]!r}; use {', '.join(_PARAMS)}",
                              [{"field": unknown[0], "message": "unknown"}])
    # Kept within the times a leaf can have (1970 to 9999), which the answer then names exactly.
    since = _leaf_time(parse_time_filter(params["since"], field="since")) if "since" in params else None
    until = _leaf_time(parse_time_filter(params["until"], field="until")) if "until" in params else None
    if since is not None and until is not None and until < since:
        raise ValidationError("until is before since", [{"field": "until", "message": f"at or after since ({params['since']})"}])
    purpose, phase = params.get("purpose"), params.get("phase")
    for name, value, codes in (("purpose", purpose, purposes), ("phase", phase, PHASES)):
        if value is not None and value not in codes:
            raise ValidationError(f"{name} {value[:64]!r} is not a {name} of this log",
                                  [{"field": name, "message": unknown_code(f"a {name} of this log", codes)}])
    return StatsQuery(since, until, purpose, phase)


def _leaf_time(ms: int) -> int:
    return min(max(ms, 0), MAX_LOGGED_MS - 1)


def answer(rows: Iterable[StatRow], size: int, query: StatsQuery) -> dict[str, Any]:
    """The one JSON shape of the figures: `totals` over the period, and `by_day` for its latest MAX_DAYS
    days (`days_left_out` says how many earlier days with leaves are only in the totals). Rows of other
    purposes or phases than the query's are left out, and with a purpose or phase only uses and refusals
    are counted (other leaves have neither)."""
    totals: dict[tuple[str, str, str, str], list[int]] = {}
    by_day: list[dict[str, Any]] = []
    for day, type_, purpose, phase, decision, leaves, uses in sorted(rows):
        if (query.purpose and purpose != query.purpose) or (query.phase and phase != query.phase):
            continue
        t = totals.setdefault((type_, purpose, phase, decision), [0, 0])
        t[0] += leaves
        t[1] += uses
        by_day.append({"day": day, **_group(type_, purpose, phase, decision), "leaves": leaves, "uses": uses})
    days = sorted({d["day"] for d in by_day})
    kept = set(days[-MAX_DAYS:])
    return {
        "size": size,
        "since": None if query.since_ms is None else format_logged_at(query.since_ms),
        "until": None if query.until_ms is None else format_logged_at(query.until_ms),
        "purpose": query.purpose,
        "phase": query.phase,
        "totals": [{**_group(*k), "leaves": n, "uses": u} for k, (n, u) in sorted(totals.items())],
        "by_day": [d for d in by_day if d["day"] in kept],
        "days_left_out": len(days) - len(kept),
    }


def _group(type_: str, purpose: str, phase: str, decision: str) -> dict[str, str | None]:
    return {"type": type_, "purpose": purpose or None, "phase": phase or None, "decision": decision or None}
