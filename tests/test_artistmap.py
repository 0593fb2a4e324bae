"""SPEC v2 §2.3 artist map: roots and proofs against the published vectors and against a naive reference
written here straight from the SPEC text, persistence of updates, and strict proof parsing."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tlog import artistmap
from tlog.artistmap import EMPTY, ArtistMap, MapProof, MapValue, leaf_hash, node_hash, verify_proof
from tlog.errors import ProofError, ValidationError

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
VECTOR_FILE = VECTORS / "artist-map.json"
MAX = 2**64 - 1


# --- the reference: the SPEC's sentences, one by one, with no cleverness -------------------------------


def ref_bit(tag: bytes, d: int) -> int:
    return (tag[d // 8] >> (7 - d % 8)) & 1


def ref_root(entries: dict[bytes, tuple[int, int]], depth: int = 0) -> bytes:
    """The hash of the subtree at `depth` holding `entries` (all sharing their first `depth` bits)."""
    if not entries:
        return bytes(32)
    if len(entries) == 1:
        [(tag, (aseq, head))] = entries.items()
        return hashlib.sha256(b"\x02" + tag + aseq.to_bytes(8, "big") + head.to_bytes(8, "big")).digest()
    left = {t: v for t, v in entries.items() if ref_bit(t, depth) == 0}
    right = {t: v for t, v in entries.items() if ref_bit(t, depth) == 1}
    return hashlib.sha256(b"\x03" + ref_root(left, depth + 1) + ref_root(right, depth + 1)).digest()


def ref_proof(entries: dict[bytes, tuple[int, int]], tag: bytes) -> dict[str, Any]:
    """The shortest proof: walk the tag's path until the subtree holds at most one key."""
    siblings = []
    here = dict(entries)
    d = 0
    while len(here) >= 2:
        mine = {t: v for t, v in here.items() if ref_bit(t, d) == ref_bit(tag, d)}
        theirs = {t: v for t, v in here.items() if ref_bit(t, d) != ref_bit(tag, d)}
        siblings.append(ref_root(theirs, d + 1).hex())
        here = mine
        d += 1
    found = other = None
    if here:
        [(t, (aseq, head))] = here.items()
        if t == tag:
            found = {"aseq": aseq, "head": head}
        else:
            other = {"tag": t.hex(), "aseq": aseq, "head": head}
    return {"tag": tag.hex(), "depth": d, "siblings": siblings, "found": found, "other": other}


def as_map(entries: dict[bytes, tuple[int, int]]) -> dict[bytes, MapValue]:
    return {t: MapValue(*v) for t, v in entries.items()}


# --- the published vectors ---------------------------------------------------------------------------------


def load_vectors() -> dict[str, Any] | None:
    return json.loads(VECTOR_FILE.read_text()) if VECTOR_FILE.is_file() else None


VECTOR_DATA = load_vectors()
NO_VECTORS = f"test vectors not found at {VECTOR_FILE}"


def vectors() -> dict[str, Any]:
    if VECTOR_DATA is None:
        pytest.skip(NO_VECTORS)
    return VECTOR_DATA


def vector_params(key: str, ident: Any) -> list[Any]:
    """One pytest param per vector case, or one skipped param saying why when the vectors are absent."""
    if VECTOR_DATA is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_VECTORS), id="no-vectors")]
    return [pytest.param(case, id=ident(i, case)) for i, case in enumerate(VECTOR_DATA[key])]


def entries_of(vector_map: dict[str, Any]) -> list[tuple[bytes, MapValue]]:
    return [(bytes.fromhex(e["tag"]), MapValue(e["aseq"], e["head"])) for e in vector_map["entries"]]


def seven_key_map() -> tuple[ArtistMap, bytes, dict[bytes, MapValue]]:
    last = vectors()["maps"][-1]
    entries = entries_of(last)
    return ArtistMap.build(entries), bytes.fromhex(last["root"]), dict(entries)


