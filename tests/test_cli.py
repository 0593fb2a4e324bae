"""The `tlog` command end to end on a real database (click's runner, same process)."""

from __future__ import annotations

import base64
import multiprocessing
import os
import sqlite3
import stat
from datetime import datetime, timedelta

import orjson
import pytest
from click.testing import CliRunner

from tlog import merkle
from tlog.checkpoint import open_checkpoint
from tlog.cli import main
from tlog.errors import ValidationError
from tlog.note import Verifier

from .conftest import records


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def db(tmp_path, runner):
    path = tmp_path / "data" / "tlog.db"
    res = runner.invoke(main, ["init", "--db", str(path), "--origin", "cli.tlog.example/log"])
    assert res.exit_code == 0, res.output
    return path


def _jsonl(tmp_path, recs, name="uses.jsonl"):
    p = tmp_path / name
    p.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    return str(p)


def test_init_prints_the_verifier_key_last_and_keeps_secrets_private(tmp_path, runner):
    path = tmp_path / "d" / "tlog.db"
    res = runner.invoke(main, ["init", "--db", str(path), "--origin", "cli.tlog.example/log"])
    assert res.exit_code == 0
    vkey = res.stdout.strip().splitlines()[-1]
    assert Verifier.from_key(vkey).name == "cli.tlog.example/log"
    for p in (path, tmp_path / "d" / "tlog.signer.key", tmp_path / "d" / "tlog.vrf.key"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    assert not (tmp_path / "d" / "tlog.tag.key").exists()  # v1's HMAC key is gone
    assert b"PRIVATE" not in path.read_bytes()
    vrf_secret = bytes.fromhex((tmp_path / "d" / "tlog.vrf.key").read_text().strip())
    assert vrf_secret not in path.read_bytes() and vrf_secret.hex().encode() not in path.read_bytes()
    assert "size 3" in res.output  # the log, default policy and map leaves (SPEC §2.3)
    again = runner.invoke(main, ["init", "--db", str(path)])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    bad = runner.invoke(main, ["init", "--db", str(tmp_path / "x.db"), "--origin", "has space"])
    assert bad.exit_code == 2 and "origin" in bad.output and "Traceback" not in bad.output


def test_append_checkpoint_prove_verify(tmp_path, runner, db):
    res = runner.invoke(main, ["append", "--db", str(db), "--service", "recsys", _jsonl(tmp_path, records(25))])
    assert res.exit_code == 0, res.output
    # init's 3 leaves, the 25 records and the batch's map leaf
    assert "25 appended, 0 duplicate" in res.output and "size 29" in res.output
    again = runner.invoke(main, ["append", "--db", str(db), "--service", "recsys", _jsonl(tmp_path, records(25))])
    assert "0 appended, 25 duplicate" in again.output and "size 29" in again.output  # not even a map leaf

    cp_res = runner.invoke(main, ["checkpoint", "--db", str(db)])
    assert cp_res.exit_code == 0
    vkey = sqlite3.connect(db).execute("SELECT value FROM meta WHERE key='vkey'").fetchone()[0]
    cp, _ = open_checkpoint(cp_res.stdout_bytes, [Verifier.from_key(vkey)])
    assert cp.size == 29

    proof = runner.invoke(main, ["prove", "inclusion", "7", "--db", str(db)])
    assert proof.exit_code == 0
    hashes = [base64.b64decode(line) for line in proof.stdout.split()]
    leaf = sqlite3.connect(db).execute("SELECT hash FROM entries WHERE idx = 7").fetchone()[0]
    merkle.verify_inclusion(leaf, 7, 29, hashes, cp.root)

    cons = runner.invoke(main, ["prove", "consistency", "3", "29", "--db", str(db), "--json"])
    body = orjson.loads(cons.stdout)
    assert body["old"] == 3 and body["new"] == 29 and len(body["proof"]) > 0

    ver = runner.invoke(main, ["verify", "--db", str(db), "--vkey", vkey])
    assert ver.exit_code == 0, ver.output
    assert "ok:" in ver.output and "size 29" in ver.output


def test_a_large_append_is_written_by_a_child_that_it_stops(tmp_path, runner, db):
    """More than one batch: each is written by a child process while the next is built (store/writer.py).
    The result is the same log, and no child is left behind."""
    recs = records(2500, artists=300)
    res = runner.invoke(main, ["append", "--db", str(db), "--service", "recsys", _jsonl(tmp_path, recs)])
    assert res.exit_code == 0, res.output
    # init's 3 leaves, then batches of 1000 records (APPEND_BATCH), each ending with its map leaf
    assert "2500 appended, 0 duplicate" in res.output and "size 2506" in res.output
    assert multiprocessing.active_children() == []
    recs[1200]["detail"] = "another body"  # one changed record among duplicates: refused, named
    bad = runner.invoke(main, ["append", "--db", str(db), "--service", "recsys", _jsonl(tmp_path, recs)])
    assert bad.exit_code == 2 and "different body" in bad.output and "Traceback" not in bad.output
    assert multiprocessing.active_children() == []
    ver = runner.invoke(main, ["verify", "--db", str(db)])
    assert ver.exit_code == 0 and "size 2506" in ver.output, ver.output


def test_an_invalid_file_appends_nothing_and_names_every_problem(tmp_path, runner, db):
    recs = records(5)
    recs[1]["purpose"] = "world_domination"
    recs[3]["invocations"] = 1.5
    path = _jsonl(tmp_path, recs)
    with open(path, "ab") as f:
        f.write(b"{not json\n")
    res = runner.invoke(main, ["append", "--db", str(db), "--service", "recsys", path])
    assert res.exit_code == 2
    assert "nothing was appended" in res.output
    assert "line 2" in res.output and "line 4" in res.output and "line 6" in res.output
    assert "Traceback" not in res.output
    cp = runner.invoke(main, ["checkpoint", "--db", str(db)])
    assert cp.stdout.splitlines()[1] == "3"  # init's checkpoint still


def test_verify_json(tmp_path, runner, db):
    runner.invoke(main, ["append", "--db", str(db), "--service", "recsys", _jsonl(tmp_path, records(20))])
    res = runner.invoke(main, ["verify", "--db", str(db), "--json"])
    report = orjson.loads(res.stdout)
    assert res.exit_code == 0 and report["ok"] is True and report["size"] == report["leaves"] == 24
    assert report["origin"] == "cli.tlog.example/log" and report["checkpoints"] == 2
    conn = sqlite3.connect(db)
    conn.execute("UPDATE entries SET content_id = 'x' WHERE idx = 9")
    conn.commit()
    res = runner.invoke(main, ["verify", "--db", str(db), "--json"])
    failed = orjson.loads(res.stdout)
    assert res.exit_code == 1 and failed["ok"] is False and failed["index"] == 9 and failed["exit"] == 1
    assert "index 9" in failed["error"]


def test_verify_names_the_first_bad_index(tmp_path, runner, db):
    runner.invoke(main, ["append", "--db", str(db), "--service", "recsys", _jsonl(tmp_path, records(20))])
    conn = sqlite3.connect(db)
    conn.execute("UPDATE entries SET content_id = 'x' WHERE idx = 9")
    conn.commit()
    res = runner.invoke(main, ["verify", "--db", str(db)])
    assert res.exit_code == 1
    assert "index 9" in res.output and len(res.output.strip().splitlines()) == 1


def test_user_errors_are_one_line_without_traceback(tmp_path, runner, db):
    cases = [  # SPEC §7: 2 bad input, 3 the log could not be read
        (["prove", "inclusion", "99", "--db", str(db)], 2),
        (["prove", "consistency", "5", "2", "--db", str(db)], 2),
        (["checkpoint", "--db", str(tmp_path / "missing.db")], 3),
        (["append", "--db", str(db), "--service", "recsys", str(tmp_path / "nope.jsonl")], 2),
        (["policy", "publish", "--db", str(db), "--id", "bad id!", _jsonl(tmp_path, [{"x": 1}], "p.json")], 2),
    ]
    for args, code in cases:
        res = runner.invoke(main, args)
        assert res.exit_code == code, (args, res.output)
        assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit), args


