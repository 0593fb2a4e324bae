"""Intake: a large write request is checked in a worker process, with the same answers and errors as
checking it here; a worker that dies costs one request a 503, not the server."""

from __future__ import annotations

import io
import os
import signal
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
import pytest

from tlog import intake
from tlog.errors import Unavailable, ValidationError
from tlog.intake import Intake, check_body
from tlog.policy import DEFAULT_POLICY

from .conftest import records

NOW = datetime.now(timezone.utc)
ARGS = {"now": NOW, "purposes": DEFAULT_POLICY.purposes, "max_records": 1000}


@pytest.fixture
async def worker():
    w = Intake()
    yield w
    w.close()


def big(recs: list[dict]) -> bytes:
    body = orjson.dumps({"records": recs})
    assert len(body) >= intake.PARALLEL_MIN_BYTES  # so the worker path is the one taken
    return body


async def test_a_large_body_checked_in_the_worker_equals_checking_it_here(worker):
    body = big(records(1000, seed=3))
    there = await worker.check_body(body, **ARGS)
    assert worker._pool is not None
    assert there == check_body(body, **ARGS) and there.batch and len(there.records) == 1000


async def test_a_large_invalid_body_gets_the_same_error_with_every_detail(worker):
    recs = records(1000, seed=4)
    recs[500]["purpose"] = "model_training_secretly"
    recs[900]["occurred_at"] = "yesterday"
    recs[7]["surprise"] = "x"
    body = big(recs)
    with pytest.raises(ValidationError) as here:
        check_body(body, **ARGS)
    with pytest.raises(ValidationError) as there:
        await worker.check_body(body, **ARGS)
    assert (there.value.message, there.value.details) == (here.value.message, here.value.details)
    assert {d["field"] for d in there.value.details} >= {"records[500].purpose", "records[900].occurred_at", "records[7].surprise"}


async def test_small_bodies_are_checked_here(worker):
    body = orjson.dumps(records(1, seed=5)[0])
    checked = await worker.check_body(body, **ARGS)
    assert worker._pool is None and not checked.batch and len(checked.records) == 1


async def test_a_worker_that_dies_fails_one_request_then_is_replaced(worker):
    body = big(records(1000, seed=6))
    await worker.check_body(body, **ARGS)
    for pid in list(worker._pool._processes):  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(Unavailable):
        for _ in range(50):  # the pool notices the death at its next task
            await worker.check_body(body, **ARGS)
    assert (await worker.check_body(body, **ARGS)).records == check_body(body, **ARGS).records


# --- JSON Lines files (`tlog append`) ----------------------------------------------------------------


def _file(lines: list[bytes]) -> io.BytesIO:
    f = io.BytesIO(b"\n".join(lines) + b"\n")
    f.name = "uses.jsonl"
    return f


def test_check_lines_names_every_problem_by_line_and_keeps_nothing():
    good = [orjson.dumps(r) for r in records(3, seed=5)]
    bad_purpose = orjson.loads(good[1])
    bad_purpose["purpose"] = "mind_reading"
    lines = intake.read_jsonl(_file([good[0], b"", b"{not json", orjson.dumps(bad_purpose), good[2], good[2]]))
    assert [n for n, _ in lines.rows] == [1, 4, 5, 6]  # the blank line is skipped, the broken one is a problem
    with pytest.raises(ValidationError) as caught:
        intake.check_lines(lines, now=NOW, purposes=DEFAULT_POLICY.purposes)
    fields = [d["field"] for d in caught.value.details]
    assert fields[0] == "line 3" and "line 4: purpose" in fields and "lines 5, 6" in fields
    assert caught.value.message == f"{len(fields)} problem(s) in uses.jsonl; nothing was appended"


def test_check_lines_returns_every_record_validated():
    recs = records(4, seed=6)
    checked = intake.check_lines(intake.read_jsonl(_file([orjson.dumps(r) for r in recs])), now=NOW,
                                 purposes=DEFAULT_POLICY.purposes)
    assert [r["event_id"] for r in checked] == [r["event_id"] for r in recs]


def test_appended_counts_outcomes_and_says_them():
    @dataclass
    class Result:
        decision: str
        duplicate: bool

    done = intake.Appended(size=9)
    done.count([Result("allowed", False), Result("refused", False), Result("allowed", True)])
    assert (done.appended, done.duplicate, done.decisions) == (2, 1, {"allowed": 2, "refused": 1})
    assert done.summary() == "2 appended, 1 duplicate (2 allowed, 1 refused); size 9"
