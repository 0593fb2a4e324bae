"""Checkpoints (c2sp.org/tlog-checkpoint) and receipts (c2sp.org/tlog-proof@v1): exact formats, strict
parsing, the Tessera test log, and tamper detection down to single bits."""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog import merkle
from tlog.checkpoint import Checkpoint, Receipt, open_checkpoint, verify_receipt
from tlog.errors import NoteError, ProofError
from tlog.note import ALG_COSIGNATURE_V1, Signer, Verifier, generate_key, sign_note
from tlog.tiles import decode_bundle

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
ROOT = bytes(range(32))
ORIGIN = "example.com/log"


def vector_path(*parts: str) -> Path:
    path = VECTORS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"test vectors not found at {path}")
    return path


@cache
def keypair(name: str = ORIGIN, alg: int = 1) -> tuple[Signer, Verifier]:
    skey, vkey = generate_key(name, alg)
    return Signer.from_key(skey), Verifier.from_key(vkey)


@cache
def tessera() -> tuple[list[bytes], Signer, Verifier]:
    """The 15 leaves of the Tessera test log and its key."""
    keys = json.loads(vector_path("signed-notes.json").read_text())["keys"]
    leaves = decode_bundle(vector_path("tessera-log", "tile", "entries", "000.p", "15").read_bytes())
    signer = Signer.from_key(keys["tessera_testdata_signer_key"])
    return leaves, signer, Verifier.from_key(keys["tessera_testdata_verifier_key"])


def signed_checkpoint(leaves: list[bytes], signer: Signer | None = None) -> bytes:
    signer = signer or keypair()[0]
    tree = merkle.MemoryHashes(merkle.leaf_hash(leaf) for leaf in leaves)
    return sign_note(Checkpoint(signer.name, len(leaves), merkle.tree_root(len(leaves), tree)).body(), [signer])


def make_receipt(leaves: list[bytes], index: int, signer: Signer | None = None, extra: bool = True) -> Receipt:
    tree = merkle.MemoryHashes(merkle.leaf_hash(leaf) for leaf in leaves)
    return Receipt(
        extra=leaves[index] if extra else None,
        index=index,
        proof=merkle.inclusion_proof(index, len(leaves), tree),
        checkpoint=signed_checkpoint(leaves, signer),
    )


# --- checkpoint bodies ---------------------------------------------------------------------------------------


def test_body_format() -> None:
    cp = Checkpoint(ORIGIN, 20852163, ROOT)
    assert cp.body() == b"example.com/log\n20852163\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    assert cp.extensions == ()
    assert Checkpoint(ORIGIN, 0, merkle.EMPTY_ROOT).body().split(b"\n")[1] == b"0"


@settings(max_examples=100, deadline=None)
@given(
    st.text(st.characters(codec="utf-8", min_codepoint=32), min_size=1, max_size=40),
    st.integers(0, 2**63 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(st.text(st.characters(codec="utf-8", min_codepoint=32), min_size=1, max_size=20), max_size=3),
)
def test_body_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(cp.body()) == cp
    assert Checkpoint.parse(cp.body()).body() == cp.body()


def test_parse_keeps_extension_lines() -> None:
    body = b"example.com/log\n5\n" + base64.b64encode(ROOT) + b"\next one\next two\n"
    cp = Checkpoint.parse(body)
    assert cp.extensions == ("ext one", "ext two") and cp.body() == body


GOOD_ROOT = base64.b64encode(ROOT)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"example.com/log\n5\n",
        b"example.com/log\n5\n" + GOOD_ROOT,  # no final newline
        b"\n5\n" + GOOD_ROOT + b"\n",  # empty origin
        b"example.com/log\n05\n" + GOOD_ROOT + b"\n",
        b"example.com/log\n+5\n" + GOOD_ROOT + b"\n",
        b"example.com/log\n-5\n" + GOOD_ROOT + b"\n",
        b"example.com/log\n 5\n" + GOOD_ROOT + b"\n",
        b"example.com/log\n5_0\n" + GOOD_ROOT + b"\n",
        "example.com/log\n\u0665\n".encode() + GOOD_ROOT + b"\n",  # an Arabic-Indic digit five
        b"example.com/log\n9223372036854775808\n" + GOOD_ROOT + b"\n",  # 2^63
        b"example.com/log\n" + b"9" * 5000 + b"\n" + GOOD_ROOT + b"\n",
        b"example.com/log\n\n" + GOOD_ROOT + b"\n",
        b"example.com/log\n5\n" + base64.b64encode(ROOT[:31]) + b"\n",
        b"example.com/log\n5\n" + base64.b64encode(ROOT + b"\x00") + b"\n",
        b"example.com/log\n5\n" + GOOD_ROOT[:-2] + b"9=\n",  # "8=" with a stray low bit set: non-canonical
        b"example.com/log\n5\n" + GOOD_ROOT.rstrip(b"=") + b"\n",
        b"example.com/log\n5\n" + GOOD_ROOT + b"\n\n",  # empty extension line
        b"example.com/log\n5\n" + GOOD_ROOT + b"\next\n\n",
        b"example.com/log\r\n5\n" + GOOD_ROOT + b"\n",
        b"example.com/log\n5\r\n" + GOOD_ROOT + b"\n",
        b"exa\xffmple.com/log\n5\n" + GOOD_ROOT + b"\n",
    ],
)
def test_parse_rejects(body: bytes) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(body)


