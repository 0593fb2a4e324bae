"""Intake: large write requests parsed and validated in a worker process.

Parsing a request strictly and checking each record costs about a third of what sequencing and storing
it does, holds the GIL the whole time, and needs nothing of the log but the policy's purpose codes. The
server's event loop and its sequencer thread share one GIL, so a large body is checked in a worker
process instead, on the other core; the worker hands the normalised records back as one JSON document
(orjson), which loads here for a fifth of the cost of checking. Small bodies are checked in-process,
where the round trip would cost more than the work. Either way the checks are `check_body`'s, so a body
gets the same answer and the same error wherever it was checked.

A JSON Lines file (`tlog append FILE`) is read by `read_jsonl` and checked by `check_lines`: every problem
of every line is listed, by line, and nothing is appended unless there is none. `Appended` counts what
became of appended records, locally (LocalLog.append_uses) or remotely (client/upload.py) alike.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Collection, Protocol

import orjson

from .canonical import loads_strict
from .child import die_with_parent
from .errors import Unavailable, ValidationError, bounded_details, problem_count
from .gctune import tune_for_batches
from .records import UseRecord, validate_use

PARALLEL_MIN_BYTES = 64 << 10  # from this body size a worker's round trip pays off


@dataclass(frozen=True, slots=True)
class Checked:
    """A request's records, validated. `batch`: the body was {"records": [...]}, not one record."""

    records: list[UseRecord]
    batch: bool


def check_body(body: bytes, *, now: datetime, purposes: Collection[str], max_records: int) -> Checked:
    """The records of a `POST /v1/uses` body: one record, or {"records": [1..max_records records]}.
    ValidationError naming every problem (fields as `records[3].purpose`) if any record is invalid."""
    obj = loads_strict(body)
    batch = isinstance(obj, dict) and "records" in obj
    raw = _records(obj, max_records)
    valid: list[UseRecord] = []
    problems: list[dict[str, Any]] = []
    for i, r in enumerate(raw):
        try:
            valid.append(validate_use(r, now=now, purposes=purposes, at=f"records[{i}]" if batch else ""))
        except ValidationError as exc:
            problems = bounded_details(problems + exc.details)
    if problems:
        raise ValidationError(f"{problem_count(problems)} problem(s); nothing was logged", problems)
    return Checked(valid, batch)


def _records(body: Any, max_records: int) -> list[Any]:
    if isinstance(body, dict) and "records" in body:
        extra = sorted(set(body) - {"records"})
        if extra:
            raise ValidationError(f"unknown field {extra[0]!r} beside 'records'", [{"field": extra[0], "message": "unknown field"}])
        recs = body["records"]
        if not isinstance(recs, list) or not 1 <= len(recs) <= max_records:
            raise ValidationError(f"'records' must be a list of 1 to {max_records} records",
                                  [{"field": "records", "message": f"1 to {max_records} records"}])
        return recs
    if isinstance(body, dict):
        return [body]
    raise ValidationError("the body must be a record or {\"records\": [...]}", [{"field": "", "message": "not an object"}])


def _init_worker(parent: int) -> None:
    die_with_parent(parent)
    tune_for_batches()


def _check_in_worker(body: bytes, now: datetime, purposes: frozenset[str], max_records: int) -> tuple[Any, ...]:
    # An answer rather than a raised error: an exception crosses processes by pickling its constructor's
    # arguments, which would drop the details.
    try:
        checked = check_body(body, now=now, purposes=purposes, max_records=max_records)
    except ValidationError as exc:
        return ("invalid", exc.message, exc.details)
    return ("ok", checked.batch, orjson.dumps(checked.records))


# --- JSON Lines files (`tlog append`) ----------------------------------------------------------------


@dataclass
class JsonLines:
    """A JSON Lines file read: (line number, parsed JSON) of each record, and the problems found so far."""

    name: str
    rows: list[tuple[int, Any]]
    problems: list[dict[str, Any]]

    def refuse_if_problems(self) -> None:
        """ValidationError listing every problem, by line, if there is any: then nothing may be appended."""
        if self.problems:
            problems = sorted(self.problems, key=lambda d: int(re.search(r"\d+", d["field"]).group()))  # type: ignore[union-attr]
            raise ValidationError(f"{len(problems)} problem(s) in {self.name}; nothing was appended", problems)


def read_jsonl(f: IO[bytes]) -> JsonLines:
    """The records of a JSON Lines file (blank lines skipped), with its problems: every line that is not
    strict JSON, and every event_id that appears more than once, with its lines."""
    rows: list[tuple[int, Any]] = []
    problems: list[dict[str, Any]] = []
    lines_of: dict[str, list[int]] = {}
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            obj = loads_strict(line)
        except ValidationError as exc:
            problems.extend({"field": f"line {n}", "message": d["message"]} for d in (exc.details or [{"message": exc.message}]))
            continue
        rows.append((n, obj))
        if isinstance(obj, dict) and isinstance(obj.get("event_id"), str):
            lines_of.setdefault(obj["event_id"], []).append(n)
    problems.extend({"field": f"lines {', '.join(map(str, ns))}",
                     "message": f"event_id {eid!r} appears {len(ns)} times; give each use its own event_id"}
                    for eid, ns in lines_of.items() if len(ns) > 1)
    return JsonLines(getattr(f, "name", "the input"), rows, problems)


def check_lines(lines: JsonLines, *, now: datetime, purposes: Collection[str]) -> list[UseRecord]:
    """Every record of the file validated (SPEC §2.1), or ValidationError naming every problem by line
    (`line 7: purpose`), the file's own problems included."""
    valid: list[UseRecord] = []
    for n, obj in lines.rows:
        try:
            valid.append(validate_use(obj, now=now, purposes=purposes))
        except ValidationError as exc:
            lines.problems.extend({"field": f"line {n}: {d['field']}" if d.get("field") else f"line {n}", "message": d["message"]}
                                  for d in (exc.details or [{"message": exc.message}]))
    lines.refuse_if_problems()
    return valid


class Outcome(Protocol):
    """What the log answered for one record, locally (a UseResult) or from a server (a UseReceipt)."""

    @property
    def decision(self) -> str: ...

    @property
    def duplicate(self) -> bool: ...


@dataclass
class Appended:
    """What became of the records of an append: how many were new, how many duplicates of records logged
    before, each decision's count, and the size of a signed checkpoint covering them all."""

    appended: int = 0
    duplicate: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    size: int = 0

    def count(self, outcomes: Iterable[Outcome]) -> None:
        for r in outcomes:
            if r.duplicate:
                self.duplicate += 1
            else:
                self.appended += 1
            self.decisions[r.decision] = self.decisions.get(r.decision, 0) + 1

    def summary(self) -> str:
        decisions = ", ".join(f"{v} {k}" for k, v in sorted(self.decisions.items()))
        return f"{self.appended} appended, {self.duplicate} duplicate ({decisions or 'none'}); size {self.size}"


# --- the worker process -------------------------------------------------------------------------------


class Intake:
    """One worker process (started with `spawn`: a fork of the threaded server could inherit a held
    lock), started by `start` (at server start-up) or at the first large body, and again after it died."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Starts the worker now (it takes about a second to import what it needs), so the first large
        body after a restart does not wait for it."""
        self._ensure_pool().submit(os.getpid)

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(os.getpid(),))
        return self._pool

    async def check_body(self, body: bytes, *, now: datetime, purposes: Collection[str], max_records: int) -> Checked:
        if len(body) < PARALLEL_MIN_BYTES:
            return check_body(body, now=now, purposes=purposes, max_records=max_records)
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._ensure_pool(), _check_in_worker, body, now, frozenset(purposes), max_records)
        except BrokenProcessPool:
            self._pool = None  # a new worker next time
            raise Unavailable("the process checking large requests died; send the request again") from None
        if answer[0] == "invalid":
            raise ValidationError(answer[1], answer[2])
        return Checked(orjson.loads(answer[2]), answer[1])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
