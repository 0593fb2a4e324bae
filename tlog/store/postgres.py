"""The PostgreSQL backend (SPEC §8): the same log as sqlite.py, in a database that many front ends share.

Opened with a `postgresql://` URL (`PostgresStore(dsn)`); the schema and its migrations are in
postgres_schema.py, applied when a store is opened for writing. Rows are those of the SQLite backend
(rows.py is the codec both use), so the two answer every read alike.

Crash-safety and single-writer invariants (kept here, where the writes happen):
- A batch is one transaction, committed with PostgreSQL's `synchronous_commit` as the server sets it (on
  by default, and by pglocal.py): details, nodes, heads, policies, figures, the batch's checkpoint and
  the new log head become durable together or not at all.
- The write guard: every batch's transaction first locks the one-row `log_head` (`SELECT … FOR UPDATE`)
  and refuses, with StorageError(code=STALE_STATE) and nothing written, a batch whose `start` is not the
  stored size or whose `prev` is not the stored last leaf hash. Two writers on one database therefore
  take turns on the row, and the second finds the log moved: the log never forks, whatever any process
  believes about who sequences.
- The fence: a store made with `fence=f` calls `f(cursor)` inside that same transaction, after the head
  check and before any write, and in the other writes only the sequencer makes (`set_published`,
  `replace_checkpoint_notes`, `save_notify_state`). If `f` raises, the transaction rolls back and the
  exception propagates unchanged (a psycopg error inside it becomes a StorageError, like any database
  failure). The cluster's leader election passes a fence that checks its lease row, so a deposed
  sequencer's commit is refused by PostgreSQL itself, not by the deposed process's opinion of itself.
  Token and feed-key writes are not fenced: any front end may make them.
- Caches hold only what never changes once committed (tree nodes, interned names, an artist's row id),
  are extended only after COMMIT returns, and a batch that finds the head not where this store's last
  commit left it (another writer appended meanwhile) first drops the name and artist caches.

Many processes read at once; nothing read is cached in a way that goes stale:
- `tokens_version` reads a counter row that every token change increments in its own transaction: one
  indexed read of one row (75 µs on loopback, scripts/bench-pg-driver), which the server does at most
  once per event-loop iteration (server/state.py). A LISTEN/NOTIFY push would save the read but arrive
  after the revoking command returned, so a request sent right after could still pass.
- Long reads (`entries`, `iter_nodes`, …) are fetched in chunks of FETCH_ROWS by key, so memory stays
  bounded and the connection stays free for other queries between chunks, as SQLite's stepping is.

Driver: psycopg 3, synchronous. The store interface is synchronous and used from threads and from the
sequencer's child writer process; psycopg releases the GIL while it waits on the network, and has COPY,
pipelined `executemany` and server-side prepared statements. asyncpg is async only: every call would need
an event loop of its own per thread. Measured (scripts/bench-pg-driver, 30 alternating rounds, 2 shared
cores): a 1000-row batch of entries with its 1000 nodes, committed, by COPY 18.2 ms with psycopg and 18.9
with asyncpg (executemany: 52.0 and 30.1, so batches go in by COPY, and by one `unnest` statement where
they upsert); 1000 nodes by id 3.3 ms and 2.8 ms; a one-row read 75 µs and 114 µs. Where the store spends
its time the two are alike, and psycopg fits it as it is.

A store is one connection with its caches; use one per thread (`sharing_nodes` for another thread).
A connection PostgreSQL dropped (a restart, a failover) is replaced at the next call; the call that saw
it fail raised StorageError (503 to a client, which retries).
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ..errors import Conflict, StorageError
from ..stats import StatRow
from . import postgres_schema as schema
from .base import (STALE_STATE, ArtistState, Batch, BindingChange, Entry, ErasureRecord, PolicyRecord, TokenRecord,
                   UseFilter)
from .rows import (ENTRY_COLUMNS, NODE_MASK, Names, NewNames, binding_change, decode_entry, encode_entry,
                   erased_details, narrow_tokens, node_id, node_span, period_stats, plan_artists, preferences, read_cached,
                   remember, stat_rows, token)

Fence = Callable[[psycopg.Cursor[Any]], None]
NODE_CACHE = 1 << 16  # tree nodes kept in memory per store, as sqlite.NODE_CACHE
FETCH_ROWS = 5000  # rows per query of a long read
# A store's connections: connect, and have sent data acknowledged, within this (link_options). Longer than
# the cluster's own links (the lease), since a bulk COPY (a batch, tlog migrate) may wait on a busy disk.
LINK_TIMEOUT_S = 20
_ZERO = bytes(32)

_ENTRY_SELECT = (
    "SELECT e.idx, e.type, e.logged_ms, a.artist_id, a.tag, e.aseq, e.aprev, e.service, e.event_id, e.content_id, "
    "e.purpose, e.phase, e.system, e.occurred_at, e.window_end, e.invocations, e.detail, e.basis, e.decision, "
    "e.policy, e.nonce, e.extra FROM entries e LEFT JOIN artists a ON a.id = e.artist"
)
_ARTIST_STATE = "SELECT a.artist_id, a.tag, h.aseq, h.head, a.preferences, a.proof FROM artists a JOIN heads h ON h.id = a.id"
_ARTIST_ROW = "SELECT id FROM artists WHERE artist_id = %s"
_ERASED_ROW = "SELECT id FROM artists WHERE artist_id IS NULL AND tag = %s"  # an erased artist's, by its tag
_ERASE_ENTRY = (
    "UPDATE entries SET service = NULL, event_id = NULL, content_id = NULL, purpose = NULL, phase = NULL, "
    "system = NULL, occurred_at = NULL, window_end = NULL, invocations = NULL, detail = NULL, basis = NULL, "
    "decision = NULL, policy = NULL, nonce = NULL, extra = %s "
    "WHERE idx = %s AND artist = (SELECT id FROM artists WHERE artist_id = %s)"
)
# The artist tokens that cover an id: an artist token's subject is its artist ids, joined by spaces.
_ARTIST_TOKENS = ("SELECT id, subject FROM tokens WHERE role = 'artist' "
                  "AND position(' ' || %s || ' ' IN ' ' || subject || ' ') > 0")
_TOKEN_SELECT = "SELECT id, role, subject, created_ms, revoked_ms, digest, rights, expires_ms FROM tokens"
_BUMP_TOKENS = "UPDATE tokens_version SET version = version + 1"
_USAGE_UPSERT = ("INSERT INTO usage VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (day, type, purpose, phase, decision) "
                 "DO UPDATE SET leaves = usage.leaves + excluded.leaves, uses = usage.uses + excluded.uses")


def shown(dsn: str) -> str:
    """The database of `dsn` for messages: user, host, port and name, never a password."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database (its URL does not parse)"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"


