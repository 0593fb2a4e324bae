"""The artist map of a stored log at a given size (SPEC §2.3), for map proofs and audit bundles.

The sequencer keeps the maps of the latest durable sizes in memory (`Sequencer.maps`); a reader that
needs another size (the published checkpoint lagging behind after a restart, a front end that does not
sequence) rebuilds it here from what the store holds: every artist's current (aseq, head), with the
leaves at or after `size` undone. Each undo is exact because a chain leaf names its predecessor
(`aprev`), and only the first leaf of a tag at or after `size` matters.

Invariant: a rebuilt map is checked against the root that the map leaf ending `size` committed to
before anyone is shown a proof from it; a mismatch means the database was altered."""

from __future__ import annotations

from .artistmap import ArtistMap, MapValue
from .errors import NotFound, StorageError
from .store.base import LogStore

MAX_REWIND = 1 << 20  # leaves undone at most to rebuild an older map; older sizes are not served


def rebuild_map(store: LogStore, size: int) -> ArtistMap:
    """The artist map over leaves [0, size - 1) — the one the map leaf at size - 1 commits to — checked
    against that leaf's root."""
    values = {tag: MapValue(aseq, head) for tag, (aseq, head) in store.heads().items() if aseq}
    end = store.size()
    if not 0 < size <= end:
        raise NotFound(f"no checkpoint of size {size} in this log of size {end}")
    if end - size > MAX_REWIND:
        raise NotFound(f"the artist map of size {size} is too old to be served (more than {MAX_REWIND} leaves ago)")
    undone: set[bytes] = set()
    last = None
    for e in store.entries(size - 1, end):
        if e.index == size - 1:
            last = e
            continue
        if e.aseq is None or e.tag is None or e.tag in undone:
            continue
        undone.add(e.tag)
        if e.aseq == 1:
            values.pop(e.tag, None)
        else:
            values[e.tag] = MapValue(e.aseq - 1, e.aprev)  # type: ignore[arg-type]
    if last is None or last.type != "map":
        raise NotFound(f"size {size} does not end at a map leaf, so it is not a checkpoint of this log")
    amap = ArtistMap.build(values.items())
    if amap.root().hex() != last.details.get("root"):
        raise StorageError(f"the artist map rebuilt at size {size} does not match the root its map leaf "
                           f"{size - 1} commits to: the database was altered")
    return amap
