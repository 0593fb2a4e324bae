"""The public figures: the store's count of any period (whole days from its table, the edges recounted
from the entries) is the recount of exactly the leaves logged in it; a log made before the table had
phases gains it on open; the query refuses what can match nothing, naming the valid codes."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.errors import StorageError, ValidationError
from tlog.log import LocalLog, init_log, open_log
from tlog.records import PHASES
from tlog.stats import MAX_DAYS, StatsQuery, Tally, answer, parse_query

from .conftest import append, make_older, records

HOUR_MS = 3_600_000
START = (int(time.time()) // 86_400 - 12) * 86_400 + 1_800  # 00:30 UTC, twelve days ago


@pytest.fixture(scope="module")
def spread(tmp_path_factory) -> Iterator[LocalLog]:
    """A log whose batches were logged seven hours apart over twelve days (so days split batches)."""
    now = [float(START)]
    log = init_log(tmp_path_factory.mktemp("spread") / "tlog.db", "stats.test/log", clock=lambda: now[0])
    seq = log.sequencer(clock=lambda: now[0])
    for k in range(40):
        now[0] = START + k * 7 * 3600 + k
        append(seq, records(4, seed=k, phase=("inference", "evaluation")[k % 2]))
    yield log
    log.close()


def recount(log: LocalLog, size: int, since: int | None, until: int | None) -> list[tuple]:
    tally = Tally()
    for e in log.store.entries(0, size):
        if (since is None or e.logged_ms >= since) and (until is None or e.logged_ms < until):
            tally.add_details(e.logged_ms, e.type, e.details)
    return tally.rows()


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_the_figures_of_any_period_are_the_recount_of_its_leaves(spread, data):
    total = spread.store.size()
    end = (START + 40 * 7 * 3600) * 1000
    moment = st.one_of(st.none(), st.integers(START * 1000 - HOUR_MS, end + HOUR_MS),
                       st.sampled_from([e.logged_ms for e in spread.store.entries(0, total)]))
    since, until = data.draw(moment), data.draw(moment)
    size = data.draw(st.integers(1, total))
    assert spread.store.stats(size, since, until) == recount(spread, size, since, until)


def test_a_log_made_before_the_usage_table_gains_it_on_open(tmp_path: Path):
    db = tmp_path / "old.db"
    log = init_log(db, "stats.test/log")
    append(log.sequencer(), records(30))
    want = log.store.stats()
    size = log.store.size()
    log.close()
    # As a log of the previous version: a `stats` table without phases, no `usage` table.
    make_older(db, "DROP TABLE usage",
               "CREATE TABLE stats (day TEXT, type TEXT, purpose TEXT, decision TEXT, leaves INT, uses INT)")
    with pytest.raises(StorageError, match=r"needs its tables upgraded \(.*usage\)"):
        open_log(db, readonly=True)  # cannot add the table
    reopened = open_log(db)
    try:
        tables = {r[0] for r in reopened.store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "usage" in tables and "stats" not in tables
        assert reopened.store.stats() == want == recount(reopened, size, None, None)
    finally:
        reopened.close()


def test_a_query_that_can_match_nothing_names_the_valid_codes():
    purposes = {"recommendation", "fraud_detection"}
    with pytest.raises(ValidationError) as info:
        parse_query({"purpose": "recomendation"}, purposes)
    assert info.value.details == [{"field": "purpose", "message": "not a purpose of this log; use one of fraud_detection, recommendation"}]
    with pytest.raises(ValidationError, match="not a phase of this log") as info:
        parse_query({"phase": "trainning"}, purposes)
    assert ", ".join(sorted(PHASES)) in info.value.details[0]["message"]
    with pytest.raises(ValidationError, match="unknown query parameter 'size'"):
        parse_query({"size": "3"}, purposes)
    q = parse_query({"since": "2026-12-01", "until": "2026-12-01T12:30:00+01:00", "phase": "training"}, purposes)
    edges = parse_query({"since": "0001-01-01", "until": "1960-01-01T00:00:00Z"}, purposes)
    assert (edges.since_ms, edges.until_ms) == (0, 0)  # before the first possible leaf: the answer names them
    assert answer([], 0, edges)["until"] == "1970-01-01T00:00:00.000Z"
    midnight = int(datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp()) * 1000
    assert (q.since_ms, q.until_ms) == (midnight, midnight + 23 * HOUR_MS // 2)


def test_the_answer_is_bounded_and_filtered():
    rows = [(f"2025-{1 + d // 28:02d}-{1 + d % 28:02d}", "use", "recommendation", "inference", "allowed", 2, 5)
            for d in range(400)] + [("2025-01-01", "use", "fraud_detection", "training", "allowed", 1, 1)]
    got = answer(rows, 999, StatsQuery(purpose="recommendation"))
    assert len(got["by_day"]) == MAX_DAYS and got["days_left_out"] == 400 - MAX_DAYS
    assert got["by_day"][-1]["day"] == rows[399][0]  # the latest days are the ones kept
    assert got["totals"] == [{"type": "use", "purpose": "recommendation", "phase": "inference", "decision": "allowed",
                              "leaves": 800, "uses": 2000}]
