"""Content bound to its artists on a real `tlog serve` (SPEC §2.1, §6): the catalogue binds with a `catalog`
service token, a mislabelled artist id is refused with 409 and nothing of the request is logged, a co-owner
logs its own uses and its audit bundle verifies with its binding leaf, and `tlog verify --db` names a use of
co-owned content logged for one artist only. The operator's `tlog content bind/release` writes through the
same sequencer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tlog.audit import verify_bundle
from tlog.note import Verifier

from .roles import RoleEnv, cli, make_token, start_env

OWNER, CO_OWNER = "sc:user:owner", "sc:user:co-owner"
TRACK = "sc:track:shared-1"


def use(event_id: str, artist_id: str, content_id: str = TRACK, **kw: Any) -> dict[str, Any]:
    return {"event_id": event_id, "content_id": content_id, "artist_id": artist_id, "purpose": "recommendation",
            "phase": "inference", "system": {"id": "recs-ranker", "model": "ranker", "version": "1"},
            "occurred_at": "2026-01-01T00:00:00Z", **kw}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = start_env(tmp_path_factory.mktemp("bind"))
    db = env.server.db
    env.tokens["catalog"] = make_token(db, "--service", "catalogue", "--catalog")[0]
    env.tokens["owner"] = make_token(db, "--artist", OWNER)[0]
    env.tokens["co_owner"] = make_token(db, "--artist", CO_OWNER)[0]
    yield env
    out = env.stop()
    assert "Traceback" not in out, out[-3000:]


def call(env: RoleEnv, method: str, path: str, role: str, body: Any = None) -> tuple[int, Any]:
    status, _, data = env.call(method, path, role, body)
    return status, orjson.loads(data) if data else None


def test_the_catalog_right_is_needed_to_bind(env):
    before = env.state()
    for role in ("service", "artist_a", "auditor"):
        status, err = call(env, "PUT", f"/v1/content/{TRACK}/artists", role, {"artists": [OWNER]})
        assert status == 403, (role, err)
    assert "catalog right" in call(env, "PUT", f"/v1/content/{TRACK}/artists", "service", {"artists": [OWNER]})[1]["error"]["message"]
    assert env.state() == before


@pytest.mark.parametrize("body, field", [
    ({}, "artists"), ({"artists": []}, "artists"), ({"artists": "sc:user:1"}, "artists"),
    ({"artists": ["sc:user:1", "sc:user:1"]}, "artists"), ({"artists": ["sc:user:\u0430"]}, "artists[0]"),
    ({"artists": [OWNER], "extra": 1}, "extra"), ({"artists": [f"sc:user:{i}" for i in range(101)]}, "artists"),
])
def test_bad_bodies_are_refused_and_change_nothing(env, body, field):
    before = env.state()
    status, err = call(env, "PUT", "/v1/content/sc:track:bad/artists", "catalog", body)
    assert status == 400, err
    assert field in [d["field"] for d in err["error"]["details"]]
    assert env.state() == before


def test_binding_co_owners_then_each_logs_its_own_uses(env):
    status, body = call(env, "PUT", f"/v1/content/{TRACK}/artists", "catalog", {"artists": [CO_OWNER, OWNER]})
    assert status == 200, body
    assert body["artists"] == sorted([OWNER, CO_OWNER])
    assert [(c["artist_id"], c["change"]) for c in body["changes"]] == [(CO_OWNER, "bind"), (OWNER, "bind")]
    for c in body["changes"]:
        leaf = orjson.loads(env.call("GET", f"/v1/leaves/{c['index']}")[2])
        assert leaf["type"] == "binding" and set(leaf) == {"v", "type", "prev", "logged_at", "artist", "aseq", "aprev", "details"}
    # The same PUT again changes nothing: no leaf.
    size = env.state()[1]
    assert call(env, "PUT", f"/v1/content/{TRACK}/artists", "catalog", {"artists": [OWNER, CO_OWNER]})[1]["changes"] == []
    assert env.state()[1] == size
    status, res = call(env, "POST", "/v1/uses", "service", {"records": [use("co-1", OWNER), use("co-2", CO_OWNER)]})
    assert status == 200, res
    # The co-owner's audit bundle holds its binding leaf and its use, and verifies offline.
    vkey = orjson.loads(env.call("GET", "/v1/log")[2])["verifier_keys"][0]
    status, bundle = call(env, "GET", f"/v1/artists/{CO_OWNER}/audit", "co_owner")
    assert status == 200, bundle
    assert [e["details"]["content_id"] for e in bundle["entries"]] == [TRACK, TRACK]
    assert bundle["entries"][0]["details"]["change"] == "bind"
    report = verify_bundle(bundle, Verifier.from_key(vkey))
    assert report.entries == 2 and report.bindings == 1


def test_a_mislabelled_artist_is_refused_with_409_and_nothing_is_logged(env):
    status, body = call(env, "PUT", "/v1/artists/sc:user:owner/preferences", "owner", {"no_ai": True})
    assert status == 200, body
    before = env.state()
    for i, lookalike in enumerate(["SC:USER:OWNER", "sc:user:owner/", "sc:user:0wner"]):
        batch = {"records": [use(f"ok-{i}", OWNER, "sc:track:fresh"),
                             use(f"mis-{i}", lookalike, purpose="model_training_generative", phase="training")]}
        status, err = call(env, "POST", "/v1/uses", "service", batch)
        assert status == 409, err
        assert err["error"]["code"] == "conflict"
        assert err["error"]["message"].startswith(f"content {TRACK!r} is bound to {CO_OWNER!r}, {OWNER!r}, not to {lookalike!r}")
        assert err["error"]["details"] == [{"field": "records[1].artist_id", "message": f"{TRACK!r} is not bound to {lookalike!r}"}]
    status, err = call(env, "POST", "/v1/uses", "service", use("mis-u", "sc:user:\u043ewner"))  # a Cyrillic о
    assert status == 400 and err["error"]["details"][0]["field"] == "artist_id"
    assert env.state() == before
    # Under the real ids, one record per rightsholder, the opt-out holds.
    training = {"purpose": "model_training_generative", "phase": "training"}
    status, res = call(env, "POST", "/v1/uses", "service", {"records": [use("train-1", OWNER, **training),
                                                                       use("train-2", CO_OWNER, **training)]})
    assert status == 200 and res["results"][0]["decision"] == "refused"


def test_the_operator_binds_and_releases_and_verify_reports_a_use_not_logged_for_every_artist(env):
    db: Path = env.server.db
    out, _ = cli(db, "content", "bind", "sc:track:duo", "--artist", OWNER, "--artist", CO_OWNER)
    assert out == f"sc:track:duo is bound to {CO_OWNER}, {OWNER}"
    status, res = call(env, "POST", "/v1/uses", "service", use("duo-1", OWNER, "sc:track:duo"))
    assert status == 200, res
    lone = res["results"][0]["index"]
    run = subprocess.run([sys.executable, "-m", "tlog.cli", "verify", "--db", str(db), "-q"], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert run.stdout.startswith("ok: ")  # the log itself holds
    assert (f"index {lone}: recsys's recommendation use of 'sc:track:duo' at 2026-01-01T00:00:00Z was logged for "
            f"{OWNER} but not for {CO_OWNER}") in run.stderr
    status, res = call(env, "POST", "/v1/uses", "service", use("duo-2", CO_OWNER, "sc:track:duo"))
    assert status == 200, res
    cli(db, "content", "release", "sc:track:duo", "--artist", CO_OWNER)
    status, err = call(env, "POST", "/v1/uses", "service", use("duo-3", CO_OWNER, "sc:track:duo", occurred_at="2026-01-02T00:00:00Z"))
    assert status == 409, err
    run = subprocess.run([sys.executable, "-m", "tlog.cli", "verify", "--db", str(db), "-q"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    # Anyone replays the binding leaves in the artists' chains from the public tiles alone.
    vkey = orjson.loads(env.call("GET", "/v1/log")[2])["verifier_keys"][0]
    run = subprocess.run([sys.executable, "-m", "tlog.cli", "verify", "--url", env.url, "--vkey", vkey, "-q"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("ok: "), run.stderr