def orders(items: list[Any]) -> list[list[Any]]:
    shuffled = []
    for seed in range(4):
        s = list(items)
        random.Random(seed).shuffle(s)
        shuffled.append(s)
    return [list(items), list(reversed(items)), sorted(items, key=lambda kv: kv[0]), *shuffled]


def test_vectors_proofs_are_over_the_last_map() -> None:
    what = vectors()["what"]
    assert "over the third map" in what and "same map root" in what
    assert len(vectors()["maps"][-1]["entries"]) == 7


@pytest.mark.parametrize("vector_map", vector_params("maps", lambda i, m: f"{len(m['entries'])}-keys"))
def test_vector_map_root_built_at_once(vector_map: dict[str, Any]) -> None:
    entries = entries_of(vector_map)
    amap = ArtistMap.build(entries)
    assert amap.root().hex() == vector_map["root"]
    assert len(amap) == len(entries)
    for tag, value in entries:
        assert amap.get(tag) == value


@pytest.mark.parametrize("vector_map", vector_params("maps", lambda i, m: f"{len(m['entries'])}-keys"))
def test_vector_map_root_by_successive_updates(vector_map: dict[str, Any]) -> None:
    entries = entries_of(vector_map)
    for order in orders(entries):
        one_by_one = ArtistMap.empty()
        for tag, value in order:
            one_by_one = one_by_one.update({tag: value})
        assert one_by_one.root().hex() == vector_map["root"]
        in_pairs = ArtistMap.empty()
        for i in range(0, len(order), 2):
            in_pairs = in_pairs.update(dict(order[i:i + 2]))
        assert in_pairs.root().hex() == vector_map["root"]
        assert len(one_by_one) == len(in_pairs) == len(entries)


@pytest.mark.parametrize("vector_map", vector_params("maps", lambda i, m: f"{len(m['entries'])}-keys"))
def test_vector_map_root_matches_reference(vector_map: dict[str, Any]) -> None:
    entries = {t: (v.aseq, v.head) for t, v in entries_of(vector_map)}
    assert ref_root(entries).hex() == vector_map["root"]


def test_vector_root_after_overwrites() -> None:
    """Overwriting every key with a stale value, then with the real one, lands on the vector root."""
    amap, root, entries = seven_key_map()
    stale = ArtistMap.build((t, MapValue(0, 0)) for t in entries)
    assert stale.root() != root
    assert stale.update(entries).root() == root
    assert len(stale.update(entries)) == 7


@pytest.mark.parametrize("proof", vector_params("proofs", lambda i, p: f"{i}-{'found' if p['found'] else 'absent'}"))
def test_vector_proof_verifies(proof: dict[str, Any]) -> None:
    _, root, entries = seven_key_map()
    tag = bytes.fromhex(proof["tag"])
    got = verify_proof(root, MapProof.from_json(proof))
    assert got == entries.get(tag)
    assert (got is None) == (proof["found"] is None)


@pytest.mark.parametrize("proof", vector_params("proofs", lambda i, p: f"{i}-{'found' if p['found'] else 'absent'}"))
def test_vector_proof_is_what_we_prove(proof: dict[str, Any]) -> None:
    amap, _, entries = seven_key_map()
    ours = amap.prove(bytes.fromhex(proof["tag"])).to_json()
    assert ours == proof
    assert json.dumps(ours) == json.dumps(proof)  # the same keys in the same order, too
    assert ref_proof({t: (v.aseq, v.head) for t, v in entries.items()}, bytes.fromhex(proof["tag"])) == proof


@pytest.mark.parametrize("case", vector_params("invalid_proofs", lambda i, c: c["why"]))
def test_vector_invalid_proof_rejected(case: dict[str, Any]) -> None:
    _, root, _ = seven_key_map()
    with pytest.raises((ProofError, ValidationError)):
        verify_proof(root, MapProof.from_json(case["proof"]))


