"""`tlog backup`: a consistent, verified copy of a live SQLite log (SPEC §7).

Invariants, and what keeps them:
- Consistent while a server writes: the copy is made with SQLite's online backup API from one read
  transaction held open for the whole copy (`_snapshot`). In WAL mode a reader blocks no writer, and a
  backup stepped from its own read snapshot never sees a later commit, so it is neither torn nor
  restarted by each batch the server commits (which, stepped without the snapshot, it would be, for ever
  on a busy log).
- Never over anything: the copy is created with O_EXCL, mode 0600 from its first byte (it holds private
  data: artists' ids, preferences, event details).
- Only a good copy stays: the copy is re-derived and checked as `tlog verify --db` does (verify.verify_log);
  if that fails, or anything fails before it, the copy and SQLite's side files are removed.
- The key files are not copied: a backup of the database must not hold the secrets that make forgeries
  impossible (docs/OPERATIONS.md, Backups).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import Conflict, StorageError, ValidationError
from .log import open_log
from .store import is_postgres_url
from .store.sqlite import SqliteStore
from .verify import Progress, Report, verify_log

PAGES_PER_STEP = 4096  # pages copied between progress reports (16 MiB at SQLite's default 4 KiB page)
_SIDE_FILES = ("-journal", "-wal", "-shm")


def backup(db: Path | str, to: Path, *, progress: Progress | None = None,
           verify_progress: Progress | None = None) -> Report:
    """Copies the log at `db` to the new file `to` and verifies the copy; returns the verification's
    report. `progress(done, total)` follows the copy in pages, `verify_progress` the verification in
    leaves. Conflict if `to` exists; VerificationError (the copy removed) if the copy does not verify."""
    if is_postgres_url(db):
        raise ValidationError("tlog backup copies a SQLite log; a PostgreSQL log is backed up with PostgreSQL's own "
                              "tools (pg_basebackup and WAL archiving, or pg_dump), and its key folder apart")
    with open_log(db, readonly=True) as source:
        assert isinstance(source.store, SqliteStore), "a log that is not at a postgresql:// URL is a SQLite file"
        _create_private(to)
        try:
            _copy(source.store.conn, to, progress)
            with open_log(to, readonly=True) as copy:
                return verify_log(copy, vkey=source.verifier.key, progress=verify_progress)
        except BaseException:
            _remove(to)
            raise


def _create_private(path: Path) -> None:
    """An empty file, mode 0600 (an empty file is an empty SQLite database); never an existing one."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise Conflict(f"{path} already exists; refusing to overwrite it (choose a new name for each backup)") from None


def _copy(source: sqlite3.Connection, to: Path, progress: Progress | None) -> None:
    def report(_status: int, remaining: int, total: int) -> None:
        if progress is not None:
            progress(total - remaining, total)

    target = sqlite3.connect(to)
    try:
        with _snapshot(source):
            source.backup(target, pages=PAGES_PER_STEP, progress=report)
        # One self-contained file, not a WAL database with side files; `tlog serve` turns WAL back on.
        target.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.Error as exc:
        raise StorageError(f"cannot copy the log to {to}: {exc}") from exc
    finally:
        target.close()


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction on `conn` (an autocommit connection): everything read through it, the backup's
    steps included, sees the database as of its first read."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts at the first read
        yield
    finally:
        conn.execute("COMMIT")


def _remove(path: Path) -> None:
    for name in (str(path), *(f"{path}{side}" for side in _SIDE_FILES)):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass

