"""`tlog erase` while `tlog serve` runs on the same database, as an operator does it: the server keeps
serving, the erased artist's token stops working, reads of erased entries say when and why they were
erased, the statistics do not move, every verifier (`verify --db`, `verify --url`, `monitor`, before and
after, the artist's `audit`) still passes, and an artist id that comes back continues its chain."""

from __future__ import annotations

import csv
import io
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from tlog.cli import main
from tlog.log import init_log

from .conftest import Server, start_server, stop_server
from .test_service_api import make_token

GONE, KEPT = "sc:user:erase-me", "sc:user:stays"
REASON = "account deleted"


def record(event_id: str, artist: str, purpose: str = "recommendation") -> dict[str, Any]:
    return {"event_id": event_id, "content_id": f"sc:track:{event_id}", "artist_id": artist, "purpose": purpose,
            "phase": "inference", "system": {"id": "recs", "model": "ranker", "version": "1"},
            "occurred_at": "2026-08-01T12:00:00Z", "detail": f"detail of {event_id}"}


class Env:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.vkey = self.get("/v1/log")[1]["verifier_keys"][0]
        self.tokens = {"service": make_token(server.db, "--service", "recsys"), "auditor": make_token(server.db, "--auditor"),
                       "gone": make_token(server.db, "--artist", GONE), "kept": make_token(server.db, "--artist", KEPT)}

    def request(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {self.tokens[token]}"
        req = urllib.request.Request(self.server.url + path, method=method, headers=headers,
                                     data=None if body is None else orjson.dumps(body))
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        status, body = self.request("GET", path, token)
        return status, orjson.loads(body) if body.startswith((b"{", b"[")) else body.decode()

    def log_uses(self, *records: dict[str, Any]) -> list[dict[str, Any]]:
        status, body = self.request("POST", "/v1/uses", "service", {"records": list(records)})
        assert status == 200, body
        return orjson.loads(body)["results"]

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args))


@pytest.fixture
def env(tmp_path: Path):
    db = tmp_path / "tlog.db"
    init_log(db, "erase.tlog.example/log").close()
    server = start_server(db)
    try:
        e = Env(server)
        e.log_uses(record("gone-1", GONE), record("kept-1", KEPT))
        status, _ = e.request("PUT", f"/v1/artists/{GONE}/preferences", "gone", {"purposes": {"recommendation": "deny"}})
        assert status == 200
        (refused,) = e.log_uses(record("gone-2", GONE))
        assert refused["decision"] == "refused"
        yield e
    finally:
        out = stop_server(server)
        assert "Traceback" not in out, out


