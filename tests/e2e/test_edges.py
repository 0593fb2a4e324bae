"""Edges of the API and the CLI on real servers and real processes: RFC 3339 times at their limits
(leap seconds, years 0001 and 9999, offsets across a year), as records, query parameters and CLI options."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlog.checkpoint import Receipt, verify_receipt
from tlog.client import BatchLogger, TlogClient, UseReceipt
from tlog.demo import build_demo
from tlog.errors import ValidationError
from tlog.log import init_log, open_log
from tlog.note import Verifier, open_note

from .conftest import start_server, start_witness, stop_server
from .test_client_e2e import use
from .test_service_api import Api, _rec, make_token
from .test_witness_e2e import ORIGIN, cosigned, new_witness, policy_file, wait_for

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


# --- private files and closed pipes ------------------------------------------------------------------------


def tlog(*args: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """A `tlog` command in its own process, with the usual umask (022: new files would be 0644)."""
    return subprocess.run([sys.executable, "-m", "tlog.cli", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, preexec_fn=lambda: os.umask(0o022), timeout=120)


def piped(command: str, work: Path) -> tuple[int, str, str]:
    """`command` (a tlog command line) in a real shell pipeline run in `work`; returns tlog's exit status
    (not head's), what came out of the pipeline and tlog's stderr."""
    tlog_cmd = f"{shlex.quote(sys.executable)} -m tlog.cli {command}"
    out = subprocess.run(["bash", "-c", f"umask 022; {tlog_cmd} 2>err | head -2; echo ${{PIPESTATUS[0]}} >status"],
                         capture_output=True, text=True, cwd=work, timeout=120)
    return int((work / "status").read_text()), out.stdout, (work / "err").read_text()


def closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    """A tlog command whose stdout is a pipe nobody reads any more: its first write fails (EPIPE)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return tlog(*args, stdout=w)
    finally:
        os.close(w)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def vkey_of(api: Api) -> str:
    return orjson.loads(api.call("GET", "/v1/log")[2])["verifier_keys"][0]


def test_private_files_are_created_0600_and_state_folders_0700(env, tmp_path: Path):
    api, tok, db = env
    url, vkey = api.server.url, vkey_of(api)
    out = tmp_path / "export.jsonl"
    assert tlog("export", "--db", str(db), "--out", str(out)).returncode == 0
    assert mode(out) == 0o600 and out.read_bytes().count(b"\n") == api.size()
    res = tlog("monitor", "--url", url, "--vkey", vkey, "--state", str(tmp_path / "mon"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert mode(tmp_path / "mon") == 0o700 and mode(tmp_path / "mon" / "state.json") == 0o600
    bundle = tmp_path / "bundle.json"
    res = tlog("audit", "--url", url, "--vkey", vkey, "--artist", "sc:user:7", "--token", tok["artist7"],
               "--out", str(bundle), "--state", str(tmp_path / "aud"))
    assert res.returncode == 0, res.stderr
    assert mode(bundle) == 0o600 and mode(tmp_path / "aud") == 0o700
    assert [mode(p) for p in (tmp_path / "aud").iterdir()] == [0o600]
    assert not [p for p in tmp_path.rglob("*.tmp")]  # every file was renamed into place


def test_an_export_over_an_existing_file_is_0600_and_whole(env, tmp_path: Path):
    """--out replaces a file (made 0644 by someone else) by a new private one, never writes into it."""
    api, _, db = env
    out = tmp_path / "old.jsonl"
    out.write_text("old\n")
    out.chmod(0o644)
    assert tlog("export", "--db", str(db), "--public", "--out", str(out)).returncode == 0
    assert mode(out) == 0o600 and out.read_bytes().count(b"\n") == api.size()
    assert all("details" not in orjson.loads(line) for line in out.read_bytes().splitlines())  # --public


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """A log whose export is far larger than a pipe's buffer, so `| head` closes it mid-way."""
    db = tmp_path / "tlog.db"
    build_demo(str(db), 3000)
    return db


def test_export_into_a_closed_pipe_ends_quietly_with_0(big: Path):
    status, out, err = piped(f"export --db {shlex.quote(str(big))}", big.parent)
    assert status == 0 and err == "", err
    assert len(out.splitlines()) == 2 and orjson.loads(out.splitlines()[0])["index"] == 0
    res = closed_stdout("export", "--db", str(big))
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_monitor_and_audit_keep_their_state_when_the_reader_goes_away(env, tmp_path: Path):
    api, tok, _ = env
    url, vkey = api.server.url, vkey_of(api)
    state = tmp_path / "mon"
    status, out, err = piped(f"monitor --quiet --url {url} --vkey {shlex.quote(vkey)} --state {state}", tmp_path)
    assert status == 0 and err == "" and len(out.splitlines()) == 2, err
    saved = orjson.loads((state / "state.json").read_bytes())
    assert saved["checkpoint"].split("\n")[1] == str(api.size())  # the checkpoint body's size line
    # A reader gone before the first line: the state is saved all the same, and the next run starts there.
    state2 = tmp_path / "mon2"
    res = closed_stdout("monitor", "--quiet", "--url", url, "--vkey", vkey, "--state", str(state2))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    res = tlog("monitor", "--quiet", "--url", url, "--vkey", vkey, "--state", str(state2))
    assert res.returncode == 0 and "unchanged" in res.stdout, res.stdout
    aud = tmp_path / "aud"
    res = closed_stdout("audit", "--url", url, "--vkey", vkey, "--artist", "sc:user:7", "--token", tok["artist7"],
                        "--state", str(aud))
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert len(list(aud.iterdir())) == 1


# --- the client never floods the server --------------------------------------------------------------------


def uses_requests(api: Api) -> dict[int, int]:
    """POST /v1/uses requests the server has answered, by status, from its own /metrics."""
    text = api.call("GET", "/metrics")[2].decode()
    found = re.findall(r'tlog_http_requests_total\{method="POST",route="/v1/uses",role="service",status="(\d+)"\} (\d+)', text)
    return {int(status): int(n) for status, n in found}


async def test_a_batch_the_log_refuses_whole_is_reported_once_and_never_resent(tmp_path: Path):
    """The policy in force dropped a purpose code: every record of a spooled batch under it is refused
    (400 naming each). Each is failed once, with the reason, and nothing more is sent: no empty batch,
    no loop; close() returns. A mixed batch sends only its good records again, once."""
    db = tmp_path / "tlog.db"
    build_demo(str(db), 5)
    shown = tlog("policy", "show", "--db", str(db))
    doc = orjson.loads(shown.stdout)
    del doc["purposes"]["talent_discovery"]
    (tmp_path / "p.json").write_bytes(orjson.dumps(doc))
    res = tlog("policy", "publish", "--db", str(db), "--id", "no-talent-discovery", str(tmp_path / "p.json"))
    assert res.returncode == 0, res.stderr
    token = make_token(db, "--service", "recsys")
    server = start_server(db)
    api = Api(server)
    errors: list[str] = []
    try:
        async with TlogClient(server.url, token, vkey=vkey_of(api)) as client:
            logger = BatchLogger(client, tmp_path / "s.spool", backoff_base=0.01, backoff_cap=0.05,
                                 on_error=lambda event_id, exc: errors.append(event_id))
            await logger.start()
            dropped = [use(i, purpose="talent_discovery") for i in range(20)]
            futures = await logger.log_many(dropped)
            assert await asyncio.wait_for(logger.close(), 10) == 0
            assert uses_requests(api) == {400: 1}
            for f in futures:
                with pytest.raises(ValidationError, match="purpose"):
                    f.result()
            assert sorted(errors) == sorted(r["event_id"] for r in dropped)  # each reported once
            reopened = BatchLogger(client, tmp_path / "s.spool")
            await reopened.start()
            failed = await reopened.failed()
            assert len(failed) == 20 and all(f.status == 400 and "purpose" in f.message for f in failed)
            mixed = [use(100 + i, purpose="talent_discovery" if i % 2 else "recommendation") for i in range(10)]
            futures = await reopened.log_many(mixed)
            assert await asyncio.wait_for(reopened.close(), 10) == 0
        assert uses_requests(api) == {400: 2, 200: 1}
        assert [f.exception() is None for f in futures] == [i % 2 == 0 for i in range(10)]
    finally:
        out = stop_server(server)
    assert "Traceback" not in out, out


# --- receipts and bundles rest on the published (cosigned) checkpoint ----------------------------------------


def test_receipts_and_bundles_wait_for_the_witnesses(tmp_path: Path):
    """With a witness policy (SPEC §6), a receipt proves a leaf against a checkpoint the public can see:
    the latest the quorum cosigned. A leaf logged while the witness is away has no receipt yet (425 with
    Retry-After, nothing inline in the POST answer) and is not in the artist's audit bundle; once the
    witness is back and has cosigned, the receipt comes, and its checkpoint carries the cosignature."""
    db = tmp_path / "tlog.db"
    log = init_log(db, ORIGIN)
    log_v = log.verifier
    log.close()
    wdb, wvkey = new_witness(tmp_path)
    witness_v = Verifier.from_key(wvkey)
    witness = start_witness(wdb, log_v.key)
    port = int(witness.url.rsplit(":", 1)[1])
    service, artist = make_token(db, "--service", "recsys"), make_token(db, "--artist", "sc:user:7")
    server = start_server(db, "--witness-policy", str(policy_file(tmp_path, wvkey, witness.url)))
    api = Api(server)
    try:
        wait_for("the first cosigned checkpoint", lambda: cosigned(server, log_v))
        status, body = api.json("POST", "/v1/uses", service, _rec(1))
        assert status == 200, body
        first = body["results"][0]["index"]
        receipt = wait_for("the first receipt", lambda: (r := api.call("GET", f"/v1/receipts/{first}", service))[0] == 200 and r[2])
        _check_cosigned_receipt(receipt, first, log_v, witness_v)
        result = asyncio.run(_use(server.url, service, log_v.key))  # the client waits out the 425s for its receipt
        _check_cosigned_receipt(result.receipt.format(), result.index, log_v, witness_v)

        stop_server(witness)
        witness = None
        status, body = api.json("POST", "/v1/uses", service, _rec(2))
        assert status == 200 and "receipt" not in body["results"][0], body  # no receipt on an unpublished view
        index = body["results"][0]["index"]
        for token in (service, artist):
            status, headers, data = api.call("GET", f"/v1/receipts/{index}", token)
            assert status == 425 and headers["Retry-After"] == "1", data
            assert orjson.loads(data)["error"]["code"] == "too_early"
        assert api.call("GET", f"/v1/receipts/{index + 1000}", service)[0] == 404  # no such leaf: still 404
        status, bundle = api.json("GET", "/v1/artists/sc:user:7/audit", artist)
        assert status == 200 and index not in [e["index"] for e in bundle["entries"]]
        assert first in [e["index"] for e in bundle["entries"]]
        open_note(bundle["checkpoint"].encode(), [witness_v])  # the bundle's checkpoint is the cosigned one

        witness = start_witness(wdb, log_v.key, port=port)
        receipt = wait_for("the receipt once cosigned", lambda: (r := api.call("GET", f"/v1/receipts/{index}", service))[0] == 200 and r[2])
        _check_cosigned_receipt(receipt, index, log_v, witness_v)
        status, bundle = api.json("GET", "/v1/artists/sc:user:7/audit", artist)
        assert index in [e["index"] for e in bundle["entries"]]
    finally:
        out = stop_server(server)
        if witness is not None:
            stop_server(witness)
    assert "Traceback" not in out, out


async def _use(url: str, token: str, vkey: str) -> UseReceipt:
    async with TlogClient(url, token, vkey=vkey) as client:
        return await client.use(_rec(3))


def _check_cosigned_receipt(data: bytes, index: int, log_v: Verifier, witness_v: Verifier) -> None:
    receipt = Receipt.parse(data)
    cp = verify_receipt(receipt, None, [log_v])
    assert receipt.index == index < cp.size
    assert [s.name for s in open_note(receipt.checkpoint, [witness_v]).verified] == [witness_v.name]


def test_append_of_records_at_the_edges_names_each_line_and_changes_nothing(tmp_path: Path):
    db = tmp_path / "tlog.db"
    build_demo(str(db), 5)
    lines = [orjson.dumps(_rec(i, event_id=f"edge-{i}", occurred_at=when)).decode() for i, when in enumerate(EDGES)]
    (tmp_path / "uses.jsonl").write_text("\n".join(lines) + "\n")
    before = _size(db)
    res = tlog("append", "--db", str(db), "--service", "recsys", "--quiet", str(tmp_path / "uses.jsonl"))
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert "problem(s)" in res.stderr.splitlines()[0] and "9999-12-31T23:59:60Z" not in res.stderr.splitlines()[0]
    assert _size(db) == before


def test_before_any_cosigned_checkpoint_a_use_is_logged_and_its_receipt_is_too_early(tmp_path: Path):
    db = tmp_path / "tlog.db"
    init_log(db, ORIGIN).close()
    _, wvkey = new_witness(tmp_path)
    service = make_token(db, "--service", "recsys")
    server = start_server(db, "--witness-policy", str(policy_file(tmp_path, wvkey, "http://127.0.0.1:9")))  # no witness there
    api = Api(server)
    try:
        status, body = api.json("POST", "/v1/uses", service, _rec(1))
        assert status == 200 and "receipt" not in body["results"][0], body
        status, headers, _ = api.call("GET", f"/v1/receipts/{body['results'][0]['index']}", service)
        assert status == 425 and headers["Retry-After"] == "1"
        assert api.call("GET", "/checkpoint")[0] == 503
    finally:
        out = stop_server(server)
    assert "Traceback" not in out, out
