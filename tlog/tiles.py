"""c2sp.org/tlog-tiles: tile and entry-bundle paths, which tiles a tree size implies, entry bundles, and a
HashReader over tiles. Pure: fetching is the caller's function.

A hash tile at level L holds up to 256 consecutive node hashes of tree level 8·L; tile N at level L holds
nodes (8·L, N·256 + i). Node levels between tile levels are recomputed by hashing within one tile, as
golang.org/x/mod/sumdb/tlog's HashFromTile does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tlog.errors import NotFound, ValidationError
from tlog.merkle import HASH_SIZE, Coord, HashReader, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF
# No tree holds 2^64 entries (sizes are uint64 everywhere else), so no tile starts at or beyond that leaf.
_MAX_LEAVES = 1 << 64


@dataclass(frozen=True)
class Tile:
    """A hash tile (level L, index N, width W hashes) or, with entries=True, an entry bundle of W entries.

    Entry bundles are always level 0, so two equal bundles compare equal."""

    level: int
    index: int
    width: int
    entries: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_LEVEL:
            raise ValidationError(f"tile level {self.level} is not in 0..{MAX_LEVEL}")
        if self.entries and self.level != 0:
            raise ValidationError("an entry bundle has level 0")
        if not 1 <= self.width <= TILE_WIDTH:
            raise ValidationError(f"tile width {self.width} is not in 1..{TILE_WIDTH}")
        if not 0 <= self.index or self.index << (TILE_HEIGHT * (self.level + 1)) >= _MAX_LEAVES:
            raise ValidationError(f"tile index {self.index} at level {self.level} is out of range")

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH


def _encode_index(n: int) -> str:
    """1234067 → "x001/x234/067": 3-digit groups, all but the last prefixed with x."""
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def tile_path(t: Tile) -> str:
    """The tile's path below the log prefix: "tile/0/x001/234.p/5", "tile/entries/000"."""
    head = "tile/entries" if t.entries else f"tile/{t.level}"
    path = f"{head}/{_encode_index(t.index)}"
    return path if t.full else f"{path}.p/{t.width}"


# Loose on purpose (it only bounds the shape and the length before any int() runs); canonical form is then
# checked by encoding the parsed tile again. 2^64 has 20 digits, so 7 groups are always enough.
_PATH = re.compile(r"tile/(entries|[0-9]{1,2})/((?:x[0-9]{3}/){0,6}[0-9]{3})(?:\.p/([0-9]{1,3}))?")


def parse_tile_path(path: str) -> Tile:
    """The tile at `path` (as tile_path writes it). Anything else, including non-canonical spellings of
    a valid tile (leading zeros, "x000/" groups, ".p/256"), raises ValidationError: a cache or a
    filesystem must never see one tile under two names."""
    m = _PATH.fullmatch(path)
    if m is None:
        raise ValidationError(f"not a tile path: {path!r}")
    kind, groups, width = m.groups()
    index = 0
    for group in groups.split("/"):
        index = index * 1000 + int(group.removeprefix("x"))
    try:
        tile = Tile(
            level=0 if kind == "entries" else int(kind),
            index=index,
            width=TILE_WIDTH if width is None else int(width),
            entries=kind == "entries",
        )
    except ValidationError as e:
        raise ValidationError(f"bad tile path {path!r}: {e.message}") from None
    if tile_path(tile) != path:
        raise ValidationError(f"non-canonical tile path {path!r}; the tile's path is {tile_path(tile)!r}")
    return tile


def _check_size(size: int) -> None:
    if not 0 <= size < _MAX_LEAVES:
        raise ValidationError(f"tree size {size} is out of range")


def _level_tiles(level: int, count: int, entries: bool = False) -> list[Tile]:
    """The full tiles over `count` hashes of one tile level, then the partial one for the remainder."""
    full, rest = divmod(count, TILE_WIDTH)
    tiles = [Tile(level, n, TILE_WIDTH, entries) for n in range(full)]
    if rest:
        tiles.append(Tile(level, full, rest, entries))
    return tiles


def hash_tiles_for_size(size: int) -> list[Tile]:
    """Every hash tile a tree of `size` implies, level by level: a tree of 70,000 has 273 full level-0
    tiles, one of width 112, one full level-1 tile, one of width 17 and one level-2 tile of width 1."""
    _check_size(size)
    tiles: list[Tile] = []
    level, count = 0, size
    while count:
        tiles += _level_tiles(level, count)
        level += 1
        count >>= TILE_HEIGHT
    return tiles