def test_erasure_while_serving(env, tmp_path):
    db = env.server.db
    stats = env.get("/v1/stats")[1]
    monitor = tmp_path / "monitor"
    assert env.cli("monitor", "--url", env.server.url, "--vkey", env.vkey, "--state", str(monitor)).exit_code == 0
    erased = [e["index"] for e in env.get(f"/v1/artists/{GONE}/uses", "auditor")[1]["entries"]]
    leaves = {i: env.request("GET", f"/v1/leaves/{i}")[1] for i in erased}

    result = env.cli("erase", "--db", str(db), "--artist", GONE, "--reason", REASON, "--yes")
    assert result.exit_code == 0 and f"erased 3 entries of artist {GONE}" in result.output, result.output

    # The erased artist's token is gone at once; the other's still works.
    assert env.get(f"/v1/artists/{GONE}/uses", "gone")[0] == 401
    assert env.get(f"/v1/artists/{KEPT}/uses", "kept")[0] == 200
    # Public leaves unchanged; reads of erased entries say when and why.
    assert {i: env.request("GET", f"/v1/leaves/{i}")[1] for i in erased} == leaves
    status, entry = env.get(f"/v1/entries/{erased[0]}", "auditor")
    assert status == 200 and entry["details"] is None and entry["erased"]["reason"] == REASON
    assert entry["leaf"] == orjson.loads(leaves[erased[0]])
    at = entry["erased"]["at"]
    page = env.get(f"/v1/artists/{GONE}/uses", "auditor")[1]["entries"]
    assert [e["erased"] for e in page] == [{"at": at, "reason": REASON}] * 3 and all(e["details"] is None for e in page)
    rows = list(csv.DictReader(io.StringIO(env.get(f"/v1/artists/{GONE}/uses?format=csv", "auditor")[1])))
    assert [r["detail"] for r in rows] == [f"erased on {at}, reason {REASON}"] * 3
    assert [r["content_id"] for r in rows] == [""] * 3 and [r["decision"] for r in rows] == ["allowed", "", "refused"]
    summary = env.get(f"/v1/artists/{GONE}/summary", "auditor")[1]
    assert summary["erased"] == 3 and summary["uses"]["leaves"] == 2 and summary["tracks"] == []
    # The figures of uses do not move: the erasure leaf is counted as what it is.
    after = env.get("/v1/stats")[1]
    uses = lambda s: [t for t in s["totals"] if t["type"] in ("use", "refusal")]  # noqa: E731
    assert uses(after) == uses(stats)
    assert any(t["type"] == "erasure" and t["leaves"] == 1 for t in after["totals"])

    # Every verifier passes: the fsck, the remote verifier, a monitor that had seen the log before and a new one.
    for args in (("verify", "--db", str(db)), ("verify", "--url", env.server.url, "--vkey", env.vkey)):
        result = env.cli(*args, "-q")
        assert result.exit_code == 0 and result.output.startswith("ok:"), result.output
    for state in (monitor, tmp_path / "new-monitor"):
        result = env.cli("monitor", "--url", env.server.url, "--vkey", env.vkey, "--state", str(state))
        assert result.exit_code == 0, result.output
        assert "3 entries of artist tag" in result.output and "erased on request" in result.output

    # An auditor's audit of the erased id: found by its tag, complete by the map, every entry shown erased.
    result = env.cli("audit", "--url", env.server.url, "--vkey", env.vkey, "--artist", GONE, "--token",
                     env.tokens["auditor"])
    assert result.exit_code == 0 and "3 erased entries" in result.output, result.output

    # Running it again changes nothing.
    result = env.cli("erase", "--db", str(db), "--artist", GONE, "--reason", REASON, "--yes")
    assert result.exit_code == 0 and "nothing to erase" in result.output, result.output


def test_an_erased_artist_that_returns_continues_its_chain_and_its_audit_shows_the_erasure(env, tmp_path):
    db = env.server.db
    assert env.cli("erase", "--db", str(db), "--artist", GONE, "--reason", REASON, "--yes").exit_code == 0
    # The running server's sequencer learns of the erasure from the store; the old preferences count as none.
    (back,) = env.log_uses(record("gone-3", GONE))
    assert back["decision"] == "allowed"
    env.tokens["gone"] = make_token(db, "--artist", GONE)
    page = env.get(f"/v1/artists/{GONE}/uses", "gone")[1]["entries"]
    assert [e["aseq"] for e in page] == [1, 2, 3, 4] and page[-1]["index"] == back["index"]
    assert [e["erased"] is not None for e in page] == [True, True, True, False]
    out = tmp_path / "bundle.json"
    result = env.cli("audit", "--url", env.server.url, "--vkey", env.vkey, "--artist", GONE, "--token",
                     env.tokens["gone"], "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "3 uses" in result.output and "3 erased entries" in result.output
    bundle = orjson.loads(out.read_bytes())
    assert [e["erased"] for e in bundle["entries"][:3]] == [{"at": bundle["entries"][0]["erased"]["at"], "reason": REASON}] * 3
    assert len(bundle["erasures"]) == 1
    result = env.cli("verify", "--db", str(db), "-q")
    assert result.exit_code == 0, result.output
