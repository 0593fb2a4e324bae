"""The SQLite schema's migrations: a new log records them all; an older log is upgraded to the same tables
on a read-write open, once, all or nothing; a read-only open changes nothing and says what to run."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlog import verify
from tlog.cli import main
from tlog.errors import StorageError
from tlog.log import LocalLog, init_log, open_log
from tlog.store.sqlite import SqliteStore
from tlog.store.sqlite_schema import MIGRATIONS

from ..conftest import append, make_older, records

NAMES = ["tables", "published", "erasures", "feed_keys", "notify", "bindings", "token_rights_expiry", "usage"]
# A log as the version before migrations made it, before it had any of the later tables and columns.
BEFORE_ALL = ("DROP TABLE published", "DROP TABLE erasures", "DROP INDEX artists_erased", "DROP TABLE feed_keys",
              "DROP TABLE notify_cursor", "DROP TABLE notify_effective", "DROP TABLE bindings",
              "ALTER TABLE tokens DROP COLUMN rights", "ALTER TABLE tokens DROP COLUMN expires_ms", "DROP TABLE usage",
              "CREATE TABLE stats (day TEXT, type TEXT, purpose TEXT, decision TEXT, leaves INT, uses INT)")


@pytest.fixture
def filled(tmp_path: Path) -> LocalLog:
    """A closed log with uses, a preference and a token, as a log of before bindings may hold (no binding
    leaves: the first use binds each content)."""
    lg = init_log(tmp_path / "tlog.db", "schema.test/log")
    seq = lg.sequencer()
    seq.set_preferences("sc:user:1", {"no_ai": True}, by="artist")
    append(seq, records(40))
    lg.store.add_token("service", "recsys", b"d" * 32, 1)
    lg.close()
    return lg


def _layout(path: Path) -> dict[str, object]:
    """Every table's columns (name, type, not null, default, key) and every index's definition."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        layout: dict[str, object] = {t: [r[1:] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
        layout["indexes"] = sorted(conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'"))
        return layout
    finally:
        conn.close()


def _contents(path: Path) -> tuple[object, ...]:
    store = SqliteStore(path, readonly=True)
    try:
        return store.stats(), sorted(store.iter_bindings()), store.tokens(), store.size()
    finally:
        store.close()


def _file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_new_log_records_every_migration_in_order(log: LocalLog):
    recorded = log.store.conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id",
                                      (MIGRATIONS.name,))
    assert [r[0] for r in recorded] == NAMES
    assert log.store.migrated == []  # made, not upgraded


def test_an_older_log_is_upgraded_on_open_to_the_tables_of_a_new_one(filled: LocalLog, tmp_path: Path):
    path = filled.path
    new_layout, before = _layout(path), _contents(path)
    make_older(path, *BEFORE_ALL)
    assert _layout(path) != new_layout
    again = open_log(path)
    try:
        assert again.store.migrated == NAMES
        verify.verify_log(again)  # the backfilled bindings and statistics are what the leaves say
    finally:
        again.close()
    assert _layout(path) == new_layout
    assert _contents(path) == before
    assert SqliteStore(path).migrated == []  # once


def test_a_log_older_than_one_migration_gets_that_one_alone(filled: LocalLog):
    """A log that already had every table but `usage` (as its own earlier opens left it): each migration
    before `usage` finds what it adds there and changes nothing; `usage` counts the entries."""
    path = filled.path
    new_layout, before = _layout(path), _contents(path)
    make_older(path, "DROP TABLE usage")
    store = SqliteStore(path)
    store.close()
    assert store.migrated == NAMES
    assert (_layout(path), _contents(path)) == (new_layout, before)


def test_a_read_only_open_of_an_older_log_changes_nothing_and_says_what_to_run(filled: LocalLog):
    path = filled.path
    make_older(path, "DROP TABLE bindings", "DROP TABLE usage")
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    was = _file(path)
    message = rf"needs its tables upgraded \(tables, .*, usage\).*run `tlog upgrade --db {path}`"
    with pytest.raises(StorageError, match=message):
        SqliteStore(path, readonly=True)
    with pytest.raises(StorageError, match=message):
        open_log(path, readonly=True)
    assert _file(path) == was


def test_two_opens_at_once_upgrade_an_older_log_once(filled: LocalLog):
    path = filled.path
    before = _contents(path)
    make_older(path, *BEFORE_ALL)
    start = threading.Barrier(2)
    applied: list[list[str]] = []

    def open_it() -> None:
        start.wait()
        store = SqliteStore(path)
        applied.append(store.migrated)
        store.close()

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(applied) == [[], NAMES]
    assert _contents(path) == before  # the statistics were counted once, the bindings filled once


def test_an_upgrade_that_fails_leaves_the_file_as_it_was(filled: LocalLog):
    """The usage count meets an entry it cannot read: the whole upgrade is one transaction, so the
    tables the migrations before it made are gone again, and no migration is recorded."""
    path = filled.path
    make_older(path, *BEFORE_ALL, "UPDATE entries SET extra = '{not json' WHERE idx = 1")
    old = _layout(path)
    with pytest.raises(StorageError, match="entry 1 cannot be read from the log"):
        SqliteStore(path)
    assert _layout(path) == old


def test_tlog_upgrade_names_what_it_applied(filled: LocalLog):
    path = filled.path
    make_older(path, "DROP TABLE feed_keys")
    runner = CliRunner()
    first = runner.invoke(main, ["upgrade", "--db", str(path)])
    assert first.exit_code == 0, first.output
    assert first.output == f"upgraded {path}: {', '.join(NAMES)}\n"
    again = runner.invoke(main, ["upgrade", "--db", str(path)])
    assert again.exit_code == 0 and again.output == f"{path} is up to date\n"
