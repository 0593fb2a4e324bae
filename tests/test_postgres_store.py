"""The PostgreSQL backend (tlog/store/postgres.py) on a real PostgreSQL (tests/postgres.py): the same
behaviours as the SQLite backend, run on both, and what many processes on one database need: the write
guard and the fence inside each batch's transaction, token changes seen by every connection, two writers
taking turns, a dropped connection replaced, and opening by URL with keys in a folder of their own."""

from __future__ import annotations

import os
import random
import socket
import stat
import threading
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from tlog import merkle
from tlog.errors import Conflict, StorageError, ValidationError
from tlog.log import LocalLog, init_log, open_log
from tlog.store import open_store, postgres_schema
from tlog.store.base import STALE_STATE, Batch, UseFilter
from tlog.store.postgres import LINK_TIMEOUT_S, PostgresStore
from tlog.tokens import new_token
from tlog.verify import verify_log

from .conftest import append, records

ORIGIN = "test.tlog.example/log"


def _init(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> LocalLog:
    if backend == "sqlite":
        return init_log(tmp_path / "tlog.db", ORIGIN)
    return init_log(request.getfixturevalue("pg_dsn"), ORIGIN, keys=tmp_path / "keys")


@pytest.fixture(params=["sqlite", "postgres"])
def any_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalLog]:
    lg = _init(request, tmp_path, request.param)
    yield lg
    lg.close()


@pytest.fixture
def pg_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalLog]:
    lg = _init(request, tmp_path, "postgres")
    yield lg
    lg.close()


def _grow(lg: LocalLog, batches: int = 3, n: int = 100) -> None:
    seq = lg.sequencer()
    for seed in range(batches):
        append(seq, records(n, seed=seed, artists=7))
    seq.close()


# --- the same behaviours on both backends -------------------------------------------------------


def test_a_grown_log_verifies_and_its_tree_matches_a_memory_tree(any_log):
    _grow(any_log)
    store = any_log.store
    size = store.size()
    assert verify_log(any_log).size == size == 3 + 3 * (100 + 1)  # each batch ends with a map leaf
    memory = merkle.MemoryHashes(store.leaf_hashes(0, size))
    rnd = random.Random(3)
    for _ in range(100):
        coords = [(level, rnd.randrange(size >> level)) for level in (rnd.randrange(size.bit_length() - 1) for _ in range(5))]
        assert store.read_nodes(coords) == memory.read_nodes(coords)
    for index in (0, 7, size - 1):
        assert merkle.inclusion_proof(index, size, store) == merkle.inclusion_proof(index, size, memory)
    with pytest.raises(StorageError, match=rf"tree node \(0, {size}\) is missing"):
        store.read_nodes([(0, 1), (0, size)])


def test_listings_filters_and_cursors_agree_with_the_entries(any_log):
    _grow(any_log)
    store = any_log.store
    every = list(store.entries(0, store.size()))
    assert [e.index for e in every] == list(range(store.size()))
    by_artist: dict[str, list[Any]] = {}
    for e in every:
        if e.artist_id is not None:
            by_artist.setdefault(e.artist_id, []).append(e)
    assert len(by_artist) == 7
    for artist_id, mine in by_artist.items():
        indexes = [e.index for e in mine]
        assert [e.index for e in store.artist_entries(artist_id, UseFilter(), 10_000)] == indexes
        assert [e.index for e in store.artist_entries(artist_id, UseFilter(after=indexes[2]), 3)] == indexes[3:6]
        purpose = mine[0].details["purpose"]
        want = [e.index for e in mine if e.details.get("purpose") == purpose]
        assert [e.index for e in store.artist_entries(artist_id, UseFilter(purpose=purpose), 10_000)] == want
        assert [e.index for e in store.artist_latest(artist_id, indexes[-1], 4)] == indexes[-2:-6:-1]
    assert store.artist_entries("sc:user:nobody", UseFilter(), 10) == []
    e = next(e for e in reversed(every) if e.type == "use")
    found = store.find_events(e.details["service"], [e.details["event_id"], "no-such-event"])
    assert list(found) == [e.details["event_id"]] and found[e.details["event_id"]] == e


def test_stats_of_a_period_are_a_recount_of_its_leaves(any_log):
    _grow(any_log)
    store = any_log.store
    every = list(store.entries(0, store.size()))
    lo, hi = every[50].logged_ms, every[250].logged_ms
    from tlog.store.rows import stat_rows

    assert store.stats(None, lo, hi) == stat_rows(e for e in every if lo <= e.logged_ms < hi)
    assert store.stats(120) == stat_rows(every[:120])