def test_the_two_tags_sharing_255_bits_sit_at_depth_256() -> None:
    amap, root, entries = seven_key_map()
    near = [t for t in entries if any(t != u and t[:31] == u[:31] for u in entries)]
    assert len(near) == 2
    for tag in near:
        proof = amap.prove(tag)
        assert proof.depth == 256 and len(proof.siblings) == 256
        assert verify_proof(root, proof) == entries[tag]


# --- hashes and small maps ---------------------------------------------------------------------------------


def test_hash_functions() -> None:
    tag = bytes(range(32))
    want = hashlib.sha256(b"\x02" + tag + (1).to_bytes(8, "big") + (2).to_bytes(8, "big")).digest()
    assert leaf_hash(tag, 1, 2) == want
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x03" + b"a" * 32 + b"b" * 32).digest()
    assert EMPTY == bytes(32)


def test_empty_map() -> None:
    amap = ArtistMap.empty()
    assert amap.root() == EMPTY and len(amap) == 0
    tag = bytes(32)
    assert amap.get(tag) is None
    proof = amap.prove(tag)
    assert proof == MapProof(tag=tag, depth=0, siblings=(), found=None, other=None)
    assert verify_proof(EMPTY, proof) is None
    assert amap.update({}) is amap


def test_one_key_map_is_its_leaf_hash() -> None:
    tag = b"\xff" * 32
    amap = ArtistMap.empty().update({tag: MapValue(3, 9)})
    assert amap.root() == leaf_hash(tag, 3, 9)
    other = bytes(32)
    proof = amap.prove(other)
    assert proof.depth == 0 and proof.other == (tag, MapValue(3, 9))
    assert verify_proof(amap.root(), proof) is None


def test_two_keys_sharing_a_prefix_wrap_in_one_sided_nodes() -> None:
    a = bytes(31) + b"\x00"
    b = bytes(31) + b"\x01"  # the tags differ only at bit 255
    amap = ArtistMap.build([(a, MapValue(1, 1)), (b, MapValue(2, 2))])
    h = node_hash(leaf_hash(a, 1, 1), leaf_hash(b, 2, 2))
    for _ in range(255):
        h = node_hash(h, EMPTY)
    assert amap.root() == h


def test_comb_of_keys_branching_at_every_depth() -> None:
    """The deepest tree there is: a key leaving the all-zero path at every one of the 256 bits."""
    tags = [((1 << (255 - d)) | (1 << (254 - d) if d < 255 else 0)).to_bytes(32, "big") for d in range(256)]
    tags.append(bytes(32))
    entries = {t: (i, i * 2) for i, t in enumerate(tags)}
    assert ArtistMap.build(as_map(entries).items()).root() == ref_root(entries)
    half = ArtistMap.build(list(as_map(entries).items())[::2])
    amap = half.update(dict(list(as_map(entries).items())[1::2]))
    assert amap.root() == ref_root(entries) and len(amap) == 257
    proof = amap.prove(bytes(32))
    assert proof.depth == 256
    assert verify_proof(amap.root(), proof) == MapValue(256, 512)


def test_bad_inputs_are_refused() -> None:
    amap = ArtistMap.empty()
    with pytest.raises(ValueError):
        amap.update({b"short": MapValue(1, 1)})
    with pytest.raises(TypeError):
        amap.update({bytes(32): (1, 1)})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        amap.get(b"x" * 33)
    with pytest.raises(ValueError):
        amap.prove("00" * 32)  # type: ignore[arg-type]
    for aseq, head in [(-1, 0), (0, 2**64), (True, 1), (1.0, 1), (1, None)]:
        with pytest.raises(ValueError):
            MapValue(aseq, head)  # type: ignore[arg-type]
    MapValue(0, MAX)  # the bounds themselves are fine


def test_build_keeps_the_last_value_of_a_repeated_tag() -> None:
    tag = bytes(32)
    amap = ArtistMap.build([(tag, MapValue(1, 1)), (tag, MapValue(2, 5))])
    assert len(amap) == 1 and amap.get(tag) == MapValue(2, 5)


# --- property tests against the reference ------------------------------------------------------------------

