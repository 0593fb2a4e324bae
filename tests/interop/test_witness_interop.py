"""The witness against independent implementations: it accepts checkpoints signed by Tessera (its test
log) with consistency proofs made by golang.org/x/mod/sumdb/tlog from Tessera's tiles, and its
cosignatures verify inside Go's note.Open (through gocheck's cosignature/v1 verifier, written from
c2sp.org/tlog-cosignature, not from tlog's code). Also the published facts that need no Go: a real
witness's 0x04 key ID and the framing of the spec's example cosignature."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tlog import merkle
from tlog.checkpoint import Checkpoint, open_checkpoint
from tlog.note import Verifier, parse_note
from tlog.tiles import TileHashReader, tile_path
from tlog.witness import core
from tlog.witness.server import log_keys, make_witness_app
from tlog.witness.store import init_witness

TESSERA = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "tessera-log"


def tessera_key() -> str:
    if not TESSERA.exists():
        pytest.skip(f"test vectors not found at {TESSERA}")
    keys = json.loads((TESSERA.parent / "signed-notes.json").read_text())["keys"]
    return keys["tessera_testdata_verifier_key"]


def checkpoint(size: int) -> tuple[bytes, Checkpoint]:
    note = (TESSERA / f"checkpoint.{size}").read_bytes()
    return note, Checkpoint.parse(parse_note(note)[0])


@pytest.fixture
async def witness_client(aiohttp_client: Any, tmp_path: Path) -> tuple[Any, str]:
    w = init_witness(tmp_path / "w.db", "witness.example/w1")
    client = await aiohttp_client(make_witness_app(w, log_keys([tessera_key()])))
    yield client, w.vkey
    w.close()


async def test_go_made_proofs_of_tessera_checkpoints_are_cosigned_and_go_verifies_the_cosignatures(
        gocheck: Any, witness_client: tuple[Any, str]) -> None:
    client, wvkey = witness_client
    lvkey = tessera_key()
    sizes = [0, 1, 2, 3, 5, 8, 13, 15]
    for old, new in zip(sizes, sizes[1:]):
        note, cp = checkpoint(new)
        go_proof = [base64.b64decode(h) for h in
                    gocheck("prove-tree", str(TESSERA), str(old), str(new), base64.b64encode(cp.root).decode())["proof"]]
        ours = merkle.consistency_proof(old, new, TileHashReader(new, lambda t: (TESSERA / tile_path(t)).read_bytes()))
        assert go_proof == ours, (old, new)
        resp = await client.post("/add-checkpoint", data=core.format_request(old, go_proof, note))
        answer = await resp.read()
        assert resp.status == 200, (old, new, answer)
        out = gocheck("verify-note", lvkey, wvkey, stdin=note + answer)
        assert [s["name"] for s in out["verified"]] == ["example.com/log/testdata", "witness.example/w1"]
        open_checkpoint(note + answer, [Verifier.from_key(lvkey), Verifier.from_key(wvkey)])


async def test_go_refuses_a_tampered_cosignature(gocheck: Any, witness_client: tuple[Any, str]) -> None:
    client, wvkey = witness_client
    note, _ = checkpoint(4)
    resp = await client.post("/add-checkpoint", data=core.format_request(0, [], note))
    line = (await resp.read()).decode()
    prefix, sig = line.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 1
    tampered = f"{prefix} {base64.b64encode(bytes(raw)).decode()}\n".encode()
    assert "invalid signature" in gocheck("verify-note", tessera_key(), wvkey, stdin=note + tampered, ok=False)


def test_a_published_witness_key_has_the_key_id_we_compute() -> None:
    """A real cosignature/v1 witness key, as transparency-dev/formats tests it: its key ID (the 8 hex
    digits) is SHA-256(name ‖ "\\n" ‖ 0x04 ‖ key)[:4], which Verifier.from_key recomputes and checks."""
    v = Verifier.from_key("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    assert v.is_cosigner and v.key_hash == 0xDA77ADE7


def test_the_spec_example_cosignature_is_framed_as_we_read_it() -> None:
    """c2sp.org/tlog-cosignature's example (its key is not published, so only the framing can be
    checked): key ID, then the big-endian timestamp its signed-message example shows, then 64 bytes."""
    note = (
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
        "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
        "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
    ).encode()
    _, sigs = parse_note(note)
    cosig = sigs[1]
    assert cosig.name == "witness.example.com/w1" and len(cosig.sig) == 8 + 64
    assert int.from_bytes(cosig.sig[:8], "big") == 1679315147
