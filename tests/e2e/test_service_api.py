"""The write, artist and auditor APIs on a real server, with real tokens made by the CLI."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from tlog import intake, merkle
from tlog.checkpoint import Receipt, open_checkpoint, verify_receipt
from tlog.demo import build_demo
from tlog.leaf import parse_leaf
from tlog.note import Verifier

from ..conftest import records
from .conftest import Server, start_server, stop_server


def make_token(db, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tlog.cli", "token", "create", "--db", str(db), *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


class Api:
    def __init__(self, server: Server) -> None:
        self.server = server

    def call(self, method: str, path: str, token: str | None = None, body: Any = None, *,
             raw: bytes | None = None, content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        req = urllib.request.Request(self.server.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, method: str, path: str, token: str | None = None, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, _, data = self.call(method, path, token, body, **kw)
        return status, orjson.loads(data) if data else None

    def size(self) -> int:
        return orjson.loads(self.call("GET", "/v1/log")[2])["size"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    db = tmp_path_factory.mktemp("svc") / "tlog.db"
    build_demo(str(db), 50)
    tokens = {
        "recsys": make_token(db, "--service", "recsys"),
        "other_service": make_token(db, "--service", "playlists"),
        "artist7": make_token(db, "--artist", "sc:user:7"),
        "artist8": make_token(db, "--artist", "sc:user:8"),
        "auditor": make_token(db, "--auditor"),
        "revoked": make_token(db, "--service", "gone"),
    }
    subprocess.run([sys.executable, "-m", "tlog.cli", "token", "revoke", "--db", str(db), "6"], check=True, capture_output=True)
    server = start_server(db)
    api = Api(server)
    vkey = orjson.loads(api.call("GET", "/v1/log")[2])["verifier_keys"][0]
    yield api, tokens, Verifier.from_key(vkey)
    out = stop_server(server)
    assert "Traceback" not in out, out
    for t in tokens.values():
        assert t not in out  # tokens are never logged


def _rec(i: int, **kw: Any) -> dict[str, Any]:
    r = records(1, seed=1000 + i, artists=1)[0]
    r.update({"event_id": f"e2e-{i}", "artist_id": "sc:user:7", "content_id": "sc:track:70", "purpose": "recommendation",
              "phase": "inference"}, **kw)
    return r


def test_single_use_gets_a_verified_receipt(env):
    api, tok, verifier = env
    status, body = api.json("POST", "/v1/uses", tok["recsys"], _rec(1))
    assert status == 200, body
    (r,) = body["results"]
    assert r["decision"] == "allowed" and not r["duplicate"]
    receipt = Receipt.parse(r["receipt"].encode())
    cp = verify_receipt(receipt, None, [verifier])
    assert receipt.index == r["index"] < cp.size
    assert merkle.leaf_hash(receipt.extra).hex() == r["leaf_hash"]
    assert parse_leaf(receipt.extra).decision == "allowed"


def test_batch_is_ordered_dense_and_idempotent(env):
    api, tok, _ = env
    recs = [_rec(100 + i, content_id=f"sc:track:b{i}") for i in range(300)]
    status, body = api.json("POST", "/v1/uses", tok["recsys"], {"records": recs})
    assert status == 200, body
    idx = [r["index"] for r in body["results"]]
    assert idx == list(range(idx[0], idx[0] + 300))
    assert [r["event_id"] for r in body["results"]] == [r["event_id"] for r in recs]
    assert all("receipt" not in r and r["receipt_url"] == f"/v1/receipts/{r['index']}" for r in body["results"])
    size = api.size()
    status, again = api.json("POST", "/v1/uses", tok["recsys"], {"records": recs})
    assert status == 200 and all(r["duplicate"] for r in again["results"])
    assert [r["index"] for r in again["results"]] == idx
    assert [r["leaf_hash"] for r in again["results"]] == [r["leaf_hash"] for r in body["results"]]
    recs[5] = dict(recs[5], detail="changed")
    status, err = api.json("POST", "/v1/uses", tok["recsys"], {"records": recs})
    assert status == 409 and err["error"]["code"] == "conflict"
    assert api.size() == size


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.update(extra=1), "extra"),
        (lambda r: r.update(invocations=1.0), "invocations"),
        (lambda r: r.update(invocations="3"), "invocations"),
        (lambda r: r.update(purpose="world_domination"), "purpose"),
        (lambda r: r.update(phase="dreaming"), "phase"),
        (lambda r: r.update(phase="training"), "phase"),  # training under "recommendation" (SPEC §3)
        (lambda r: r.update(occurred_at="2026-13-01T00:00:00Z"), "occurred_at"),
        (lambda r: r.update(occurred_at="2999-01-01T00:00:00Z"), "occurred_at"),
        (lambda r: r.update(detail="x" * 501), "detail"),
        (lambda r: r.update(event_id="has space"), "event_id"),
        (lambda r: r.pop("artist_id"), "artist_id"),
        (lambda r: r["system"].update(id=""), "system.id"),
        (lambda r: r.update(basis="because"), "basis"),
    ],
)
def test_bad_records_are_rejected_and_change_nothing(env, mutate, field):
    api, tok, _ = env
    size = api.size()
    good = _rec(5000)
    bad = _rec(5001)
    mutate(bad)
    status, body = api.json("POST", "/v1/uses", tok["recsys"], {"records": [good, bad]})
    assert status == 400, body
    fields = [d["field"] for d in body["error"]["details"]]
    assert any(f.startswith("records[1]") and f.endswith(field) for f in fields), fields
    assert api.size() == size


@pytest.mark.parametrize(
    "raw, content_type, status",
    [
        (b'{"event_id": "a", "event_id": "b"}', "application/json", 400),
        (b'{"event_id": "\\ud800"}', "application/json", 400),
        (b"not json", "application/json", 400),
        (b"[]", "application/json", 400),
        (b'{"records": []}', "application/json", 400),
        (orjson.dumps({"records": [{}] * 1001}), "application/json", 400),
        (b"{}", "text/plain", 415),
        (b"x" * (9 << 20), "application/json", 413),
    ],
)
def test_malformed_requests(env, raw, content_type, status):
    api, tok, _ = env
    size = api.size()
    got, _, body = api.call("POST", "/v1/uses", tok["recsys"], raw=raw, content_type=content_type)
    assert got == status, body[:300]
    assert orjson.loads(body)["error"]["message"]
    assert api.size() == size


def test_roles(env):
    api, tok, _ = env
    rec = _rec(6000)
    assert api.call("POST", "/v1/uses", None, rec)[0] == 401
    assert api.call("POST", "/v1/uses", "tlog_wrong", rec)[0] == 401
    assert api.call("POST", "/v1/uses", tok["revoked"], rec)[0] == 401
    assert api.call("POST", "/v1/uses", tok["artist7"], rec)[0] == 403
    assert api.call("POST", "/v1/uses", tok["auditor"], rec)[0] == 403
    status, body = api.json("POST", "/v1/uses", tok["recsys"], rec)
    index = body["results"][0]["index"]
    for who, want in (("recsys", 200), ("other_service", 403), ("artist7", 200), ("artist8", 403), ("auditor", 200)):
        assert api.call("GET", f"/v1/receipts/{index}", tok[who])[0] == want, who
    assert api.call("GET", f"/v1/receipts/{index}")[0] == 401
    assert api.call("GET", f"/v1/entries/{index}", tok["auditor"])[0] == 200
    for who in ("recsys", "artist7", "artist8"):
        assert api.call("GET", f"/v1/entries/{index}", tok[who])[0] == 403
    assert api.call("GET", "/v1/artists/sc:user:7/uses", tok["artist8"])[0] == 403
    assert api.call("GET", "/v1/artists/sc:user:nobody/uses", tok["artist8"])[0] == 403  # no existence leak
    assert api.call("GET", "/v1/artists/sc:user:7/uses", tok["recsys"])[0] == 403


def test_preferences_and_refusals(env):
    api, tok, _ = env
    status, body = api.json("PUT", "/v1/artists/sc:user:7/preferences", tok["recsys"], {"purposes": {"recommendation": "deny"}})
    assert status == 200 and body["by"] == "service"
    status, body = api.json("PUT", "/v1/artists/sc:user:7/preferences", tok["recsys"], {})
    assert status == 403  # a service may not loosen
    status, body = api.json("PUT", "/v1/artists/sc:user:7/preferences", tok["artist8"], {})
    assert status == 403
    status, body = api.json("GET", "/v1/artists/sc:user:7/preferences", tok["artist7"])
    assert body["preferences"]["purposes"] == {"recommendation": "deny"}
    status, body = api.json("POST", "/v1/uses", tok["recsys"], _rec(7000))
    assert body["results"][0]["decision"] == "refused"
    status, body = api.json("PUT", "/v1/artists/sc:user:7/preferences", tok["artist7"], {})
    assert status == 200 and body["by"] == "artist"
    status, body = api.json("POST", "/v1/uses", tok["recsys"], _rec(7001))
    assert body["results"][0]["decision"] == "allowed"
    assert api.call("PUT", "/v1/artists/sc:user:7/preferences", tok["artist7"], {"no_ai": "yes"})[0] == 400


def test_artist_listing_filters_pages_and_formats(env):
    api, tok, _ = env
    api.json("POST", "/v1/uses", tok["recsys"], {"records": [_rec(8000 + i, content_id="sc:track:page") for i in range(25)]})
    seen, cursor = [], None
    while True:
        q = "/v1/artists/sc:user:7/uses?content_id=sc:track:page&limit=10" + (f"&cursor={cursor}" if cursor else "")
        status, body = api.json("GET", q, tok["artist7"])
        assert status == 200
        seen += [e["index"] for e in body["entries"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 25 and seen == sorted(seen)
    status, headers, csv_body = api.call("GET", "/v1/artists/sc:user:7/uses?format=csv&content_id=sc:track:page&limit=1000", tok["auditor"])
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert len(csv_body.decode().strip().splitlines()) == 26
    status, _, jl = api.call("GET", "/v1/artists/sc:user:7/uses?format=jsonl&decision=allowed&limit=5", tok["artist7"])
    assert status == 200 and all(orjson.loads(line)["details"]["decision"] == "allowed" for line in jl.splitlines())
    for bad in ("cursor=zzz", "since=yesterday", "limit=0", "format=xml", "colour=red"):
        assert api.call("GET", f"/v1/artists/sc:user:7/uses?{bad}", tok["artist7"])[0] == 400, bad


def test_audit_bundle_verifies(env):
    api, tok, verifier = env
    status, bundle = api.json("GET", "/v1/artists/sc:user:7/audit", tok["artist7"])
    assert status == 200
    cp, _ = open_checkpoint(bundle["checkpoint"].encode(), [verifier])
    prev_index = None
    for n, e in enumerate(bundle["entries"], 1):
        leaf = base64.b64decode(e["leaf"])
        parsed = parse_leaf(leaf)
        assert parsed.artist.hex() == bundle["tag"] and parsed.aseq == n and parsed.aprev == prev_index
        merkle.verify_inclusion(merkle.leaf_hash(leaf), e["index"], cp.size, [base64.b64decode(h) for h in e["proof"]], cp.root)
        prev_index = e["index"]
    assert len(bundle["entries"]) > 300


def test_concurrent_single_requests_are_group_committed(env):
    api, tok, _ = env
    size = api.size()

    def one(i):
        return api.json("POST", "/v1/uses", tok["recsys"], _rec(9000 + i, content_id=f"sc:track:c{i}"))

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(128)))
    assert all(s == 200 for s, _ in results)
    indexes = sorted(b["results"][0]["index"] for _, b in results)
    assert len(set(indexes)) == 128 and indexes[0] == size
    # Every other new leaf is the map leaf that ends a batch (SPEC §2.3), the last one included: fewer
    # map leaves than requests means requests shared batches.
    end = api.size()
    batch_ends = sorted(set(range(size, end)) - set(indexes))
    types = {orjson.loads(api.call("GET", f"/v1/leaves/{i}")[2])["type"] for i in batch_ends}
    assert types == {"map"} and batch_ends[-1] == end - 1
    assert len(batch_ends) < 128
    metrics = api.call("GET", "/metrics")[2].decode()
    assert 'route="/v1/uses"' in metrics and "tlog_batches_total" in metrics and "sc:user" not in metrics


def _gc_collections(api: Api) -> int:
    lines = api.call("GET", "/metrics")[2].decode().splitlines()
    return int(next(ln for ln in lines if ln.startswith('python_gc_collections_total{generation="0"}')).split()[-1])


def test_the_server_collector_does_not_rescan_every_batch(env):
    """gctune: 3000 records in 1000-record requests allocate some 30,000 containers in the server's main
    process; at CPython's default threshold (700) that is dozens of collections, tuned at most one."""
    api, tok, _ = env
    before = _gc_collections(api)
    for k in range(3):
        recs = records(1000, seed=7000 + k, artists=50)
        status, body = api.json("POST", "/v1/uses", tok["recsys"], {"records": recs})
        assert status == 200 and len(body["results"]) == 1000
    assert _gc_collections(api) - before <= 1


