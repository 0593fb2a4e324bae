"""Shared fixtures: a fresh log on disk, helpers to append realistic records."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from tlog.demo import sample_records
from tlog.log import LocalLog, init_log
from tlog.records import validate_use
from tlog.sequencer import Sequencer, Submission, UseResult

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
pytest_plugins = ["tests.postgres"]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[LocalLog]:
    lg = init_log(tmp_path / "tlog.db", "test.tlog.example/log")
    yield lg
    lg.close()


# One start for every test's records: the same seed then gives the same bodies whichever second each
# call falls in (two calls straddling a second once made a resent record a "different body", 409).
RECORDS_START = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)


def records(n: int, *, seed: int = 1, artists: int = 5, **overrides: Any) -> list[dict[str, Any]]:
    out = []
    for _, r in sample_records(n, seed=seed, artists=artists, start=RECORDS_START):
        r.update(overrides)
        out.append(r)
    return out


def append(seq: Sequencer, recs: list[dict[str, Any]], service: str = "recsys") -> list[UseResult]:
    valid = [validate_use(r, now=datetime.now(timezone.utc), purposes=seq.policy.purposes) for r in recs]
    (res,) = seq.append_uses([Submission(service, valid)])
    if isinstance(res, Exception):
        raise res
    return res


def make_older(db: Path, *statements: str) -> None:
    """Turns the closed log at `db` into one an earlier version made: `statements` take away what that
    version did not have, and the record of applied migrations goes too (it did not have that either)."""
    conn = sqlite3.connect(db)
    conn.executescript(";".join([*statements, "DROP TABLE _sqlite_migrations"]))
    conn.close()