def test_tokens_feed_keys_and_their_revocation_are_seen_by_another_connection(any_log, tmp_path):
    store = any_log.store
    other = open_store(any_log.path)
    try:
        secret, digest = new_token()
        token_id = store.add_token("service", "recsys", digest, 5, rights=frozenset({"catalog"}))
        assert other.token_by_digest(digest).rights == frozenset({"catalog"})
        before = other.tokens_version()
        assert store.revoke_token(token_id, 9) and not store.revoke_token(token_id, 10)
        assert other.tokens_version() != before
        assert [(t.token_id, t.revoked_ms) for t in other.tokens()] == [(token_id, 9)]
        key_id = store.add_feed_key("sc:user:1", b"k" * 32, 1)
        assert other.feed_key(b"k" * 32) == (key_id, "sc:user:1")
        assert store.revoke_feed_key("sc:user:1", key_id, 2)
        assert other.feed_key(b"k" * 32) is None
    finally:
        other.close()


def test_published_checkpoints_never_roll_back_and_notes_are_replaced_only_where_stored(any_log):
    store = any_log.store
    store.set_published(3, b"three")
    with pytest.raises(StorageError, match="size 3 is already published"):
        store.set_published(2, b"two")
    assert store.published_checkpoint() == b"three"
    with pytest.raises(StorageError, match="no stored checkpoint at size 99"):
        store.replace_checkpoint_notes([(3, store.checkpoint_at(3) or b""), (99, b"x")])
    assert store.notify_state() is None
    store.save_notify_state(3, [1, 2])
    store.save_notify_state(5, [2, 4])
    assert store.notify_state() == (5, {1, 2, 4})


def test_an_erasure_and_a_binding_read_back_alike(any_log):
    seq = any_log.sequencer()
    append(seq, records(40, seed=1, artists=3))
    artist = sorted(a.artist_id for a in any_log.store.artists())[0]
    bound = seq.bind_content("sc:track:shared", [artist, "sc:user:other"])
    any_log.store.add_token("artist", f"{artist} sc:user:other", new_token()[1], 0)
    assert seq.erase(artist, "request") is not None
    seq.close()
    store = any_log.store
    assert store.artist_state(artist) is None
    assert [a.subject for a in store.tokens()] == ["sc:user:other"]
    assert store.content_artists("sc:track:shared") == [(b.artist_id, b.index) for b in bound if b.artist_id != artist]
    assert len(store.erasures()) == 1
    store.scrub()
    assert verify_log(any_log).size == store.size()


# --- many processes on one database ---------------------------------------------------------------


def _next_batch(store: PostgresStore, **kw: Any) -> Batch:
    """An empty-looking batch at the store's size: no entries, so it writes only the head."""
    return Batch(start=store.size(), entries=[], nodes=[], **kw)


def _counts(dsn: str) -> tuple[int, ...]:
    with psycopg.connect(dsn) as c:
        return tuple(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("entries", "nodes", "checkpoints"))


def test_the_write_guard_refuses_a_batch_that_does_not_extend_the_stored_head(pg_log):
    store = pg_log.store
    size, before = store.size(), _counts(pg_log.path)
    for stale in (Batch(start=size - 1, entries=[], nodes=[], checkpoint=b"x"),
                  Batch(start=size, entries=[], nodes=[], checkpoint=b"x", prev=bytes(32))):
        with pytest.raises(StorageError) as caught:
            store.write_batch(stale)
        assert caught.value.code == STALE_STATE
    assert store.size() == size and _counts(pg_log.path) == before


def test_the_fence_runs_inside_the_batch_after_the_guard_and_before_any_write(pg_log):
    seen: list[tuple[Any, ...]] = []

    def fence(cur: psycopg.Cursor[Any]) -> None:
        # In the batch's transaction, holding the head's lock, before the batch wrote anything.
        seen.append((cur.connection.info.transaction_status, cur.execute("SELECT count(*) FROM entries").fetchone()[0]))

    dsn = pg_log.path
    pg_log.close()
    lg = open_log(dsn, secrets_needed=True, keys=pg_log.keys.parent, fence=fence)
    try:
        append(lg.sequencer(), records(5, seed=9))
        assert seen == [(psycopg.pq.TransactionStatus.INTRANS, 3)]
        with pytest.raises(StorageError):  # refused by the guard: the fence is not asked
            lg.store.write_batch(Batch(start=0, entries=[], nodes=[]))
        assert len(seen) == 1
        lg.store.set_published(3, b"note")
        lg.store.save_notify_state(1, [])
        lg.store.replace_checkpoint_notes([])
        lg.store.add_token("service", "s", b"d" * 32, 0)  # any front end may: not fenced
        assert len(seen) == 4
    finally:
        lg.close()


def test_a_fence_that_refuses_rolls_the_batch_back_and_its_error_comes_out_unchanged(pg_log):
    refusal = StorageError("this writer no longer holds the lease", code="not_leader")

    def fence(cur: psycopg.Cursor[Any]) -> None:
        raise refusal

    store = PostgresStore(pg_log.path, fence=fence)
    try:
        size, before = store.size(), _counts(pg_log.path)
        batch = Batch(start=size, entries=[], nodes=[], checkpoint=b"would be written")
        with pytest.raises(StorageError) as caught:
            store.write_batch(batch)
        assert caught.value is refusal
        with pytest.raises(StorageError) as caught:
            store.set_published(size, b"note")
        assert caught.value is refusal
        assert store.published_checkpoint() is None and store.size() == size and _counts(pg_log.path) == before
    finally:
        store.close()


