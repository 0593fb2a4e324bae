"""Interop with the reference Go implementations, golang.org/x/mod/sumdb/note and sumdb/tlog.

tests/interop/gocheck is a small Go program over those packages; the `gocheck` fixture (conftest.py here)
builds it once per session, or skips when Go cannot be had.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tlog import merkle
from tlog.checkpoint import Checkpoint, open_checkpoint
from tlog.note import ALG_COSIGNATURE_V1, Signature, Signer, Verifier, generate_key, open_note, sign_note
from tlog.tiles import encode_bundle, entry_bundles_for_size, hash_tiles_for_size, tile_coords, tile_path

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"

GoCheck = Callable[..., Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


TEXTS = [
    Checkpoint("example.com/log", 12345, bytes(range(32))).body(),
    b"one line\n",
    b"\n",
    b"text with\n\nblank lines\n\n",
    "unicode: caf\u00e9 \u2014 \u65e5\u672c \U0001f512\n".encode(),
]


# --- notes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_our_notes_verify_in_go(gocheck: GoCheck, text: bytes) -> None:
    skey, vkey = generate_key("example.com/log")
    other, _ = generate_key("other.example")
    signer = Signer.from_key(skey)
    unknown = Signature("unknown.example", 0x12345678, b"not checked by anyone")
    signed = sign_note(text, [signer, Signer.from_key(other)], [unknown])
    out = gocheck("verify-note", vkey, stdin=signed)
    assert out["text"].encode() == text
    assert [(s["name"], s["hash"]) for s in out["verified"]] == [(signer.name, signer.key_hash)]
    assert sorted(s["name"] for s in out["unverified"]) == ["other.example", "unknown.example"]


def test_our_cosignatures_verify_in_go(gocheck: GoCheck) -> None:
    """This sumdb/note predates cosignature/v1; gocheck adds a verifier written from the spec, so this
    checks our layout against a second reading of c2sp.org/tlog-cosignature inside Go's note.Open."""
    lkey, lvkey = generate_key("example.com/log")
    wkey, wvkey = generate_key("witness.example/w1", ALG_COSIGNATURE_V1)
    signed = sign_note(TEXTS[0], [Signer.from_key(lkey), Signer.from_key(wkey)])
    out = gocheck("verify-note", lvkey, wvkey, stdin=signed)
    assert [s["name"] for s in out["verified"]] == ["example.com/log", "witness.example/w1"]


def test_go_rejects_a_bad_signature_by_a_known_key(gocheck: GoCheck) -> None:
    skey, vkey = generate_key("example.com/log")
    signed = bytearray(sign_note(TEXTS[0], [Signer.from_key(skey)]))
    signed[5] ^= 1  # in the text
    assert "invalid signature" in gocheck("verify-note", vkey, stdin=bytes(signed), ok=False)


@pytest.mark.parametrize("text", TEXTS)
def test_go_notes_verify_in_ours(gocheck: GoCheck, text: bytes) -> None:
    skey, vkey = generate_key("example.com/log")
    other, other_vkey = generate_key("other.example")
    go_signed = gocheck("sign-note", skey, other, stdin=text)
    # Ed25519 is deterministic, so Go's bytes and ours must be identical, key parsing included.
    assert go_signed == sign_note(text, [Signer.from_key(skey), Signer.from_key(other)])
    note = open_note(go_signed, [Verifier.from_key(vkey)])
    assert note.text == text and [s.name for s in note.others] == ["other.example"]
    assert len(open_note(go_signed, [Verifier.from_key(vkey), Verifier.from_key(other_vkey)]).verified) == 2


def test_go_signs_the_vector_checkpoint_as_we_do(gocheck: GoCheck) -> None:
    path = VECTORS / "signed-notes.json"
    if not path.exists():
        pytest.skip(f"test vectors not found at {path}")
    keys = json.loads(path.read_text())["keys"]
    root = base64.b64decode("rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs=")
    body = Checkpoint("example.com/log/testdata", 15, root).body()
    go_signed = gocheck("sign-note", keys["tessera_testdata_signer_key"], stdin=body)
    assert go_signed == sign_note(body, [Signer.from_key(keys["tessera_testdata_signer_key"])])
    cp, _ = open_checkpoint(go_signed, [Verifier.from_key(keys["tessera_testdata_verifier_key"])])
    assert cp.size == 15


# --- checkpoints --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cp",
    [
        Checkpoint("example.com/log", 0, merkle.EMPTY_ROOT),
        Checkpoint("example.com/log", 1, bytes(32)),
        Checkpoint("a", 2**63 - 1, bytes([255]) * 32),
        Checkpoint("example.com/log", 20852163, hashlib.sha256(b"x").digest(), ("ext one", "ext two")),
    ],
)
def test_checkpoint_bodies_parse_in_go(gocheck: GoCheck, cp: Checkpoint) -> None:
    out = gocheck("parse-checkpoint", stdin=cp.body())
    assert (out["origin"], out["size"], out["root"]) == (cp.origin, cp.size, b64(cp.root))


