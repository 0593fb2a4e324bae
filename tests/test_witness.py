"""The witness (c2sp.org/tlog-witness add-checkpoint): request format, the checks in the spec's order,
cosignatures, the compare-and-swap state, and checkpoints of an independent log (Tessera's test log)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from tlog import merkle
from tlog.checkpoint import Checkpoint, open_checkpoint
from tlog.errors import (Conflict, Forbidden, NoteError, NotFound, ProofError, StorageError, TlogError, Unavailable,
                         ValidationError, by_type)
from tlog.note import ALG_COSIGNATURE_V1, Signer, Verifier, generate_key, open_note, sign_note
from tlog.tiles import TileHashReader, tile_path
from tlog.witness import core
from tlog.witness.replay import ReplayError
from tlog.witness.server import STATUSES, log_keys, make_witness_app
from tlog.witness.core import LogState
from tlog.witness.store import WitnessStore, init_witness, key_path, open_witness

from .conftest import VECTORS

ORIGIN = "example.com/log"
LOG_SKEY, LOG_VKEY = generate_key(ORIGIN)
LOG = Signer.from_key(LOG_SKEY)


def tree(n: int, salt: bytes = b"") -> merkle.MemoryHashes:
    return merkle.MemoryHashes([merkle.leaf_hash(salt + b"leaf %d" % i) for i in range(n)])


def signed(size: int, salt: bytes = b"", signer: Signer = LOG) -> bytes:
    root = merkle.tree_root(size, tree(size, salt)) if size else merkle.EMPTY_ROOT
    return sign_note(Checkpoint(signer.name, size, root).body(), [signer])


def request(old: int, new: int, salt: bytes = b"", proof: list[bytes] | None = None, **kw: Any) -> bytes:
    if proof is None:
        proof = merkle.consistency_proof(old, new, tree(new, salt))
    return core.format_request(old, proof, signed(new, salt, **kw))


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[Any]:
    w = init_witness(tmp_path / "w.db", "witness.example/w1")
    yield w
    w.close()


@pytest.fixture
async def client(aiohttp_client: Any, witness: Any) -> Any:
    return await aiohttp_client(make_witness_app(witness, log_keys([LOG_VKEY])))


async def post(client: Any, body: bytes) -> tuple[int, str, bytes]:
    resp = await client.post("/add-checkpoint", data=body)
    return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


# --- the request format -----------------------------------------------------------------------------


def test_request_round_trips() -> None:
    body = request(3, 8)
    req = core.parse_request(body)
    assert (req.old, req.checkpoint.size, req.note) == (3, 8, signed(8))
    assert core.format_request(req.old, list(req.proof), req.note) == body
    assert body.startswith(b"old 3\n") and body.count(b"\n\n") == 2  # proof block, then note's own


def test_the_spec_example_request_parses() -> None:
    """The example body of c2sp.org/tlog-witness, verbatim: syntax only (its keys are not published)."""
    body = (
        "old 20852014\n"
        "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
        "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
        "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
        "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
        "\n"
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
        "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
        "\u2014 example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
    ).encode()
    req = core.parse_request(body)
    assert (req.old, len(req.proof), req.checkpoint.origin, req.checkpoint.size) == (
        20852014, 4, "example.com/behind-the-sofa", 20852163)


@pytest.mark.parametrize("body", [
    b"",
    b"old 1\n",  # no blank line
    b"new 1\n\n" + signed(2),
    b"old 01\n\n" + signed(2),
    b"old -1\n\n" + signed(2),
    b"old 1 \n\n" + signed(2),
    b"old 1\nnot base64!\n\n" + signed(2),
    b"old 1\n" + base64.b64encode(bytes(31)) + b"\n\n" + signed(2),
    b"old 1\n" + b"".join(base64.b64encode(bytes(32)) + b"\n" for _ in range(64)) + b"\n" + signed(2),
    b"old 1\n\nnot a checkpoint\n\n\xe2\x80\x94 x AAAA\n",
    b"old 1\n\n" + signed(2)[:-1],  # the note's last newline
    "old 1\u00e9\n\n".encode() + signed(2),
])
def test_malformed_requests_are_400(body: bytes) -> None:
    with pytest.raises(ValidationError):
        core.parse_request(body)


def test_409_bodies_parse() -> None:
    assert core.parse_size(b"20852014\n") == 20852014
    for bad in (b"1", b"01\n", b"-1\n", b"1\n\n", b"x\n"):
        with pytest.raises(ValidationError):
            core.parse_size(bad)


# --- the checks, over HTTP, in the spec's order -------------------------------------------------------


async def test_first_checkpoint_is_cosigned_and_recorded(client: Any, witness: Any) -> None:
    status, ctype, body = await post(client, request(0, 5))
    assert status == 200 and ctype.startswith("text/plain")
    note = open_note(signed(5) + body, [Verifier.from_key(witness.vkey)])
    (cosig,) = note.verified
    assert cosig.name == "witness.example/w1" and cosig.timestamp is not None
    assert body.startswith("\u2014 witness.example/w1 ".encode()) and body.endswith(b"\n") and body.count(b"\n") == 1
    assert witness.store.log_state(ORIGIN) == LogState(5, merkle.tree_root(5, tree(5)))


async def test_an_append_only_sequence_is_cosigned(client: Any, witness: Any) -> None:
    sizes = [0, 1, 2, 3, 7, 8, 8, 9, 200, 257]
    for old, new in zip(sizes, sizes[1:]):
        status, _, _ = await post(client, request(old, new))
        assert status == 200, (old, new)
    assert witness.store.log_state(ORIGIN).size == 257


async def test_unknown_origin_is_404_before_anything_else(client: Any) -> None:
    other = Signer.from_key(generate_key("other.example/log")[0])
    status, _, body = await post(client, core.format_request(9, [], signed(2, signer=other)))  # also old > size
    assert status == 404 and b"other.example/log" in body


async def test_a_checkpoint_signed_by_another_key_is_403_before_400(client: Any) -> None:
    impostor = Signer.from_key(generate_key(ORIGIN)[0])  # same name, other key
    status, _, _ = await post(client, core.format_request(9, [], signed(2, signer=impostor)))
    assert status == 403
    forged = bytearray(signed(2))
    forged[len(ORIGIN) + 1] ^= 1  # the size line: LOG's signature no longer verifies
    status, _, _ = await post(client, b"old 0\n\n" + bytes(forged))
    assert status == 403


async def test_old_beyond_the_checkpoint_is_400_before_409(client: Any, witness: Any) -> None:
    await post(client, request(0, 4))
    status, _, body = await post(client, core.format_request(7, [], signed(5)))  # also the wrong old size
    assert status == 400 and b"larger" in body


async def test_wrong_old_size_is_409_with_the_size_and_no_change(client: Any, witness: Any) -> None:
    await post(client, request(0, 4))
    for old in (0, 3, 5):
        status, ctype, body = await post(client, request(old, 6))
        assert (status, ctype, body) == (409, core.SIZE_CONTENT_TYPE, b"4\n")
    assert witness.store.log_state(ORIGIN).size == 4
    assert witness.store.refusals() == []  # ordinary protocol traffic, not evidence


async def test_409_comes_before_422(client: Any) -> None:
    await post(client, request(0, 4))
    status, _, body = await post(client, request(3, 6, proof=[bytes(32)]))
    assert (status, body) == (409, b"4\n")


async def test_a_bad_proof_is_422_kept_as_evidence_and_changes_nothing(client: Any, witness: Any) -> None:
    await post(client, request(0, 4))
    proof = merkle.consistency_proof(4, 9, tree(9))
    proof[0] = bytes(32)
    status, _, body = await post(client, request(4, 9, proof=proof))
    assert status == 422 and b"not consistent" in body
    assert witness.store.log_state(ORIGIN).size == 4
    assert [(r.status, r.origin) for r in witness.store.refusals()] == [(422, ORIGIN)]


async def test_a_fork_is_refused_with_the_reason(client: Any, witness: Any) -> None:
    """Split view: the same key signs two histories. The witness that saw one refuses the other."""
    await post(client, request(0, 6))
    status, _, body = await post(client, request(6, 9, salt=b"fork "))  # proof from the fork's own tree
    assert status == 422 and b"not consistent with the one this witness cosigned at size 6" in body
    status, ctype, body = await post(client, request(6, 6, salt=b"fork "))
    assert (status, ctype, body) == (409, core.SIZE_CONTENT_TYPE, b"6\n")
    reasons = [r.reason for r in witness.store.refusals()]
    assert len(reasons) == 2 and "forked" in reasons[1]
    assert witness.store.log_state(ORIGIN).root == merkle.tree_root(6, tree(6))


@pytest.mark.parametrize("old,new,proof", [(0, 5, [bytes(32)]), (5, 5, [bytes(32)])])
async def test_proofs_that_must_be_empty(client: Any, old: int, new: int, proof: list[bytes]) -> None:
    if old:
        await post(client, request(0, old))
    status, _, _ = await post(client, request(old, new, proof=proof))
    assert status == 422


async def test_an_empty_tree_needs_the_empty_root(client: Any) -> None:
    bad = sign_note(Checkpoint(ORIGIN, 0, bytes(32)).body(), [LOG])
    assert (await post(client, b"old 0\n\n" + bad))[0] == 422
    assert (await post(client, request(0, 0)))[0] == 200


async def test_the_same_checkpoint_is_cosigned_again(client: Any) -> None:
    assert (await post(client, request(0, 3)))[0] == 200
    assert (await post(client, request(3, 3)))[0] == 200


async def test_other_signatures_on_the_checkpoint_are_ignored(client: Any) -> None:
    other = Signer.from_key(generate_key("witness.example/other", ALG_COSIGNATURE_V1)[0])
    note = sign_note(Checkpoint(ORIGIN, 2, merkle.tree_root(2, tree(2))).body(), [LOG, other])
    assert (await post(client, b"old 0\n\n" + note))[0] == 200


async def test_get_is_not_add_checkpoint(client: Any) -> None:
    assert (await client.get("/add-checkpoint")).status == 405


async def test_a_log_with_two_keys_during_rotation(aiohttp_client: Any, witness: Any) -> None:
    new = Signer.from_key(generate_key(ORIGIN)[0])
    client = await aiohttp_client(make_witness_app(witness, log_keys([LOG_VKEY, new.verifier_key])))
    assert (await post(client, request(0, 3)))[0] == 200
    assert (await post(client, request(3, 5, signer=new)))[0] == 200


def test_the_witness_table_gives_each_refusal_its_spec_status() -> None:
    raised: dict[type[TlogError], int] = {
        ValidationError: 400, Forbidden: 403, NotFound: 404, Conflict: 409, core.SizeConflict: 409,
        core.ForkConflict: 409, ProofError: 422, NoteError: 422, ReplayError: 422, Unavailable: 503,
        StorageError: 503, TlogError: 400,
    }
    assert {t: by_type(STATUSES, t("x")) for t in raised} == raised
    assert STATUSES.keys() <= raised.keys()  # the table names only what the witness raises


def test_witness_keys_are_not_log_keys() -> None:
    with pytest.raises(ValidationError, match="witness key"):
        log_keys([generate_key("w", ALG_COSIGNATURE_V1)[1]])


# --- state ---------------------------------------------------------------------------------------------


def test_racing_requests_cannot_roll_the_state_back(tmp_path: Path) -> None:
    """Both requests were checked against size 5; the one that commits second loses with a 409, as it
    would have had it arrived second, instead of rolling 10 back to 7 (the spec's race)."""
    init_witness(tmp_path / "w.db", "w").close()
    a, b = WitnessStore(tmp_path / "w.db"), WitnessStore(tmp_path / "w.db")  # two connections, as two processes
    five = LogState(5, bytes(32))
    a.advance(ORIGIN, None, five)
    seen_by_b = b.log_state(ORIGIN)
    a.advance(ORIGIN, five, LogState(10, bytes([1]) * 32))
    with pytest.raises(core.SizeConflict) as exc:
        b.advance(ORIGIN, seen_by_b, LogState(7, bytes([2]) * 32))
    assert exc.value.size == 10 and a.log_state(ORIGIN).size == 10
    a.close(), b.close()


def test_init_refuses_to_overwrite_and_keys_are_private(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    w = init_witness(db, "witness.example/w1")
    assert Verifier.from_key(w.vkey).is_cosigner
    w.close()
    assert db.stat().st_mode & 0o777 == 0o600 and key_path(db).stat().st_mode & 0o777 == 0o600
    with pytest.raises(Conflict, match="already exists"):
        init_witness(db, "witness.example/w1")
    reopened = open_witness(db)
    assert reopened.vkey == w.vkey
    reopened.close()
    with pytest.raises(ValidationError):
        init_witness(tmp_path / "x.db", "has space")


# --- an independent log: Tessera's test log -------------------------------------------------------------


def tessera() -> tuple[str, Path]:
    log = VECTORS / "tessera-log"
    if not log.exists():
        pytest.skip(f"test vectors not found at {log}")
    keys = json.loads((VECTORS / "signed-notes.json").read_text())["keys"]
    return keys["tessera_testdata_verifier_key"], log


def tessera_proof(log: Path, old: int, new: int) -> list[bytes]:
    """A consistency proof read from the hash tiles Tessera wrote."""
    return merkle.consistency_proof(old, new, TileHashReader(new, lambda t: (log / tile_path(t)).read_bytes()))


async def test_tessera_checkpoints_and_proofs_are_cosigned(aiohttp_client: Any, witness: Any) -> None:
    vkey, log = tessera()
    client = await aiohttp_client(make_witness_app(witness, log_keys([vkey])))
    verifier = Verifier.from_key(witness.vkey)
    sizes = [0, 1, 2, 3, 4, 7, 8, 11, 15]
    for old, new in zip(sizes, sizes[1:]):
        note = (log / f"checkpoint.{new}").read_bytes()
        status, _, body = await post(client, core.format_request(old, tessera_proof(log, old, new), note))
        assert status == 200, (old, new, body)
        cp, opened = open_checkpoint(note + body, [Verifier.from_key(vkey), verifier])
        assert cp.size == new and [s.name for s in opened.verified] == ["example.com/log/testdata", "witness.example/w1"]
    status, _, _ = await post(client, core.format_request(15, [], (log / "checkpoint").read_bytes()))
    assert status == 200


async def test_a_tessera_proof_for_other_sizes_is_422(aiohttp_client: Any, witness: Any) -> None:
    vkey, log = tessera()
    client = await aiohttp_client(make_witness_app(witness, log_keys([vkey])))
    assert (await post(client, core.format_request(0, [], (log / "checkpoint.5").read_bytes())))[0] == 200
    body = core.format_request(5, tessera_proof(log, 4, 9), (log / "checkpoint.9").read_bytes())
    assert (await post(client, body))[0] == 422



def test_witness_commands_fail_with_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tlog.cli import main

    runner = CliRunner()
    db = str(tmp_path / "w.db")
    res = runner.invoke(main, ["witness", "serve", "--db", db, "--log", LOG_VKEY])
    assert res.exit_code == 3 and res.output.startswith("error: no witness database")
    vkey = runner.invoke(main, ["witness", "init", "--db", db, "--name", "witness.example/w1"]).stdout.split()[-1]
    res = runner.invoke(main, ["witness", "serve", "--db", db, "--log", vkey])
    assert res.exit_code == 2 and "that is a witness key" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["witness", "status", "--db", db])
    assert res.exit_code == 0 and res.stdout.splitlines() == [f"witness {vkey}"]