@pytest.mark.parametrize(
    "args",
    [("", 1, ROOT), ("a\nb", 1, ROOT), ("a\x00", 1, ROOT), (ORIGIN, -1, ROOT), (ORIGIN, 2**63, ROOT),
     (ORIGIN, 1, ROOT[:31]), (ORIGIN, 1, ROOT, ("",)), (ORIGIN, 1, ROOT, ("a\nb",))],
)
def test_constructor_rejects(args: tuple) -> None:
    with pytest.raises(NoteError):
        Checkpoint(*args)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_random_bytes_only_note_error(data: bytes) -> None:
    try:
        cp = Checkpoint.parse(data)
    except NoteError:
        return
    assert cp.body() == data


# --- signed checkpoints --------------------------------------------------------------------------------------


def test_tessera_checkpoints() -> None:
    """Every checkpoint of the Tessera test log verifies and matches the tree of its first N leaves."""
    leaves, _, verifier = tessera()
    tree = merkle.MemoryHashes(merkle.leaf_hash(leaf) for leaf in leaves)
    for size in range(16):
        cp, note = open_checkpoint(vector_path("tessera-log", f"checkpoint.{size}").read_bytes(), [verifier])
        assert (cp.origin, cp.size, cp.extensions) == ("example.com/log/testdata", size, ())
        assert cp.root == (merkle.tree_root(size, tree) if size else merkle.EMPTY_ROOT)
        assert note.text == cp.body()
    latest = vector_path("tessera-log", "checkpoint").read_bytes()
    assert open_checkpoint(latest, [verifier])[0].size == 15


def test_tessera_checkpoint_signed_byte_for_byte() -> None:
    leaves, signer, _ = tessera()
    assert signed_checkpoint(leaves, signer) == vector_path("tessera-log", "checkpoint").read_bytes()


def test_sum_golang_org_checkpoint_origin_is_not_its_key_name() -> None:
    """sum.golang.org predates the rule that the key name is the origin: the note verifies and the body
    parses, but open_checkpoint refuses it, as it must for any checkpoint whose origin is not its key."""
    case = json.loads(vector_path("signed-notes.json").read_text())["verify"][0]
    verifier = Verifier.from_key(case["verifier_key"])
    text = case["note"].encode().split(b"\n\n")[0] + b"\n"
    cp = Checkpoint.parse(text)
    assert (cp.origin, cp.size) == ("go.sum database tree", case["size"])
    assert base64.b64encode(cp.root).decode() == case["root_b64"]
    with pytest.raises(NoteError, match="signed only by sum.golang.org"):
        open_checkpoint(case["note"].encode(), [verifier])


def test_open_checkpoint_requires_the_origin_key() -> None:
    signer, verifier = keypair("other.example/log")
    note = sign_note(Checkpoint(ORIGIN, 1, ROOT).body(), [signer])
    with pytest.raises(NoteError, match="origin"):
        open_checkpoint(note, [verifier])