# --- trees and proofs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100, 257])
def test_go_accepts_our_roots_and_proofs(gocheck: GoCheck, size: int) -> None:
    leaf_hashes = [merkle.leaf_hash(b"leaf %d" % i) for i in range(size)]
    tree = merkle.MemoryHashes(leaf_hashes)
    sizes = range(1, size + 1) if size <= 16 else sorted({1, 2, size // 3, size // 2, size - 1, size})
    inclusion = [
        {"index": i, "size": n, "proof": [b64(h) for h in merkle.inclusion_proof(i, n, tree)]}
        for n in sizes
        for i in (range(n) if size <= 16 else sorted({0, n // 2, n - 1}))
    ]
    consistency = [
        {"old": m, "new": n, "proof": [b64(h) for h in merkle.consistency_proof(m, n, tree)]}
        for n in sizes
        for m in sizes
        if m <= n
    ]
    request = {
        "leaf_hashes": [b64(h) for h in leaf_hashes],
        "roots": {str(n): b64(merkle.tree_root(n, tree)) for n in sizes} | {"0": b64(merkle.EMPTY_ROOT)},
        "inclusion": inclusion,
        "consistency": consistency,
    }
    out = gocheck("check-tree", stdin=json.dumps(request).encode())
    assert out == {"roots": len(request["roots"]), "inclusion": len(inclusion), "consistency": len(consistency)}


def test_go_refuses_a_wrong_proof(gocheck: GoCheck) -> None:
    """The harness itself must be able to fail."""
    leaf_hashes = [merkle.leaf_hash(b"%d" % i) for i in range(5)]
    proof = merkle.inclusion_proof(1, 5, merkle.MemoryHashes(leaf_hashes))
    proof[0] = bytes(32)
    request = {"leaf_hashes": [b64(h) for h in leaf_hashes], "roots": {}, "consistency": [],
               "inclusion": [{"index": 1, "size": 5, "proof": [b64(h) for h in proof]}]}
    assert "CheckRecord" in gocheck("check-tree", stdin=json.dumps(request).encode(), ok=False)


# --- tiles --------------------------------------------------------------------------------------------------


def test_go_reads_the_tessera_vector_log(gocheck: GoCheck) -> None:
    """A self-check of check-tiles against a log written by Tessera, at every size it checkpointed."""
    log = VECTORS / "tessera-log"
    if not log.exists():
        pytest.skip(f"test vectors not found at {log}")
    keys = json.loads((VECTORS / "signed-notes.json").read_text())["keys"]
    verifier = Verifier.from_key(keys["tessera_testdata_verifier_key"])
    for size in range(16):
        cp, _ = open_checkpoint((log / f"checkpoint.{size}").read_bytes(), [verifier])
        out = gocheck("check-tiles", str(log), str(cp.size), b64(cp.root))
        assert (out["size"], out["entries"]) == (size, size)


def write_tiled_log(root: Path, leaves: list[bytes]) -> bytes:
    """A c2sp.org/tlog-tiles directory for `leaves`, written with tlog.tiles; returns the tree root."""
    size = len(leaves)
    tree = merkle.MemoryHashes(merkle.leaf_hash(leaf) for leaf in leaves)
    for tile in hash_tiles_for_size(size):
        level, first, count = tile_coords(tile)
        path = root / tile_path(tile)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(tree.read_nodes([(level, first + i) for i in range(count)])))
    for bundle in entry_bundles_for_size(size):
        _, first, count = tile_coords(bundle)
        path = root / tile_path(bundle)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_bundle(leaves[first : first + count]))
    return merkle.tree_root(size, tree)


@pytest.mark.parametrize("size", [1, 256, 2 * 256 + 17, 256 * 256 + 300])
def test_go_reads_our_tiles(gocheck: GoCheck, tmp_path: Path, size: int) -> None:
    leaves = [b'{"v":1,"n":%d}' % i for i in range(size)]
    root = write_tiled_log(tmp_path, leaves)
    out = gocheck("check-tiles", str(tmp_path), str(size), b64(root))
    assert (out["entries"], out["tiles"]) == (size, len(hash_tiles_for_size(size)))


def test_go_refuses_a_damaged_tile(gocheck: GoCheck, tmp_path: Path) -> None:
    size = 2 * 256 + 17
    root = write_tiled_log(tmp_path, [b"%d" % i for i in range(size)])
    tile = tmp_path / "tile" / "0" / "001"
    data = bytearray(tile.read_bytes())
    data[100] ^= 1
    tile.write_bytes(bytes(data))
    assert "tile" in gocheck("check-tiles", str(tmp_path), str(size), b64(root), ok=False)
