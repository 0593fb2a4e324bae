"""The public read API on a real server: formats, proofs, tiles, and clear 4xx answers to bad input."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from urllib.parse import quote

import orjson
import pytest

from tlog import merkle, tiles
from tlog.checkpoint import open_checkpoint
from tlog.leaf import parse_leaf
from tlog.log import open_log
from tlog.note import Verifier
from tlog.policy import DEFAULT_POLICY
from tlog.server.app import make_app
from tlog.server.state import STATE_KEY

from ..mapcheck import check_served_map_proof, map_values


def _vkey(served):
    status, _, body = served.get("/v1/log")
    assert status == 200
    return orjson.loads(body)["verifier_keys"][0]


def test_checkpoint_and_log_info(served):
    status, headers, body = served.get("/checkpoint")
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
    cp, _ = open_checkpoint(body, [Verifier.from_key(_vkey(served))])
    info = orjson.loads(served.get("/v1/log")[2])
    # init's log, policy and map leaves; 4 preferences, each a batch with its map leaf; 300 uses and a map leaf
    assert info["size"] == cp.size == 3 + 4 * 2 + 300 + 1
    assert info["origin"] == cp.origin and info["policy"] == "default"
    first = orjson.loads(served.get("/v1/leaves/0")[2])
    assert first["type"] == "log" and first["vrf"] == info["vrf_key"] and first["origin"] == cp.origin
    assert {p["code"] for p in info["purposes"]} >= {"recommendation", "model_training_generative"}


def test_tiles_rebuild_the_signed_root(served):
    cp, _ = open_checkpoint(served.get("/checkpoint")[2], [Verifier.from_key(_vkey(served))])

    def fetch(t):
        status, _, body = served.get("/" + tiles.tile_path(t))
        assert status == 200, tiles.tile_path(t)
        return body

    reader = tiles.TileHashReader(cp.size, fetch)
    assert merkle.tree_root(cp.size, reader) == cp.root
    leaves = []
    for t in tiles.entry_bundles_for_size(cp.size):
        leaves.extend(tiles.decode_bundle(fetch(t)))
    assert len(leaves) == cp.size
    level0 = b"".join(fetch(t) for t in tiles.hash_tiles_for_size(cp.size) if t.level == 0)
    assert [merkle.leaf_hash(leaf) for leaf in leaves] == [level0[i : i + 32] for i in range(0, len(level0), 32)]
    for i, leaf in enumerate(leaves):
        assert parse_leaf(leaf)
        assert served.get(f"/v1/leaves/{i}")[2] == leaf if i % 50 == 0 else True


def test_proofs_verify(served):
    cp, _ = open_checkpoint(served.get("/checkpoint")[2], [Verifier.from_key(_vkey(served))])
    for index in (0, 1, 150, cp.size - 1):
        body = orjson.loads(served.get(f"/v1/proof/inclusion?index={index}&size={cp.size}")[2])
        leaf = served.get(f"/v1/leaves/{index}")[2]
        merkle.verify_inclusion(merkle.leaf_hash(leaf), index, cp.size, [base64.b64decode(h) for h in body["proof"]], cp.root)
    log = open_log(served.db, readonly=True)
    try:
        old_root = merkle.tree_root(100, log.store)
    finally:
        log.close()
    body = orjson.loads(served.get(f"/v1/proof/consistency?old=100&new={cp.size}")[2])
    merkle.verify_consistency(100, cp.size, old_root, cp.root, [base64.b64decode(h) for h in body["proof"]])


def test_stats_and_policies(served):
    stats = orjson.loads(served.get("/v1/stats")[2])
    uses = [t for t in stats["totals"] if t["type"] in ("use", "refusal")]
    assert sum(t["leaves"] for t in uses) == 300
    pols = orjson.loads(served.get("/v1/policies")[2])
    status, _, doc = served.get(pols[0]["url"])
    assert status == 200 and b"purposes" in doc


def test_map_proofs_verify_against_the_map_leaf_ending_the_published_checkpoint(served):
    """SPEC §2.3: `GET /v1/map/proof` answers for the published size with a proof that verifies against the
    root stated by the map leaf at size - 1 (itself included in the signed checkpoint): each artist's
    (aseq, head) as the leaves say, and absence for a tag with no leaves. Any other size is 404; a
    malformed tag or size is 400."""
    cp, _ = open_checkpoint(served.get("/checkpoint")[2], [Verifier.from_key(_vkey(served))])
    log = open_log(served.db, readonly=True)
    try:
        want = map_values(log.store, cp.size)
    finally:
        log.close()
    assert len(want) == 50  # the demo's artists

    def get(path):
        status, _, body = served.get(path)
        return status, body

    for tag in sorted(want)[:8]:
        assert check_served_map_proof(get, tag, cp) == want[tag]
    for tag in ("00" * 32, "ff" * 32, hashlib.sha256(b"nobody").hexdigest()):
        assert tag not in want and check_served_map_proof(get, tag, cp) is None
    tag = sorted(want)[0]
    default = orjson.loads(served.get(f"/v1/map/proof?tag={tag}")[2])
    assert default["size"] == cp.size  # the published checkpoint unless a size is named
    for size in (3, cp.size - 1, cp.size + 1):  # 3 is a checkpoint, but neither published nor latest
        status, headers, body = served.get(f"/v1/map/proof?tag={tag}&size={size}")
        assert status == 404 and orjson.loads(body)["error"]["message"], (size, body)
    bad = ["", "abc", tag.upper(), tag[:-1], tag + "0", "g" * 64, " " + tag[1:]]
    for raw in bad:
        status, headers, body = served.get(f"/v1/map/proof?tag={quote(raw)}")
        assert status == 400 and headers["Content-Type"].startswith("application/json"), (raw, status)
        assert orjson.loads(body)["error"]["details"][0]["field"] == "tag"
    assert served.get("/v1/map/proof")[0] == 400
    for size in ("abc", "0", "-1", "1e3"):
        assert served.get(f"/v1/map/proof?tag={tag}&size={size}")[0] == 400, size


@pytest.mark.parametrize(
    "path, status",
    [
        ("/v1/proof/inclusion?size=10", 400),
        ("/v1/proof/inclusion?index=-1&size=10", 400),
        ("/v1/proof/inclusion?index=10&size=10", 400),
        ("/v1/proof/inclusion?index=1&size=99999", 400),
        ("/v1/proof/inclusion?index=1e3&size=10", 400),
        ("/v1/proof/consistency?old=0&new=10", 400),
        ("/v1/proof/consistency?old=20&new=10", 400),
        ("/v1/leaves/99999", 404),
        ("/v1/leaves/abc", 400),
        ("/tile/0/001", 404),
        ("/tile/0/000.p/0", 404),
        ("/tile/0/x000/000", 404),
        ("/tile/entries/002.p/3", 404),
        ("/tile/entries/001.p/60", 404),
        ("/tile/../etc/passwd", 404),
        ("/v1/policies/nope", 404),
        ("/nope", 404),
    ],
)
def test_bad_requests_get_json_errors(served, path, status):
    got, headers, body = served.get(path)
    assert got == status, body
    assert headers["Content-Type"].startswith("application/json")
    err = orjson.loads(body)["error"]
    assert err["code"] and err["message"]


async def test_log_info_names_the_policy_in_effect_of_the_published_log(aiohttp_client, log):
    """SPEC §4: a policy takes effect at its `effective_at`; /v1/log names the one in effect now, not the
    latest announced. And a policy leaf that no published checkpoint covers yet (a witness policy's
    quorum has not cosigned it) is neither in effect nor listed."""
    seq = log.sequencer()
    soon = json.loads(DEFAULT_POLICY.document)
    soon["text"] = "announced for later"
    seq.publish_policy(json.dumps(soon).encode(), "later", effective_ms=int(time.time() * 1000) + 3_600_000)
    reader = open_log(log.path)
    try:
        app = make_app(reader)
        client = await aiohttp_client(app)

        async def info():
            return await (await client.get("/v1/log")).json()

        assert (await info())["policy"] == "default"
        assert [p["id"] for p in await (await client.get("/v1/policies")).json()] == ["default", "later"]
        now = dict(soon, text="in effect at once")
        seq.publish_policy(json.dumps(now).encode(), "now")
        assert (await info())["policy"] == "now"
        # Published lagging behind (as with a witness policy): the newest policy leaf is not shown.
        app[STATE_KEY].witnessed = True
        log.store.set_published(5, log.store.checkpoint_at(5))  # init's 3; "later" and its map leaf
        assert (await info())["size"] == 5 and (await info())["policy"] == "default"
        assert [p["id"] for p in await (await client.get("/v1/policies")).json()] == ["default", "later"]
        # Its document is served all the same, as tiles are: witnesses replaying the latest signed
        # checkpoint check the notice rule on it before they cosign.
        assert await (await client.get("/v1/policies/now")).read() == log.store.policy("now").document
        assert (await client.get("/v1/policies/later")).status == 200
        assert (await client.get("/v1/policies/never")).status == 404
    finally:
        reader.close()


async def test_a_witnessed_server_serves_map_proofs_once_a_checkpoint_is_published(aiohttp_client, log):
    """Before a witness policy's quorum has cosigned anything, the published map (the default) is 503
    like /checkpoint; the latest checkpoint's map can be named. Once published, the default is it."""
    reader = open_log(log.path)
    try:
        app = make_app(reader)
        app[STATE_KEY].witnessed = True
        client = await aiohttp_client(app)
        tag = "00" * 32
        assert (await client.get(f"/v1/map/proof?tag={tag}")).status == 503
        r = await client.get(f"/v1/map/proof?tag={tag}&size=3")
        assert r.status == 200 and (await r.json())["root"] == "00" * 32  # init's map leaf: the empty map
        log.store.set_published(3, log.store.checkpoint_at(3))
        r = await client.get(f"/v1/map/proof?tag={tag}")
        assert r.status == 200 and (await r.json())["size"] == 3
    finally:
        reader.close()
