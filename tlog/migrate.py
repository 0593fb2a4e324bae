"""`tlog migrate`: a SQLite log moved into an empty PostgreSQL database (SPEC §8), checked before it is done.

Invariants, and what keeps them:
- Only into an empty database: the target is opened with `PostgresStore(create=True)`, which refuses a
  database that has any table.
- A consistent copy: every table of the source is read inside one SQLite read transaction, so a server
  still writing to the source cannot tear it (what it commits after that snapshot is not in the copy: stop
  it first to move a log for good). The target is written in one transaction: a copy cut short leaves its
  database as the schema made it, and the command can be run again on a new one.
- Every row that cannot be derived is copied as it is stored, table by table (postgres_schema.TABLES):
  entries and their details, tree nodes, artists and heads, checkpoints, published checkpoints, policies,
  erasures, bindings, tokens, feed keys, meta, the figures and the notifier's cursor. The target's own
  bookkeeping follows: its log head, the next token and feed-key ids.
- Checked before it returns, from a new connection: every leaf hash and every stored tree node of the copy
  equals the source's, and the root of every stored checkpoint recomputed from the copy's tree (its stored
  nodes) equals the root that checkpoint signed. The first mismatch is a VerificationError naming its index
  (a node's: the first leaf below it), exit 1.
- Keys: with a key folder, the key files are copied into it (log.copy_keys: 0700, files 0600, never over
  a file); without one, the report says where they go.
"""

from __future__ import annotations

import time
from itertools import zip_longest
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import merkle
from .checkpoint import Checkpoint
from .errors import StorageError, ValidationError, VerificationError
from .log import copy_keys, key_paths, key_stem
from .note import parse_note
from .store import is_postgres_url
from .store.postgres import PostgresStore, shown
from .store.postgres_schema import TABLES
from .store.sqlite import SqliteStore

Progress = Callable[[str, int, int], None]  # (table, rows copied, rows in the table)
PROGRESS_ROWS = 50_000  # rows copied between progress reports
_SQLITE_ONLY_META = ("schema", "secure_delete")  # the SQLite file's own bookkeeping, not the log's


@dataclass
class MigrateReport:
    target: str
    size: int
    checkpoints: int
    rows: dict[str, int] = field(default_factory=dict)
    keys: list[Path] = field(default_factory=list)  # the key files copied (none without a key folder)
    key_sources: tuple[Path, ...] = ()  # the source's key files, to place by hand when none were copied
    seconds: float = 0.0


def migrate_log(source: Path, target: str, *, keys: Path | None = None,
                progress: Progress | None = None) -> MigrateReport:
    """Copies the SQLite log at `source` into the empty PostgreSQL database `target`, checks the copy, and
    copies the key files into the key folder `keys` (or $TLOG_KEYS) when there is one."""
    if not is_postgres_url(target):
        raise ValidationError(f"--to must be a postgresql:// URL, not {target!r}")
    t0 = time.perf_counter()
    src = SqliteStore(source)  # read-write: a log made by an older version gets its current tables first
    try:
        dst = PostgresStore(target, create=True)
        try:
            report = MigrateReport(shown(target), 0, 0)
            _copy_all(src, dst, report, progress)
        finally:
            dst.close()
        _check(src, target, report.size)
    finally:
        src.close()
    report.key_sources = key_paths(source)
    stem = key_stem(target, keys)  # `keys`, else $TLOG_KEYS
    if stem is not None:
        report.keys = copy_keys(source, stem.parent)
    report.seconds = time.perf_counter() - t0
    return report


def _copy_all(src: SqliteStore, dst: PostgresStore, report: MigrateReport, progress: Progress | None) -> None:
    c = src.conn
    c.execute("BEGIN")  # one snapshot of every table
    try:
        report.size, report.checkpoints = src.size(), len(src.checkpoint_sizes())
        with dst.conn.transaction(), dst.conn.cursor() as cur:
            for table in TABLES:
                columns = [r[0] for r in cur.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = %s ORDER BY ordinal_position", (table,))]
                total = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                report.rows[table] = _copy_table(cur, table, columns, _rows(c, table, columns), total, progress)
            for table in ("tokens", "feed_keys"):  # the next id PostgreSQL gives follows the copied ones
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table} "
                            "HAVING max(id) IS NOT NULL")
            last = src.leaf_hashes(report.size - 1, report.size)[0] if report.size else bytes(32)
            cur.execute("UPDATE log_head SET size = %s, last_leaf = %s", (report.size, last))
    finally:
        c.execute("COMMIT")


def _rows(c: Any, table: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
    """The source's rows of `table`, as stored (blobs as bytes), in the target's column order."""
    q = f"SELECT {', '.join(columns)} FROM {table}"
    if table == "meta":
        q += f" WHERE key NOT IN ({', '.join('?' * len(_SQLITE_ONLY_META))})"
        return iter(c.execute(q, _SQLITE_ONLY_META))
    return iter(c.execute(q))


def _copy_table(cur: Any, table: str, columns: list[str], rows: Iterator[tuple[Any, ...]], total: int,
                progress: Progress | None) -> int:
    n = 0
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
            if progress and n % PROGRESS_ROWS == 0:
                progress(table, n, total)
    if progress:
        progress(table, n, total)
    return n


def _check(src: SqliteStore, target: str, size: int) -> None:
    """Leaf for leaf, then root for root, against a new connection to the copy (module docstring). Only what
    the snapshot copied is compared: `size` leaves, and the checkpoints up to it."""
    copy = PostgresStore(target, readonly=True)
    try:
        for level in range(size.bit_length()):
            _same_nodes(src, copy, level, size >> level)
        for cp_size, note in src.iter_checkpoints():
            if cp_size > size:
                break
            if copy.checkpoint_at(cp_size) != note or _root(copy, cp_size) != Checkpoint.parse(parse_note(note)[0]).root:
                raise VerificationError(f"the copy's tree at size {cp_size} does not have the root its checkpoint "
                                        "signed", index=cp_size)
    finally:
        copy.close()


def _same_nodes(src: SqliteStore, copy: PostgresStore, level: int, count: int) -> None:
    """The copy's first `count` stored nodes of `level` (0: the leaf hashes) are the source's, in order."""
    pairs = zip_longest(src.iter_nodes(level, 0, count), copy.iter_nodes(level, 0, count), fillvalue=(count, b""))
    for n, ((i, want), (j, got)) in enumerate(pairs):
        if i != n or j != n or want != got:
            what = f"leaf {n}" if level == 0 else f"tree node ({level}, {n}), over leaves from {n << level},"
            raise VerificationError(f"{what} of the copy is not the source's", index=n << level)


def _root(store: PostgresStore, size: int) -> bytes | None:
    """The root of the tree of `size` leaves from the store's nodes, or None if a node is missing."""
    try:
        return merkle.tree_root(size, store)
    except StorageError:
        return None