def test_two_writers_taking_turns_keep_one_log(pg_log, tmp_path):
    """Two sequencers on the same database (each with its own connection and caches): each batch is
    refused as stale once when the other appended, rebuilt, and written; new names and artists made by
    one are used by the other without clashing, and the log verifies."""
    other = open_log(pg_log.path, secrets_needed=True, keys=pg_log.keys.parent)
    try:
        a, b = pg_log.sequencer(), other.sequencer()
        for seed in range(4):
            append(a, records(30, seed=seed, artists=4))
            append(b, records(30, seed=100 + seed, artists=4), service=f"service-{seed}")
        a.close()
        b.close()
        assert verify_log(pg_log).size == 3 + 8 * (30 + 1) == pg_log.store.size()
    finally:
        other.close()


def test_a_connection_postgresql_dropped_is_replaced_at_the_next_call(pg_log):
    store = pg_log.store
    with psycopg.connect(pg_log.path, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (store.conn.info.backend_pid,))
    with pytest.raises(StorageError):
        store.size()
    assert store.size() == 3
    _grow(pg_log, batches=1, n=10)
    assert store.size() == 3 + 10 + 1


def _tcp(store: PostgresStore) -> dict[str, int]:
    """The TCP options of the store's connection, read from its socket (not from what was asked)."""
    sock = socket.socket(fileno=os.dup(store.conn.pgconn.socket))
    try:
        return {"keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)}
    finally:
        sock.close()


def test_a_connection_probes_its_link_so_a_vanished_host_fails_a_call_within_seconds(pg_log):
    """A database host gone without closing its connections must not hang a reader for TCP's hours: every
    store connection (a replacement too) probes an idle link and gives up on unacknowledged data, unless
    the URL says otherwise."""
    store = pg_log.store
    want = {"keepalive": 1, "idle": 1, "user_timeout": LINK_TIMEOUT_S * 1000}
    assert _tcp(store) == want
    size = store.size()
    store.conn.close()
    assert store.size() == size and _tcp(store) == want  # the replacement too
    own = PostgresStore(f"{pg_log.path}?keepalives_idle=30&tcp_user_timeout=60000", readonly=True)
    try:
        assert _tcp(own) == {"keepalive": 1, "idle": 30, "user_timeout": 60000}
    finally:
        own.close()


def test_token_changes_are_one_counter_read_by_every_connection(pg_log):
    other = PostgresStore(pg_log.path, readonly=True)
    try:
        v0 = other.tokens_version()
        token_id = pg_log.store.add_token("artist", "sc:user:1 sc:user:2", b"t" * 32, 0)
        v1 = other.tokens_version()
        pg_log.store.revoke_token(token_id, 1)
        v2 = other.tokens_version()
        assert v0 < v1 < v2
        assert pg_log.store.forget_artist("sc:user:1") == 1
        assert other.tokens_version() > v2 and other.tokens()[0].subject == "sc:user:2"
        with pytest.raises(StorageError, match="read-only"):
            other.add_token("service", "x", b"u" * 32, 0)
    finally:
        other.close()


# --- opening by URL ----------------------------------------------------------------------------------


def test_init_puts_the_keys_in_a_private_folder_and_refuses_a_database_that_is_not_empty(pg_dsn, tmp_path):
    lg = init_log(pg_dsn, ORIGIN, keys=tmp_path / "keys")
    lg.close()
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["tlog.signer.key", "tlog.vrf.key"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "keys").iterdir())
    with pytest.raises(Conflict, match="is not empty"):
        init_log(pg_dsn, ORIGIN, keys=tmp_path / "other")
    assert not (tmp_path / "other" / "tlog.signer.key").exists()
    reader = open_log(pg_dsn, keys=tmp_path / "nowhere")  # a front end without keys reads, and does not sequence
    try:
        assert reader.signers == [] and reader.latest_checkpoint()[0].size == 3
        with pytest.raises(StorageError, match="key files"):
            reader.sequencer()
    finally:
        reader.close()


def test_a_postgres_log_needs_a_key_folder_and_an_open_needs_a_log(pg_dsn, tmp_path, monkeypatch):
    monkeypatch.delenv("TLOG_KEYS", raising=False)
    with pytest.raises(ValidationError, match="--keys DIR"):
        init_log(pg_dsn, ORIGIN)
    with pytest.raises(StorageError, match="no tlog log in"):
        open_log(pg_dsn)
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    with pytest.raises(ValidationError, match="chmod 700"):
        init_log(pg_dsn, ORIGIN, keys=tmp_path / "open")


def test_migrations_are_applied_once_by_front_ends_opening_together(pg_dsn):
    applied: list[int] = []

    def open_one() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            applied.append(postgres_schema.migrate(c, 0))

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(applied) == [0, 0, postgres_schema.SCHEMA_VERSION]
    with psycopg.connect(pg_dsn) as c:
        assert postgres_schema.applied(c) == postgres_schema.SCHEMA_VERSION
        assert c.execute("SELECT count(*) FROM log_head").fetchone()[0] == 1
