"""The SQLite backend: one file, WAL, every batch one fsynced transaction.

Crash-safety invariants (kept here, where the writes happen):
- A batch is one `BEGIN IMMEDIATE … COMMIT` with `synchronous=FULL`: details, tree nodes, artist heads,
  policies, statistics and the batch's signed checkpoint become durable together or not at all.
- `write_batch` refuses a batch whose `start` is not the current size: the log never forks, even with a
  second writer on the same file.
- In-memory caches (name ids, artist row ids) are only extended after COMMIT returns; any failure drops
  them, so a rolled-back transaction cannot leave a stale id behind.

The tables, and the migrations that make and upgrade them, are in sqlite_schema.py.

Public leaves are not stored. Use and refusal details are stored as columns (repeated strings such as
purposes, services and systems as small integer ids), other details as canonical JSON in `extra`.

Write amplification, which is what limits a growing log (every page a batch dirties is written to the WAL
and again at the checkpoint):
- The artist index is keyed by (epoch, artist) with epoch = idx >> ARTIST_EPOCH_BITS (sqlite_schema). An index on
  (artist, idx) gets ~1000 inserts per batch scattered over the whole index, dirtying a page each; keyed
  by epoch they land in the newest epoch's few hundred pages. An artist's listing seeks once per epoch.
- Artist heads, the only rows a batch updates in place, live in the narrow `heads` table (a few bytes
  a row) rather than beside the artist's id, tag and preferences, so a batch dirties few pages for them.
- Leaf hashes (level 0 of the tree) are a column of their entry's row, not rows of `nodes`: one row
  written per leaf instead of two. `nodes` holds levels 1 and up.
- The connection that writes batches does not checkpoint the WAL at COMMIT (SQLite's default, every
  1000 pages); a thread of its own does, on its own connection (`_Checkpointer`). Copying pages into the
  database file is C work without the GIL, so it overlaps the next batch instead of stalling one COMMIT
  in twenty-five. Durability is the WAL's either way: a checkpoint only copies committed frames.

Erasure (SPEC §2.2, `tlog erase`): an artist's private data is deleted in the batch that appends its
erasure leaf, so a crash leaves all of it or none. Every connection runs with `secure_delete`, which
zeroes what SQLite frees (measured: switched on only for the erasure, copies left in the slack of pages
split earlier survive it); `scrub` then copies the WAL into the file and truncates it, since the WAL
still holds the pages as they were written.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Sequence

from ..errors import Conflict, StorageError
from ..stats import StatRow
from .base import (STALE_STATE, ArtistState, Batch, BindingChange, Entry, ErasureRecord, PolicyRecord, TokenRecord,
                   UseFilter)
from . import sqlite_schema as schema
from .rows import (ENTRY_COLUMNS, NODE_MASK, Names, NewNames, binding_change, blob, decode_entry, encode_entry,
                   erased_details, narrow_tokens, node_id, node_span, period_stats, plan_artists, preferences, read_cached, remember,
                   stat_rows, token)
from .sqlite_schema import ENTRY_SELECT, USAGE_UPSERT, immediate

NODE_CACHE = 1 << 16  # tree nodes kept in memory per connection (about 6 MiB)
CHECKPOINT_INTERVAL = 0.25  # seconds: the background checkpointer runs at most this often
log = logging.getLogger("tlog.store")

# What an erasure deletes of an entry: every private column; `extra` then holds its public fields.
_ERASE_ENTRY = (
    "UPDATE entries SET service = NULL, event_id = NULL, content_id = NULL, purpose = NULL, phase = NULL, "
    "system = NULL, occurred_at = NULL, window_end = NULL, invocations = NULL, detail = NULL, basis = NULL, "
    "decision = NULL, policy = NULL, nonce = NULL, extra = ? "
    "WHERE idx = ? AND artist = (SELECT id FROM artists WHERE artist_id = ?)"
)
# The artist tokens that cover an id: an artist token's subject is its artist ids, joined by spaces.
_ARTIST_TOKENS = "SELECT id, subject FROM tokens WHERE role = 'artist' AND instr(' ' || subject || ' ', ' ' || ? || ' ') > 0"
_DELETE_FEED_KEYS = "DELETE FROM feed_keys WHERE artist_id = ?"  # erased with the artist, as its tokens
_DELETE_BINDINGS = "DELETE FROM bindings WHERE artist = (SELECT id FROM artists WHERE artist_id = ?)"
_ERASED_ROW = "FROM artists a JOIN heads h ON h.id = a.id WHERE a.artist_id IS NULL AND a.tag = ?"  # an erased artist's
SCRUB_TRIES = 50  # checkpoint(TRUNCATE) attempts, 0.1 s apart, while readers hold the WAL


_ARTIST_STATE = (
    "SELECT a.artist_id, a.tag, h.aseq, h.head, a.preferences, a.proof FROM artists a JOIN heads h ON h.id = a.id"
)

_TOKEN_SELECT = "SELECT id, role, subject, created_ms, revoked_ms, digest, rights, expires_ms FROM tokens"


class SqliteStore:
    """A tlog log in one SQLite file. One instance = one connection; use one per thread."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        self.migrated: list[str] = []  # the migrations this open applied (sqlite_schema.MIGRATIONS)
        if not create and not self.path.exists():
            raise StorageError(f"no tlog database at {self.path} (run `tlog init` first)")
        if create and self.path.exists():
            raise Conflict(f"{self.path} already exists; refusing to overwrite a log")
        try:
            if readonly:
                self.conn = self._connect_readonly()
            else:
                if create:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    # Create the file 0600 before SQLite opens it: the details are private.
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                    os.close(fd)
                self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if create:  # before the first table: the page size is fixed from then on
                self.conn.execute(f"PRAGMA page_size = {schema.PAGE_SIZE}")
            self._configure(readonly)
            if create:
                schema.create(self.conn)
            elif readonly:
                schema.check_readonly(self.conn, self.path)
            else:
                self.migrated = schema.upgrade(self.conn, self.path)
        except sqlite3.Error as exc:
            if not readonly and not os.access(self.path.parent, os.W_OK):
                raise StorageError(
                    f"cannot open {self.path} for writing: {self.path.parent} is read-only (SQLite needs to write "
                    "its -wal and -shm files there); read-only commands such as `tlog verify` still work"
                ) from exc
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        self._names = Names(lambda: self.conn.execute("SELECT id, kind, value FROM names"))
        self._artist_ids: dict[str, int] = {}
        self._node_cache: dict[int, bytes] = {}
        self._checkpointer: _Checkpointer | None = None  # started by the first write_batch
        self._checkpointer_tried = False
        self._names.reload()
        if self.migrated:
            log.info("upgraded %s: %s", self.path, ", ".join(self.migrated))

    # --- setup ---------------------------------------------------------------------------------

    def _connect_readonly(self) -> sqlite3.Connection:
        """A read-only connection (`mode=ro`). A WAL database needs its `-shm` file, which SQLite cannot
        create in a read-only directory (a read-only mount, a snapshot, an auditor's copy): if there is
        no write-ahead log to read, nothing on such a medium can change the file, so it is opened
        `immutable`. A write-ahead log left by a writer that did not close is never skipped."""
        uri = "file:" + urllib.parse.quote(str(self.path.absolute()))
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # CANTOPEN shows at the first read
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            wal = Path(f"{self.path}-wal")
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_CANTOPEN:
                raise
            if wal.exists() and wal.stat().st_size > 0:
                raise StorageError(
                    f"cannot open {self.path} read-only: its write-ahead log {wal.name} holds commits that "
                    "only a read-write open (or a copy on writable storage) can read"
                ) from exc
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None, check_same_thread=False)

    def _configure(self, readonly: bool) -> None:
        c = self.conn
        c.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            c.execute("PRAGMA journal_mode = WAL")
        # FULL: in WAL mode this fsyncs the WAL at every commit, so a committed batch survives power loss.
        c.execute("PRAGMA synchronous = FULL")
        c.execute("PRAGMA cache_size = -131072")
        c.execute("PRAGMA temp_store = MEMORY")
        # Zero what is freed, always: an erasure must leave no copy of what it deletes (module docstring).
        c.execute("PRAGMA secure_delete = ON")

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.conn.close()

    # --- identity ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._guard(lambda: self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))

    # --- the tree ------------------------------------------------------------------------------

    def size(self) -> int:
        row = self.conn.execute("SELECT max(idx) FROM entries").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def read_nodes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        return read_cached(coords, self._node_cache, NODE_CACHE, self._fetch_nodes, str(self.path))

    def _fetch_nodes(self, leaves: list[int], inner: list[int]) -> dict[int, bytes]:
        found = dict(self._select_nodes("entries", "idx", leaves)) if leaves else {}
        if inner:
            found.update(self._select_nodes("nodes", "id", inner))
        return found

    def sharing_nodes(self) -> "SqliteStore":
        """Another connection to the same log (for another thread) that shares this one's node cache:
        stored nodes never change, and the cache is only used by single dict operations."""
        other = SqliteStore(self.path)
        other._node_cache = self._node_cache
        return other

    def remember_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Adds nodes another connection has committed (the server's writer) to this one's node cache.
        Safe from another thread: stored nodes never change, and single dict operations are atomic."""
        remember(self._node_cache, NODE_CACHE, nodes)

    def _select_nodes(self, table: str, key: str, ids: list[int]) -> list[tuple[int, bytes]]:
        q = f"SELECT {key}, CAST(hash AS BLOB) FROM {table} WHERE {key} IN ({','.join('?' * len(ids))})"
        return [(i, h) for i, h in self.conn.execute(q, ids) if h is not None]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        return [h for _, h in self.iter_nodes(0, start, end)]

    def iter_nodes(self, level: int, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        table, key, lo, hi = node_span(level, start, end)
        q = f"SELECT {key}, CAST(hash AS BLOB) FROM {table} WHERE {key} >= ? AND {key} < ? ORDER BY {key}"
        for i, h in self.conn.execute(q, (lo, hi)):
            if h is None:  # an entries row without its hash: the node is missing
                return
            yield i & NODE_MASK, h

    # --- checkpoints ---------------------------------------------------------------------------

    def latest_checkpoint(self) -> bytes | None:
        row = self.conn.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else blob(row[0])

    def checkpoint_at(self, size: int) -> bytes | None:
        row = self.conn.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return None if row is None else blob(row[0])

    def checkpoint_created_ms(self, size: int) -> int:
        row = self.conn.execute("SELECT created_ms FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return 0 if row is None or row[0] is None else row[0]

    def checkpoint_sizes(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT size FROM checkpoints ORDER BY size")]

    def iter_checkpoints(self) -> Iterator[tuple[int, bytes]]:
        for size, note in self.conn.execute("SELECT size, note FROM checkpoints ORDER BY size"):
            yield size, blob(note)

    def replace_checkpoint_notes(self, notes: Sequence[tuple[int, bytes]]) -> None:
        """Swaps the signed notes of stored checkpoints in one transaction (a key rotation adds the new key's
        signature to every checkpoint). The caller keeps each note's text; sizes never stored are refused."""
        def write() -> None:
            with immediate(self.conn) as c:
                for size, note in notes:
                    if c.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (note, size)).rowcount != 1:
                        raise StorageError(f"no stored checkpoint at size {size}")

        self._guard(write)

    def set_published(self, size: int, note: bytes, now_ms: int = 0) -> None:
        """Publishes a cosigned checkpoint. Never rolls back: a size below the latest published one is
        refused, inside the same transaction that writes, so two publishers cannot undo each other."""
        def write() -> None:
            with immediate(self.conn) as c:
                latest = c.execute("SELECT max(size) FROM published").fetchone()[0]
                if latest is not None and size < latest:
                    raise StorageError(f"refusing to publish size {size}: size {latest} is already published")
                c.execute("INSERT OR REPLACE INTO published VALUES (?, ?, ?)", (size, note, now_ms))

        self._guard(write)

    def published_checkpoint(self) -> bytes | None:
        """The latest checkpoint published under a witness policy, or None."""
        row = self.conn.execute("SELECT note FROM published ORDER BY size DESC LIMIT 1").fetchone()
        return None if row is None else blob(row[0])

    # --- entries -------------------------------------------------------------------------------

    def _entry(self, row: tuple[Any, ...]) -> Entry:
        return decode_entry(row, self._names, self.path.name)

    def entries(self, start: int, end: int) -> Iterator[Entry]:
        rows = self.conn.execute(f"{ENTRY_SELECT} WHERE e.idx >= ? AND e.idx < ? ORDER BY e.idx", (start, end))
        index = start
        try:
            for row in rows:
                entry = self._entry(row)
                index = entry.index + 1
                yield entry
        except sqlite3.Error as exc:  # e.g. a byte flipped into a TEXT column is no longer UTF-8
            raise StorageError(f"entry {index} cannot be read from {self.path.name} (the database was "
                               f"altered): {exc}") from None

    def entry(self, index: int) -> Entry | None:
        return next(self.entries(index, index + 1), None)

    def find_events(self, service: str, event_ids: Sequence[str]) -> dict[str, Entry]:
        sid = self._names.id_of("service", service)
        if sid is None or not event_ids:
            return {}
        found: dict[str, Entry] = {}
        ids = list(event_ids)
        for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[i : i + 500]
            q = f"{ENTRY_SELECT} WHERE e.service = ? AND e.event_id IN ({','.join('?' * len(chunk))})"
            for row in self.conn.execute(q, [sid, *chunk]):
                e = self._entry(row)
                found[e.details["event_id"]] = e
        return found

    def artist_state(self, artist_id: str) -> ArtistState | None:
        return self.artist_states([artist_id]).get(artist_id)

    def artist_states(self, artist_ids: Sequence[str]) -> dict[str, ArtistState]:
        found: dict[str, ArtistState] = {}
        ids = list(artist_ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            q = f"{_ARTIST_STATE} WHERE a.artist_id IN ({','.join('?' * len(chunk))})"
            for a, t, sq, h, p, pf in self.conn.execute(q, chunk):
                found[a] = ArtistState(a, blob(t), sq, h, preferences(a, p), blob(pf))
        return found

    def artists(self) -> list[ArtistState]:
        rows = self.conn.execute(f"{_ARTIST_STATE} WHERE a.artist_id IS NOT NULL ORDER BY a.id")
        return [ArtistState(a, blob(t), s, h, preferences(a, p), blob(pf)) for a, t, s, h, p, pf in rows]

    def heads(self) -> dict[bytes, tuple[int, int]]:
        rows = self.conn.execute("SELECT CAST(a.tag AS BLOB), h.aseq, h.head FROM artists a JOIN heads h ON h.id = a.id")
        return {blob(t): (s, h) for t, s, h in rows}

    def artist_entries(self, artist_id: str, flt: UseFilter, limit: int) -> list[Entry]:
        row = self.conn.execute(
            "SELECT a.id, h.head FROM artists a JOIN heads h ON h.id = a.id WHERE a.artist_id = ?", (artist_id,)
        ).fetchone()
        return self._listing(row, flt, limit)

    def erased_artist(self, tag: bytes) -> ArtistState | None:
        row = self.conn.execute(f"SELECT h.aseq, h.head {_ERASED_ROW}", (tag,)).fetchone()
        return None if row is None else ArtistState("", tag, row[0], row[1], erased=True)

    def chain_entries(self, artist: ArtistState, flt: UseFilter, limit: int) -> list[Entry]:
        """`artist_entries` of an artist state: by its id, or for an erased one by its tag."""
        if not artist.erased:
            return self.artist_entries(artist.artist_id, flt, limit)
        row = self.conn.execute(f"SELECT a.id, h.head {_ERASED_ROW}", (artist.tag,)).fetchone()
        return self._listing(row, flt, limit)

    def _listing(self, row: tuple[int, int] | None, flt: UseFilter, limit: int) -> list[Entry]:
        """The entries of the artist row `row` (id, head), filtered, from the cursor on."""
        if row is None or row[1] <= flt.after:
            return []
        # One seek per epoch of the artist index from the cursor to the artist's head (module docstring).
        bits = schema.ARTIST_EPOCH_BITS
        epochs = ",".join(str(k) for k in range((flt.after + 1) >> bits, (row[1] >> bits) + 1))
        where = [f"(e.idx >> {bits}) IN ({epochs})", "e.artist = ?", "e.idx > ?"]
        args: list[Any] = [row[0], flt.after]
        for column, kind, value in (("purpose", "purpose", flt.purpose), ("phase", "phase", flt.phase),
                                    ("decision", "decision", flt.decision)):
            if value is not None:
                i = self._names.id_of(kind, value)
                if i is None:
                    return []
                where.append(f"e.{column} = ?")
                args.append(i)
        if flt.content_id is not None:
            where.append("e.content_id = ?")
            args.append(flt.content_id)
        if flt.since_ms is not None:
            where.append("e.logged_ms >= ?")
            args.append(flt.since_ms)
        if flt.until_ms is not None:
            where.append("e.logged_ms < ?")
            args.append(flt.until_ms)
        q = f"{ENTRY_SELECT} WHERE {' AND '.join(where)} ORDER BY e.idx LIMIT ?"
        return [self._entry(r) for r in self.conn.execute(q, [*args, limit])]

    def artist_latest(self, artist_id: str, before: int, limit: int) -> list[Entry]:
        """The artist's `limit` latest entries below index `before`, newest first: one seek per epoch of the
        artist index, from the newest down, stopping once enough are found."""
        row = self.conn.execute(
            "SELECT a.id, h.head FROM artists a JOIN heads h ON h.id = a.id WHERE a.artist_id = ?", (artist_id,)
        ).fetchone()
        found: list[Entry] = []
        if row is None or before <= 0:
            return found
        q = (f"{ENTRY_SELECT} WHERE (e.idx >> {schema.ARTIST_EPOCH_BITS}) = ? AND e.artist = ? AND e.idx < ? "
             "ORDER BY e.idx DESC LIMIT ?")
        for epoch in range(min(row[1], before - 1) >> schema.ARTIST_EPOCH_BITS, -1, -1):
            found += [self._entry(r) for r in self.conn.execute(q, (epoch, row[0], before, limit - len(found)))]
            if len(found) >= limit:
                break
        return found

    # --- policies ------------------------------------------------------------------------------

    def policies(self) -> list[PolicyRecord]:
        rows = self.conn.execute("SELECT policy_id, idx, document FROM policies ORDER BY idx")
        return [PolicyRecord(p, i, bytes(d)) for p, i, d in rows]

    def policy(self, policy_id: str) -> PolicyRecord | None:
        row = self.conn.execute(
            "SELECT policy_id, idx, document FROM policies WHERE policy_id = ?", (policy_id,)
        ).fetchone()
        return None if row is None else PolicyRecord(row[0], row[1], bytes(row[2]))

    # --- erasures ------------------------------------------------------------------------------

    def erasures(self, tag: bytes | None = None) -> list[ErasureRecord]:
        """The erasure leaves (of one tag, or all), in log order."""
        q = ("SELECT r.idx, CAST(r.tag AS BLOB), r.reason, e.logged_ms FROM erasures r JOIN entries e ON e.idx = r.idx"
             + (" WHERE r.tag = ?" if tag is not None else "") + " ORDER BY r.idx")
        rows = self.conn.execute(q, () if tag is None else (tag,)).fetchall()
        return [ErasureRecord(i, blob(t), r, ms) for i, t, r, ms in rows]

    def forget_artist(self, artist_id: str) -> int:
        """Deletes the tokens and feed keys of an artist that has no entries left to erase (an erasure
        batch deletes them itself, with the entries). Returns how many tokens there were."""
        def write() -> int:
            with immediate(self.conn) as c:
                c.execute(_DELETE_FEED_KEYS, (artist_id,))
                return _forget_tokens(c, [artist_id])

        deleted = int(self._guard(write))
        if deleted:
            self._stamp_tokens()
        return deleted

    def scrub(self) -> None:
        """After an erasure: deleted data off the disk. Freed pages and cells are already zeroed
        (secure_delete); a log that may have been written without it is first rebuilt (VACUUM). The WAL
        still holds the pages as they were: it is copied into the file and truncated to nothing, waiting
        for readers (a running server's) to move on. StorageError if they never do: run it again."""
        if self.get_meta("secure_delete") is None:
            self._guard(lambda: self.conn.execute("VACUUM"))
            self.set_meta("secure_delete", "since vacuum")
        for _ in range(SCRUB_TRIES):
            busy = self._guard(lambda: self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
            if not busy:
                return
            time.sleep(0.1)
        raise StorageError(f"the write-ahead log of {self.path.name} was kept busy by readers and still holds the "
                           "erased data; run the same `tlog erase` again to truncate it")
    # --- content bound to its artists ------------------------------------------------------------

    def bindings(self, content_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        """The artists each of `content_ids` is bound to; contents bound to none are left out."""
        found: dict[str, set[str]] = {}
        ids = list(content_ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            q = (f"SELECT b.content_id, a.artist_id FROM bindings b JOIN artists a ON a.id = b.artist "
                 f"WHERE b.content_id IN ({','.join('?' * len(chunk))})")
            for content_id, artist_id in self.conn.execute(q, chunk):
                found.setdefault(content_id, set()).add(artist_id)
        return {c: frozenset(a) for c, a in found.items()}

    def content_artists(self, content_id: str) -> list[tuple[str, int]]:
        q = ("SELECT a.artist_id, b.idx FROM bindings b JOIN artists a ON a.id = b.artist WHERE b.content_id = ? "
             "ORDER BY a.artist_id")
        return self.conn.execute(q, [content_id]).fetchall()

    def iter_bindings(self) -> Iterator[tuple[str, str, int]]:
        q = "SELECT b.content_id, a.artist_id, b.idx FROM bindings b JOIN artists a ON a.id = b.artist ORDER BY b.content_id, a.artist_id"
        yield from self.conn.execute(q)

    def content_events(self, end: int) -> Iterator[tuple[int, str, str, str | None]]:
        """(index, content id, artist id, change) of every use, refusal (change None) and binding leaf
        below `end`, in index order: what `bindings.BindingReplay` replays."""
        q = ("SELECT e.idx, e.content_id, a.artist_id, e.extra FROM entries e JOIN artists a ON a.id = e.artist "
             "WHERE e.content_id IS NOT NULL AND e.idx < ? ORDER BY e.idx")  # an erased entry has no content id
        for idx, content_id, artist_id, extra in self.conn.execute(q, (end,)):
            if extra is None:
                yield idx, content_id, artist_id, None
            else:
                yield idx, content_id, artist_id, binding_change(idx, extra, self.path.name)

    def content_uses(self, content_ids: Sequence[str], end: int) -> list[Entry]:
        """The use and refusal entries below `end` about any of `content_ids`, in index order."""
        out: list[Entry] = []
        ids = list(content_ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            q = (f"{ENTRY_SELECT} WHERE e.content_id IN ({','.join('?' * len(chunk))}) AND e.extra IS NULL "
                 "AND e.idx < ?")
            out += [self._entry(r) for r in self.conn.execute(q, [*chunk, end])]
        return sorted(out, key=lambda e: e.index)

    # --- statistics ----------------------------------------------------------------------------

    def stats(self, size: int | None = None, since_ms: int | None = None,
              until_ms: int | None = None) -> list[StatRow]:
        """The public figures of leaves [0, size) logged in [since_ms, until_ms) (rows.period_stats)."""
        c = self.conn
        own = not c.in_transaction
        if own:
            c.execute("BEGIN")  # one snapshot: the table and the entries must agree
        try:
            return period_stats(self.size(), size, since_ms, until_ms, logged_ms=self._logged_ms,
                                usage=self._usage, entries=self.entries)
        finally:
            if own:
                c.execute("COMMIT")

    def _usage(self, day_lo: str, day_hi: str) -> Iterable[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT day, type, purpose, phase, decision, leaves, uses FROM usage WHERE day >= ? AND day <= ?", (day_lo, day_hi))

    def _logged_ms(self, index: int) -> int:
        return int(self.conn.execute("SELECT logged_ms FROM entries WHERE idx = ?", (index,)).fetchone()[0])

    # --- notifications -------------------------------------------------------------------------

    def notify_state(self) -> tuple[int, set[int]] | None:
        """(done_before, policy leaves whose `policy.effective` event was delivered), or None before the
        notifier's first start."""
        row = self.conn.execute("SELECT done_before FROM notify_cursor WHERE id = 1").fetchone()
        if row is None:
            return None
        return row[0], {i for (i,) in self.conn.execute("SELECT policy_index FROM notify_effective")}

    def save_notify_state(self, done_before: int, effective: Collection[int]) -> None:
        def write() -> None:
            with immediate(self.conn) as c:
                c.execute("INSERT OR REPLACE INTO notify_cursor VALUES (1, ?)", (done_before,))
                c.executemany("INSERT OR IGNORE INTO notify_effective VALUES (?)", [(i,) for i in effective])

        self._guard(write)

    def entries_of(self, start: int, end: int, types: Sequence[str], decisions: Sequence[str]) -> list[Entry]:
        """The entries in [start, end) of one of `types` or decided one of `decisions`, in index order. It
        reads the rows of that range of the primary key (no index: the notifier that asks must add
        nothing to a batch's writes), so callers bound the range."""
        type_ids = [i for i in (self._names.id_of("type", t) for t in types) if i is not None]
        decision_ids = [i for i in (self._names.id_of("decision", d) for d in decisions) if i is not None]
        q = (f"{ENTRY_SELECT} WHERE e.idx >= ? AND e.idx < ? AND (e.type IN ({','.join('?' * len(type_ids))}) "
             f"OR e.decision IN ({','.join('?' * len(decision_ids))})) ORDER BY e.idx")
        return [self._entry(row) for row in self.conn.execute(q, (start, end, *type_ids, *decision_ids))]

    # --- tokens --------------------------------------------------------------------------------

    def add_token(self, role: str, subject: str | None, digest: bytes, now_ms: int, *,
                  rights: frozenset[str] = frozenset(), expires_ms: int | None = None) -> int:
        cur = self._guard(
            lambda: self.conn.execute(
                "INSERT INTO tokens (role, subject, digest, created_ms, rights, expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (role, subject, digest, now_ms, " ".join(sorted(rights)), expires_ms),
            )
        )
        return int(cur.lastrowid)

    def tokens_version(self) -> tuple[int, int] | None:
        """Changes whenever a token is revoked (by any process), read without a query: a read of the
        database after the writer's latest commit re-reads its pages, so a server that looked every
        token up would pay that on every request. None until a token is first revoked."""
        try:
            st = os.stat(self._tokens_stamp)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    @property
    def _tokens_stamp(self) -> str:
        return f"{self.path}.tokens-changed"

    def _stamp_tokens(self) -> None:
        """After a revocation is committed. A new file each time: its inode changes even within one tick
        of a coarse clock. If it cannot be written, a running server still drops the token from its
        cache within TOKEN_CACHE_SECONDS (tokens.py)."""
        tmp = f"{self._tokens_stamp}.{os.getpid()}"
        with contextlib.suppress(OSError):
            with open(tmp, "w") as f:
                f.write("a token was revoked; tlog serve forgets the tokens it knew\n")
            os.replace(tmp, self._tokens_stamp)

    def token_by_digest(self, digest: bytes) -> TokenRecord | None:
        row = self.conn.execute(f"{_TOKEN_SELECT} WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else token(row)

    def tokens(self) -> list[TokenRecord]:
        return [token(r) for r in self.conn.execute(f"{_TOKEN_SELECT} ORDER BY id")]

    def revoke_token(self, token_id: int, now_ms: int) -> bool:
        cur = self._guard(
            lambda: self.conn.execute(
                "UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL", (now_ms, token_id)
            )
        )
        self._stamp_tokens()
        return cur.rowcount == 1

    # --- feed keys ----------------------------------------------------------------------------

    def add_feed_key(self, artist_id: str, digest: bytes, now_ms: int) -> int:
        cur = self._guard(lambda: self.conn.execute(
            "INSERT INTO feed_keys (artist_id, digest, created_ms) VALUES (?, ?, ?)", (artist_id, digest, now_ms)))
        return int(cur.lastrowid)

    def feed_key(self, digest: bytes) -> tuple[int, str] | None:
        """(id, artist id) of the unrevoked feed key with this SHA-256, or None. Read from the database
        every time, so that a revocation holds from the next request on."""
        row = self.conn.execute("SELECT id, artist_id, digest FROM feed_keys WHERE digest = ? AND revoked_ms IS NULL",
                                (digest,)).fetchone()
        return None if row is None or not hmac.compare_digest(bytes(row[2]), digest) else (row[0], row[1])

    def revoke_feed_key(self, artist_id: str, key_id: int, now_ms: int) -> bool:
        """Revokes the artist's key `key_id`; False if it has no such unrevoked key."""
        cur = self._guard(lambda: self.conn.execute(
            "UPDATE feed_keys SET revoked_ms = ? WHERE id = ? AND artist_id = ? AND revoked_ms IS NULL",
            (now_ms, key_id, artist_id)))
        return cur.rowcount == 1

    # --- the one write path --------------------------------------------------------------------

    def write_batch(self, batch: Batch) -> None:
        c = self.conn
        if not self._checkpointer_tried:
            self._start_checkpointer()
        name_id = NewNames(self._names, 0)
        new_artists: dict[str, int] = {}
        try:
            with immediate(self.conn):  # BEGIN IMMEDIATE … COMMIT, rolled back on any failure
                size = self.size()
                if size != batch.start:
                    raise StorageError(
                        f"log is at size {size} but the batch starts at {batch.start}: another writer?",
                        code=STALE_STATE,
                    )
                if batch.prev is not None and batch.prev != (self.leaf_hashes(size - 1, size)[0] if size else bytes(32)):
                    raise StorageError(
                        f"the batch at {batch.start} extends a leaf {size - 1} that is not the stored one: another writer?",
                        code=STALE_STATE,
                    )
                name_id.top = c.execute("SELECT coalesce(max(id), 0) FROM names").fetchone()[0]

                self._write_artists(batch, new_artists)
                profiles: dict[tuple[Any, ...], tuple[Any, ...]] = {}
                leaves = [h for level, _, h in batch.nodes if level == 0]
                if len(leaves) != len(batch.entries):
                    raise StorageError(f"the batch at {batch.start} has {len(batch.entries)} entries but {len(leaves)} leaf hashes")
                rows = [encode_entry(e, h, name_id, new_artists, profiles) for e, h in zip(batch.entries, leaves)]
                c.executemany(f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES ({','.join('?' * 22)})", rows)
                c.executemany(
                    "INSERT INTO nodes (id, hash) VALUES (?, ?)",
                    [(node_id(level, n), h) for level, n, h in batch.nodes if level],
                )
                c.executemany("INSERT INTO names (id, kind, value) VALUES (?, ?, ?)", name_id.rows())
                _write_bindings(c, batch.bindings, new_artists)
                c.executemany(
                    "INSERT INTO policies (policy_id, idx, document) VALUES (?, ?, ?)",
                    [(p.policy_id, p.index, p.document) for p in batch.policies],
                )
                self._write_erasures(batch)
                c.executemany(USAGE_UPSERT, stat_rows(batch.entries))
                if batch.checkpoint is not None:
                    c.execute(
                        "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
                        (batch.end, batch.checkpoint, batch.entries[-1].logged_ms if batch.entries else 0),
                    )
        except sqlite3.Error as exc:
            self._artist_ids.clear()
            self._names.reload()
            raise StorageError(f"could not write batch at {batch.start}: {exc}") from exc
        except BaseException:
            self._artist_ids.clear()
            self._names.reload()
            raise
        self._names.commit(name_id)
        self._artist_ids.update(new_artists)
        for gone in batch.erasures:
            self._artist_ids.pop(gone.artist_id, None)
        if batch.erasures:
            self._stamp_tokens()  # a running server forgets the erased artist's tokens at once
        if self._checkpointer is not None:
            self._checkpointer.poke()

    def _start_checkpointer(self) -> None:
        self._checkpointer_tried = True
        try:
            self._checkpointer = _Checkpointer(self.path)
        except sqlite3.Error as exc:  # this connection keeps checkpointing at COMMIT, as SQLite does by default
            log.warning("cannot open %s for background checkpoints: %s", self.path, exc)
            return
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")

    def _write_erasures(self, batch: Batch) -> None:
        """Each erasure of the batch (SPEC §2.2): its entries' private columns, the artist's id, proof,
        preferences, tokens and feed keys, all deleted in the batch's transaction, beside the erasure leaf's reason.
        Run for every batch (most have none), so that the crash matrix reaches every statement."""
        c = self.conn
        rows = [(erased_details(x.index, public), i, x.artist_id) for x in batch.erasures for i, public in x.entries]
        if c.executemany(_ERASE_ENTRY, rows).rowcount != len(rows) and rows:
            raise StorageError(f"the erasure in the batch at {batch.start} names entries that are not its artist's")
        # The contents bound to it are released without a leaf: its binding leaves' details go too.
        c.executemany(_DELETE_BINDINGS, [(x.artist_id,) for x in batch.erasures])
        c.executemany("UPDATE artists SET artist_id = NULL, proof = NULL, preferences = NULL WHERE artist_id = ?",
                      [(x.artist_id,) for x in batch.erasures])
        _forget_tokens(c, [x.artist_id for x in batch.erasures])
        c.executemany(_DELETE_FEED_KEYS, [(x.artist_id,) for x in batch.erasures])
        c.executemany("INSERT INTO erasures (idx, tag, reason) VALUES (?, ?, ?)",
                      [(x.index, x.tag, x.reason) for x in batch.erasures])

    def _write_artists(self, batch: Batch, ids: dict[str, int]) -> None:
        """Upserts the batch's artist heads with a handful of statements, whatever their number: ids of
        known artists come from the cache or one query per 500, new artists get the next free ids.
        Preferences are written only for the artists the batch has a preference leaf for."""
        c = self.conn
        artists = batch.artists
        for a in artists:
            i = self._artist_ids.get(a.artist_id)
            if i is not None:
                ids[a.artist_id] = i
        unknown = [a.artist_id for a in artists if a.artist_id not in ids]
        for k in range(0, len(unknown), 500):
            chunk = unknown[k : k + 500]
            q = f"SELECT artist_id, id FROM artists WHERE artist_id IN ({','.join('?' * len(chunk))})"
            ids.update(c.execute(q, chunk).fetchall())
        returning = self._erased_rows([a.tag for a in artists if a.artist_id not in ids])
        next_id = c.execute("SELECT coalesce(max(id), 0) FROM artists").fetchone()[0]
        rows = plan_artists(batch, ids, returning, next_id)
        c.executemany("INSERT INTO artists (id, artist_id, tag, proof, preferences) VALUES (?, ?, ?, ?, ?)", rows.inserts)
        c.executemany("UPDATE artists SET artist_id = ?, proof = ?, preferences = ? WHERE id = ?", rows.restores)
        c.executemany("UPDATE artists SET preferences = ? WHERE id = ?", rows.prefs)
        c.executemany(
            "INSERT INTO heads (id, aseq, head) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET aseq = excluded.aseq, head = excluded.head",
            rows.heads,
        )

    def _erased_rows(self, tags: list[bytes]) -> dict[bytes, int]:
        """The row ids of erased artists among `tags` (artists the batch did not find by id)."""
        found: dict[bytes, int] = {}
        for k in range(0, len(tags), 500):
            chunk = tags[k : k + 500]
            q = f"SELECT CAST(tag AS BLOB), id FROM artists WHERE artist_id IS NULL AND tag IN ({','.join('?' * len(chunk))})"
            found.update((blob(t), i) for t, i in self.conn.execute(q, chunk))
        return found

    def _guard(self, fn: Any) -> Any:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc


class _Checkpointer:
    """Checkpoints the WAL (PASSIVE: never blocks the writer or readers) from a daemon thread with its own
    connection, at most every CHECKPOINT_INTERVAL after a commit pokes it. A failure (disk full, say) is
    logged and retried at the next poke; the WAL keeps every committed frame meanwhile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tlog-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        conn = self._conn
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:  # busy: another writer's checkpointer
                        log.warning("checkpoint of %s failed (retried after the next commit): %s", self.path, exc)
                self._stop.wait(CHECKPOINT_INTERVAL)  # at most one checkpoint per interval; close() cuts it short
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()


def _forget_tokens(c: sqlite3.Connection, artist_ids: Sequence[str]) -> int:
    """Takes the erased `artist_ids` out of every artist token (rows.narrow_tokens); returns how many changed."""
    found = [row for artist_id in artist_ids for row in c.execute(_ARTIST_TOKENS, (artist_id,)).fetchall()]
    narrowed, deleted = narrow_tokens(found, artist_ids)
    c.executemany("UPDATE tokens SET subject = ? WHERE id = ?", narrowed)
    c.executemany("DELETE FROM tokens WHERE id = ?", deleted)
    return len(narrowed) + len(deleted)


def _write_bindings(c: sqlite3.Connection, changes: Sequence[BindingChange], artist_ids: dict[str, int]) -> None:
    """A batch binds (first uses, binding leaves) or releases (binding leaves), never both for one pair."""
    try:
        rows = [(b.content_id, artist_ids[b.artist_id], b.index, b.bound) for b in changes]
    except KeyError as exc:
        raise StorageError(f"a binding names artist {exc} with no state in the batch") from None
    c.executemany("INSERT OR REPLACE INTO bindings (content_id, artist, idx) VALUES (?, ?, ?)",
                  [r[:3] for r in rows if r[3]])
    c.executemany("DELETE FROM bindings WHERE content_id = ? AND artist = ?", [r[:2] for r in rows if not r[3]])
