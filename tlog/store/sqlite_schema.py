"""The SQLite schema in one place: the tables of a log's file, as one ordered list of migrations.

`MIGRATIONS` (sqlite-utils' `Migrations`: each applied migration is recorded by name in the table
`_sqlite_migrations`) makes a new log's tables and brings an older log's up to date:
- `create` applies them all to an empty file, with 8 KiB pages and `meta.secure_delete` = "since init";
- `upgrade` (every read-write open) applies those not recorded yet, in order, in one BEGIN IMMEDIATE
  transaction that first reads what is pending: two processes opening an old log at once upgrade it once;
- `check_readonly` (a read-only open) applies nothing, and refuses a log with migrations pending, naming
  them and what to run: the readers need not guess at a table an older log may lack.

Invariants, kept here:
- Append-only: a released migration keeps its name (what `_sqlite_migrations` records) and its effect. A new
  table or column is a new migration at the end of the list.
- The migrations up to `usage` are older than the record: on logs made before it, earlier versions of tlog
  added their tables on open, so any of them may be there already. Each adds only what is missing, and
  fills a table from the entries only when it creates it. Migrations after `usage` run once and need not.
- `meta.schema` is 3 (leaf format 2). Schemas 1 and 2 hold leaf format 1 and are refused by name, never
  migrated: such a log stays verifiable by the version that made it.

The layout (the `entries` columns, the artist index keyed by epoch, `heads` apart from `artists`) is
explained beside the write path that it serves, in sqlite.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils
from sqlite_utils import Migrations

from ..errors import StorageError
from ..stats import StatRow
from .rows import Names, decode_entry, stat_rows

SCHEMA_VERSION = "3"
PAGE_SIZE = 8192  # pages of new logs: appends fill fewer of them than of 4 KiB (scripts/bench: ~+7%)
ARTIST_EPOCH_BITS = 15  # entries per artist-index epoch: see sqlite.py's module docstring
# The entries with their artist, in the column order rows.decode_entry reads.
ENTRY_SELECT = (
    "SELECT e.idx, e.type, e.logged_ms, a.artist_id, CAST(a.tag AS BLOB), e.aseq, e.aprev, e.service, e.event_id, "
    "e.content_id, e.purpose, e.phase, e.system, e.occurred_at, e.window_end, e.invocations, e.detail, "
    "e.basis, e.decision, e.policy, CAST(e.nonce AS BLOB), e.extra FROM entries e LEFT JOIN artists a ON a.id = e.artist"
)
USAGE_UPSERT = ("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "leaves = leaves + excluded.leaves, uses = uses + excluded.uses")

MIGRATIONS = Migrations("tlog")
Db = sqlite_utils.Database


@MIGRATIONS(name="tables")
def _tables(db: Db) -> None:
    """The tables of schema 3 as `tlog init` first made them."""
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.table("names").create({"id": int, "kind": str, "value": str}, pk="id", if_not_exists=True)
    db.table("names").create_index(["kind", "value"], unique=True, if_not_exists=True)
    db.table("artists").create({"id": int, "artist_id": str, "tag": bytes, "proof": bytes, "preferences": str}, pk="id",
                         if_not_exists=True)
    db.table("artists").create_index(["artist_id"], unique=True, if_not_exists=True)
    db.table("heads").create({"id": int, "aseq": int, "head": int}, pk="id", if_not_exists=True)
    db.table("entries").create(
        {
            "idx": int, "type": int, "logged_ms": int, "artist": int, "aseq": int, "aprev": int,
            "service": int, "event_id": str, "content_id": str, "purpose": int, "phase": int,
            "system": int, "occurred_at": str, "window_end": str, "invocations": int, "detail": str,
            "basis": int, "decision": int, "policy": int, "nonce": bytes, "extra": str, "hash": bytes,
        },
        pk="idx", if_not_exists=True,
    )
    # Partial indexes: only the rows that have the key pay for it.
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS entries_event ON entries(service, event_id) WHERE event_id IS NOT NULL")
    db.execute(f"CREATE INDEX IF NOT EXISTS entries_artist ON entries((idx >> {ARTIST_EPOCH_BITS}), artist) "
               "WHERE artist IS NOT NULL")
    db.table("nodes").create({"id": int, "hash": bytes}, pk="id", if_not_exists=True)
    db.table("checkpoints").create({"size": int, "note": bytes, "created_ms": int}, pk="size", if_not_exists=True)
    db.table("policies").create({"policy_id": str, "idx": int, "document": bytes}, pk="policy_id", if_not_exists=True)
    db.table("tokens").create({"id": int, "role": str, "subject": str, "digest": bytes, "created_ms": int, "revoked_ms": int},
                        pk="id", if_not_exists=True)
    db.table("tokens").create_index(["digest"], unique=True, if_not_exists=True)


@MIGRATIONS(name="published")
def _published(db: Db) -> None:
    """The checkpoints published under a witness policy (the log's signature and the cosignatures)."""
    db.table("published").create({"size": int, "note": bytes, "created_ms": int}, pk="size", not_null={"note"},
                           if_not_exists=True)


@MIGRATIONS(name="erasures")
def _erasures(db: Db) -> None:
    """The erasure leaves' reasons (by index and tag), and the index that finds an erased artist's row
    when its id returns."""
    db.table("erasures").create({"idx": int, "tag": bytes, "reason": str}, pk="idx", not_null={"tag", "reason"},
                          if_not_exists=True)
    db.execute("CREATE INDEX IF NOT EXISTS artists_erased ON artists(tag) WHERE artist_id IS NULL")


@MIGRATIONS(name="feed_keys")
def _feed_keys(db: Db) -> None:
    """Artists' feed keys (SPEC §6), stored as SHA-256 like tokens."""
    db.execute("CREATE TABLE IF NOT EXISTS feed_keys (id INTEGER PRIMARY KEY, artist_id TEXT NOT NULL, "
               "digest BLOB NOT NULL UNIQUE, created_ms INTEGER NOT NULL, revoked_ms INTEGER)")


@MIGRATIONS(name="notify")
def _notify(db: Db) -> None:
    """The webhook notifier's place in the log (webhooks.py): every event of an entry below `done_before`
    was delivered, and so was the `policy.effective` event of each policy leaf listed."""
    db.execute("CREATE TABLE IF NOT EXISTS notify_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), "
               "done_before INTEGER NOT NULL)")
    db.table("notify_effective").create({"policy_index": int}, pk="policy_index", if_not_exists=True)


@MIGRATIONS(name="bindings")
def _bindings(db: Db) -> None:
    """Which artists each content id is bound to (SPEC §2.1), and the index of the leaf that bound it (a
    binding leaf, or the content's first use); keyed by content id, which is how a batch looks it up. A
    log that had uses before bindings existed gets each content bound to the artist of its first use, as
    if the rule had always held (which is what `tlog verify` replays)."""
    if db.table("bindings").exists():
        return
    db.execute("CREATE TABLE bindings (content_id TEXT NOT NULL, artist INTEGER NOT NULL, idx INTEGER NOT NULL, "
               "PRIMARY KEY (content_id, artist)) WITHOUT ROWID")
    # SQLite takes a bare column from the row min() chose: the first use's artist.
    db.execute("INSERT INTO bindings (content_id, artist, idx) SELECT content_id, artist, min(idx) "
               "FROM entries WHERE content_id IS NOT NULL AND extra IS NULL GROUP BY content_id")


@MIGRATIONS(name="token_rights_expiry")
def _token_rights_expiry(db: Db) -> None:
    """Token rights (space-separated, tokens.RIGHTS) and expiry (null: never), SPEC §1, §7."""
    have = db.table("tokens").columns_dict
    if "rights" not in have:
        db.table("tokens").add_column("rights", str, not_null_default="")
    if "expires_ms" not in have:
        db.table("tokens").add_column("expires_ms", int)


@MIGRATIONS(name="usage")
def _usage(db: Db) -> None:
    """The public figures: leaves and invocations by day, type, purpose, phase and decision. Derived data
    (the fsck recounts it); counted once from the entries of an older log, whose `stats` table (without
    phases) it replaces."""
    if db.table("usage").exists():
        return
    keys = ("day", "type", "purpose", "phase", "decision")
    db.table("usage").create({**{k: str for k in keys}, "leaves": int, "uses": int}, pk=keys, not_null={*keys, "leaves", "uses"})
    db.conn.executemany(USAGE_UPSERT, _recount(db.conn))
    db.table("stats").drop(ignore=True)


def _recount(conn: sqlite3.Connection) -> list[StatRow]:
    """The usage rows of every stored entry, decoded as a store reads it (an unreadable one stops the
    upgrade, naming it: nothing of the upgrade is kept)."""
    names = Names(lambda: conn.execute("SELECT id, kind, value FROM names"))
    names.reload()
    return stat_rows(decode_entry(row, names, "the log") for row in conn.execute(f"{ENTRY_SELECT} ORDER BY e.idx"))


# --- opening a file ----------------------------------------------------------------------------------


def create(conn: sqlite3.Connection) -> None:
    """A new log's tables, in an empty file."""
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before the first table: fixed from then on
    with immediate(conn):
        MIGRATIONS.apply(_db(conn))
        conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        # Written with secure_delete from the start: `scrub` need not VACUUM it.
        conn.execute("INSERT INTO meta VALUES ('secure_delete', 'since init')")


def upgrade(conn: sqlite3.Connection, path: Path) -> list[str]:
    """Checks that the file is a tlog log of this schema and applies its pending migrations; returns their
    names (none, once a log is up to date: then it only reads which are recorded)."""
    _check_schema(conn, path)
    db = _db(conn)
    if not MIGRATIONS.pending(db):
        return []
    with immediate(conn):  # then read again: another process may have applied them meanwhile
        applied = [m.name for m in MIGRATIONS.pending(db)]
        MIGRATIONS.apply(db)
    return applied


def check_readonly(conn: sqlite3.Connection, path: Path) -> None:
    """A read-only open: the file is a tlog log of this schema, with no migration pending."""
    _check_schema(conn, path)
    pending = [m.name for m in MIGRATIONS.pending(_db(conn))]
    if pending:
        raise StorageError(
            f"{path} was written by an older tlog and needs its tables upgraded ({', '.join(pending)}), which a "
            f"read-only open does not do: run `tlog upgrade --db {path}` once (any command that writes to the log "
            "does it too), on a copy if the file is on read-only storage")


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path} is not a tlog database: {exc}") from exc
    if row is not None and row[0] in ("1", "2"):
        # Schemas 1 and 2 hold logs of leaf format 1 (HMAC artist tags, no artist map): their leaves
        # cannot be re-derived as version 2, so they are refused by name rather than misread.
        raise StorageError(f"{path} was made by tlog 0.1 (schema {row[0]}, leaf format 1: HMAC artist tags, "
                           "no artist map); this version reads leaf format 2 only. Verify it with tlog 0.1, "
                           "or start a new log with `tlog init`")
    if row is None or row[0] != SCHEMA_VERSION:
        found = "" if row is None else f" (it has schema {row[0]})"
        raise StorageError(f"{path} is not a tlog database of schema {SCHEMA_VERSION}{found}")


def _db(conn: sqlite3.Connection) -> Db:
    return sqlite_utils.Database(conn, execute_plugins=False)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, BEGIN IMMEDIATE … COMMIT, rolled back on any failure. sqlite-utils nests its
    own steps in it as savepoints, so a migration that fails leaves the file as it was."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
