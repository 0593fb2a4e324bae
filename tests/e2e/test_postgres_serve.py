"""`tlog serve --db postgresql://…` as an operator runs it: one front end sequencing a log in PostgreSQL,
its keys in --keys DIR, tokens made and revoked by other processes, and the log verified afterwards."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from tlog.checkpoint import Receipt, verify_receipt
from tlog.demo import build_demo
from tlog.note import Verifier

from .conftest import _spawn, free_port, stop_server
from .test_service_api import Api, _rec, make_token


def test_one_front_end_serves_and_sequences_a_postgres_log(pg_dsn, tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    monkeypatch.setenv("TLOG_KEYS", str(keys))  # build_demo and the token commands find the keys there
    build_demo(pg_dsn, 30)
    token = make_token(pg_dsn, "--service", "recsys")
    monkeypatch.delenv("TLOG_KEYS")
    port = free_port()
    server = _spawn(pg_dsn, port, "server", "serve", "--db", pg_dsn, "--keys", str(keys), "--port", str(port))
    try:
        api = Api(server)
        verifier = Verifier.from_key(orjson.loads(api.call("GET", "/v1/log")[2])["verifier_keys"][0])
        batch = {"records": [_rec(i, event_id=f"pg-{i}") for i in range(20)]}
        status, body = api.json("POST", "/v1/uses", token, batch)
        assert status == 200, body
        indexes = [r["index"] for r in body["results"]]
        assert indexes == list(range(indexes[0], indexes[0] + 20))
        status, again = api.json("POST", "/v1/uses", token, batch)
        assert [r["duplicate"] for r in again["results"]] == [True] * 20
        assert [r["index"] for r in again["results"]] == indexes
        status, _, data = api.call("GET", f"/v1/receipts/{indexes[-1]}", token)
        assert status == 200, data
        assert verify_receipt(Receipt.parse(data), None, [verifier]).size == api.size()
        subprocess.run([sys.executable, "-m", "tlog.cli", "token", "revoke", "--db", pg_dsn, "1"], check=True,
                       capture_output=True)
        assert api.call("POST", "/v1/uses", token, _rec(99, event_id="pg-after-revoke"))[0] == 401
    finally:
        out = stop_server(server)
    assert "Traceback" not in out, out
    done = subprocess.run([sys.executable, "-m", "tlog.cli", "verify", "--db", pg_dsn], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "TLOG_KEYS"})
    assert done.returncode == 0, done.stderr
    assert f"size {indexes[-1] + 2}" in done.stdout  # the last use, then its batch's map leaf


def test_a_migrated_log_answers_as_the_sqlite_one_did(pg_dsn, tmp_path):
    """`tlog migrate`, then a server on each copy: an artist's audit bundle, listing and the checkpoint are
    the same bytes from both (a client cannot tell the backends apart, SPEC §8)."""
    db = tmp_path / "tlog.db"
    build_demo(str(db), 80)
    token = make_token(db, "--artist", "sc:user:7")
    done = subprocess.run([sys.executable, "-m", "tlog.cli", "migrate", "--from", str(db), "--to", pg_dsn,
                           "--keys", str(tmp_path / "keys"), "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    port_a, port_b = free_port(), free_port()
    servers = [_spawn(db, port_a, "server", "serve", "--db", str(db), "--port", str(port_a)),
               _spawn(pg_dsn, port_b, "server", "serve", "--db", pg_dsn, "--keys", str(tmp_path / "keys"),
                      "--port", str(port_b))]
    try:
        sqlite, postgres = (Api(s) for s in servers)
        for path in ("/v1/artists/sc:user:7/audit", "/v1/artists/sc:user:7/uses?limit=5", "/checkpoint",
                     "/v1/stats"):
            a, b = sqlite.call("GET", path, token), postgres.call("GET", path, token)
            assert a[0] == b[0] == 200, (path, a[2][:200], b[2][:200])
            assert a[2] == b[2], path
        assert len(orjson.loads(sqlite.call("GET", "/v1/artists/sc:user:7/audit", token)[2])["entries"]) > 0
    finally:
        outs = [stop_server(s) for s in servers]
    assert not [o for o in outs if "Traceback" in o], outs
