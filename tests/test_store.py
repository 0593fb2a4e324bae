"""The SQLite store's read side: tree nodes (with the node cache) agree with an in-memory tree."""

from __future__ import annotations

import random

import pytest

from tlog import merkle
from tlog.errors import StorageError
from tlog.store import sqlite as sqlite_store
from tlog.store import sqlite_schema

from .conftest import append, records


@pytest.fixture
def grown(log):
    seq = log.sequencer()
    for seed in range(3):
        append(seq, records(100, seed=seed))
    return log


def test_read_nodes_match_a_memory_tree_through_cache_clears(grown, monkeypatch):
    monkeypatch.setattr(sqlite_store, "NODE_CACHE", 20)  # forces clears mid-way
    size = grown.store.size()
    memory = merkle.MemoryHashes(grown.store.leaf_hashes(0, size))
    rnd = random.Random(3)
    for _ in range(200):
        coords = []
        for _ in range(rnd.randrange(1, 12)):
            level = rnd.randrange(0, size.bit_length())
            if size >> level:
                coords.append((level, rnd.randrange(size >> level)))
        assert grown.store.read_nodes(coords) == memory.read_nodes(coords)
    for index in (0, 7, size - 1):
        assert merkle.inclusion_proof(index, size, grown.store) == merkle.inclusion_proof(index, size, memory)


def test_a_missing_node_is_named_even_when_others_are_cached(grown):
    size = grown.store.size()
    grown.store.read_nodes([(0, 1), (1, 0)])
    with pytest.raises(StorageError, match=r"tree node \(0, %d\) is missing" % size):
        grown.store.read_nodes([(0, 1), (0, size), (1, 0)])


def _listing(store, artist_id, flt):
    from tlog.store.base import UseFilter

    return [e.index for e in store.artist_entries(artist_id, UseFilter(**flt), 10_000)]


@pytest.mark.parametrize("bits", [0, 2, 5])
def test_artist_listings_are_the_same_whatever_the_epoch_width(tmp_path, monkeypatch, bits):
    """The artist index is keyed by epoch: a listing seeks once per epoch and must still return every
    entry of the artist, in order, from any cursor (an epoch of one entry is the extreme case)."""
    from tlog.log import init_log

    monkeypatch.setattr(sqlite_schema, "ARTIST_EPOCH_BITS", bits)
    lg = init_log(tmp_path / "e.db", "test.tlog.example/log")
    seq = lg.sequencer()
    for seed in range(4):
        append(seq, records(60, seed=seed, artists=7))
    want: dict[str, list[int]] = {}
    for e in lg.store.entries(0, lg.store.size()):
        if e.artist_id is not None:
            want.setdefault(e.artist_id, []).append(e.index)
    assert len(want) == 7
    for artist_id, indexes in want.items():
        assert _listing(lg.store, artist_id, {}) == indexes
        for cut in (indexes[0], indexes[len(indexes) // 2], indexes[-1]):
            assert _listing(lg.store, artist_id, {"after": cut}) == [i for i in indexes if i > cut]
    plan = " ".join(r[3] for r in lg.store.conn.execute(
        f"EXPLAIN QUERY PLAN SELECT idx FROM entries WHERE (idx >> {bits}) IN (0, 1) AND artist = 1"))
    lg.close()
    assert "INDEX entries_artist" in plan


@pytest.mark.parametrize("schema", ["1", "2"])
def test_a_log_of_leaf_format_1_is_refused_naming_its_version(grown, schema):
    """Schemas 1 and 2 hold logs of leaf format 1 (HMAC artist tags, no artist map), whose leaves cannot
    be re-derived as format 2: the store refuses them by name, read-only and read-write, and leaves the
    file as it was (no upgrade is attempted: the old log stays verifiable by the version that made it).
    Schema 1 is rebuilt in its own layout (heads in `artists`, leaf hashes in `nodes`, an (artist, idx)
    index); schema 2 differs from 3 only in its leaves and the VRF proof column."""
    import hashlib
    import sqlite3

    from tlog.log import open_log

    path = grown.store.path
    grown.close()
    c = sqlite3.connect(path)
    if schema == "1":
        c.executescript(
            "ALTER TABLE artists ADD COLUMN aseq INTEGER; ALTER TABLE artists ADD COLUMN head INTEGER;"
            "UPDATE artists SET aseq = (SELECT aseq FROM heads WHERE heads.id = artists.id),"
            " head = (SELECT head FROM heads WHERE heads.id = artists.id);"
            "DROP TABLE heads; DROP INDEX entries_artist;"
            "INSERT INTO nodes SELECT idx, hash FROM entries; ALTER TABLE entries DROP COLUMN hash;"
            "CREATE INDEX entries_artist ON entries(artist, idx) WHERE artist IS NOT NULL;"
        )
    else:
        c.execute("ALTER TABLE artists DROP COLUMN proof")
    c.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (schema,))
    c.commit()
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    message = rf"schema {schema}, leaf format 1: HMAC artist tags.*reads leaf format 2 only"
    with pytest.raises(StorageError, match=message):
        sqlite_store.SqliteStore(path, readonly=True)
    with pytest.raises(StorageError, match=message):
        open_log(path)
    with pytest.raises(StorageError, match=message):
        open_log(path, secrets_needed=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    c = sqlite3.connect(path)
    assert c.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (schema,)
    c.close()


def test_a_database_of_an_unknown_schema_is_refused(log):
    path = log.store.path
    log.store.set_meta("schema", "4")
    log.close()
    with pytest.raises(StorageError, match=r"not a tlog database of schema 3 \(it has schema 4\)"):
        sqlite_store.SqliteStore(path)


def test_new_logs_use_the_larger_page_size(log):
    assert log.store.conn.execute("PRAGMA page_size").fetchone()[0] == sqlite_schema.PAGE_SIZE
    assert log.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_wal_is_checkpointed_in_the_background_and_the_thread_stops_with_the_store(tmp_path, monkeypatch):
    """The writing connection does not checkpoint at COMMIT; a thread does, so the WAL's frames reach the
    database file (and the WAL can restart) without a COMMIT paying for it."""
    import sqlite3
    import time

    from tlog.log import init_log

    monkeypatch.setattr(sqlite_store, "CHECKPOINT_INTERVAL", 0.01)
    lg = init_log(tmp_path / "c.db", "test.tlog.example/log")
    seq = lg.sequencer()
    for seed in range(6):
        append(seq, records(200, seed=seed))
    assert lg.store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    thread = lg.store._checkpointer._thread
    assert thread.is_alive() and thread.name == "tlog-checkpoint"
    other = sqlite3.connect(lg.store.path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the thread's PASSIVE checkpoint leaves nothing to copy
        busy, frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > 0 and copied == frames:
            break
        append(seq, records(5, seed=100 + int(deadline - time.monotonic())))
        time.sleep(0.05)
    other.close()
    assert frames > 0 and copied == frames
    lg.close()
    assert not thread.is_alive()


def test_without_a_checkpoint_thread_the_writer_checkpoints_as_sqlite_does(tmp_path, monkeypatch):
    import sqlite3

    from tlog.log import init_log

    def refuse(path):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite_store, "_Checkpointer", refuse)
    lg = init_log(tmp_path / "n.db", "test.tlog.example/log")  # its first batch (log, policy and map leaves) is written here
    append(lg.sequencer(), records(20))
    assert lg.store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert lg.store._checkpointer is None
    lg.close()