def test_stats_and_export(tmp_path, runner, db):
    runner.invoke(main, ["append", "--db", str(db), "--service", "recsys", _jsonl(tmp_path, records(30))])
    st = runner.invoke(main, ["stats", "--db", str(db), "--json"])
    rows = orjson.loads(st.stdout)["totals"]  # the shape of GET /v1/stats
    assert sum(r["leaves"] for r in rows if r["type"] in ("use", "refusal")) == 30
    counts = {t: sum(r["leaves"] for r in rows if r["type"] == t) for t in ("log", "policy", "map")}
    assert counts == {"log": 1, "policy": 1, "map": 2}  # init's batch and the append's, each with a map leaf
    exp = runner.invoke(main, ["export", "--db", str(db)])
    lines = [orjson.loads(line) for line in exp.stdout.splitlines()]
    assert len(lines) == 34 and lines[5]["details"]["index"] == 5
    assert [line["leaf"]["type"] for line in lines[:3]] == ["log", "policy", "map"] and lines[33]["leaf"]["type"] == "map"
    pub = runner.invoke(main, ["export", "--db", str(db), "--public"])
    assert b"sc:user" not in pub.stdout_bytes and b"details\":{" not in pub.stdout_bytes
    for line in lines:
        assert merkle.leaf_hash(orjson.dumps(line["leaf"])) == bytes.fromhex(line["leaf_hash"])