def entry_bundles_for_size(size: int) -> list[Tile]:
    """Every entry bundle a tree of `size` implies: the full ones, then the partial one, if any."""
    _check_size(size)
    return _level_tiles(0, size, entries=True)


def tile_coords(t: Tile) -> tuple[int, int, int]:
    """(tree level, first n, count): the tile holds nodes (level, n) for n in [first, first + count)."""
    return TILE_HEIGHT * t.level, t.index * TILE_WIDTH, t.width


def _check_entry_count(count: int) -> None:
    if not 1 <= count <= TILE_WIDTH:
        raise ValidationError(f"an entry bundle holds 1..{TILE_WIDTH} entries, not {count}")


def encode_bundle(leaves: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length, then its bytes."""
    _check_entry_count(len(leaves))
    out = bytearray()
    for i, leaf in enumerate(leaves):
        if len(leaf) > MAX_ENTRY_SIZE:
            raise ValidationError(f"entry {i} is {len(leaf)} bytes; a bundle entry is at most {MAX_ENTRY_SIZE}")
        out += len(leaf).to_bytes(2, "big")
        out += leaf
    return bytes(out)


def decode_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    """The entries of a bundle. Rejects a cut-off length or entry, trailing bytes (which read as a
    cut-off entry), and, when the bundle's tile `width` is given, any other number of entries."""
    leaves: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 2:
            raise ValidationError(f"entry bundle ends inside the length of entry {len(leaves)}")
        n = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if end - pos < n:
            raise ValidationError(f"entry bundle ends inside entry {len(leaves)}: {n} bytes, {end - pos} left")
        leaves.append(bytes(data[pos : pos + n]))
        pos += n
    _check_entry_count(len(leaves))
    if width is not None and len(leaves) != width:
        raise ValidationError(f"entry bundle holds {len(leaves)} entries, its tile says {width}")
    return leaves


def _tile_hash(data: bytes) -> bytes:
    """Root of the complete subtree whose 2^h bottom hashes are concatenated in `data`."""
    hashes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


class TileHashReader(HashReader):
    """A HashReader for the tree of `size` entries of a tiled log: fetch(tile) returns the tile's raw
    concatenated hashes (from a URL prefix, a directory, a store).

    Each node comes from the tile at its level rounded down to a multiple of 8, taking the widest tile
    `size` allows (so the fewest, always-servable tiles are fetched), and each tile is fetched once per
    read_nodes call. Tile contents are not authenticated here: callers compare what they compute with a
    signed checkpoint's root, which any wrong tile hash changes."""

    def __init__(self, size: int, fetch: Callable[[Tile], bytes]) -> None:
        _check_size(size)
        self.size = size
        self._fetch = fetch

    def _locate(self, level: int, n: int) -> tuple[Tile, int, int]:
        """The tile holding node (level, n)'s bottom hashes, and their index range [start, end) in it."""
        if level < 0 or n < 0 or (n + 1) << level > self.size:
            raise NotFound(f"node ({level}, {n}) is not a complete subtree of a tree of size {self.size}")
        tile_level, height = divmod(level, TILE_HEIGHT)
        first = n << height  # the node covers tile-level hashes [first, first + 2^height)
        index = first >> TILE_HEIGHT
        available = (self.size >> (TILE_HEIGHT * tile_level)) - index * TILE_WIDTH
        start = first - index * TILE_WIDTH
        return Tile(tile_level, index, min(available, TILE_WIDTH)), start, start + (1 << height)

    def _fetch_checked(self, tile: Tile) -> bytes:
        data = self._fetch(tile)
        if len(data) != tile.width * HASH_SIZE:
            raise ValidationError(f"{tile_path(tile)} is {len(data)} bytes, want {tile.width * HASH_SIZE}")
        return data

    def read_nodes(self, coords: Sequence[Coord]) -> list[bytes]:
        located = [self._locate(level, n) for level, n in coords]
        tiles = {tile: self._fetch_checked(tile) for tile in dict.fromkeys(t for t, _, _ in located)}
        return [_tile_hash(tiles[t][start * HASH_SIZE : end * HASH_SIZE]) for t, start, end in located]
