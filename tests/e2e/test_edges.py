"""Edges of the API and the CLI on real servers and real processes: RFC 3339 times at their limits
(leap seconds, years 0001 and 9999, offsets across a year), as records, query parameters and CLI options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlog.demo import build_demo
from tlog.log import open_log

from .conftest import start_server, stop_server
from .test_service_api import Api, _rec, make_token

EDGES = [
    "9999-12-31T23:59:60Z", "9999-12-31T23:59:59.999999999Z", "9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00+01:00",
    "0001-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "2016-12-31T23:59:60Z", "2016-12-31T15:59:60-08:00",
    "2024-02-29T23:59:60+23:59", "2023-02-29T00:00:00Z", "2026-08-01T24:00:00Z", "1969-12-31T23:59:59.999Z",
]


def rfc3339_like() -> st.SearchStrategy[str]:
    """Strings shaped like RFC 3339 date-times, valid or just off (year 0, day 31 of any month, hour 24,
    second 60, any zone), and the fixed edges."""
    parts = st.tuples(st.integers(0, 9999), st.integers(1, 12), st.integers(1, 31), st.integers(0, 24),
                      st.integers(0, 59), st.integers(0, 60), st.sampled_from(["", ".5", ".999999999"]),
                      st.sampled_from(["Z", "+01:00", "-01:00", "+23:59", "-23:59", "+00:00"]))
    return st.sampled_from(EDGES) | parts.map(lambda p: "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format(*p))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    db = tmp_path_factory.mktemp("edges") / "tlog.db"
    build_demo(str(db), 20)
    tokens = {"recsys": make_token(db, "--service", "recsys"), "artist7": make_token(db, "--artist", "sc:user:7")}
    server = start_server(db)
    yield Api(server), tokens, db
    out = stop_server(server)
    assert "Traceback" not in out, out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(when=rfc3339_like())
def test_occurred_at_at_any_edge_is_a_400_naming_it_or_logged(env, when):
    api, tok, _ = env
    size = api.size()
    status, body = api.json("POST", "/v1/uses", tok["recsys"], _rec(0, event_id=f"edge-{abs(hash(when))}", occurred_at=when))
    if status == 400:
        assert [d["field"] for d in body["error"]["details"]] == ["occurred_at"], body
        assert api.size() == size  # nothing changed
    else:
        assert status == 200, body
        assert when[:4] != "9999"  # a time in year 9999 is in the future: never accepted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(when=rfc3339_like(), name=st.sampled_from(["since", "until"]))
def test_since_and_until_at_any_edge_are_a_400_naming_them_or_an_answer(env, when, name):
    api, tok, _ = env
    status, body = api.json("GET", f"/v1/artists/sc:user:7/uses?{name}={quote(when)}", tok["artist7"])
    if status == 400:
        assert [d["field"] for d in body["error"]["details"]] == [name], body
    else:
        assert status == 200, body


def test_since_and_until_filter_exactly_at_the_edges(env):
    api, tok, _ = env
    path = "/v1/artists/sc:user:7/uses?limit=1000"
    _, everything = api.json("GET", path, tok["artist7"])
    assert everything["entries"]
    for query in ("since=0001-01-01T00:30:00%2B01:00", "until=9999-12-31T23:59:60Z", "until=9999-12-31",
                  "since=0001-01-01&until=9999-12-31T23:30:00-01:00"):
        status, body = api.json("GET", f"{path}&{query}", tok["artist7"])
        assert status == 200 and body["entries"] == everything["entries"], query
    first = everything["entries"][0]["logged_at"]
    status, body = api.json("GET", f"{path}&until={quote(first)}", tok["artist7"])
    assert status == 200 and all(e["logged_at"] < first for e in body["entries"])
    status, body = api.json("GET", f"{path}&since={first[:10]}&until={first[:10]}", tok["artist7"])
    assert status == 200 and body["entries"] and all(e["logged_at"][:10] == first[:10] for e in body["entries"])


@pytest.mark.parametrize("when, message", [
    ("9999-12-31T23:59:60Z", "before the year 10000"),
    ("9999-12-31T23:30:00-01:00", "before the year 10000"),
    ("0001-01-01T00:30:00+01:00", "before it is announced"),
    ("2023-02-29T00:00:00Z", "not a date"),
    ("2026-08-01T12:00:00", "RFC 3339"),
])
def test_policy_effective_at_an_edge_is_one_line_and_changes_nothing(tmp_path: Path, when: str, message: str):
    db = tmp_path / "tlog.db"
    build_demo(str(db), 5)
    doc = tmp_path / "policy.json"
    doc.write_text(orjson.dumps({"purposes": {"recommendation": {
        "covers": "ranking", "category": "cawg.ai_inference", "default": "allowed", "override_eligible": False}},
        "text": "t", "notice_days": 30}).decode())
    before = _size(db)
    out = subprocess.run([sys.executable, "-m", "tlog.cli", "policy", "publish", "--db", str(db), "--id", "p2",
                          "--effective", when, str(doc)], capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert message in out.stderr.splitlines()[0] or message in out.stderr, out.stderr
    assert _size(db) == before


def _size(db: Path) -> int:
    log = open_log(db, readonly=True)
    try:
        return log.store.size()
    finally:
        log.close()