def test_witness_named_like_origin_is_not_the_log() -> None:
    witness, wverifier = keypair(ORIGIN, ALG_COSIGNATURE_V1)
    note = sign_note(Checkpoint(ORIGIN, 1, ROOT).body(), [witness])
    with pytest.raises(NoteError, match="origin"):
        open_checkpoint(note, [wverifier])


def test_open_checkpoint_with_cosignature() -> None:
    log, vlog = keypair()
    witness, vwitness = keypair("witness.example", ALG_COSIGNATURE_V1)
    note = sign_note(Checkpoint(ORIGIN, 1, ROOT).body(), [log, witness])
    cp, opened = open_checkpoint(note, [vlog, vwitness])
    assert cp == Checkpoint(ORIGIN, 1, ROOT)
    assert [s.timestamp is not None for s in opened.verified] == [False, True]


def test_open_checkpoint_bad_body() -> None:
    log, vlog = keypair()
    with pytest.raises(NoteError):
        open_checkpoint(sign_note(b"example.com/log\n01\n" + GOOD_ROOT + b"\n", [log]), [vlog])


# --- receipts ----------------------------------------------------------------------------------------------


SPEC_EXAMPLE_HEAD = (
    b"c2sp.org/tlog-proof@v1\n"
    b"extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\n"
    b"index 73894\n"
    b"gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
    b"B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
    b"\n"
)


def test_receipt_layout() -> None:
    checkpoint = signed_checkpoint([b"a", b"b"])
    r = Receipt.parse(SPEC_EXAMPLE_HEAD + checkpoint)
    assert (r.extra, r.index, len(r.proof)) == (b"age-v1.2.1-darwin-arm64.tar.gz", 73894, 2)
    assert r.checkpoint == checkpoint
    assert r.format() == SPEC_EXAMPLE_HEAD + checkpoint
    bare = Receipt(extra=None, index=0, proof=[], checkpoint=checkpoint).format()
    assert bare == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + checkpoint
    assert Receipt.parse(bare).extra is None
    assert Receipt(extra=b"", index=1, proof=[], checkpoint=checkpoint).format().startswith(
        b"c2sp.org/tlog-proof@v1\nextra \nindex 1\n\n"
    )


@settings(max_examples=100, deadline=None)
@given(
    st.none() | st.binary(max_size=100),
    st.integers(0, 2**63 - 1),
    st.lists(st.binary(min_size=32, max_size=32), max_size=63),
)
def test_receipt_round_trip(extra: bytes | None, index: int, proof: list[bytes]) -> None:
    r = Receipt(extra=extra, index=index, proof=proof, checkpoint=signed_checkpoint([b"x"]))
    assert Receipt.parse(r.format()) == r
    assert Receipt.parse(r.format()).format() == r.format()


def _bad_receipts() -> list[bytes]:
    cp = signed_checkpoint([b"a", b"b"])
    h = base64.b64encode(ROOT)
    return [
        b"",
        cp,
        b"c2sp.org/tlog-proof@v1\nindex 0\n" + cp,  # no blank line
        b"c2sp.org/tlog-proof@v2\nindex 0\n\n" + cp,
        b"C2SP.org/tlog-proof@v1\nindex 0\n\n" + cp,
        b"\nc2sp.org/tlog-proof@v1\nindex 0\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\n\n" + cp,  # no index
        b"c2sp.org/tlog-proof@v1\nindex 01\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex -1\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex  1\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex 9223372036854775808\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex 1\nextra AA==\n\n" + cp,  # extra after index
        b"c2sp.org/tlog-proof@v1\nextra AA==\nextra AA==\nindex 1\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nextra AB==\nindex 1\n\n" + cp,  # non-canonical
        b"c2sp.org/tlog-proof@v1\nextra AA\nindex 1\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nextra\nindex 1\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex 1\n" + h[:-4] + b"\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex 1\n" + h + b"\r\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex 1\n" + (h + b"\n") * 64 + b"\n" + cp,
        b"c2sp.org/tlog-proof@v1\r\nindex 1\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex 1\n\xff\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex 1\n\n",  # no checkpoint
        b"c2sp.org/tlog-proof@v1\nindex 1\n\n" + cp[:-1],
        b"c2sp.org/tlog-proof@v1\nindex 1\n\n\n" + cp,
        b"c2sp.org/tlog-proof@v1\nindex 1\n\n" + cp.replace(b"\n2\n", b"\n02\n"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_receipts())))
