"""A witness on disk: `W.db` (SQLite, mode 0600) and its signing key beside it, `W.witness.key` (mode 0600,
never stored in the database).

Invariants, kept here where the writes happen:
- A log's state only moves forward, by compare-and-swap: `advance` re-reads the row inside
  `BEGIN IMMEDIATE` and writes only if it still holds the (size, root) the request was checked against.
  Two racing requests (threads, or two witness processes on one file) therefore cannot roll it back: the
  loser gets the 409 it would have got had it come second.
- The new state is committed (`synchronous=FULL`: fsynced) before the cosignature is returned.
- Refused checkpoints that were validly signed are kept as evidence (`refusals`): a 409 at the same size
  or a 422 may be the only proof that a log showed two histories.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import Conflict, StorageError, ValidationError
from ..log import read_secret, write_secret
from ..note import ALG_COSIGNATURE_V1, CosignatureSigner, Signer, generate_key, is_valid_name
from .core import LogState, SizeConflict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS logs (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL,
                                 updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refusals (id INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, origin TEXT NOT NULL,
                                     status INTEGER NOT NULL, reason TEXT NOT NULL, request BLOB NOT NULL);
"""


def key_path(db: Path) -> Path:
    stem = db.with_suffix("") if db.suffix == ".db" else db
    return Path(f"{stem}.witness.key")


@dataclass(frozen=True)
class Refusal:
    received_ms: int
    origin: str
    status: int
    reason: str
    request: bytes


class WitnessStore:
    """The witness's state in one SQLite file. One instance = one connection."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if create:
            if path.exists():
                raise Conflict(f"{path} already exists; refusing to overwrite a witness")
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        elif not path.exists():
            raise StorageError(f"no witness database at {path} (run `tlog witness init` first)")
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout = 5000")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the witness database {path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def log_state(self, origin: str) -> LogState | None:
        row = self.conn.execute("SELECT size, root FROM logs WHERE origin = ?", (origin,)).fetchone()
        return None if row is None else LogState(row[0], bytes(row[1]))

    def logs(self) -> dict[str, LogState]:
        rows = self.conn.execute("SELECT origin, size, root FROM logs ORDER BY origin")
        return {o: LogState(s, bytes(r)) for o, s, r in rows}

    def advance(self, origin: str, expected: LogState | None, new: LogState) -> None:
        """Replaces the log's state with `new` if it is still `expected`; otherwise raises the 409 that the
        current state calls for. `new` must already have passed core.check against `expected`."""
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                current = self.log_state(origin)
                if current != expected:
                    size = current.size if current else 0
                    raise SizeConflict(f"another request advanced {origin!r} to size {size} first", size=size)
                c.execute(
                    "INSERT OR REPLACE INTO logs VALUES (?, ?, ?, ?)",
                    (origin, new.size, new.root, int(time.time() * 1000)),
                )
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"cannot record the checkpoint of {origin!r}: {exc}") from exc

    def add_refusal(self, origin: str, status: int, reason: str, request: bytes) -> None:
        self.conn.execute(
            "INSERT INTO refusals (received_ms, origin, status, reason, request) VALUES (?, ?, ?, ?, ?)",
            (int(time.time() * 1000), origin, status, reason, request),
        )

    def refusals(self) -> list[Refusal]:
        rows = self.conn.execute("SELECT received_ms, origin, status, reason, request FROM refusals ORDER BY id")
        return [Refusal(t, o, s, r, bytes(b)) for t, o, s, r, b in rows]


@dataclass
class Witness:
    """An opened witness: its state and its cosignature/v1 signer."""

    store: WitnessStore
    signer: CosignatureSigner

    @property
    def vkey(self) -> str:
        return self.signer.verifier_key

    def close(self) -> None:
        self.store.close()


def init_witness(db: Path, name: str) -> Witness:
    """Creates the witness database and its Ed25519 cosigning key (type 0x04), refusing to overwrite."""
    if not is_valid_name(name):
        raise ValidationError(f"witness name {name!r} must be a key name: printable, no spaces, no '+'")
    secret = key_path(db)
    for p in (db, secret):
        if p.exists():
            raise Conflict(f"{p} already exists; refusing to overwrite a witness")
    skey, vkey = generate_key(name, ALG_COSIGNATURE_V1)
    store = WitnessStore(db, create=True)
    write_secret(secret, skey)
    store.set_meta("name", name)
    store.set_meta("vkey", vkey)
    return Witness(store, _signer(skey, db))


def open_witness(db: Path) -> Witness:
    """Opens a witness and checks that its key file holds the key its database names."""
    store = WitnessStore(db)
    try:
        signer = _signer(read_secret(key_path(db), "witness key"), db)
        if signer.verifier_key != store.get_meta("vkey"):
            raise StorageError(f"{key_path(db)} is not the key of the witness in {db}")
        return Witness(store, signer)
    except BaseException:
        store.close()
        raise


def _signer(skey: str, db: Path) -> CosignatureSigner:
    signer = Signer.from_key(skey)
    if not isinstance(signer, CosignatureSigner):
        raise StorageError(f"{key_path(db)} is not a cosignature/v1 key")
    return signer
