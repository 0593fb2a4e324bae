"""`tlog backup` (tlog/backup.py): a verified copy, 0600, never over a file, without the key files; a copy
that does not verify is removed. The copy under a server's writes: tests/e2e/test_backup.py."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlog.backup import backup
from tlog.cli import main
from tlog.demo import build_demo
from tlog.errors import Conflict, VerificationError
from tlog.log import key_paths, open_log


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("backup-src") / "tlog.db"
    build_demo(str(db), 40, origin="backup.example/log")
    return db


def _size(db: Path) -> int:
    with open_log(db, readonly=True) as log:
        return log.latest_checkpoint()[0].size


def test_the_copy_verifies_is_private_and_has_no_keys(source, tmp_path):
    to = tmp_path / "copy.db"
    res = CliRunner().invoke(main, ["backup", "--db", str(source), "--to", str(to), "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"size {_size(source)}:" in res.stdout
    assert stat.S_IMODE(to.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db"]  # no key files, no -wal or -shm
    assert not any(p.exists() for p in key_paths(to))
    again = CliRunner().invoke(main, ["verify", "--db", str(to), "--quiet"])
    assert again.exit_code == 0 and f"size {_size(source)}:" in again.output


def test_it_refuses_to_overwrite_a_file(source, tmp_path):
    to = tmp_path / "taken.db"
    to.write_bytes(b"not mine to replace")
    with pytest.raises(Conflict, match="already exists"):
        backup(source, to)
    res = CliRunner().invoke(main, ["backup", "--db", str(source), "--to", str(to)])
    assert res.exit_code == 2 and "refusing to overwrite" in res.stderr
    assert to.read_bytes() == b"not mine to replace"


def test_a_tampered_log_fails_verification_and_leaves_no_copy(source, tmp_path):
    db = tmp_path / "tampered.db"
    shutil.copy(source, db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE entries SET invocations = invocations + 1 WHERE idx = (SELECT min(idx) FROM entries "
                 "WHERE event_id IS NOT NULL)")
    conn.commit()
    conn.close()
    to = tmp_path / "copy.db"
    with pytest.raises(VerificationError):
        backup(db, to)
    assert not to.exists()
    res = CliRunner().invoke(main, ["backup", "--db", str(db), "--to", str(to), "--quiet"])
    assert res.exit_code == 1 and res.stderr.startswith("error: ") and "Traceback" not in res.output
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("copy")]  # nor a -journal of it


def test_a_missing_log_cannot_be_read_and_makes_no_file(tmp_path):
    res = CliRunner().invoke(main, ["backup", "--db", str(tmp_path / "none.db"), "--to", str(tmp_path / "copy.db")])
    assert res.exit_code == 3, res.output
    assert list(tmp_path.iterdir()) == []


def test_progress_counts_pages_up_to_the_total(source, tmp_path, monkeypatch):
    monkeypatch.setattr("tlog.backup.PAGES_PER_STEP", 8)
    seen: list[tuple[int, int]] = []
    backup(source, tmp_path / "copy.db", progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 1 and seen[-1][0] == seen[-1][1] > 0
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_help_says_the_keys_are_not_copied():
    text = " ".join(CliRunner().invoke(main, ["backup", "--help"]).output.split())
    assert "key files beside the database are NOT copied" in text and "docs/OPERATIONS.md" in text
