"""`tlog audit` against a real `tlog serve`: the route's pages and its refusals, the CLI's walk, its state
across runs, its verdicts and its exit codes (0 held, 1 failed, 2 bad input, 3 unreachable or refused)."""

from __future__ import annotations

import base64
import copy
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from tlog.audit import verify_bundle, verify_walk
from tlog.cli import main
from tlog.errors import TlogError
from tlog.note import ALG_COSIGNATURE_V1, Verifier, generate_key

from .conftest import Server, free_port, start_server, stop_server
from .test_service_api import make_token

ARTIST, OTHER, NOBODY = "sc:user:2", "sc:user:3", "sc:user:nobody"
PAGE = 4  # the server's largest page: every history of the demo takes a walk of several pages


class Env:
    def __init__(self, server: Server, d: Path) -> None:
        self.server, self.dir = server, d
        self.vkey = orjson.loads(urllib.request.urlopen(server.url + "/v1/log").read())["verifier_keys"][0]
        self.tokens = {name: make_token(server.db, *args) for name, args in (
            ("artist", ("--artist", ARTIST)), ("other", ("--artist", OTHER)), ("nobody", ("--artist", NOBODY)),
            ("auditor", ("--auditor",)), ("service", ("--service", "recsys")))}

    def cli(self, *args: str, token: str = "artist", artist: str = ARTIST) -> Result:
        return CliRunner().invoke(main, ["audit", "--url", self.server.url, "--vkey", self.vkey, "--artist", artist,
                                         "--token", self.tokens[token], *args])

    def get(self, path: str, token: str = "auditor") -> tuple[int, Any]:
        req = urllib.request.Request(self.server.url + path, headers={"Authorization": f"Bearer {self.tokens[token]}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read())

    def use(self, event_id: str, artist: str = ARTIST) -> None:
        record = {"event_id": event_id, "content_id": f"sc:track:2001-{artist}", "artist_id": artist, "purpose": "search_indexing",
                  "phase": "indexing", "system": {"id": "s", "model": "m", "version": "1"},
                  "occurred_at": "2026-08-01T12:00:00Z"}
        req = urllib.request.Request(self.server.url + "/v1/uses", data=orjson.dumps(record), method="POST",
                                     headers={"Authorization": f"Bearer {self.tokens['service']}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from tlog.demo import build_demo

    d = tmp_path_factory.mktemp("audit")
    db = d / "tlog.db"
    build_demo(str(db), 400)
    server = start_server(db, "--max-page-size", str(PAGE))
    yield Env(server, d)
    out = stop_server(server)
    assert "Traceback" not in out, out


def test_fetch_walk_verify_and_save(env: Env) -> None:
    out = env.dir / "bundle.json"
    res = env.cli("--out", str(out))
    assert res.exit_code == 0, res.output
    assert res.output.startswith("Complete at checkpoint ") and "every AI use logged under your artist id" in res.output
    # sc:user:2 is strict with a fraud_detection opt-in: its refusals are logged and counted.
    assert "refused" in res.output and "every decision follows the policy and your preferences" in res.output
    pages = orjson.loads(out.read_bytes())
    assert isinstance(pages, list) and len(pages) > 2 and all(len(p["entries"]) <= PAGE for p in pages)
    assert all(e["details"]["artist_id"] == ARTIST for p in pages for e in p["entries"])
    offline = CliRunner().invoke(main, ["audit", "verify", str(out), "--vkey", env.vkey])
    assert offline.exit_code == 0 and offline.output == res.output
    as_json = orjson.loads(CliRunner().invoke(main, ["audit", "verify", str(out), "--vkey", env.vkey, "--json"]).output)
    assert as_json["ok"] and as_json["complete"] and as_json["pages"] == len(pages)


def test_the_report_reads_by_track_purpose_and_month_with_dates_and_systems(env: Env) -> None:
    out = env.dir / "report.json"
    res = env.cli("--out", str(out))
    assert res.exit_code == 0, res.output
    uses = [e for p in orjson.loads(out.read_bytes()) for e in p["entries"]
            if orjson.loads(base64.b64decode(e["leaf"]))["type"] in ("use", "refusal")]
    track = max({e["details"]["content_id"] for e in uses}, key=lambda c: (sum(e["details"]["content_id"] == c for e in uses), c))
    mine = [e["details"] for e in uses if e["details"]["content_id"] == track]
    first, last = mine[0]["logged_at"][:10], mine[-1]["logged_at"][:10]
    line = next(x for x in res.output.splitlines() if x.startswith(f"  {track}: "))
    assert f"{len(mine)} use" in line and first in line and last in line
    assert mine[0]["system"]["id"] in line and mine[0]["purpose"] in line
    assert "\nBy purpose:\n" in res.output and "\nBy month (UTC):\n" in res.output
    assert f"  {mine[0]['logged_at'][:7]}: " in res.output
    report = orjson.loads(env.cli("--json").output)
    assert sum(t["leaves"] for t in report["tracks"]) == len(uses) == sum(m["leaves"] for m in report["by_month"])
    row = next(t for t in report["tracks"] if t["content_id"] == track)
    assert row["leaves"] == len(mine) and row["first"] == mine[0]["logged_at"] and row["last"] == mine[-1]["logged_at"]
    assert f"{mine[0]['system']['id']} ({mine[0]['system']['model']} {mine[0]['system']['version']})" in row["systems"]


def test_a_mistyped_artist_id_says_there_are_no_entries_for_it(env: Env) -> None:
    res = env.cli(token="auditor", artist=ARTIST.upper())
    assert res.exit_code == 0
    assert res.output.startswith(f"No entries for this id ({ARTIST.upper()}) up to checkpoint ")
    assert "check the id for a typo" in res.output


def test_state_fetches_only_what_is_new(env: Env) -> None:
    state, old = env.dir / "state", env.dir / "old.json"
    first = env.cli("--state", str(state), "--out", str(old))
    assert first.exit_code == 0, first.output
    (saved,) = list(state.iterdir())
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and stat.S_IMODE(state.stat().st_mode) == 0o700
    env.use("audit-e2e-1")
    env.use("audit-e2e-2")
    env.use("audit-e2e-other", artist=OTHER)
    second = env.cli("--state", str(state), "--json")
    report = orjson.loads(second.output)
    assert second.exit_code == 0 and report["since"] == report["extends"] and report["entries"] == 2
    assert "(your last check), 2 new uses — 2 search_indexing refused" in report["verdict"]  # strict: refused
    third = env.cli("--state", str(state))
    assert third.exit_code == 0 and third.output.startswith("Nothing new about you since checkpoint")
    # The bundle saved before is older than what the state has seen: refused.
    replay = CliRunner().invoke(main, ["audit", "verify", str(old), "--vkey", env.vkey, "--state", str(state)])
    assert replay.exit_code == 1 and "an older checkpoint than one you already verified" in replay.output


def test_an_artist_never_logged(env: Env) -> None:
    res = env.cli(token="nobody", artist=NOBODY)
    assert res.exit_code == 0 and res.output.startswith(f"No entries for this id ({NOBODY}) up to checkpoint")
    assert "By track" not in res.output


def test_exit_codes(env: Env, tmp_path: Path) -> None:
    _, wrong = generate_key("demo.tlog.example/log")
    r = CliRunner().invoke(main, ["audit", "--url", env.server.url, "--vkey", wrong, "--artist", ARTIST,
                                  "--token", env.tokens["artist"]])
    assert r.exit_code == 1 and "does not verify with the key you named" in r.output
    r = env.cli(token="other")
    assert r.exit_code == 3 and "403" in r.output
    r = CliRunner().invoke(main, ["audit", "--url", env.server.url, "--vkey", env.vkey, "--artist", ARTIST,
                                  "--token", "tlog_" + "A" * 43])
    assert r.exit_code == 3 and "401" in r.output
    r = CliRunner().invoke(main, ["audit", "--url", f"http://127.0.0.1:{free_port()}", "--vkey", env.vkey,
                                  "--artist", ARTIST, "--token", env.tokens["artist"]])
    assert r.exit_code == 3 and "Cannot connect" in r.output
    r = CliRunner().invoke(main, ["audit", "--url", env.server.url, "--vkey", env.vkey, "--artist", ARTIST],
                           env={"TLOG_TOKEN": ""})
    assert r.exit_code == 2 and "--token" in r.output
    not_a_bundle = tmp_path / "x.json"
    not_a_bundle.write_text('{"hello": 1}')
    r = CliRunner().invoke(main, ["audit", "verify", str(not_a_bundle), "--vkey", env.vkey])
    assert r.exit_code == 2 and "not a tlog audit bundle" in r.output


def test_a_witness_policy_the_checkpoint_does_not_meet(env: Env, tmp_path: Path) -> None:
    _, witness = generate_key("witness.example", ALG_COSIGNATURE_V1)
    policy = tmp_path / "witnesses.policy"
    policy.write_text(f"witness w1 {witness}\nquorum w1\n")
    r = env.cli("--witness-policy", str(policy))
    assert r.exit_code == 1 and "short of its quorum 'w1'" in r.output


@pytest.mark.parametrize("query, field", [
    ("?colour=red", "colour"), ("?since=0", "since"), ("?since=99999999", "since"), ("?size=4", "size"),
    ("?size=99999999", "size"), ("?limit=0", "limit"), (f"?limit={PAGE + 1}", "limit"), ("?from_aseq=0", "from_aseq"),
    ("?from_aseq=01", "from_aseq"), ("?size=-3", "size"),
])
def test_the_route_refuses_bad_queries(env: Env, query: str, field: str) -> None:
    status, body = env.get(f"/v1/artists/{ARTIST}/audit{query}")
    assert status == 400 and body["error"]["details"][0]["field"] == field, body


def test_the_route_pages_and_since(env: Env) -> None:
    status, page = env.get(f"/v1/artists/{ARTIST}/audit", token="artist")
    assert status == 200 and page["version"] == 2 and len(page["entries"]) == PAGE and page["map"] is not None
    size = int(page["checkpoint"].split("\n")[1])
    env.use("audit-e2e-later")  # the walk keeps its size while the log grows
    status, later = env.get(f"/v1/artists/{ARTIST}/audit?size={size}&from_aseq={page['next_aseq']}", token="artist")
    assert status == 200 and later["map"] is None and later["checkpoint"].split("\n")[1] == str(size)
    assert later["entries"][0]["leaf"] and later["preferences_in_force"] is not None
    status, since = env.get(f"/v1/artists/{ARTIST}/audit?since={size}", token="artist")
    assert status == 200 and since["since"] == size and [e["details"]["event_id"] for e in since["entries"]] == ["audit-e2e-later"]
    assert verify_bundle(since, Verifier.from_key(env.vkey)).entries == 1


def _mutations() -> list[Any]:
    """Changes a malicious or broken server could make to a walk; each must be caught."""
    def drop_middle(p: list[Any]) -> None:
        del p[0]["entries"][1]

    def drop_last_page(p: list[Any]) -> None:
        del p[-1]
        p[-1]["next_aseq"] = None

    def swap(p: list[Any]) -> None:
        p[0]["entries"][0], p[0]["entries"][1] = p[0]["entries"][1], p[0]["entries"][0]

    def details(p: list[Any]) -> None:
        p[1]["entries"][1]["details"]["purpose"] = "model_training_generative"

    def proof(p: list[Any]) -> None:
        h = bytearray(base64.b64decode(p[0]["entries"][2]["proof"][0]))
        h[0] ^= 1
        p[0]["entries"][2]["proof"][0] = base64.b64encode(bytes(h)).decode()

    def leaf_bit(p: list[Any]) -> None:
        leaf = bytearray(base64.b64decode(p[1]["entries"][0]["leaf"]))
        leaf[-5] ^= 1
        p[1]["entries"][0]["leaf"] = base64.b64encode(bytes(leaf)).decode()

    def checkpoint(p: list[Any]) -> None:
        p[0]["checkpoint"] = p[0]["checkpoint"].replace("\n\n", "\n\nx", 1)

    def map_head(p: list[Any]) -> None:
        p[0]["map"]["map_proof"]["found"]["head"] += 1

    def tag(p: list[Any]) -> None:
        p[0]["tag"] = "00" * 32

    def document(p: list[Any]) -> None:
        p[0]["policies"][0]["document"] = base64.b64encode(b'{"text":"anything goes"}').decode()

    return [drop_middle, drop_last_page, swap, details, proof, leaf_bit, checkpoint, map_head, tag, document]


def test_every_tampering_is_caught(env: Env) -> None:
    pages = []
    url = f"/v1/artists/{ARTIST}/audit"
    while True:
        status, page = env.get(url, token="artist")
        assert status == 200
        pages.append(page)
        if page["next_aseq"] is None:
            break
        url = f"/v1/artists/{ARTIST}/audit?size={page['checkpoint'].split(chr(10))[1]}&from_aseq={page['next_aseq']}"
    verifier = Verifier.from_key(env.vkey)
    assert verify_walk(pages, verifier).complete
    for mutate in _mutations():
        walk = copy.deepcopy(pages)
        mutate(walk)
        with pytest.raises(TlogError):
            report = verify_walk(walk, verifier)
            assert report.complete, mutate.__name__