def test_receipt_parse_rejects(index: int) -> None:
    with pytest.raises(NoteError):
        Receipt.parse(_bad_receipts()[index])


@pytest.mark.parametrize(
    "kwargs", [{"index": -1}, {"index": 2**63}, {"proof": [b"x" * 31]}, {"proof": [ROOT] * 64}]
)
def test_receipt_constructor_rejects(kwargs: dict) -> None:
    with pytest.raises(NoteError):
        Receipt(**{"extra": None, "index": 0, "proof": [], "checkpoint": b"", **kwargs})


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.binary(max_size=200).map(lambda b: b"c2sp.org/tlog-proof@v1\n" + b))
def test_receipt_random_bytes_only_note_error(data: bytes) -> None:
    with pytest.raises(NoteError):
        Receipt.parse(data)


def test_verify_receipt_every_leaf_of_tessera() -> None:
    leaves, signer, verifier = tessera()
    for index in range(len(leaves)):
        r = Receipt.parse(make_receipt(leaves, index, signer).format())
        cp = verify_receipt(r, None, [verifier])
        assert (cp.origin, cp.size) == ("example.com/log/testdata", 15)
        assert verify_receipt(r, leaves[index], [verifier]) == cp


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 100])
def test_verify_receipt_sizes(size: int) -> None:
    leaves = [b"leaf %d" % i for i in range(size)]
    _, verifier = keypair()
    for index in {0, size // 2, size - 1}:
        verify_receipt(make_receipt(leaves, index), None, [verifier])


def test_verify_receipt_failures() -> None:
    leaves = [b"leaf %d" % i for i in range(5)]
    _, verifier = keypair()
    good = make_receipt(leaves, 2)
    stranger, _ = keypair("x.example")
    cases: list[tuple[Receipt, bytes | None, type[Exception]]] = [
        (make_receipt(leaves, 2, extra=False), None, ProofError),  # nothing to check
        (good, b"leaf 3", ProofError),  # extra and leaf disagree
        (make_receipt(leaves, 2, extra=False), b"leaf 3", ProofError),  # wrong leaf
        (Receipt(b"leaf 3", 3, good.proof, good.checkpoint), None, ProofError),  # wrong index
        (Receipt(good.extra, 5, good.proof, good.checkpoint), None, ProofError),  # index beyond size
        (Receipt(good.extra, 2, good.proof[:-1], good.checkpoint), None, ProofError),
        (Receipt(good.extra, 2, good.proof + [ROOT], good.checkpoint), None, ProofError),
        (Receipt(good.extra, 2, good.proof, signed_checkpoint(leaves[:4])), None, ProofError),
        (Receipt(good.extra, 2, good.proof, signed_checkpoint(leaves, stranger)), None, NoteError),
    ]
    for receipt, leaf, error in cases:
        with pytest.raises(error):
            verify_receipt(receipt, leaf, [verifier])
    assert verify_receipt(good, b"leaf 2", [verifier]).size == 5


def _parse_and_verify(data: bytes, verifiers: list[Verifier]) -> Checkpoint:
    return verify_receipt(Receipt.parse(data), None, verifiers)


def test_every_bit_flip_of_a_receipt_rejected() -> None:
    """Flipping any single bit of a receipt makes it fail, except inside a signature line of a key the
    verifier does not know (a witness's, here), which may still parse and is then ignored."""
    leaves = [b"leaf %d" % i for i in range(6)]
    log, verifier = keypair()
    witness, _ = keypair("witness.example", ALG_COSIGNATURE_V1)
    good = make_receipt(leaves, 3)
    body = good.checkpoint.split(b"\n\n")[0] + b"\n"
    receipt = Receipt(good.extra, good.index, good.proof, sign_note(body, [log, witness]))
    data = receipt.format()
    expected = _parse_and_verify(data, [verifier])
    witness_from = data.index("\u2014 witness.example".encode())
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            cp = _parse_and_verify(bytes(flipped), [verifier])
        except ProofError:  # NoteError included
            continue
        assert bit // 8 >= witness_from, f"flip of bit {bit} went unnoticed"
        assert cp == expected