def test_rate_limit_for_failed_auth(tmp_path):
    db = tmp_path / "tlog.db"
    build_demo(str(db), 5)
    server = start_server(db, "--rate", "20", "--burst", "20", "--auth-fail-rate", "1", "--auth-fail-burst", "5")
    try:
        api = Api(server)
        codes = [api.call("GET", "/v1/entries/1", "tlog_bad")[0] for _ in range(10)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429] * 5  # failed authentications: tight budget
        assert api.call("GET", "/v1/log")[0] == 200  # public reads have their own, larger one
        codes = [api.call("GET", "/v1/log")[0] for _ in range(40)]
        assert 429 in codes
    finally:
        stop_server(server)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_the_request_checking_worker_dies_with_a_killed_server(tmp_path):
    """A large request is checked in a worker process (intake.py). A SIGKILLed server must not leave it
    behind: it would wait on its queue forever, holding the server's output open."""
    db = tmp_path / "tlog.db"
    build_demo(str(db), 10)
    server = start_server(db)
    api = Api(server)
    body = {"records": [_rec(70_000 + i, content_id=f"sc:track:w{i}") for i in range(400)]}
    assert len(orjson.dumps(body)) >= intake.PARALLEL_MIN_BYTES
    status, answer = api.json("POST", "/v1/uses", make_token(db, "--service", "recsys"), body)
    assert status == 200 and len(answer["results"]) == 400
    workers = [p for child in _children(server.proc.pid) for p in [child, *_children(child)]]
    assert workers, "no worker process was started for the large request"
    server.proc.kill()
    server.proc.communicate(timeout=10)  # returns once nothing else holds the server's output
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in workers if Path(f"/proc/{p}").exists()]