values = st.builds(lambda a, h: (a, h), st.integers(0, MAX), st.integers(0, MAX))
raw_tags = st.binary(min_size=32, max_size=32)


def flip(tag: bytes, bit: int) -> bytes:
    return (int.from_bytes(tag, "big") ^ (1 << (255 - bit))).to_bytes(32, "big")


@st.composite
def tag_sets(draw: st.DrawFn, max_size: int = 24) -> list[bytes]:
    """Random tags plus near twins: base tags with one (or two) bits flipped late, so that keys share
    long prefixes and the tree grows long one-sided chains."""
    bases = draw(st.lists(raw_tags, min_size=1, max_size=4, unique=True))
    tags = set(bases)
    for _ in range(draw(st.integers(0, max_size))):
        base = draw(st.sampled_from(bases))
        tag = flip(base, draw(st.integers(0, 255) | st.integers(200, 255)))
        if draw(st.booleans()):
            tag = flip(tag, draw(st.integers(240, 255)))
        tags.add(tag)
    return sorted(tags)


@st.composite
def map_entries(draw: st.DrawFn) -> dict[bytes, tuple[int, int]]:
    tags = draw(tag_sets())
    keep = draw(st.lists(st.booleans(), min_size=len(tags), max_size=len(tags)))
    return {t: draw(values) for t, k in zip(tags, keep) if k}


def probe_tags(entries: dict[bytes, Any], extra: list[bytes]) -> list[bytes]:
    """Present tags, random tags, and near misses of present tags (one late bit flipped)."""
    near = [flip(t, b) for t in list(entries)[:6] for b in (255, 254, 200, 3)]
    return list(entries) + extra + near


PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(entries=map_entries(), data=st.data())
def test_root_equals_reference_however_built(entries: dict[bytes, tuple[int, int]], data: st.DataObject) -> None:
    want = ref_root(entries)
    items = list(as_map(entries).items())
    assert ArtistMap.build(items).root() == want
    order = data.draw(st.permutations(items))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(items)), max_size=4)))
    amap = ArtistMap.empty()
    for lo, hi in zip([0, *cuts], [*cuts, len(items)]):
        amap = amap.update(dict(order[lo:hi]))
    assert amap.root() == want
    assert len(amap) == len(entries)


@PROPS
@given(before=map_entries(), changes=map_entries(), overwrite=st.lists(values, max_size=6),
       extra=st.lists(raw_tags, max_size=3))
def test_update_is_persistent(before: dict[bytes, tuple[int, int]], changes: dict[bytes, tuple[int, int]],
                              overwrite: list[tuple[int, int]], extra: list[bytes]) -> None:
    for tag, value in zip(list(before), overwrite):  # some changes overwrite existing keys
        changes[tag] = value
    old = ArtistMap.build(as_map(before).items())
    probes = probe_tags(before, extra + list(changes))
    old_root = old.root()
    old_proofs = [old.prove(t) for t in probes]
    new = old.update(as_map(changes))
    assert new.root() == ref_root({**before, **changes})
    assert len(new) == len({**before, **changes})
    assert old.root() == old_root and len(old) == len(before)
    assert [old.prove(t) for t in probes] == old_proofs
    for tag, proof in zip(probes, old_proofs):
        want = MapValue(*before[tag]) if tag in before else None
        assert old.get(tag) == want
        assert verify_proof(old_root, proof) == want


@PROPS
@given(entries=map_entries(), extra=st.lists(raw_tags, max_size=3))
def test_prove_verify_round_trip(entries: dict[bytes, tuple[int, int]], extra: list[bytes]) -> None:
    amap = ArtistMap.build(as_map(entries).items())
    root = amap.root()
    for tag in probe_tags(entries, extra):
        proof = amap.prove(tag)
        assert proof.to_json() == ref_proof(entries, tag)
        assert MapProof.from_json(json.loads(json.dumps(proof.to_json()))) == proof
        want = MapValue(*entries[tag]) if tag in entries else None
        assert verify_proof(root, proof) == want
        assert amap.get(tag) == want


