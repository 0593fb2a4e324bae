"""The artist map re-derived from public leaves alone (SPEC §2.3), as any monitor would, for the tests that
must say every map root is right: after a batch, after a crash at any step, after a kill.

`MapReplay` replays a stored log's leaves in order (leaf bytes re-derived and checked against the stored
leaf hashes), keeps each tag's (aseq, head) as the public leaves give it, and compares the root of that
map with the root of every `map` leaf; `map_problems` runs it over a whole log and also checks that every
stored checkpoint (so the latest) ends at a map leaf, and that the product's own rebuild for the latest
size (`tlog.maps.rebuild_map`) agrees. Both return readable problems, none when everything holds."""

from __future__ import annotations

import base64
from typing import Any, Callable

import orjson

from tlog import merkle
from tlog.artistmap import ArtistMap, MapProof, MapValue, verify_proof
from tlog.checkpoint import Checkpoint
from tlog.errors import TlogError
from tlog.maps import rebuild_map
from tlog.note import parse_note
from tlog.rederive import iter_leaves


class MapReplay:
    """The artist map replayed from a stored log's public leaves, range after range: each `advance`
    replays only the leaves it has not seen (so a kill loop can check a growing log after every restart
    without replaying it from index 0 each time), checking every map leaf's root on the way."""

    def __init__(self) -> None:
        self.size = 0
        self.map = ArtistMap.empty()
        self.values: dict[str, MapValue] = {}  # tag hex → (aseq, head), as the leaves so far give them
        self.first_types: list[str] = []  # of the first three leaves: tlog init's
        self.map_leaves: set[int] = set()  # indexes of the map leaves so far
        self._changed: dict[bytes, MapValue] = {}

    def advance(self, store: Any, size: int) -> list[str]:
        """Replays leaves [self.size, size) (leaf bytes re-derived and checked against the stored leaf
        hashes); returns the map leaves among them whose root is not the map of the leaves before it."""
        problems = []
        for entry, leaf_bytes, _ in iter_leaves(store, self.size, size):
            leaf = orjson.loads(leaf_bytes)
            if entry.index < 3:
                self.first_types.append(leaf["type"])
            if "aseq" in leaf:
                self._changed[bytes.fromhex(leaf["artist"])] = self.values[leaf["artist"]] = MapValue(leaf["aseq"], entry.index)
            if leaf["type"] == "map":
                self.map = self.map.update(self._changed)
                self._changed = {}
                self.map_leaves.add(entry.index)
                if leaf["root"] != self.map.root().hex():
                    problems.append(f"map leaf {entry.index} states root {leaf['root']}, the leaves before it give "
                                    f"{self.map.root().hex()}")
        self.size = max(self.size, size)
        return problems

    def checkpoint_problems(self, sizes: Any) -> list[str]:
        """Checkpoints among `sizes` (all within what was replayed) that do not end at a map leaf."""
        return [f"checkpoint {s} does not end at a map leaf" for s in sizes if s - 1 not in self.map_leaves]


def map_problems(store: Any, size: int | None = None) -> list[str]:
    """Every way the stored log's map leaves fail SPEC §2.3, up to `size` (default: the latest
    checkpoint's size; leaves beyond it are not checked, so a live server may keep appending)."""
    latest = store.latest_checkpoint()
    if latest is None:
        return ["no checkpoint is stored"]
    latest_size = Checkpoint.parse(parse_note(latest)[0]).size
    size = latest_size if size is None else size
    replay = MapReplay()
    problems = replay.advance(store, size)
    if replay.first_types != ["log", "policy", "map"]:
        problems.append(f"the log starts with {replay.first_types}, not the log, policy and map leaves of tlog init")
    problems += replay.checkpoint_problems(s for s in store.checkpoint_sizes() if s <= size)
    if latest_size == size:
        try:
            rebuilt = rebuild_map(store, size).root().hex()
        except TlogError as exc:
            problems.append(f"rebuild_map({size}) failed: {exc.message}")
        else:
            if replay.map.root().hex() != rebuilt:
                problems.append(f"rebuild_map({size}) gives root {rebuilt}, not the map leaf's")
    return problems


def map_values(store: Any, size: int) -> dict[str, MapValue]:
    """{tag hex: (aseq, head)} of the map that the map leaf at size - 1 commits to, from the leaves."""
    replay = MapReplay()
    replay.advance(store, size - 1)
    return replay.values


def check_served_map_proof(get: Callable[[str], tuple[int, bytes]], tag: str, checkpoint: Checkpoint) -> MapValue | None:
    """`GET /v1/map/proof` for `tag` at `checkpoint`, checked by `check_map_proof_answer`."""
    status, body = get(f"/v1/map/proof?tag={tag}&size={checkpoint.size}")
    assert status == 200, body
    return check_map_proof_answer(get, tag, orjson.loads(body), checkpoint)


def check_map_proof_answer(get: Callable[[str], tuple[int, bytes]], tag: str, answer: Any,
                           checkpoint: Checkpoint) -> MapValue | None:
    """A `/v1/map/proof` answer for `tag` at `checkpoint`, checked as a client checks it: the map leaf at
    size - 1 (from `/v1/leaves`) is included in the checkpoint (`/v1/proof/inclusion`) and states the
    answer's root, and the proof verifies against that root. Returns what the proof shows."""
    size = checkpoint.size
    assert set(answer) == {"size", "map_index", "root", "proof"} and answer["size"] == size, answer
    assert answer["map_index"] == size - 1
    status, leaf_bytes = get(f"/v1/leaves/{size - 1}")
    assert status == 200, leaf_bytes
    status, inclusion = get(f"/v1/proof/inclusion?index={size - 1}&size={size}")
    assert status == 200, inclusion
    hashes = [base64.b64decode(h) for h in orjson.loads(inclusion)["proof"]]
    merkle.verify_inclusion(merkle.leaf_hash(leaf_bytes), size - 1, size, hashes, checkpoint.root)
    leaf = orjson.loads(leaf_bytes)
    assert leaf["type"] == "map" and leaf["root"] == answer["root"], (leaf, answer["root"])
    proof = MapProof.from_json(answer["proof"])
    assert proof.tag.hex() == tag
    return verify_proof(bytes.fromhex(leaf["root"]), proof)


def kept_map_problems(maps: Any, store: Any) -> list[str]:
    """What is wrong with a sequencer's kept artist maps (`Sequencer.maps`, from which a server answers
    map proofs without rebuilding): each must have the root of the map leaf ending its size, and the
    latest checkpoint's map must be among them."""
    problems = []
    for size, amap in list(maps.items()):
        entry = store.entry(size - 1)
        if entry is None or entry.type != "map":
            problems.append(f"the sequencer keeps a map for size {size}, which does not end at a map leaf")
        elif entry.details["root"] != amap.root().hex():
            problems.append(f"the sequencer's map for size {size} has root {amap.root().hex()}, its map leaf "
                            f"{entry.details['root']}")
    latest = Checkpoint.parse(parse_note(store.latest_checkpoint() or b"")[0]).size
    if latest not in maps:
        problems.append(f"the sequencer keeps no map for the latest checkpoint (size {latest}): {sorted(maps)}")
    return problems
