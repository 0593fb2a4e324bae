"""Signed notes: the published sumdb/note vectors, keys, signing, opening, cosignatures, and strictness
(every malformed or tampered note is a NoteError, never another exception)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlog.errors import NoteError
from tlog.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    MAX_SIGNATURES,
    CosignatureSigner,
    Signature,
    Signer,
    Verifier,
    cosignature_message,
    generate_key,
    is_valid_name,
    key_hash,
    open_note,
    parse_note,
    sign_note,
)

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
TEXT = b"example.com/log\n42\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n"
EM = "\u2014"


def vectors() -> dict:
    path = VECTORS / "signed-notes.json"
    if not path.exists():
        pytest.skip(f"test vectors not found at {path}")
    return json.loads(path.read_text())


@cache
def keypair(name: str, alg: int = ALG_ED25519) -> tuple[Signer, Verifier]:
    """Key generation is cached so hypothesis examples reuse a small pool of keys."""
    skey, vkey = generate_key(name, alg)
    return Signer.from_key(skey), Verifier.from_key(vkey)


# --- published vectors -------------------------------------------------------------------------------


def test_vector_sign_byte_for_byte() -> None:
    for case in vectors()["sign"]:
        signer = Signer.from_key(case["signer_key"])
        assert signer.verifier_key == case["verifier_key"]
        signed = sign_note(case["text"].encode(), [signer])
        assert signed == case["signed"].encode()
        note = open_note(signed, [Verifier.from_key(case["verifier_key"])])
        assert note.text == case["text"].encode()
        assert [s.name for s in note.verified] == [signer.name] and note.others == []


@pytest.mark.parametrize("index", [0, 1])
def test_vector_verify(index: int) -> None:
    case = vectors()["verify"][index]
    verifier = Verifier.from_key(case["verifier_key"])
    note = open_note(case["note"].encode(), [verifier])
    assert case["ok"]
    lines = note.text.decode().split("\n")
    assert lines[1:3] == [str(case["size"]), case["root_b64"]]
    assert note.verified[0].key_hash == verifier.key_hash


def test_vector_keys() -> None:
    keys = vectors()["keys"]
    enoch = Verifier.from_key(keys["EnochRoot_verifier_key"])
    assert (enoch.name, f"{enoch.key_hash:08x}", enoch.alg) == ("EnochRoot", "af0cfe78", ALG_ED25519)
    signer = Signer.from_key(keys["tessera_testdata_signer_key"])
    assert signer.verifier_key == keys["tessera_testdata_verifier_key"]
    # Ed25519 is deterministic: re-signing the tessera checkpoint body must give the published note.
    published = vectors()["verify"][1]["note"].encode()
    text, _ = parse_note(published)
    assert sign_note(text, [signer]) == published


def test_vector_wrong_key_is_unknown_not_trusted() -> None:
    case = vectors()["verify"][0]
    enoch = Verifier.from_key(vectors()["keys"]["EnochRoot_verifier_key"])
    with pytest.raises(NoteError, match="not signed by any trusted key"):
        open_note(case["note"].encode(), [enoch])


# --- keys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", [ALG_ED25519, ALG_COSIGNATURE_V1])
def test_generate_key_round_trip(alg: int) -> None:
    skey, vkey = generate_key("example.com/log", alg)
    signer, verifier = Signer.from_key(skey), Verifier.from_key(vkey)
    assert skey.startswith("PRIVATE+KEY+example.com/log+")
    assert signer.verifier_key == vkey == verifier.key
    assert (signer.name, signer.key_hash, signer.alg) == (verifier.name, verifier.key_hash, verifier.alg) == (
        "example.com/log",
        signer.key_hash,
        alg,
    )
    assert isinstance(signer, CosignatureSigner) == (alg == ALG_COSIGNATURE_V1)
    public = base64.b64decode(vkey.split("+", 2)[2])
    assert public[0] == alg
    assert key_hash("example.com/log", alg, public[1:]) == verifier.key_hash


def test_same_key_different_type_has_different_hash() -> None:
    public = bytes(32)
    assert key_hash("w", ALG_ED25519, public) != key_hash("w", ALG_COSIGNATURE_V1, public)


def test_cosignature_signer_from_key_rejects_plain_key() -> None:
    skey, _ = generate_key("example.com/log")
    with pytest.raises(NoteError, match="not a cosignature/v1 key"):
        CosignatureSigner.from_key(skey)
    cskey, _ = generate_key("w.example", ALG_COSIGNATURE_V1)
    assert isinstance(CosignatureSigner.from_key(cskey), CosignatureSigner)


def _swap_hash(key: str, new_hash: str) -> str:
    head, _, tail = key.rpartition("+")
    return head.rpartition("+")[0] + "+" + new_hash + "+" + tail


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "name",
        "name+c74f20a3",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TX",  # non-canonical base64
        "PeterNeumann+c74f20a3+AhpcZBw1Rg8Dh4zENB6DDFvOEqqIF+xWRZqqr/Ljk4s",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # hash does not match
        "PeterNeumann+c74f20a3+ApDc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown type 0x02
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWAA==",  # 34 bytes
    ],
)
def test_verifier_key_rejected(bad: str) -> None:
    with pytest.raises(NoteError):
        Verifier.from_key(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",  # no PRIVATE+KEY+
        "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",  # wrong hash
        "PRIVATE+KEY+Peter+Neumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDF",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+",
    ],
)
def test_signer_key_rejected(bad: str) -> None:
    with pytest.raises(NoteError):
        Signer.from_key(bad)


@pytest.mark.parametrize(
    "name,ok",
    [("example.com/log", True), ("", False), ("a b", False), ("a+b", False), ("a\u00a0b", False),
     ("a\u3000b", False), ("a\x01b", False), ("a\u2014b", True), ("ünïcode", True)],
)
def test_key_names(name: str, ok: bool) -> None:
    assert is_valid_name(name) == ok
    if not ok:
        with pytest.raises(NoteError):
            generate_key(name)


def test_ambiguous_verifiers_rejected() -> None:
    signer, verifier = keypair("a")
    _, other = keypair("b")
    clash = Verifier(name=verifier.name, key_hash=verifier.key_hash, key=other.key, alg=1, public=other.public)
    with pytest.raises(NoteError, match="share the name"):
        open_note(sign_note(TEXT, [signer]), [verifier, clash])
    # The same key twice is harmless.
    assert open_note(sign_note(TEXT, [signer]), [verifier, verifier]).verified


# --- signing and opening -------------------------------------------------------------------------------


def test_sign_open_several_signers() -> None:
    pairs = [keypair(n) for n in ("a", "b", "c")]
    signed = sign_note(TEXT, [s for s, _ in pairs])
    assert signed.startswith(TEXT + b"\n" + f"{EM} a ".encode())
    note = open_note(signed, [pairs[0][1], pairs[2][1]])
    assert note.text == TEXT
    assert [s.name for s in note.verified] == ["a", "c"]
    assert [s.name for s in note.others] == ["b"]


def test_resign_keeps_others_and_replaces_own() -> None:
    (a, va), (b, vb) = keypair("a"), keypair("b")
    first = open_note(sign_note(TEXT, [a, b]), [va])
    again = sign_note(first.text, [a], first.verified + first.others)
    assert again.count(f"{EM} a ".encode()) == 1
    assert [s.name for s in open_note(again, [va, vb]).verified] == ["b", "a"]


@pytest.mark.parametrize("text", [b"", b"no newline", b"bad\x00control\n", b"\xff\n"])
def test_sign_rejects_bad_text(text: bytes) -> None:
    with pytest.raises(NoteError):
        sign_note(text, [keypair("a")[0]])


def test_text_may_hold_blank_lines() -> None:
    signer, verifier = keypair("a")
    for text in (b"\n", b"a\n\nb\n", b"a\n\n", b"a\n\n\n"):
        assert open_note(sign_note(text, [signer]), [verifier]).text == text


def test_known_key_bad_signature_rejected() -> None:
    (a, va), (b, _) = keypair("a"), keypair("b")
    forged = Signature(a.name, a.key_hash, b.sign(TEXT))  # right name and hash, wrong key
    with pytest.raises(NoteError, match="invalid signature by key a\\+"):
        open_note(TEXT + b"\n" + forged.line(), [va])
    # Even when another, valid signature by the same key is present.
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(sign_note(TEXT, [a]) + forged.line(), [va])
    other_text = Signature(a.name, a.key_hash, a.sign(TEXT + b"x\n"))
    with pytest.raises(NoteError):
        open_note(TEXT + b"\n" + other_text.line(), [va])


def test_unknown_key_sharing_name_or_hash_is_ignored() -> None:
    signer, verifier = keypair("a")
    near = [
        Signature("a", verifier.key_hash ^ 1, bytes(64)),
        Signature("a2", verifier.key_hash, bytes(64)),
    ]
    note = open_note(sign_note(TEXT, [signer], near), [verifier])
    assert note.others == near and len(note.verified) == 1


def test_duplicate_lines_collapse() -> None:
    signer, verifier = keypair("a")
    signed = sign_note(TEXT, [signer])
    line = signed[len(TEXT) + 1 :]
    unknown = Signature("z", 7, b"sig")
    note = open_note(signed + line + unknown.line() + unknown.line(), [verifier])
    assert len(note.verified) == 1 and note.others == [unknown]


def test_signature_count_limit() -> None:
    signer, verifier = keypair("a")
    fillers = [Signature(f"w{i}", i, b"s") for i in range(MAX_SIGNATURES - 1)]
    signed = sign_note(TEXT, [signer], fillers)
    assert len(open_note(signed, [verifier]).others) == MAX_SIGNATURES - 1
    with pytest.raises(NoteError, match="more than"):
        open_note(signed + Signature("x", 1, b"s").line(), [verifier])
    with pytest.raises(NoteError):
        sign_note(TEXT, [signer], fillers + [Signature("x", 1, b"s")])


@st.composite
def extra_signatures(draw: st.DrawFn) -> list[Signature]:
    """Signature lines from keys the verifier does not know, real or random, as Sunlight adds them."""
    sigs = []
    for i in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            signer, _ = keypair(f"other{draw(st.integers(0, 3))}", draw(st.sampled_from([1, 4])))
            sigs.append(signer.signature(TEXT))
        else:
            name = draw(st.text(st.characters(codec="utf-8", min_codepoint=33), min_size=1, max_size=20))
            if is_valid_name(name):
                key_id = draw(st.integers(0, 2**32 - 1))
                sigs.append(Signature(name, key_id, draw(st.binary(min_size=1, max_size=100))))
    return sigs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra_signatures(), st.integers(0, 6))
def test_unknown_signatures_tolerated(extra: list[Signature], position: int) -> None:
    signer, verifier = keypair("example.com/log")
    own = signer.signature(TEXT)
    sigs = extra[:position] + [own] + extra[position:]
    note = open_note(TEXT + b"\n" + b"".join(s.line() for s in sigs), [verifier])
    assert note.text == TEXT
    assert note.verified == [own]
    assert note.others == list(dict.fromkeys(extra))


# --- strictness -------------------------------------------------------------------------------------------


@cache
def good_note() -> tuple[bytes, Verifier]:
    signer, verifier = keypair("example.com/log")
    return sign_note(TEXT, [signer]), verifier


def _malformed_cases() -> list[bytes]:
    signed, _ = good_note()
    text_end = len(TEXT)
    sig_line = signed[text_end + 1 :]
    b64 = sig_line.decode().split(" ")[2].strip()
    return [
        b"",
        b"\n",
        b"\n\n",
        TEXT,  # no signatures
        TEXT + b"\n",  # blank line, then nothing
        signed[:-1],  # no final newline
        signed + b"\n",  # trailing blank line
        TEXT + sig_line + sig_line,  # no blank line before the signatures
        TEXT + b"\n" + sig_line + b"\n" + sig_line,  # blank line inside the block is the split
        TEXT + b"\n" + sig_line.replace(EM.encode(), b"-"),
        TEXT + b"\n" + sig_line.replace(EM.encode() + b" ", EM.encode()),
        TEXT + b"\n" + sig_line.replace(b" " + b64.encode(), b"  " + b64.encode()),
        TEXT + b"\n" + sig_line.replace(b64.encode(), b64.encode() + b" x"),
        TEXT + b"\n" + sig_line.replace(b64.encode(), b64.rstrip("=").encode()),  # no padding
        TEXT + b"\n" + sig_line.replace(b64.encode(), b""),
        TEXT + b"\n" + f"{EM} a+b {b64}\n".encode(),
        TEXT + b"\n" + f"{EM}  {b64}\n".encode(),
        TEXT + b"\n" + f"{EM} a AAAAAA==\n".encode(),  # 4 bytes: a key hash and no signature
        TEXT + b"\n" + sig_line[:-1] + b"\r\n",
        TEXT.replace(b"42", b"4\x002") + b"\n" + sig_line,
        TEXT.replace(b"42", b"4\xff2") + b"\n" + sig_line,
        TEXT.replace(b"42", b"4\xed\xa0\x802") + b"\n" + sig_line,  # UTF-8-encoded surrogate
        TEXT.replace(b"42", b"4\t2") + b"\n" + sig_line,
    ]


@pytest.mark.parametrize("index", range(len(_malformed_cases())))
def test_malformed_rejected(index: int) -> None:
    msg = _malformed_cases()[index]
    with pytest.raises(NoteError):
        open_note(msg, [good_note()[1]])


def test_every_bit_flip_rejected_or_ignored() -> None:
    """Flipping any single bit makes the note fail, unless the bit lies in the signature line of a key the
    verifier does not know: that line may then still parse, and is ignored."""
    signer, verifier = keypair("example.com/log")
    unknown, _ = keypair("witness.example", ALG_COSIGNATURE_V1)
    signed = sign_note(TEXT, [signer, unknown])
    unknown_from = signed.index(f"{EM} witness.example".encode())
    for bit in range(len(signed) * 8):
        flipped = bytearray(signed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            note = open_note(bytes(flipped), [verifier])
        except NoteError:
            continue
        assert bit // 8 >= unknown_from, f"flip of bit {bit} went unnoticed"
        assert note.text == TEXT and [s.name for s in note.verified] == ["example.com/log"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_note_error(data: bytes) -> None:
    with pytest.raises(NoteError):
        open_note(data, [good_note()[1]])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_note_only_note_error(data: st.DataObject) -> None:
    signed, verifier = good_note()
    start = data.draw(st.integers(0, len(signed)))
    end = data.draw(st.integers(start, min(len(signed), start + 8)))
    insert = data.draw(st.binary(max_size=8) | st.sampled_from([b"\n", b"\n\n", EM.encode(), b" ", b"+", b"="]))
    mutated = signed[:start] + insert + signed[end:]
    try:
        note = open_note(mutated, [verifier])
    except NoteError:
        return
    # An edit may pass only if it left the signed text alone (an empty edit, or an added unknown line).
    assert note.text == TEXT


# --- cosignatures (c2sp.org/tlog-cosignature) --------------------------------------------------------------


def test_cosignature_layout_and_timestamp() -> None:
    skey, vkey = generate_key("witness.example/w1", ALG_COSIGNATURE_V1)
    cosigner = CosignatureSigner.from_key(skey)
    verifier = Verifier.from_key(vkey)
    sig = cosigner.sign_at(TEXT, 1679315147)
    assert len(sig) == 72 and sig[:8] == (1679315147).to_bytes(8, "big")
    # The Ed25519 part signs the cosignature/v1 message, not the bare text.
    verifier.public.verify(sig[8:], b"cosignature/v1\ntime 1679315147\n" + TEXT)
    assert cosignature_message(0, b"x\n") == b"cosignature/v1\ntime 0\nx\n"
    assert verifier.verify(TEXT, sig)
    assert not verifier.verify(TEXT, (1679315148).to_bytes(8, "big") + sig[8:])
    assert not verifier.verify(TEXT + b"x\n", sig)
    assert not verifier.verify(TEXT, sig[8:])


def test_cosigned_note_exposes_timestamp() -> None:
    log, vlog = keypair("example.com/log")
    skey, vkey = generate_key("witness.example/w1", ALG_COSIGNATURE_V1)
    witness = replace(CosignatureSigner.from_key(skey), clock=lambda: 1700000000.7)
    signed = sign_note(TEXT, [log])
    opened = open_note(signed, [vlog])
    cosigned = sign_note(opened.text, [witness], opened.verified + opened.others)
    note = open_note(cosigned, [vlog, Verifier.from_key(vkey)])
    assert [(s.name, s.timestamp) for s in note.verified] == [
        ("example.com/log", None),
        ("witness.example/w1", 1700000000),
    ]
    # Without the witness key, its cosignature is just an unknown signature.
    assert [s.name for s in open_note(cosigned, [vlog]).others] == ["witness.example/w1"]


def test_cosignature_timestamp_limits() -> None:
    witness, verifier = keypair("w", ALG_COSIGNATURE_V1)
    assert isinstance(witness, CosignatureSigner)
    with pytest.raises(NoteError):
        witness.sign_at(TEXT, 2**63)
    with pytest.raises(NoteError):
        witness.sign_at(TEXT, -1)
    assert verifier.verify(TEXT, witness.sign_at(TEXT, 2**63 - 1))
    # A timestamp past 2^63 - 1 is refused even when the signature over it is valid.
    too_late = 2**63
    forged = too_late.to_bytes(8, "big") + witness.private.sign(cosignature_message(too_late, TEXT))
    assert not verifier.verify(TEXT, forged)


def test_cosigner_and_plain_signatures_do_not_cross() -> None:
    """One Ed25519 key used both ways: the type byte in the key hash and the cosignature header keep the
    two signature kinds apart."""
    witness, verifier = keypair("w", ALG_COSIGNATURE_V1)
    plain = witness.private.sign(TEXT)
    for sig in (plain, (1).to_bytes(8, "big") + plain):
        with pytest.raises(NoteError, match="invalid signature"):
            open_note(TEXT + b"\n" + Signature("w", verifier.key_hash, sig).line(), [verifier])