@PROPS
@given(entries=map_entries(), extra=st.lists(raw_tags, min_size=1, max_size=3), claim=values)
def test_absent_tag_claimed_present_is_refused(entries: dict[bytes, tuple[int, int]], extra: list[bytes],
                                               claim: tuple[int, int]) -> None:
    amap = ArtistMap.build(as_map(entries).items())
    for tag in probe_tags(entries, extra):
        if tag in entries:
            continue
        proof = amap.prove(tag)
        claims = [MapValue(*claim)]
        if proof.other is not None:
            claims.append(proof.other[1])  # the neighbour's value, passed off as the tag's
        for value in claims:
            with pytest.raises(ProofError):
                verify_proof(amap.root(), replace(proof, found=value, other=None))
        if proof.other is not None:  # and the neighbour named as if it were the tag
            with pytest.raises(ProofError):
                verify_proof(amap.root(), replace(proof, other=(tag, proof.other[1])))


@PROPS
@given(entries=map_entries(), more=map_entries(), extra=st.lists(raw_tags, max_size=2))
def test_proof_against_another_root_is_refused(entries: dict[bytes, tuple[int, int]],
                                               more: dict[bytes, tuple[int, int]], extra: list[bytes]) -> None:
    old = ArtistMap.build(as_map(entries).items())
    new = old.update(as_map(more))
    assume(new.root() != old.root())
    for tag in probe_tags({**entries, **more}, extra):
        with pytest.raises(ProofError, match="does not lead to the map root"):
            verify_proof(new.root(), old.prove(tag))


@PROPS
@given(before=map_entries(), changes=map_entries())
def test_each_touched_node_is_hashed_once(before: dict[bytes, tuple[int, int]],
                                          changes: dict[bytes, tuple[int, int]]) -> None:
    """update() hashes exactly the nodes the new map does not share with the old one, each once."""
    old = ArtistMap.build(as_map(before).items())
    calls = 0
    real = artistmap._sha256

    def counting(data: bytes) -> Any:
        nonlocal calls
        calls += 1
        return real(data)

    artistmap._sha256 = counting  # type: ignore[assignment]
    try:
        new = old.update(as_map(changes))
    finally:
        artistmap._sha256 = real
    old_nodes = {id(n) for n in nodes_of(old._node)}
    fresh = [n for n in nodes_of(new._node) if id(n) not in old_nodes and n is not artistmap._EMPTY_NODE]
    assert calls == len(fresh)


