"""The local durable spool: use records accepted by a BatchLogger and not yet acknowledged by the log.

One SQLite file per service (event_ids are unique per service), opened by one process at a time.
Invariants, kept here:
- A record is committed and fsynced (WAL, synchronous=FULL) before `add` returns, so once
  `BatchLogger.log()` has returned, a crash or a power cut cannot lose it.
- A row leaves `pending` only once the log has acknowledged it (`remove`) or refused it for good
  (`fail`, which moves it to `failed` in the same transaction, with the reason, for a person to read).
- `seq` is AUTOINCREMENT: never reused, so "every row after seq N" stays meaningful while rows are
  deleted behind it, and the oldest record is always sent first.
- An event_id is pending at most once: the same record again joins the pending one; a different
  record under a pending event_id is refused here, before the log would refuse it with 409.

Synchronous and not thread-safe: the BatchLogger runs every call on one dedicated thread.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..files import create_private, private_dir
from .errors import SpoolError

SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,          -- the record as JSON, exactly as it will be sent
    spooled_ms INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS failed (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    failed_ms INTEGER NOT NULL
)""",
)


class PendingConflict(Exception):
    """Records whose event_id is already pending with a different body (their positions in the call)."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__(f"event_ids pending with another body at positions {positions}")
        self.positions = positions


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    seq: int
    event_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """A record the log refused for good (invalid, or its event_id already used for another body)."""

    seq: int
    event_id: str
    body: bytes
    status: int
    code: str
    message: str
    failed_ms: int


class Spool:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            private_dir(self.path.parent)
            create_private(self.path)  # the records are private: mode 0600 (SQLite's -wal and -shm follow it)
            self._db = sqlite3.connect(self.path, timeout=0.2, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc
        try:
            self._configure()
        except BaseException as exc:
            self._db.close()
            if "database is locked" in str(exc):
                raise SpoolError(f"the spool {self.path} is in use by another process (one BatchLogger per spool)") from exc
            if isinstance(exc, sqlite3.Error):
                raise SpoolError(f"cannot open the spool {self.path}: {exc}") from exc
            raise

    def _configure(self) -> None:
        db = self._db
        # Exclusive: a second process on the same spool would send the same rows twice; the lock makes it
        # fail at once instead ("database is locked"), and saves WAL's shared-memory index.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            raise SpoolError(f"the spool {self.path} cannot use write-ahead logging")
        db.execute("PRAGMA synchronous=FULL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise SpoolError(f"{self.path} is a spool of another version ({version}), or not a tlog spool")
        with self._tx():
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self.path)

    def add(self, records: Sequence[tuple[str, bytes]]) -> list[tuple[int, bool]]:
        """Spools (event_id, body) pairs in one durable transaction and returns, per record, (seq, new):
        new is False when the same record was already pending. All or nothing: if an event_id is pending
        with a different body, raises PendingConflict naming those records' positions."""
        now = int(time.time() * 1000)
        out: list[tuple[int, bool]] = []
        conflicts: list[int] = []
        with self._tx() as db:
            for i, (event_id, body) in enumerate(records):
                row = db.execute("SELECT seq, body FROM pending WHERE event_id = ?", (event_id,)).fetchone()
                if row is None:
                    cur = db.execute(
                        "INSERT INTO pending (event_id, body, spooled_ms) VALUES (?, ?, ?)", (event_id, body, now)
                    )
                    out.append((cur.lastrowid, True))  # type: ignore[arg-type]
                elif bytes(row[1]) == body:
                    out.append((row[0], False))
                else:
                    conflicts.append(i)
            if conflicts:
                raise PendingConflict(conflicts)
        return out

    def take(self, after: int, limit: int) -> list[SpooledRecord]:
        """The oldest pending records with seq > after."""
        rows = self._query("SELECT seq, event_id, body FROM pending WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        return [SpooledRecord(seq, event_id, bytes(body)) for seq, event_id, body in rows]

    def remove(self, seqs: Sequence[int]) -> None:
        """The log acknowledged these records."""
        with self._tx() as db:
            db.executemany("DELETE FROM pending WHERE seq = ?", [(s,) for s in seqs])

    def fail(self, records: Sequence[SpooledRecord], status: int, code: str, message: str) -> None:
        """The log refused these records for good: keep them, with the reason, out of the send queue."""
        now = int(time.time() * 1000)
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO failed VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.seq, r.event_id, r.body, status, code, message, now) for r in records],
            )
            db.executemany("DELETE FROM pending WHERE seq = ?", [(r.seq,) for r in records])

    def count(self) -> int:
        return self._query("SELECT count(*) FROM pending", ())[0][0]

    def oldest(self) -> int | None:
        return self._query("SELECT min(seq) FROM pending", ())[0][0]

    def newest(self) -> int:
        return self._query("SELECT max(seq) FROM pending", ())[0][0] or 0

    def failed(self) -> list[FailedRecord]:
        rows = self._query("SELECT * FROM failed ORDER BY seq", ())
        return [FailedRecord(r[0], r[1], bytes(r[2]), *r[3:]) for r in rows]

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, args: tuple[object, ...]) -> list[tuple]:  # type: ignore[type-arg]
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK if the body raised; SQLite's errors become SpoolError."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db, self.path = db, path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as err:
            self.db.execute("ROLLBACK")
            raise SpoolError(f"cannot write the spool {self.path}: {err}") from err
