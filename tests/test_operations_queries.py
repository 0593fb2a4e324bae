"""The ad-hoc queries of docs/OPERATIONS.md ("Questions the API does not answer") run, exactly as written,
against a real log in a folder laid out as the README's (data/tlog.db), with the sqlite-utils that tlog
installs; and what they print agrees with the log: the first with `tlog stats`, the second with the
artist's entries."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tlog.log import init_log, open_log

from .conftest import append, records

DOC = Path(__file__).resolve().parents[1] / "docs" / "OPERATIONS.md"


def _commands() -> list[str]:
    return [line for line in DOC.read_text().splitlines() if line.startswith("sqlite-utils query data/tlog.db ")]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A log with uses by two services, some refused (sc:user:1 opted out of everything)."""
    lg = init_log(tmp_path / "data" / "tlog.db", "ops.tlog.example/log")
    seq = lg.sequencer()
    seq.set_preferences("sc:user:1", {"no_ai": True}, by="artist")
    append(seq, records(300, seed=1, artists=6), service="recsys")
    append(seq, records(200, seed=2, artists=6), service="fraud")
    seq.close()
    lg.close()
    return tmp_path


def _run(folder: Path, command: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, f"{command}\n{done.stdout}{done.stderr}"
    return done.stdout


def test_the_documented_queries_run_as_written(folder):
    commands = _commands()
    assert len(commands) == 3, "docs/OPERATIONS.md's queries changed: update this test with them"
    for command in commands:
        _run(folder, command)
    csv = (folder / "recsys-uses.csv").read_text().splitlines()
    assert csv[0] == "index,logged_at,event_id,content_id,purpose,phase,decision,invocations"
    assert len(csv) == 1 + 300 and re.fullmatch(r"\d+,\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z,.*", csv[1])


def test_uses_by_service_agree_with_the_public_figures(folder):
    rows = orjson.loads(_run(folder, _commands()[0].replace(" --table", "")))  # JSON: sqlite-utils' default
    assert {r["service"] for r in rows} == {"recsys", "fraud"} and sum(r["uses"] for r in rows) == 500
    mine, public = Counter(), Counter()
    for r in rows:
        mine[r["purpose"], r["decision"], "leaves"] += r["uses"]
        mine[r["purpose"], r["decision"], "uses"] += r["invocations"]
    done = subprocess.run([sys.executable, "-m", "tlog.cli", "stats", "--db", str(folder / "data" / "tlog.db"), "--json"],
                          capture_output=True, text=True, check=True)
    for t in orjson.loads(done.stdout)["totals"]:
        if t["type"] in ("use", "refusal"):
            public[t["purpose"], t["decision"], "leaves"] += t["leaves"]
            public[t["purpose"], t["decision"], "uses"] += t["uses"]
    assert mine == public and any(d == "refused" for _, d, _ in mine)


def test_one_artists_uses_by_track_agree_with_its_entries(folder):
    command = _commands()[1].replace("-p artist sc:user:42", "-p artist sc:user:3")
    rows = orjson.loads(_run(folder, command.replace(" --table", "")))
    with open_log(folder / "data" / "tlog.db", readonly=True) as lg:
        want = Counter((e.details["content_id"], e.details["purpose"]) for e in lg.store.entries(0, lg.store.size())
                       if e.artist_id == "sc:user:3" and e.type in ("use", "refusal"))
    assert want and {(r["content_id"], r["purpose"]): r["uses"] for r in rows} == dict(want)
