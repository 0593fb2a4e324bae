"""`tlog migrate` (tlog/migrate.py): a SQLite log with artists, preferences, policies, an erasure, bindings,
tokens, feed keys, a published checkpoint and the notifier's cursor moved into PostgreSQL: every table
copied, the copy verifying as the source does, the keys in their folder; a copy that differs names its
first bad index; a database that is not empty is refused."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tlog import erasure, migrate
from tlog.cli import main
from tlog.log import LocalLog, init_log, open_log
from tlog.store.postgres_schema import TABLES
from tlog.tokens import new_token
from tlog.verify import verify_log

from .conftest import append, records
from .test_erase import GONE, fill


def _source(tmp_path: Path) -> LocalLog:
    """A log with something in every table (kept open: the caller closes it)."""
    lg = init_log(tmp_path / "src" / "tlog.db", "test.tlog.example/log")
    fill(lg)  # two artists' uses, preferences, tokens
    seq = lg.sequencer()
    append(seq, records(60, seed=4, artists=5))
    artist = lg.store.artists()[0].artist_id
    seq.bind_content("sc:track:co-owned", [artist, "sc:user:label"])
    seq.close()
    erasure.erase(lg, GONE, "account deleted")
    lg.rotate_key()
    lg.store.add_feed_key("sc:user:stays", b"f" * 32, 1)
    lg.store.set_published(lg.store.size(), lg.store.latest_checkpoint() or b"", 2)
    lg.store.save_notify_state(10, [1])
    return lg


def _counts(store: Any) -> dict[str, int]:
    skip = " WHERE key NOT IN ('schema', 'secure_delete')"
    return {t: store.conn.execute(f"SELECT count(*) FROM {t}{skip if t == 'meta' else ''}").fetchone()[0] for t in TABLES}


def test_a_log_moves_whole_and_verifies_on_postgres(tmp_path, pg_dsn):
    src = _source(tmp_path)
    want = _counts(src.store)
    assert all(want.values()), want  # the source has rows in every table
    src.close()
    keys = tmp_path / "keys"
    done = CliRunner().invoke(main, ["migrate", "--from", str(src.path), "--to", pg_dsn, "--keys", str(keys)])
    assert done.exit_code == 0, done.output
    assert "checked leaf for leaf and root for root" in done.stdout and f"{sum(want.values()):,} rows" in done.stdout
    copy = open_log(pg_dsn, keys=keys, secrets_needed=True)
    source = open_log(src.path, readonly=True)
    try:
        assert _counts(copy.store) == want
        report = verify_log(copy)
        assert report.size == source.store.size() and report.checkpoints == len(source.store.checkpoint_sizes())
        assert [v.key for v in copy.verifiers] == [v.key for v in source.verifiers] and len(copy.signers) == 2
        assert copy.store.published_checkpoint() == source.store.published_checkpoint()
        assert copy.store.notify_state() == source.store.notify_state()
        assert copy.store.erasures() == source.store.erasures()
        assert list(copy.store.iter_bindings()) == list(source.store.iter_bindings())
        assert copy.store.tokens() == source.store.tokens()
        assert copy.store.add_token("service", "next", new_token()[1], 3) == max(t.token_id for t in source.store.tokens()) + 1
        append(copy.sequencer(), records(5, seed=8))  # the copy goes on from where the source stopped
        assert verify_log(copy).size == source.store.size() + 6
    finally:
        copy.close()
        source.close()
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert sorted(p.name for p in keys.iterdir())[-1] == "tlog.vrf.key" and len(list(keys.iterdir())) == 3
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys.iterdir())
    again = CliRunner().invoke(main, ["migrate", "--from", str(src.path), "--to", pg_dsn])
    assert again.exit_code == 2 and "is not empty" in again.output


def test_without_a_key_folder_it_says_where_the_keys_go(tmp_path, pg_dsn, monkeypatch):
    monkeypatch.delenv("TLOG_KEYS", raising=False)
    src = _source(tmp_path)
    src.close()
    done = CliRunner().invoke(main, ["migrate", "--from", str(src.path), "--to", pg_dsn, "-q"])
    assert done.exit_code == 0, done.output
    assert "key files not copied" in done.stderr and str(src.path.with_name("tlog.signer.key")) in done.stderr


@pytest.mark.parametrize("table, column, nth, message", [
    ("entries", "hash", 17, "leaf 17 of the copy is not the source's"),
    ("nodes", "hash", 5, "tree node (1, 5), over leaves from 10, of the copy is not the source's"),
    ("checkpoints", "note", 2, "does not have the root its checkpoint signed"),
])
def test_a_copy_that_differs_names_its_first_bad_index(tmp_path, pg_dsn, monkeypatch, table, column, nth, message):
    src = _source(tmp_path)
    src.close()
    rows = migrate._rows

    def altered(c: Any, name: str, columns: list[str]):  # type: ignore[no-untyped-def]
        for k, row in enumerate(rows(c, name, columns)):
            if name == table and k == nth:
                row = tuple(bytes(32) if col == column else v for col, v in zip(columns, row))
            yield row

    monkeypatch.setattr(migrate, "_rows", altered)
    done = CliRunner().invoke(main, ["migrate", "--from", str(src.path), "--to", pg_dsn, "-q"])
    assert done.exit_code == 1, done.output
    assert message in done.output


def test_the_target_must_be_a_postgres_url(tmp_path):
    src = init_log(tmp_path / "tlog.db", "test.tlog.example/log")
    src.close()
    done = CliRunner().invoke(main, ["migrate", "--from", str(src.path), "--to", str(tmp_path / "other.db")])
    assert done.exit_code == 2 and "postgresql:// URL" in done.output
