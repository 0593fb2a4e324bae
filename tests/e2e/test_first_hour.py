"""A new user's first hour (issue 18), on a real server: a platform engineer logging uses (remote append,
tokens from a file or the environment, the example scripts, errors that say what to do, a busy port) and a
journalist checking claims (stats by period, purpose and phase; the public export; tiles that a browser
verifier on another site can fetch, gzipped, with ETags)."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from tlog import merkle, tiles
from tlog.checkpoint import open_checkpoint
from tlog.demo import build_demo
from tlog.note import Verifier
from tlog.records import PHASES

from .conftest import Server, free_port, start_server, stop_server
from .roles import make_token, record

ROOT = Path(__file__).resolve().parents[2]
MAX_EXPORT = 100


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[tuple[Server, str, str, str]]:
    """A demo log behind a real server with --max-export 100: (server, verifier key, service token,
    artist token)."""
    db = tmp_path_factory.mktemp("first-hour") / "tlog.db"
    build_demo(str(db), 300)
    service, _ = make_token(db, "--service", "recsys")
    artist, _ = make_token(db, "--artist", "sc:user:2")
    server = start_server(db, "--max-export", str(MAX_EXPORT))
    vkey = orjson.loads(server.get("/v1/log")[2])["verifier_keys"][0]
    yield server, vkey, service, artist
    out = stop_server(server)
    assert "Traceback" not in out, out


def tlog(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "tlog.cli", *args], capture_output=True, input=stdin,
                          env={**os.environ, **(env or {})}, timeout=120)


def request(server: Server, path: str, *, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(server.url + path, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def jsonl(recs: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in recs)


# --- the platform engineer ------------------------------------------------------------------------


def test_append_to_a_server_prints_the_receipts_of_a_local_append(live, tmp_path):
    server, vkey, service, _ = live
    recs = [record(f"remote-{i}", f"sc:user:{i % 3}") for i in range(1205)]  # two requests' worth and more
    (tmp_path / "uses.jsonl").write_bytes(jsonl(recs))
    token_file = tmp_path / "token"
    token_file.write_text(service + "\n")
    first = tlog("append", "--url", server.url, "--vkey", vkey, "--token-file", str(token_file), str(tmp_path / "uses.jsonl"))
    assert first.returncode == 0, first.stderr
    size = orjson.loads(server.get("/v1/log")[2])["size"]
    decisions = orjson.loads(request(server, "/v1/stats?purpose=recommendation")[2])["totals"]
    assert sum(t["leaves"] for t in decisions) >= 1205
    line = first.stdout.decode().strip()
    assert line.startswith("1205 appended, 0 duplicate (") and line.endswith(f"; size {size}"), line
    # The same file again, with the token from the environment: every record is a duplicate, nothing new.
    again = tlog("append", "--url", server.url, "--vkey", vkey, "-", env={"TLOG_TOKEN": service}, stdin=jsonl(recs))
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode().startswith("0 appended, 1205 duplicate (")
    assert orjson.loads(server.get("/v1/log")[2])["size"] == size


def test_a_remote_append_names_the_lines_of_bad_records_and_what_to_do(live, tmp_path):
    server, vkey, service, artist = live
    bad = [record("remote-bad-1", "sc:user:1"), record("remote-bad-2", "sc:user:1", purpose="recomendation")]
    res = tlog("append", "--url", server.url, "--vkey", vkey, "-", env={"TLOG_TOKEN": service}, stdin=jsonl(bad))
    err = res.stderr.decode()
    assert res.returncode == 2 and "Traceback" not in err  # SPEC §7: bad input
    assert "line 2: purpose" in err and "use one of" in err and "recommendation" in err, err
    assert "nothing was logged" in err
    refused = tlog("append", "--url", server.url, "--vkey", vkey, "--token", artist, "-", stdin=jsonl(bad[:1]))
    assert refused.returncode == 3  # SPEC §7: a 403 from the log
    assert "an artist token may not do this; this needs a service token" in refused.stderr.decode()
    usage = tlog("append", "--url", server.url, "-", stdin=jsonl(bad[:1]), env={"TLOG_TOKEN": ""})
    assert usage.returncode == 2 and "--url needs a service token" in usage.stderr.decode()


def test_a_role_that_may_not_is_told_which_role_may(live):
    server, _, _, artist = live
    status, _, body = request(server, "/v1/uses", method="POST", body=orjson.dumps(record("x-1", "sc:user:2")),
                              headers={"Authorization": f"Bearer {artist}", "Content-Type": "application/json"})
    assert status == 403
    assert orjson.loads(body)["error"]["message"] == "an artist token may not do this; this needs a service token"


def test_an_unknown_purpose_is_refused_naming_every_valid_code(live):
    server, _, service, _ = live
    status, _, body = request(server, "/v1/uses", method="POST",
                              body=orjson.dumps(record("x-2", "sc:user:2", purpose="recomendation")),
                              headers={"Authorization": f"Bearer {service}", "Content-Type": "application/json"})
    assert status == 400
    (problem,) = orjson.loads(body)["error"]["details"]
    codes = [p["code"] for p in orjson.loads(server.get("/v1/log")[2])["purposes"]]
    assert problem["field"] == "purpose"
    assert problem["message"] == f"not a purpose of the policy in force; use one of {', '.join(sorted(codes))}"


def test_serve_on_a_busy_port_fails_with_exit_3_before_saying_serving(live, tmp_path):
    server, *_ = live
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        db = tmp_path / "busy.db"
        assert tlog("init", "--db", str(db)).returncode == 0
        res = tlog("serve", "--db", str(db), "--port", str(port))
    assert res.returncode == 3
    assert b"serving" not in res.stdout, res.stdout
    assert f"cannot listen on 127.0.0.1:{port}".encode() in res.stderr and b"--port" in res.stderr
    assert b"Traceback" not in res.stderr


@pytest.mark.parametrize("script", ["log_uses_async.py", "log_uses_wsgi.py", "curl-walkthrough.sh"])
def test_the_examples_run_against_a_real_server(live, script):
    server, vkey, service, _ = live
    cmd = ["bash", str(ROOT / "examples" / script), server.url] if script.endswith(".sh") else \
        [sys.executable, str(ROOT / "examples" / script), server.url, vkey]
    res = subprocess.run(cmd, capture_output=True, env={**os.environ, "TLOG_TOKEN": service}, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    out = res.stdout.decode()
    expected = {
        "log_uses_async.py": ["at index", "logged 3 uses", "verified in checkpoint"],
        "log_uses_wsgi.py": ["recommended sc:track:701 of sc:user:7"],
        "curl-walkthrough.sh": ['"duplicate": true', "index,leaf_hash,type,logged_at", "purpose 'recomendation' is not"],
    }[script]
    for want in expected:
        assert want in out, out


def test_the_package_ships_its_type_hints():
    assert (ROOT / "tlog" / "py.typed").is_file()
    assert '"tlog" = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()


def test_scripts_serve_installs_what_serving_needs_and_not_the_test_tools(tmp_path):
    """scripts/serve run in a copy of the repository whose .venv is a stand-in that records each command:
    the project is installed without extras (pytest, selenium and schemathesis are the `test` extra)."""
    (tmp_path / "scripts").mkdir()
    for name in ("serve", "_venv.sh"):
        (tmp_path / "scripts" / name).write_bytes((ROOT / "scripts" / name).read_bytes())
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls"
    for name in ("python", "tlog"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\necho stand-in\n')
        (bin_dir / name).chmod(0o755)
    (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"\n')
    (tmp_path / "data").mkdir()  # where the stand-in `python -m tlog.demo` would have made the demo log
    res = subprocess.run(["bash", str(tmp_path / "scripts" / "serve")], capture_output=True, timeout=60,
                         env={**os.environ, "TLOG_DB": str(tmp_path / "data" / "tlog.db"), "TLOG_EXTRAS": "test"})
    assert res.returncode == 0, res.stderr.decode()
    installs = [c for c in calls.read_text().splitlines() if " pip install " in c]
    assert installs and all(c.endswith(f"-e {tmp_path}") for c in installs), installs
    assert "/openapi.json" in res.stdout.decode()


# --- the journalist and auditor -------------------------------------------------------------------


def test_an_inclusion_proof_defaults_to_the_published_checkpoint(live):
    server, vkey, *_ = live
    cp, _ = open_checkpoint(server.get("/checkpoint")[2], [Verifier.from_key(vkey)])
    status, headers, body = request(server, "/v1/proof/inclusion?index=5")
    assert status == 200 and "immutable" not in headers["Cache-Control"]
    answer = orjson.loads(body)
    assert answer["size"] == cp.size
    leaf = server.get("/v1/leaves/5")[2]
    merkle.verify_inclusion(merkle.leaf_hash(leaf), 5, cp.size, [base64.b64decode(h) for h in answer["proof"]], cp.root)


def test_stats_by_period_purpose_and_phase_are_what_the_leaves_say(live):
    server, vkey, service, _ = live
    headers = {"Authorization": f"Bearer {service}", "Content-Type": "application/json"}
    indexes = []
    for i in range(2):  # two batches, so two logged_at times: the count must split between them
        body = {"records": [record(f"period-{i}-{k}", "sc:user:5", phase="inference") for k in range(3)]}
        indexes.append(orjson.loads(request(server, "/v1/uses", method="POST", body=orjson.dumps(body), headers=headers)[2])
                       ["results"][0]["index"])
    day = orjson.loads(server.get("/v1/leaves/0")[2])["logged_at"][:10]
    cut = orjson.loads(server.get(f"/v1/leaves/{indexes[1]}")[2])["logged_at"]  # an instant within a day
    stats = orjson.loads(request(server, f"/v1/stats?since={day}&until={cut}&phase=inference")[2])
    assert stats["since"] == f"{day}T00:00:00.000Z" and stats["until"] == cut and stats["phase"] == "inference"
    total = orjson.loads(server.get("/v1/stats")[2])
    everything = [orjson.loads(line)["leaf"] for line in
                  b"".join(request(server, f"/v1/export?start={s}")[2] for s in range(0, total["size"], MAX_EXPORT)).splitlines()]
    want: dict[tuple[str, str, str], list[int]] = {}
    for leaf in everything:
        if leaf["logged_at"] >= day and leaf["logged_at"] < cut and leaf.get("phase") == "inference":
            slot = want.setdefault((leaf["type"], leaf["purpose"], leaf["decision"]), [0, 0])
            slot[0] += 1
            slot[1] += leaf["invocations"]
    assert {(t["type"], t["purpose"], t["decision"]): [t["leaves"], t["uses"]] for t in stats["totals"]} == want
    assert want and all(t["phase"] == "inference" for t in stats["totals"])
    assert sum(d["leaves"] for d in stats["by_day"]) == sum(n for n, _ in want.values())
    # The CLI prints the same JSON; `tlog verify --url` recounts the unfiltered figures from the leaves.
    cli = tlog("stats", "--url", server.url, "--since", day, "--until", cut, "--phase", "inference", "--json")
    assert cli.returncode == 0 and orjson.loads(cli.stdout) == stats
    verified = tlog("verify", "--url", server.url, "--vkey", vkey, "-q")
    assert verified.returncode == 0 and b"/v1/stats agrees with the recount of every leaf" in verified.stdout


@pytest.mark.parametrize("query, field, says", [
    ("purpose=recomendation", "purpose", "use one of content_identification, content_organization"),
    ("phase=trainning", "phase", "use one of " + ", ".join(sorted(PHASES))),
    ("since=2026-13-01", "since", "is not a date"),
    ("since=yesterday", "since", "must be a date (2026-12-01) or an RFC 3339 time"),
    ("until=2026-01-01&since=2026-02-01", "until", "before since"),
    ("purpose=recommendation&day=1", "day", "unknown"),
])
def test_a_stats_query_that_can_match_nothing_is_a_400_saying_what_to_do(live, query, field, says):
    server, *_ = live
    status, _, body = request(server, f"/v1/stats?{query}")
    assert status == 400
    err = orjson.loads(body)["error"]
    assert err["details"][0]["field"] == field and says in err["message"] + err["details"][0]["message"], err
    cli = tlog("stats", "--url", server.url, *(arg for kv in query.split("&") for arg in (f"--{kv.split('=')[0]}", kv.split("=")[1])))
    assert cli.returncode == 2 and b"Traceback" not in cli.stderr  # SPEC §7: bad input (--day: a usage error)


def test_the_public_export_is_bounded_streamed_and_loads_as_csv(live, tmp_path):
    server, *_ = live
    size = orjson.loads(server.get("/v1/log")[2])["size"]
    status, headers, body = request(server, "/v1/export?start=3&format=csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert headers["X-Export-End"] == str(3 + MAX_EXPORT) and headers["Access-Control-Allow-Origin"] == "*"
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(rows) == MAX_EXPORT and rows[0]["index"] == "3"
    for row in rows:
        leaf = row["leaf"].encode()
        assert merkle.leaf_hash(leaf) == bytes.fromhex(row["leaf_hash"]) == merkle.leaf_hash(server.get(f"/v1/leaves/{row['index']}")[2])
        fields = orjson.loads(leaf)
        assert row["type"] == fields["type"] and row["purpose"] == str(fields.get("purpose", ""))
        assert row["invocations"] == str(fields.get("invocations", ""))
    assert request(server, f"/v1/export?end={size + 1}")[0] == 400
    assert request(server, "/v1/export?format=xlsx")[0] == 400
    # tlog export --url walks the ranges: every leaf once, one header.
    out = tmp_path / "log.csv"
    res = tlog("export", "--url", server.url, "--format", "csv", "--out", str(out))
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out.open()))
    assert [int(r["index"]) for r in rows] == list(range(size))
    assert list(rows[0]) == ["index", "leaf_hash", "type", "logged_at", "purpose", "phase", "decision", "policy",
                             "invocations", "artist", "aseq", "aprev", "by", "effective_at", "erased", "root", "origin",
                             "vrf", "prev", "details", "leaf"]
    part = tlog("export", "--url", server.url, "--start", "250", "--end", "260")
    assert [orjson.loads(line)["index"] for line in part.stdout.splitlines()] == list(range(250, 260))


def test_tiles_are_gzipped_when_asked_with_etags_cors_and_immutable_partials(live):
    server, *_ = live
    size = orjson.loads(server.get("/v1/log")[2])["size"]
    bundle = "/" + tiles.tile_path(tiles.entry_bundles_for_size(size)[0])
    plain = request(server, bundle)
    zipped = request(server, bundle, headers={"Accept-Encoding": "gzip"})
    assert zipped[1]["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain[1]
    assert gzip.decompress(zipped[2]) == plain[2]
    assert len(zipped[2]) * 4 < len(plain[2]) * 1.25, (len(plain[2]), len(zipped[2]))  # about 4× smaller
    for path in (bundle, "/" + tiles.tile_path(tiles.hash_tiles_for_size(size)[-1])):
        status, headers, body = request(server, path)
        assert status == 200 and headers["Cache-Control"] == "public, max-age=31536000, immutable"  # partial ones too
        assert headers["Access-Control-Allow-Origin"] == "*"
        again = request(server, path, headers={"If-None-Match": headers["ETag"]})
        assert again[0] == 304 and again[2] == b"" and again[1]["ETag"] == headers["ETag"]
        assert request(server, path, headers={"If-None-Match": '"other"'})[0] == 200
        assert request(server, path, headers={"If-None-Match": f'"other", W/{headers["ETag"]}'})[0] == 304
        assert request(server, path, headers={"If-None-Match": "*"})[0] == 304
    assert zipped[1]["ETag"] != plain[1]["ETag"]  # another representation, another tag
    status, headers, _ = request(server, "/checkpoint")
    assert headers["Cache-Control"] == "public, max-age=2" and headers["Access-Control-Allow-Origin"] == "*"
    # A browser on another site asks first (If-None-Match is not a simple header), and may read errors too.
    status, headers, _ = request(server, bundle, method="OPTIONS",
                                 headers={"Origin": "https://verifier.example", "Access-Control-Request-Method": "GET",
                                          "Access-Control-Request-Headers": "if-none-match"})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in headers["Access-Control-Allow-Methods"] and "If-None-Match" in headers["Access-Control-Allow-Headers"]
    for path in ("/tile/0/999", "/v1/log", "/v1/stats", "/v1/proof/inclusion?index=1", "/v1/leaves/1", "/v1/policies"):
        assert request(server, path)[1].get("Access-Control-Allow-Origin") == "*", path
    assert "Access-Control-Allow-Origin" not in request(server, "/v1/artists/sc:user:2/uses")[1]
