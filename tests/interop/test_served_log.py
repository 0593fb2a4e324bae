"""What `tlog serve` publishes, checked by golang.org/x/mod: the signed checkpoint opens with sumdb/note,
and the hash tiles and entry bundles, mirrored to disk exactly as served, rebuild the checkpoint's root
through sumdb/tlog's tile reader; proofs we serve match ProveTree over those tiles."""

from __future__ import annotations

import base64
import urllib.request
from pathlib import Path

import orjson
import pytest

from tlog import tiles
from tlog.checkpoint import open_checkpoint
from tlog.demo import build_demo
from tlog.note import Verifier

from ..e2e.conftest import start_server, stop_server


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory) -> tuple[Path, bytes, str, str]:
    d = tmp_path_factory.mktemp("served")
    db = d / "tlog.db"
    build_demo(str(db), 700)  # > 2 full tiles, partial tiles at level 0 and a level-1 tile
    server = start_server(db)
    try:
        signed = _get(server.url + "/checkpoint")
        vkey = orjson.loads(_get(server.url + "/v1/log"))["verifier_keys"][0]
        cp, _ = open_checkpoint(signed, [Verifier.from_key(vkey)])
        mirror = d / "mirror"
        for t in tiles.hash_tiles_for_size(cp.size) + tiles.entry_bundles_for_size(cp.size):
            path = mirror / tiles.tile_path(t)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_get(f"{server.url}/{tiles.tile_path(t)}"))
        proof = orjson.loads(_get(f"{server.url}/v1/proof/consistency?old=300&new={cp.size}"))
    finally:
        stop_server(server)
    return mirror, signed, vkey, proof


def test_go_opens_our_checkpoint(gocheck, mirrored):
    _, signed, vkey, _ = mirrored
    out = gocheck("verify-note", vkey, stdin=signed)
    assert out  # note.Open accepted it with our verifier key


def test_go_rebuilds_the_root_from_our_tiles(gocheck, mirrored):
    mirror, signed, vkey, _ = mirrored
    cp, _ = open_checkpoint(signed, [Verifier.from_key(vkey)])
    assert cp.size > 512
    gocheck("check-tiles", str(mirror), str(cp.size), base64.b64encode(cp.root).decode())
    wrong = bytearray(cp.root)
    wrong[0] ^= 1
    gocheck("check-tiles", str(mirror), str(cp.size), base64.b64encode(bytes(wrong)).decode(), ok=False)


def test_our_consistency_proof_matches_go(gocheck, mirrored):
    mirror, signed, vkey, proof = mirrored
    cp, _ = open_checkpoint(signed, [Verifier.from_key(vkey)])
    out = gocheck("prove-tree", str(mirror), "300", str(cp.size), base64.b64encode(cp.root).decode())
    assert out["proof"] == proof["proof"]
