"""tlog.tiles: paths, tile sets, bundles, and reading a real tessera log through TileHashReader."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.errors import NotFound, ValidationError
from tlog.merkle import EMPTY_ROOT, MemoryHashes, inclusion_proof, leaf_hash, tree_root, verify_inclusion
from tlog.tiles import (
    Tile,
    TileHashReader,
    decode_bundle,
    encode_bundle,
    entry_bundles_for_size,
    hash_tiles_for_size,
    parse_tile_path,
    tile_coords,
    tile_path,
)

TESSERA = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "tessera-log"
WORDS = "one two three four five six seven eit nain ten ileven twelf threeten fourten fivten".split()

# --- paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tile,path",
    [
        (Tile(0, 0, 256), "tile/0/000"),
        (Tile(0, 0, 5), "tile/0/000.p/5"),
        (Tile(0, 1234067, 256), "tile/0/x001/x234/067"),
        (Tile(0, 1234, 5), "tile/0/x001/234.p/5"),
        (Tile(3, 1000, 255), "tile/3/x001/000.p/255"),
        (Tile(63, 0, 1), "tile/63/000.p/1"),
        (Tile(0, 0, 256, entries=True), "tile/entries/000"),
        (Tile(0, 999, 17, entries=True), "tile/entries/999.p/17"),
        (Tile(0, 2**56 - 1, 256, entries=True), "tile/entries/x072/x057/x594/x037/x927/935"),
    ],
)
def test_paths(tile: Tile, path: str) -> None:
    assert tile_path(tile) == path
    assert parse_tile_path(path) == tile


def _tiles() -> st.SearchStrategy[Tile]:
    def at_level(level: int, entries: bool) -> st.SearchStrategy[Tile]:
        max_index = (1 << (64 - 8 * (level + 1))) - 1 if level < 7 else 0
        return st.builds(Tile, st.just(level), st.integers(0, max_index), st.integers(1, 256), st.just(entries))

    return st.one_of(
        st.integers(0, 63).flatmap(lambda level: at_level(level, False)),
        at_level(0, True),
    )


@settings(max_examples=200, deadline=None)
@given(_tiles())
def test_path_round_trip(tile: Tile) -> None:
    assert parse_tile_path(tile_path(tile)) == tile


BAD_PATHS = [
    "",
    "tile",
    "tile/0",
    "tile/0/",
    "tile/0/0",  # no zero padding
    "tile/0/01",
    "tile/0/0000",
    "tile/00/000",  # level with a leading zero
    "tile/64/000",  # level above 63
    "tile/-1/000",
    "tile/1a/000",
    "tile/0/000.p/256",  # a full tile is never .p
    "tile/0/000.p/0",
    "tile/0/000.p/007",
    "tile/0/000.p/",
    "tile/0/000.p",
    "tile/0/000.p/5/",
    "tile/0/x000/001",  # a leading zero group
    "tile/0/x001",  # the last group has no x
    "tile/0/001/234",  # only the last group goes without x
    "tile/0/x1/234",
    "tile/0/x001//234",
    "tile//0/000",
    "/tile/0/000",
    "tile/0/000/",
    "./tile/0/000",
    "tile/0/000\n",
    " tile/0/000",
    "xtile/0/000",
    "tiles/0/000",
    "tile/entries/000.p/256",
    "tile/entry/000",
    "tile/ENTRIES/000",
    "tile/0/٠٠٠",  # digits, but not ASCII
    "tile/0/" + "x999/" * 6 + "999",  # past 2^64 leaves
    "tile/1/x072/x057/x594/x037/x928/000",  # level-1 tile starting at leaf 2^64
    "tile/8/001",  # level 8 holds one tile of 2^72 leaves at most
    "tile/0/" + "x001/" * 40 + "000",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_rejected(path: str) -> None:
    with pytest.raises(ValidationError):
        parse_tile_path(path)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="tile/entrisx0123456789.p", max_size=40))
def test_parse_accepts_only_canonical_paths(path: str) -> None:
    try:
        tile = parse_tile_path(path)
    except ValidationError:
        return
    assert tile_path(tile) == path


def test_bad_tiles_rejected() -> None:
    for args in [(64, 0, 1), (-1, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257), (1, 0, 5, True), (0, 2**56, 256)]:
        with pytest.raises(ValidationError):
            Tile(*args)


# --- which tiles a size implies ------------------------------------------------------------------------


def test_tiles_for_size_spec_examples() -> None:
    tiles = hash_tiles_for_size(70_000)
    assert tiles == (
        [Tile(0, n, 256) for n in range(273)]
        + [Tile(0, 273, 112), Tile(1, 0, 256), Tile(1, 1, 17), Tile(2, 0, 1)]
    )
    assert hash_tiles_for_size(256) == [Tile(0, 0, 256), Tile(1, 0, 1)]
    assert hash_tiles_for_size(0) == [] and entry_bundles_for_size(0) == []
    assert entry_bundles_for_size(70_000) == [Tile(0, n, 256, True) for n in range(273)] + [Tile(0, 273, 112, True)]
    with pytest.raises(ValidationError):
        hash_tiles_for_size(-1)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 1 << 24))
def test_hash_tiles_cover_every_stored_tile_level_node(size: int) -> None:
    # At each tile level the tiles hold nodes (8L, 0), (8L, 1), ... up to the last complete one, each once,
    # all full but the last; and there are tiles exactly at the levels that have a complete node.
    ends: dict[int, int] = {}
    for t in hash_tiles_for_size(size):
        level, first, count = tile_coords(t)
        assert first == ends.get(level, 0), "tiles of a level are contiguous, in order"
        assert t.full or first + count == size >> level, "only the last tile of a level is partial"
        ends[level] = first + count
    assert ends == {level: size >> level for level in range(0, 64, 8) if size >> level}


def test_tile_coords() -> None:
    assert tile_coords(Tile(0, 3, 256)) == (0, 768, 256)
    assert tile_coords(Tile(2, 5, 7)) == (16, 1280, 7)
    assert tile_coords(Tile(0, 1, 9, entries=True)) == (0, 256, 9)


# --- entry bundles ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_bundle_round_trip(leaves: list[bytes]) -> None:
    data = encode_bundle(leaves)
    assert decode_bundle(data) == leaves
    assert decode_bundle(data, width=len(leaves)) == leaves


def test_bundle_limits() -> None:
    big = b"a" * 65535
    assert decode_bundle(encode_bundle([big, b""])) == [big, b""]
    assert encode_bundle([b"ab", b""]) == b"\x00\x02ab\x00\x00"
    for bad in [[b"a" * 65536], [], [b""] * 257]:
        with pytest.raises(ValidationError):
            encode_bundle(bad)


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no entries
        b"\x00",  # half a length
        b"\x00\x03ab",  # entry cut short
        b"\x00\x02ab\x00",  # trailing byte
        b"\x00\x02ab\x00\x05abc",  # trailing, cut-off entry
        b"\x00\x00" * 257,  # more entries than a tile holds
    ],
)
def test_bad_bundles_rejected(data: bytes) -> None:
    with pytest.raises(ValidationError):
        decode_bundle(data)


def test_bundle_width_checked() -> None:
    with pytest.raises(ValidationError):
        decode_bundle(encode_bundle([b"a", b"b"]), width=3)


# --- TileHashReader over a synthetic tree -------------------------------------------------------------

BIG = 70_000
MEM = MemoryHashes(leaf_hash(i.to_bytes(4, "big")) for i in range(BIG))


class TileServer:
    """Serves the tiles of a tree of `size` leaves cut from MEM; refuses any tile that size does not imply
    and records each fetch."""

    def __init__(self, size: int) -> None:
        self.implied = set(hash_tiles_for_size(size))
        self.fetched: list[Tile] = []

    def __call__(self, tile: Tile) -> bytes:
        assert tile in self.implied, f"{tile_path(tile)} is not servable"
        self.fetched.append(tile)
        level, first, count = tile_coords(tile)
        return b"".join(MEM.read_nodes([(level, n) for n in range(first, first + count)]))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_tile_reader_matches_memory(data: st.DataObject) -> None:
    size = data.draw(st.one_of(st.integers(1, 600), st.integers(1, BIG)))
    coords = data.draw(
        st.lists(
            st.integers(0, size.bit_length() - 1).flatmap(
                lambda level: st.tuples(st.just(level), st.integers(0, (size >> level) - 1))
            ),
            max_size=20,
        )
    )
    server = TileServer(size)
    reader = TileHashReader(size, server)
    assert reader.read_nodes(coords) == MEM.read_nodes(coords)
    assert len(server.fetched) == len(set(server.fetched))  # each tile once per call
    assert tree_root(size, TileHashReader(size, TileServer(size))) == tree_root(size, MEM)


def test_tile_reader_proofs_at_every_tile_level() -> None:
    server = TileServer(BIG)
    reader = TileHashReader(BIG, server)
    root = tree_root(BIG, reader)
    assert root == tree_root(BIG, MEM)
    for index in [0, 255, 256, 65535, 65536, 69_999]:
        proof = inclusion_proof(index, BIG, reader)
        verify_inclusion(MEM.read_nodes([(0, index)])[0], index, BIG, proof, root)
    # The widest tiles were used: the level-1 tile serves level 8..15 nodes instead of 256 leaf hashes each.
    assert Tile(1, 1, 17) in server.fetched


def test_tile_reader_rejects_missing_nodes_and_bad_tiles() -> None:
    reader = TileHashReader(300, TileServer(300))
    for coord in [(0, 300), (2, 75), (9, 0), (-1, 0), (0, -1)]:
        with pytest.raises(NotFound):
            reader.read_nodes([coord])
    short = TileHashReader(300, lambda tile: b"\x00" * 31)
    with pytest.raises(ValidationError):
        short.read_nodes([(0, 0)])


# --- the tessera log ----------------------------------------------------------------------------------

needs_tessera = pytest.mark.skipif(not TESSERA.is_dir(), reason="../shared/vectors is not beside the checkout")


def _fetch_tessera(tile: Tile) -> bytes:
    return (TESSERA / tile_path(tile)).read_bytes()


def _checkpoint(path: Path) -> tuple[int, bytes]:
    """The size and root of a checkpoint; its signatures are checked elsewhere (note.py)."""
    origin, size, root = path.read_text().split("\n")[:3]
    assert origin == "example.com/log/testdata"
    return int(size), base64.b64decode(root, validate=True)


@needs_tessera
def test_tessera_leaves_match_level_zero_tiles() -> None:
    for size in range(1, 16):
        leaves = decode_bundle(_fetch_tessera(Tile(0, 0, size, entries=True)), width=size)
        assert leaves == [w.encode() for w in WORDS[:size]]
        reader = TileHashReader(size, _fetch_tessera)
        assert reader.read_nodes([(0, i) for i in range(size)]) == [leaf_hash(leaf) for leaf in leaves]


@needs_tessera
def test_tessera_roots_match_checkpoints() -> None:
    for size in range(0, 16):
        root = tree_root(size, TileHashReader(size, _fetch_tessera))
        assert _checkpoint(TESSERA / f"checkpoint.{size}") == (size, root)
        for tile in hash_tiles_for_size(size) + entry_bundles_for_size(size):
            assert (TESSERA / tile_path(tile)).is_file()
    assert _checkpoint(TESSERA / "checkpoint") == (15, tree_root(15, TileHashReader(15, _fetch_tessera)))
    assert _checkpoint(TESSERA / "checkpoint.0")[1] == EMPTY_ROOT


@needs_tessera
def test_tessera_paths_parse() -> None:
    for path in (TESSERA / "tile").rglob("*"):
        if path.is_file():
            rel = str(path.relative_to(TESSERA))
            assert tile_path(parse_tile_path(rel)) == rel
