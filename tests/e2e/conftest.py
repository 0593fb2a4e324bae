"""Real servers on free loopback ports: `tlog serve` runs as a subprocess, exactly as an operator runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    db: Path
    proc: subprocess.Popen

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


def start_server(db: Path, *extra: str, port: int | None = None) -> Server:
    """`tlog serve` on db (on `port`, or a free one: a restart on the same port lets clients reconnect)."""
    port = port or free_port()
    return _spawn(db, port, "server", "serve", "--db", str(db), "--port", str(port), *extra)


def _spawn(db: Path, port: int, what: str, *args: str) -> Server:
    """Runs `python -m tlog.cli ARGS` and returns once its /healthz answers on `port`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tlog.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {proc.stdout.read().decode()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return Server(url, db, proc)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start in 20 s")


def stop_server(server: Server) -> str:
    server.proc.terminate()
    try:
        out, _ = server.proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        out, _ = server.proc.communicate()
    return out.decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Server]:
    """A demo log behind a real server, shared by a module's read-only tests."""
    from tlog.demo import build_demo

    db = tmp_path_factory.mktemp("served") / "tlog.db"
    build_demo(str(db), 300)
    server = start_server(db)
    yield server
    out = stop_server(server)
    assert "Traceback" not in out, out


def start_witness(db: Path, *log_vkeys: str, port: int | None = None, extra: tuple[str, ...] = ()) -> Server:
    """A real `tlog witness serve` on the witness database db, witnessing the logs named by their
    verifier keys (on `port`, or a free one), with `extra` options; returns once its /healthz answers."""
    port = port or free_port()
    logs = [arg for vkey in log_vkeys for arg in ("--log", vkey)]
    return _spawn(db, port, "witness", "witness", "serve", "--db", str(db), "--port", str(port), *logs, *extra)


@pytest.fixture
def fake(source):
    """The module's `source` log (tests/e2e/fakelog.py), served by a FakeLog on a free loopback port."""
    from .fakelog import FakeLog, serving

    log = FakeLog(source)
    with serving(log):
        yield log
