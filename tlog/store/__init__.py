"""Storage: the interface (`base`: the log, checkpoint, token and notify stores) and its backends, SQLite (a
file) and PostgreSQL (a `postgresql://` URL). Only the sequencer writes log data. `open_store` picks the
backend; psycopg is imported only for a PostgreSQL log."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .base import (ArtistState, Backend, Batch, CheckpointedLog, CheckpointStore, Entry, LogStore, NotifyStore,
                   PolicyRecord, TokenRecord, TokenStore, UseFilter)
from .sqlite import SqliteStore

if TYPE_CHECKING:
    from .postgres import Fence, PostgresStore

__all__ = ["ArtistState", "Backend", "Batch", "CheckpointStore", "CheckpointedLog", "Entry", "LogStore", "NotifyStore",
           "PolicyRecord", "SqliteStore", "TokenRecord", "TokenStore", "UseFilter", "is_postgres_url", "open_store"]
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db: object) -> bool:
    """Whether `db` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(db, str) and db.startswith(POSTGRES_SCHEMES)


def open_store(db: str | os.PathLike[str], *, create: bool = False, readonly: bool = False,
               fence: "Fence | None" = None) -> "SqliteStore | PostgresStore":
    """The store of the log at `db`: a SQLite file, or a PostgreSQL database by URL (`fence`: see
    postgres.py; a SQLite log has a single writer by its file lock and takes none)."""
    if is_postgres_url(db):
        from .postgres import PostgresStore

        return PostgresStore(str(db), create=create, readonly=readonly, fence=fence)
    if fence is not None:
        raise ValueError("a fence is for a PostgreSQL log")
    return SqliteStore(db, create=create, readonly=readonly)