def test_policy_publish_and_preferences(tmp_path, runner, db):
    shown = runner.invoke(main, ["policy", "show", "--db", str(db)])
    doc = tmp_path / "policy.json"
    doc.write_text(shown.stdout)
    res = runner.invoke(main, ["policy", "publish", "--db", str(db), "--id", "2026-12", str(doc)])
    assert res.exit_code == 0 and "index 3" in res.output  # after init's 3 leaves; its map leaf is 4
    prefs = tmp_path / "prefs.json"
    prefs.write_text('{"no_ai": true}')
    res = runner.invoke(main, ["preferences", "--db", str(db), "--artist", "sc:user:1", str(prefs)])
    assert res.exit_code == 0 and "index 5" in res.output
    ok = runner.invoke(main, ["verify", "--db", str(db)])
    assert ok.exit_code == 0, ok.output


def test_policy_publish_refuses_a_loosening_without_notice_naming_when_it_may_take_effect(tmp_path, runner, db):
    """SPEC §4 Notice: the default policy promises 30 days; the refusal names the earliest --effective."""
    doc = orjson.loads(runner.invoke(main, ["policy", "show", "--db", str(db)]).stdout)
    doc["purposes"]["model_training_generative"]["default"] = "allowed"
    loose = tmp_path / "loose.json"
    loose.write_bytes(orjson.dumps(doc))
    res = runner.invoke(main, ["policy", "publish", "--db", str(db), "--id", "loose", str(loose)])
    assert res.exit_code != 0 and res.stdout == ""
    first, detail = res.stderr.splitlines()
    assert first.startswith("error: policy 'loose' loosens 'default' — model_training_generative: refused → allowed — "
                            "but takes effect at ") and "before the 30 days' notice 'default' promised" in first
    earliest = detail.removeprefix("  effective_at: the earliest allowed is ")
    assert first.endswith(f"(not before {earliest})")
    # The notice counts from the leaf's logged_at, so a later attempt needs a (slightly) later time.
    early = earliest[:-5] + "Z"  # the same second without its milliseconds
    res = runner.invoke(main, ["policy", "publish", "--db", str(db), "--id", "loose", "--effective", early, str(loose)])
    assert res.exit_code != 0 and "before the 30 days' notice 'default' promised" in res.stderr
    later = (datetime.fromisoformat(earliest) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    res = runner.invoke(main, ["policy", "publish", "--db", str(db), "--id", "loose", "--effective", later, str(loose)])
    assert res.exit_code == 0 and "policy loose published at index 3" in res.output, res.output
    ok = runner.invoke(main, ["verify", "--db", str(db)])
    assert ok.exit_code == 0, ok.output


def test_policy_diff_shows_each_change_and_marks_loosenings(tmp_path, runner, db):
    doc = orjson.loads(runner.invoke(main, ["policy", "show", "--db", str(db)]).stdout)
    doc["purposes"]["talent_discovery"]["default"] = "refused"
    doc["notice_days"] = 60
    stricter = tmp_path / "stricter.json"
    stricter.write_bytes(orjson.dumps(doc))
    assert runner.invoke(main, ["policy", "publish", "--db", str(db), "--id", "stricter", str(stricter)]).exit_code == 0
    res = runner.invoke(main, ["policy", "diff", "--db", str(db), "default", "stricter"])
    assert res.exit_code == 0 and res.stdout.splitlines() == [
        "default → stricter: 2 changes, none loosens",
        "          talent_discovery: flagged → refused",
        "          notice_days: 30 → 60"]
    res = runner.invoke(main, ["policy", "diff", "--db", str(db), "stricter", "default"])
    assert res.stdout.splitlines() == [
        "stricter → default: 2 changes, loosens (needs the notice promised)",
        "  LOOSENS talent_discovery: refused → flagged",
        "  LOOSENS notice_days: 60 → 30"]
    same = runner.invoke(main, ["policy", "diff", "--db", str(db), "default", "default", "--json"])
    assert orjson.loads(same.stdout) == {"from": "default", "to": "default", "loosens": False, "changes": []}
    bad = runner.invoke(main, ["policy", "diff", "--db", str(db), "default", "nope"])
    assert bad.exit_code != 0 and bad.stderr.startswith("error: no published policy 'nope'") and "Traceback" not in bad.output


def test_help_teaches(runner):
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0 and "tlog init" in res.output
    for cmd in ("init", "append", "verify", "prove", "checkpoint", "stats", "export", "serve", "policy"):
        assert runner.invoke(main, [cmd, "--help"]).exit_code == 0, cmd


def test_a_repeated_event_id_is_named_with_its_lines_and_nothing_is_appended(tmp_path, runner, db):
    recs = records(5)
    recs[3]["event_id"] = recs[1]["event_id"]
    recs[4] = ["not a record"]
    res = runner.invoke(main, ["append", "--db", str(db), "--service", "recsys", _jsonl(tmp_path, recs)])
    assert res.exit_code != 0 and "nothing was appended" in res.output
    assert f"  lines 2, 4: event_id {recs[1]['event_id']!r} appears 2 times; give each use its own event_id" in res.output
    assert "  line 5: a use record must be a JSON object" in res.output  # no stray ": :" where a field has no name
    assert runner.invoke(main, ["stats", "--db", str(db), "--json"]).stdout.count('"use"') == 0


def test_the_library_appends_a_file_all_or_nothing_and_closes_with_the_block(tmp_path, db):
    """`tlog append` is LocalLog.append_jsonl and a print: the same checks without the CLI."""
    from tlog.log import open_log

    good = tmp_path / "good.jsonl"
    good.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records(5)))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(orjson.dumps(records(1)[0]) + b"\n{\n")
    with open_log(db, secrets_needed=True) as log:
        size = log.store.size()
        with open(bad, "rb") as f, pytest.raises(ValidationError, match="nothing was appended"):
            log.append_jsonl("recsys", f)
        assert log.store.size() == size
        with open(good, "rb") as f, pytest.raises(ValidationError, match="1-128 characters without spaces"):
            log.append_jsonl("rec sys", f)
        seen: list[tuple[int, int]] = []
        with open(good, "rb") as f:
            done = log.append_jsonl("recsys", f, lambda n, total: seen.append((n, total)))
        assert (done.appended, done.duplicate, seen[-1]) == (5, 0, (5, 5))
        assert done.size == log.latest_checkpoint()[0].size > size
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        log.store.size()  # the store was closed with the block
