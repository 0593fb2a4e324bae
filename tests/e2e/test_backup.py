"""`tlog backup` of a live log: a real `tlog serve` takes uses while the copy is made, and the copy is a
consistent past state of it (verifies clean, at least as large as the log when the backup began)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from tlog.backup import backup
from tlog.demo import build_demo

from ..faultkit import http, make_token, serve, stop


def _record(n: int) -> dict:
    return {"event_id": f"bk-{n}", "content_id": f"sc:track:bk{n % 7}", "artist_id": f"sc:user:bk{n % 7}",
            "purpose": "recommendation", "phase": "inference",
            "system": {"id": "recs", "model": "ranker", "version": "1"}, "occurred_at": "2026-01-01T00:00:00Z"}


class Writer(threading.Thread):
    """Posts batches of uses to the server until stopped; counts the batches the log acknowledged."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.done = threading.Event()
        self.acked = 0
        self.failures: list[str] = []

    def run(self) -> None:
        numbers = itertools.count()
        while not self.done.is_set():
            batch = [_record(next(numbers)) for _ in range(20)]
            status, body = http("POST", self.url + "/v1/uses", {"records": batch}, self.token)
            if status != 200:
                self.failures.append(f"{status} {body[:200]!r}")
                return
            self.acked += 1

    def wait_for(self, batches: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < batches and not self.failures:
            assert time.monotonic() < deadline, "the server took no writes"
            time.sleep(0.02)


def _size(url: str) -> int:
    status, body = http("GET", url + "/checkpoint")
    assert status == 200
    return int(body.split(b"\n")[1])


def test_a_backup_under_writes_is_a_verified_snapshot(tmp_path, monkeypatch):
    db = tmp_path / "tlog.db"
    build_demo(str(db), 300)
    token = make_token(db, "--service", "recsys")
    server = serve(db)
    writer = Writer(server.url, token)
    writer.start()
    try:
        writer.wait_for(1)
        start = _size(server.url)
        # One page per step: the copy takes many steps, and the server commits between them. Each step
        # waits for a new batch at first, so writes surely land while the copy is being made.
        monkeypatch.setattr("tlog.backup.PAGES_PER_STEP", 1)
        steps = itertools.count()

        def during(done: int, total: int) -> None:
            if next(steps) < 3:
                writer.wait_for(writer.acked + 1)

        report = backup(db, tmp_path / "copy.db", progress=during)
        assert _size(server.url) > start  # the log grew while it was copied
        assert report.size >= start
        # The CLI, in its own process, as an operator runs it, while the writes go on.
        cli = subprocess.run([sys.executable, "-m", "tlog.cli", "backup", "--db", str(db), "--to",
                              str(tmp_path / "copy2.db")], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
    finally:
        writer.done.set()
        writer.join(timeout=30)
        assert stop(server) in (0, -15)
    assert not writer.failures, writer.failures
    for copy in ("copy.db", "copy2.db"):
        check = subprocess.run([sys.executable, "-m", "tlog.cli", "verify", "--db", str(tmp_path / copy), "--json"],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stderr
        assert orjson.loads(check.stdout)["size"] >= start
    assert "Traceback" not in server.output()