def link_options(timeout_s: float, *, application: str) -> dict[str, Any]:
    """libpq options for every connection tlog opens to PostgreSQL: connect within `timeout_s` (libpq counts
    whole seconds, at least 2), give up on a connection whose sent data goes unacknowledged for
    `timeout_s`, and probe idle ones every second. A database host that vanishes without closing its
    connections (power lost, a route gone) then fails the call waiting on it within seconds, a
    StorageError (503), instead of after TCP's minutes or hours."""
    ms = int(timeout_s * 1000)
    return {"connect_timeout": max(2, round(timeout_s)), "tcp_user_timeout": ms, "keepalives": 1,
            "keepalives_idle": 1, "keepalives_interval": 1, "keepalives_count": 2, "application_name": application}


def _only(c: psycopg.Connection[Any] | psycopg.Cursor[Any], q: str, args: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The row of a statement that always returns one: an aggregate, the singleton head, RETURNING."""
    row = c.execute(q, args).fetchone()
    if row is None:
        raise StorageError(f"the database returned no row where one is always expected: {q}")
    return row


class PostgresStore:
    """A tlog log in a PostgreSQL database. One instance = one connection; use one per thread."""

    def __init__(self, dsn: str, *, create: bool = False, readonly: bool = False, fence: Fence | None = None) -> None:
        self.dsn = dsn
        self.where = shown(dsn)
        self.fence = fence
        self.readonly = readonly
        self.migrated: list[str] = []  # what each migration this open applied did (postgres_schema.MIGRATIONS)
        self.conn = self._connect()
        self._names = Names(lambda: self._all("SELECT id, kind, value FROM names"))
        self._artist_ids: dict[str, int] = {}
        self._node_cache: dict[int, bytes] = {}
        self._head: tuple[int, bytes] | None = None  # (size, last leaf) this store's last batch left
        try:
            self._open_schema(create)
        except BaseException:
            self.conn.close()
            raise

    # --- setup ---------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        # The URL's own options (a cluster writer's idle timeout, say) stay: an `options` argument replaces them.
        # So do its link settings: only those it leaves out take link_options' values.
        info = conninfo_to_dict(self.dsn)
        options = info.get("options") or ""
        if self.readonly:
            options = f"{options} -c default_transaction_read_only=on".strip()
        link = {k: v for k, v in link_options(LINK_TIMEOUT_S, application="tlog").items() if k not in info}
        try:
            return psycopg.connect(self.dsn, autocommit=True, options=options, **link)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to {self.where}: {_reason(exc)}") from exc

    def _open_schema(self, create: bool) -> None:
        with self._db() as c:
            version = schema.applied(c)
            if create:
                if version is not None or _only(
                        c, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")[0]:
                    raise Conflict(f"{self.where} is not empty; refusing to overwrite it (a new log needs an empty "
                                   "database: CREATE DATABASE …)")
            elif version is None:
                raise StorageError(f"no tlog log in {self.where} (run `tlog init --db …` first)")
            if version is not None and version > schema.SCHEMA_VERSION:
                raise StorageError(f"{self.where} has schema {version}, newer than this tlog's "
                                   f"{schema.SCHEMA_VERSION}: upgrade tlog")
            if not self.readonly:
                done = schema.migrate(c, int(time.time() * 1000))
                self.migrated = [m.what for m in schema.MIGRATIONS[len(schema.MIGRATIONS) - done:]]
            elif version != schema.SCHEMA_VERSION:
                raise StorageError(f"{self.where} has schema {version}; run `tlog upgrade --db …` once (any command "
                                   f"that writes does it too) to migrate it to {schema.SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _db(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection (a new one if PostgreSQL dropped the last); psycopg errors become StorageErrors."""
        if self.conn.closed or self.conn.broken:
            self.conn = self._connect()
            self._head = None
        try:
            yield self.conn
        except psycopg.Error as exc:
            raise StorageError(f"{self.where}: {_reason(exc)}") from exc

    # Results come in PostgreSQL's binary format: hashes and notes as bytes, without the text format's hex
    # (1000 tree nodes by id: 2.8 ms against 3.7 ms, scripts/bench-pg-driver).
    def _all(self, q: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._db() as c:
            return c.execute(q, args, binary=True).fetchall()

    def _one(self, q: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._db() as c:
            return c.execute(q, args, binary=True).fetchone()

    @contextlib.contextmanager
    def _write(self, fenced: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        """One write transaction, rolled back on any failure; `fenced`: the fence is asked first."""
        with self._db() as c, c.transaction(), c.cursor() as cur:
            if fenced and self.fence is not None:
                self.fence(cur)
            yield cur

    def _chunks(self, q: str, start: int, end: int, args: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of `q` (which selects the key first and takes the bounds and then FETCH_ROWS last,
        ordered by key) with keys in [start, end), FETCH_ROWS at a time."""
        while start < end:
            rows = self._all(q, (*args, start, end, FETCH_ROWS))
            yield from rows
            if len(rows) < FETCH_ROWS:
                return
            start = rows[-1][0] + 1

    def close(self) -> None:
        self.conn.close()

    # --- identity ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as cur:
            cur.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, value))

    # --- the tree ------------------------------------------------------------------------------

    def size(self) -> int:
        row = self._one("SELECT size FROM log_head")
        return 0 if row is None else int(row[0])

    def read_nodes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]:
        return read_cached(coords, self._node_cache, NODE_CACHE, self._fetch_nodes, self.where)

    def _fetch_nodes(self, leaves: list[int], inner: list[int]) -> dict[int, bytes]:
        """Leaf hashes and inner nodes in one round trip (a proof asks for both)."""
        return dict(self._all("SELECT idx, hash FROM entries WHERE idx = ANY(%s) "
                              "UNION ALL SELECT id, hash FROM nodes WHERE id = ANY(%s)", (leaves, inner)))

    def sharing_nodes(self) -> "PostgresStore":
        """Another connection to the same log (for another thread) that shares this one's node cache:
        stored nodes never change, and the cache is only used by single dict operations."""
        other = PostgresStore(self.dsn, readonly=self.readonly)
        other._node_cache = self._node_cache
        return other

    def remember_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Adds nodes another connection has committed (the server's writer) to this one's node cache."""
        remember(self._node_cache, NODE_CACHE, nodes)

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        return [h for _, h in self.iter_nodes(0, start, end)]

    def iter_nodes(self, level: int, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
        table, key, lo, hi = node_span(level, start, end)
        q = f"SELECT {key}, hash FROM {table} WHERE {key} >= %s AND {key} < %s ORDER BY {key} LIMIT %s"
        for i, h in self._chunks(q, lo, hi):
            yield i & NODE_MASK, h

    # --- checkpoints ---------------------------------------------------------------------------

    def latest_checkpoint(self) -> bytes | None:
        row = self._one("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1")
        return None if row is None else row[0]

    def checkpoint_at(self, size: int) -> bytes | None:
        row = self._one("SELECT note FROM checkpoints WHERE size = %s", (size,))
        return None if row is None else row[0]

    def checkpoint_created_ms(self, size: int) -> int:
        row = self._one("SELECT created_ms FROM checkpoints WHERE size = %s", (size,))
        return 0 if row is None or row[0] is None else int(row[0])

    def checkpoint_sizes(self) -> list[int]:
        return [r[0] for r in self._all("SELECT size FROM checkpoints ORDER BY size")]

    def iter_checkpoints(self) -> Iterator[tuple[int, bytes]]:
        q = "SELECT size, note FROM checkpoints WHERE size >= %s AND size < %s ORDER BY size LIMIT %s"
        for size, note in self._chunks(q, 0, 1 << 62):
            yield size, note

    def replace_checkpoint_notes(self, notes: Sequence[tuple[int, bytes]]) -> None:
        """Swaps the signed notes of stored checkpoints in one transaction (a key rotation adds the new key's
        signature to every checkpoint). The caller keeps each note's text; sizes never stored are refused."""
        with self._write(fenced=True) as cur:
            for size, note in notes:
                if cur.execute("UPDATE checkpoints SET note = %s WHERE size = %s", (note, size)).rowcount != 1:
                    raise StorageError(f"no stored checkpoint at size {size}")

    def set_published(self, size: int, note: bytes, now_ms: int = 0) -> None:
        """Publishes a cosigned checkpoint. Never rolls back: a size below the latest published one is
        refused, inside the transaction that writes (which locks the published rows), so two publishers
        cannot undo each other."""
        with self._write(fenced=True) as cur:
            cur.execute("LOCK TABLE published IN SHARE ROW EXCLUSIVE MODE")
            latest = _only(cur, "SELECT max(size) FROM published")[0]
            if latest is not None and size < latest:
                raise StorageError(f"refusing to publish size {size}: size {latest} is already published")
            cur.execute("INSERT INTO published VALUES (%s, %s, %s) ON CONFLICT (size) DO UPDATE "
                        "SET note = excluded.note, created_ms = excluded.created_ms", (size, note, now_ms))

    def published_checkpoint(self) -> bytes | None:
        row = self._one("SELECT note FROM published ORDER BY size DESC LIMIT 1")
        return None if row is None else row[0]

    # --- entries -------------------------------------------------------------------------------

    def _entry(self, row: Sequence[Any]) -> Entry:
        return decode_entry(row, self._names, self.where)

    def entries(self, start: int, end: int) -> Iterator[Entry]:
        q = f"{_ENTRY_SELECT} WHERE e.idx >= %s AND e.idx < %s ORDER BY e.idx LIMIT %s"
        for row in self._chunks(q, start, end):
            yield self._entry(row)

    def entry(self, index: int) -> Entry | None:
        return next(self.entries(index, index + 1), None)

    def find_events(self, service: str, event_ids: Sequence[str]) -> dict[str, Entry]:
        sid = self._names.id_of("service", service)
        if sid is None or not event_ids:
            return {}
        rows = self._all(f"{_ENTRY_SELECT} WHERE e.service = %s AND e.event_id = ANY(%s)", (sid, list(event_ids)))
        found = [self._entry(row) for row in rows]
        return {e.details["event_id"]: e for e in found}

    def artist_state(self, artist_id: str) -> ArtistState | None:
        return self.artist_states([artist_id]).get(artist_id)

    def artist_states(self, artist_ids: Sequence[str]) -> dict[str, ArtistState]:
        rows = self._all(f"{_ARTIST_STATE} WHERE a.artist_id = ANY(%s)", (list(artist_ids),))
        return {a: ArtistState(a, t, s, h, preferences(a, p), pf) for a, t, s, h, p, pf in rows}

    def artists(self) -> list[ArtistState]:
        rows = self._all(f"{_ARTIST_STATE} WHERE a.artist_id IS NOT NULL ORDER BY a.id")
        return [ArtistState(a, t, s, h, preferences(a, p), pf) for a, t, s, h, p, pf in rows]

    def heads(self) -> dict[bytes, tuple[int, int]]:
        return {t: (s, h) for t, s, h in self._all("SELECT a.tag, h.aseq, h.head FROM artists a JOIN heads h ON h.id = a.id")}

    def artist_entries(self, artist_id: str, flt: UseFilter, limit: int) -> list[Entry]:
        return self._listing(_ARTIST_ROW, artist_id, flt, limit)

    def erased_artist(self, tag: bytes) -> ArtistState | None:
        row = self._one("SELECT h.aseq, h.head FROM artists a JOIN heads h ON h.id = a.id "
                        "WHERE a.artist_id IS NULL AND a.tag = %s", (tag,))
        return None if row is None else ArtistState("", tag, row[0], row[1], erased=True)

    def chain_entries(self, artist: ArtistState, flt: UseFilter, limit: int) -> list[Entry]:
        """`artist_entries` of an artist state: by its id, or for an erased one by its tag."""
        if not artist.erased:
            return self.artist_entries(artist.artist_id, flt, limit)
        return self._listing(_ERASED_ROW, artist.tag, flt, limit)

    def _listing(self, row: str, key: Any, flt: UseFilter, limit: int) -> list[Entry]:
        """The entries of the artist whose row `row` selects by `key`, filtered, from the cursor on: one
        range of the (artist, idx) index, in one query (postgres_schema: why not epochs here)."""
        where = [f"e.artist = ({row})", "e.idx > %s"]
        args: list[Any] = [key, flt.after]
        for column, value in (("purpose", flt.purpose), ("phase", flt.phase), ("decision", flt.decision)):
            if value is not None:
                i = self._names.id_of(column, value)
                if i is None:
                    return []
                where.append(f"e.{column} = %s")
                args.append(i)
        for clause, bound in (("e.content_id = %s", flt.content_id), ("e.logged_ms >= %s", flt.since_ms),
                              ("e.logged_ms < %s", flt.until_ms)):
            if bound is not None:
                where.append(clause)
                args.append(bound)
        q = f"{_ENTRY_SELECT} WHERE {' AND '.join(where)} ORDER BY e.idx LIMIT %s"
        return [self._entry(r) for r in self._all(q, (*args, limit))]

    def artist_latest(self, artist_id: str, before: int, limit: int) -> list[Entry]:
        """The artist's `limit` latest entries below index `before`, newest first: the same index range,
        read backwards."""
        q = f"{_ENTRY_SELECT} WHERE e.artist = ({_ARTIST_ROW}) AND e.idx < %s ORDER BY e.idx DESC LIMIT %s"
        return [self._entry(r) for r in self._all(q, (artist_id, before, limit))]

    # --- policies ------------------------------------------------------------------------------

    def policies(self) -> list[PolicyRecord]:
        return [PolicyRecord(*r) for r in self._all("SELECT policy_id, idx, document FROM policies ORDER BY idx")]

    def policy(self, policy_id: str) -> PolicyRecord | None:
        row = self._one("SELECT policy_id, idx, document FROM policies WHERE policy_id = %s", (policy_id,))
        return None if row is None else PolicyRecord(*row)

    # --- erasures ------------------------------------------------------------------------------

    def erasures(self, tag: bytes | None = None) -> list[ErasureRecord]:
        q = ("SELECT r.idx, r.tag, r.reason, e.logged_ms FROM erasures r JOIN entries e ON e.idx = r.idx"
             + (" WHERE r.tag = %s" if tag is not None else "") + " ORDER BY r.idx")
        return [ErasureRecord(*r) for r in self._all(q, () if tag is None else (tag,))]

    def forget_artist(self, artist_id: str) -> int:
        """Deletes the tokens and feed keys of an artist that has no entries left to erase (an erasure
        batch deletes them itself, with the entries). Returns how many tokens there were."""
        with self._write() as cur:
            cur.execute("DELETE FROM feed_keys WHERE artist_id = %s", (artist_id,))
            return _forget_tokens(cur, [artist_id])

    def scrub(self) -> None:
        """After an erasure: VACUUM of the tables an erasure changes, so that the old row versions holding
        the erased data are removed from their pages and indexes. What PostgreSQL wrote before that (its
        WAL until recycled, a standby's, archived WAL and base backups) is out of tlog's reach: the
        operator's retention of those bounds how long erased data survives (README, "Many machines")."""
        with self._db() as c:
            for table in ("entries", "artists", "bindings", "tokens", "feed_keys"):
                c.execute(sql.SQL("VACUUM {}").format(sql.Identifier(table)))

    # --- content bound to its artists ------------------------------------------------------------

    def bindings(self, content_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        """The artists each of `content_ids` is bound to; contents bound to none are left out."""
        found: dict[str, set[str]] = {}
        q = "SELECT b.content_id, a.artist_id FROM bindings b JOIN artists a ON a.id = b.artist WHERE b.content_id = ANY(%s)"
        for content_id, artist_id in self._all(q, (list(content_ids),)):
            found.setdefault(content_id, set()).add(artist_id)
        return {c: frozenset(a) for c, a in found.items()}

    def content_artists(self, content_id: str) -> list[tuple[str, int]]:
        q = ("SELECT a.artist_id, b.idx FROM bindings b JOIN artists a ON a.id = b.artist WHERE b.content_id = %s "
             "ORDER BY a.artist_id COLLATE \"C\"")
        return [(a, i) for a, i in self._all(q, (content_id,))]

    def iter_bindings(self) -> Iterator[tuple[str, str, int]]:
        q = ("SELECT b.content_id, a.artist_id, b.idx FROM bindings b JOIN artists a ON a.id = b.artist "
             "ORDER BY b.content_id COLLATE \"C\", a.artist_id COLLATE \"C\"")
        yield from self._all(q)

    def content_events(self, end: int) -> Iterator[tuple[int, str, str, str | None]]:
        """(index, content id, artist id, change) of every use, refusal (change None) and binding leaf
        below `end`, in index order: what `bindings.BindingReplay` replays."""
        q = ("SELECT e.idx, e.content_id, a.artist_id, e.extra FROM entries e JOIN artists a ON a.id = e.artist "
             "WHERE e.content_id IS NOT NULL AND e.idx >= %s AND e.idx < %s ORDER BY e.idx LIMIT %s")
        for idx, content_id, artist_id, extra in self._chunks(q, 0, end):
            yield idx, content_id, artist_id, None if extra is None else binding_change(idx, extra, self.where)

    def content_uses(self, content_ids: Sequence[str], end: int) -> list[Entry]:
        """The use and refusal entries below `end` about any of `content_ids`, in index order."""
        q = f"{_ENTRY_SELECT} WHERE e.content_id = ANY(%s) AND e.extra IS NULL AND e.idx < %s ORDER BY e.idx"
        return [self._entry(r) for r in self._all(q, (list(content_ids), end))]

    # --- statistics ----------------------------------------------------------------------------

    def stats(self, size: int | None = None, since_ms: int | None = None,
              until_ms: int | None = None) -> list[StatRow]:
        """The public figures of leaves [0, size) logged in [since_ms, until_ms) (rows.period_stats), read
        in one snapshot: the usage table and the entries must agree."""
        with self._db() as c, c.transaction():
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return period_stats(self.size(), size, since_ms, until_ms, logged_ms=self._logged_ms, usage=self._usage,
                                entries=self.entries)

    def _usage(self, day_lo: str, day_hi: str) -> list[tuple[Any, ...]]:
        return self._all("SELECT day, type, purpose, phase, decision, leaves, uses FROM usage "
                         "WHERE day >= %s AND day <= %s", (day_lo, day_hi))

    def _logged_ms(self, index: int) -> int:
        return int(self._one("SELECT logged_ms FROM entries WHERE idx = %s", (index,))[0])  # type: ignore[index]

    # --- notifications -------------------------------------------------------------------------

    def notify_state(self) -> tuple[int, set[int]] | None:
        with self._db() as c, c.transaction():
            row = c.execute("SELECT done_before FROM notify_cursor WHERE id = 1").fetchone()
            if row is None:
                return None
            return row[0], {i for (i,) in c.execute("SELECT policy_index FROM notify_effective")}

    def save_notify_state(self, done_before: int, effective: Collection[int]) -> None:
        with self._write(fenced=True) as cur:
            cur.execute("INSERT INTO notify_cursor VALUES (1, %s) ON CONFLICT (id) DO UPDATE "
                        "SET done_before = excluded.done_before", (done_before,))
            cur.executemany("INSERT INTO notify_effective VALUES (%s) ON CONFLICT DO NOTHING", [(i,) for i in effective])

    def entries_of(self, start: int, end: int, types: Sequence[str], decisions: Sequence[str]) -> list[Entry]:
        """The entries in [start, end) of one of `types` or decided one of `decisions`, in index order
        (callers bound the range: it reads that range of the primary key)."""
        type_ids = [i for i in (self._names.id_of("type", t) for t in types) if i is not None]
        decision_ids = [i for i in (self._names.id_of("decision", d) for d in decisions) if i is not None]
        q = (f"{_ENTRY_SELECT} WHERE e.idx >= %s AND e.idx < %s AND (e.type = ANY(%s) OR e.decision = ANY(%s)) "
             "ORDER BY e.idx")
        return [self._entry(row) for row in self._all(q, (start, end, type_ids, decision_ids))]

    # --- tokens --------------------------------------------------------------------------------

    def add_token(self, role: str, subject: str | None, digest: bytes, now_ms: int, *,
                  rights: frozenset[str] = frozenset(), expires_ms: int | None = None) -> int:
        with self._write() as cur:
            row = _only(cur, "INSERT INTO tokens (role, subject, digest, created_ms, rights, expires_ms) "
                        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                        (role, subject, digest, now_ms, " ".join(sorted(rights)), expires_ms))
            cur.execute(_BUMP_TOKENS)
        return int(row[0])

    def tokens_version(self) -> int:
        """Changes whenever a token is added, revoked or narrowed, by any front end or command: a counter
        row those changes increment in their own transaction (module docstring: why not a notification)."""
        return int(self._one("SELECT version FROM tokens_version")[0])  # type: ignore[index]

    def token_by_digest(self, digest: bytes) -> TokenRecord | None:
        row = self._one(f"{_TOKEN_SELECT} WHERE digest = %s", (digest,))
        return None if row is None else token(row)

    def tokens(self) -> list[TokenRecord]:
        return [token(r) for r in self._all(f"{_TOKEN_SELECT} ORDER BY id")]

    def revoke_token(self, token_id: int, now_ms: int) -> bool:
        with self._write() as cur:
            done = cur.execute("UPDATE tokens SET revoked_ms = %s WHERE id = %s AND revoked_ms IS NULL",
                               (now_ms, token_id)).rowcount == 1
            cur.execute(_BUMP_TOKENS)
        return done

    # --- feed keys ----------------------------------------------------------------------------

    def add_feed_key(self, artist_id: str, digest: bytes, now_ms: int) -> int:
        row = self._one("INSERT INTO feed_keys (artist_id, digest, created_ms) VALUES (%s, %s, %s) RETURNING id",
                        (artist_id, digest, now_ms))
        return int(row[0])  # type: ignore[index]

    def feed_key(self, digest: bytes) -> tuple[int, str] | None:
        """(id, artist id) of the unrevoked feed key with this SHA-256, or None; read every time, so that a
        revocation holds from the next request on."""
        row = self._one("SELECT id, artist_id, digest FROM feed_keys WHERE digest = %s AND revoked_ms IS NULL", (digest,))
        return None if row is None or not hmac.compare_digest(row[2], digest) else (row[0], row[1])

    def revoke_feed_key(self, artist_id: str, key_id: int, now_ms: int) -> bool:
        with self._write() as cur:
            return cur.execute("UPDATE feed_keys SET revoked_ms = %s WHERE id = %s AND artist_id = %s "
                               "AND revoked_ms IS NULL", (now_ms, key_id, artist_id)).rowcount == 1

    # --- the one write path --------------------------------------------------------------------

    def write_batch(self, batch: Batch) -> None:
        """Writes `batch` in one transaction behind the write guard and the fence (module docstring)."""
        leaves = [h for level, _, h in batch.nodes if level == 0]
        if len(leaves) != len(batch.entries):
            raise StorageError(f"the batch at {batch.start} has {len(batch.entries)} entries but {len(leaves)} leaf hashes")
        names = NewNames(self._names, 0)
        new_artists: dict[str, int] = {}
        try:
            with self._write() as cur:
                last = self._guard(cur, batch)
                if self.fence is not None:
                    self.fence(cur)
                names.top = _only(cur, "SELECT coalesce(max(id), 0) FROM names")[0]
                self._write_artists(cur, batch, new_artists)
                profiles: dict[tuple[Any, ...], tuple[Any, ...]] = {}
                rows = [encode_entry(e, h, names, new_artists, profiles) for e, h in zip(batch.entries, leaves)]
                _copy(cur, "entries", ENTRY_COLUMNS, rows)
                _copy(cur, "nodes", "id, hash", [(node_id(level, n), h) for level, n, h in batch.nodes if level])
                cur.executemany("INSERT INTO names (id, kind, value) VALUES (%s, %s, %s)", names.rows())
                _write_bindings(cur, batch.bindings, new_artists)
                cur.executemany("INSERT INTO policies (policy_id, idx, document) VALUES (%s, %s, %s)",
                                [(p.policy_id, p.index, p.document) for p in batch.policies])
                self._write_erasures(cur, batch)
                cur.executemany(_USAGE_UPSERT, stat_rows(batch.entries))
                if batch.checkpoint is not None:
                    cur.execute("INSERT INTO checkpoints VALUES (%s, %s, %s) ON CONFLICT (size) DO UPDATE "
                                "SET note = excluded.note, created_ms = excluded.created_ms",
                                (batch.end, batch.checkpoint, batch.entries[-1].logged_ms if batch.entries else 0))
                head = (batch.end, leaves[-1] if leaves else last)
                cur.execute("UPDATE log_head SET size = %s, last_leaf = %s", head)
        except BaseException:
            self._head = None  # the next batch reloads what another writer may have changed
            raise
        self._head = head
        self._names.commit(names)
        self._artist_ids.update(new_artists)
        for gone in batch.erasures:
            self._artist_ids.pop(gone.artist_id, None)

    def _guard(self, cur: psycopg.Cursor[Any], batch: Batch) -> bytes:
        """The write guard: locks the log head until the transaction ends and refuses a batch that does not
        extend it (STALE_STATE). Returns the stored last leaf hash. A head that this store's last batch
        did not leave means another writer appended: the caches are dropped first."""
        size, last = _only(cur, "SELECT size, last_leaf FROM log_head WHERE id = 1 FOR UPDATE")
        if size != batch.start:
            raise StorageError(f"log is at size {size} but the batch starts at {batch.start}: another writer?",
                               code=STALE_STATE)
        if batch.prev is not None and batch.prev != last:
            raise StorageError(f"the batch at {batch.start} extends a leaf {size - 1} that is not the stored one: "
                               "another writer?", code=STALE_STATE)
        if self._head != (size, last):
            self._artist_ids.clear()
            self._names.reload()
        return bytes(last)

    def _write_erasures(self, cur: psycopg.Cursor[Any], batch: Batch) -> None:
        """Each erasure of the batch (SPEC §2.2): its entries' private columns, the artist's id, proof,
        preferences, tokens and feed keys, all deleted in the batch's transaction, beside the erasure
        leaf's reason."""
        if not batch.erasures:
            return
        rows = [(erased_details(x.index, public), i, x.artist_id) for x in batch.erasures for i, public in x.entries]
        cur.executemany(_ERASE_ENTRY, rows)
        if cur.rowcount != len(rows):
            raise StorageError(f"the erasure in the batch at {batch.start} names entries that are not its artist's")
        gone = [(x.artist_id,) for x in batch.erasures]
        # The contents bound to it are released without a leaf: its binding leaves' details go too.
        cur.executemany("DELETE FROM bindings WHERE artist = (SELECT id FROM artists WHERE artist_id = %s)", gone)
        cur.executemany("UPDATE artists SET artist_id = NULL, proof = NULL, preferences = NULL WHERE artist_id = %s", gone)
        _forget_tokens(cur, [x.artist_id for x in batch.erasures])
        cur.executemany("DELETE FROM feed_keys WHERE artist_id = %s", gone)
        cur.executemany("INSERT INTO erasures (idx, tag, reason) VALUES (%s, %s, %s)",
                        [(x.index, x.tag, x.reason) for x in batch.erasures])

    def _write_artists(self, cur: psycopg.Cursor[Any], batch: Batch, ids: dict[str, int]) -> None:
        """Upserts the batch's artist heads with a handful of statements, whatever their number: ids of
        known artists from the cache or one query, new artists get the next free ids (under the head's
        lock, so no other batch takes them). Preferences are written only for the artists the batch has
        a preference leaf for."""
        artists = batch.artists
        for a in artists:
            i = self._artist_ids.get(a.artist_id)
            if i is not None:
                ids[a.artist_id] = i
        unknown = [a.artist_id for a in artists if a.artist_id not in ids]
        if unknown:
            ids.update(cur.execute("SELECT artist_id, id FROM artists WHERE artist_id = ANY(%s)", (unknown,)).fetchall())
        tags = [a.tag for a in artists if a.artist_id not in ids]
        returning = dict(cur.execute("SELECT tag, id FROM artists WHERE artist_id IS NULL AND tag = ANY(%s)",
                                     (tags,)).fetchall()) if tags else {}
        next_id = _only(cur, "SELECT coalesce(max(id), 0) FROM artists")[0]
        rows = plan_artists(batch, ids, returning, next_id)
        _copy(cur, "artists", "id, artist_id, tag, proof, preferences", rows.inserts)
        cur.executemany("UPDATE artists SET artist_id = %s, proof = %s, preferences = %s WHERE id = %s", rows.restores)
        cur.executemany("UPDATE artists SET preferences = %s WHERE id = %s", rows.prefs)
        if rows.heads:
            cur.execute(
                "INSERT INTO heads (id, aseq, head) SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::bigint[]) "
                "ON CONFLICT (id) DO UPDATE SET aseq = excluded.aseq, head = excluded.head",
                [list(column) for column in zip(*rows.heads)])


def _copy(cur: psycopg.Cursor[Any], table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
    """Inserts `rows` with COPY, the fastest way in (scripts/bench-pg-driver)."""
    if not rows:
        return
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _forget_tokens(cur: psycopg.Cursor[Any], artist_ids: Sequence[str]) -> int:
    """Takes the erased `artist_ids` out of every artist token (rows.narrow_tokens); returns how many changed."""
    found = [row for artist_id in artist_ids for row in cur.execute(_ARTIST_TOKENS, (artist_id,)).fetchall()]
    narrowed, deleted = narrow_tokens(found, artist_ids)
    cur.executemany("UPDATE tokens SET subject = %s WHERE id = %s", narrowed)
    cur.executemany("DELETE FROM tokens WHERE id = %s", deleted)
    if narrowed or deleted:
        cur.execute(_BUMP_TOKENS)
    return len(narrowed) + len(deleted)


def _write_bindings(cur: psycopg.Cursor[Any], changes: Sequence[BindingChange], artist_ids: dict[str, int]) -> None:
    """A batch binds (first uses, binding leaves) or releases (binding leaves), never both for one pair; a
    pair bound twice keeps the later index, as a second bind would. One statement each, whatever the
    number of rows (a batch of first uses binds up to a thousand contents)."""
    try:
        last = {(b.content_id, artist_ids[b.artist_id]): b for b in changes}
    except KeyError as exc:
        raise StorageError(f"a binding names artist {exc} with no state in the batch") from None
    bound = [(content, artist, b.index) for (content, artist), b in last.items() if b.bound]
    released = [(content, artist) for (content, artist), b in last.items() if not b.bound]
    if bound:
        cur.execute("INSERT INTO bindings (content_id, artist, idx) SELECT * FROM unnest(%s::text[], %s::integer[], "
                    "%s::bigint[]) ON CONFLICT (content_id, artist) DO UPDATE SET idx = excluded.idx",
                    [list(column) for column in zip(*bound)])
    if released:
        cur.execute("DELETE FROM bindings WHERE (content_id, artist) IN (SELECT * FROM unnest(%s::text[], %s::integer[]))",
                    [list(column) for column in zip(*released)])


def _reason(exc: psycopg.Error) -> str:
    """PostgreSQL's message, first line: the rest (context, hints) is for the server's log."""
    return (str(exc).strip().split("\n", 1)[0] or type(exc).__name__)