def nodes_of(node: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        out.append(n)
        if len(n) == 3:
            stack += [n[1], n[2]]
    return out


# --- proof JSON ----------------------------------------------------------------------------------------


def sample_map() -> ArtistMap:
    tags = [bytes([i]) * 32 for i in (0x10, 0x11, 0x90)]
    return ArtistMap.build((t, MapValue(i + 1, 10 * i)) for i, t in enumerate(tags))


def sample_proof() -> dict[str, Any]:
    """Absent, with a neighbour: 0x91… goes right at the root, where 0x90… is alone."""
    return sample_map().prove(bytes([0x91]) * 32).to_json()


def test_to_json_shape() -> None:
    proof = sample_proof()
    assert list(proof) == ["tag", "depth", "siblings", "found", "other"]
    assert proof["found"] is None and list(proof["other"]) == ["tag", "aseq", "head"]
    assert len(proof["siblings"]) == proof["depth"]
    assert MapProof.from_json(proof).to_json() == proof


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    proof = copy.deepcopy(sample_proof())
    target = proof
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return proof


DELETE = object()
UPPER = "AB" * 32

STRICT_CASES = [
    (["tag"], UPPER, "tag"),
    (["tag"], "ab" * 31, "tag"),
    (["tag"], "ab" * 33, "tag"),
    (["tag"], "zz" * 32, "tag"),
    (["tag"], 5, "tag"),
    (["tag"], DELETE, "tag"),
    (["depth"], -1, "depth"),
    (["depth"], True, "depth"),
    (["depth"], 1.0, "depth"),
    (["depth"], "1", "depth"),
    (["depth"], DELETE, "depth"),
    (["siblings"], "00" * 32, "siblings"),
    (["siblings"], None, "siblings"),
    (["siblings", 0], "00" * 31, "siblings[0]"),
    (["siblings", 0], UPPER, "siblings[0]"),
    (["siblings", 0], " " + "00" * 32, "siblings[0]"),
    (["siblings", 0], "00" * 32 + "\n", "siblings[0]"),
    (["found"], {"aseq": 1, "head": 2, "x": 3}, "found.x"),
    (["found"], {"aseq": 1}, "found.head"),
    (["found"], {"aseq": -1, "head": 2}, "found.aseq"),
    (["found"], {"aseq": 1, "head": 2**64}, "found.head"),
    (["found"], {"aseq": False, "head": 2}, "found.aseq"),
    (["found"], {"aseq": 1, "head": 2.0}, "found.head"),
    (["found"], [1, 2], "found"),
    (["found"], DELETE, "found"),
    (["other", "tag"], UPPER, "other.tag"),
    (["other", "tag"], DELETE, "other.tag"),
    (["other", "aseq"], "1", "other.aseq"),
    (["other", "head"], True, "other.head"),
    (["other", "extra"], 1, "other.extra"),
    (["other"], "none", "other"),
    (["other"], DELETE, "other"),
    (["unknown"], 1, "unknown"),
]


@pytest.mark.parametrize("path,value,field", STRICT_CASES, ids=[f"{c[2]}-{i}" for i, c in enumerate(STRICT_CASES)])
def test_from_json_is_strict(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        MapProof.from_json(with_change(path, value))
    assert field in [d["field"] for d in err.value.details]
    assert field in err.value.message


@pytest.mark.parametrize("obj", [None, [], "proof", 3])
def test_from_json_needs_an_object(obj: Any) -> None:
    with pytest.raises(ValidationError):
        MapProof.from_json(obj)


def test_from_json_reports_every_problem() -> None:
    bad = with_change(["tag"], UPPER)
    bad["depth"] = -3
    bad["zzz"] = 1
    with pytest.raises(ValidationError) as err:
        MapProof.from_json(bad)
    assert {d["field"] for d in err.value.details} == {"tag", "depth", "zzz"}


def test_from_json_leaves_meaning_to_verify() -> None:
    """Well-typed but wrong proofs parse, and verify_proof rejects them with a plain one-line reason."""
    proof = sample_proof()
    root = sample_map().root()
    assert verify_proof(root, MapProof.from_json(proof)) is None
    cases = {
        "outside 0..256": dict(proof, depth=300, siblings=["00" * 32] * 300),
        "siblings for depth": dict(proof, siblings=proof["siblings"][:-1]),
        "claims both": dict(proof, found={"aseq": 1, "head": 1}),
        "naming the tag itself": dict(proof, other=dict(proof["other"], tag=proof["tag"])),
        "does not share the tag's first 1 bits": dict(proof, other=dict(proof["other"], tag="00" * 32)),
        "does not lead to the map root": dict(proof, other=dict(proof["other"], aseq=99)),
    }
    for reason, bad in cases.items():
        with pytest.raises(ProofError, match=reason) as err:
            verify_proof(root, MapProof.from_json(bad))
        assert "\n" not in str(err.value)


def test_verify_refuses_malformed_objects() -> None:
    """A MapProof built in code, not parsed, still cannot smuggle in wrong lengths."""
    proof = MapProof.from_json(sample_proof())
    root = sample_map().root()
    for bad in [replace(proof, tag=b"x"), replace(proof, siblings=(b"y",)), replace(proof, depth=-1, siblings=()),
                replace(proof, other=(b"z", MapValue(1, 1)))]:
        with pytest.raises(ProofError):
            verify_proof(root, bad)
