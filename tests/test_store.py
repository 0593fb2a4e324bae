"""The SQLite store's read side: tree nodes (with the node cache) agree with an in-memory tree."""

from __future__ import annotations

import random

import pytest

from tlog import merkle
from tlog.errors import StorageError
from tlog.store import sqlite as sqlite_store

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
