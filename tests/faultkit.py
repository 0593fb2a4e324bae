"""Fault injection for the crash and fault tests and for scripts/reliability.

- `FaultyConnection` wraps a store's sqlite3 connection and calls a hook before and after every statement,
  so a test can fail (or kill the process) at any one step of `SqliteStore.write_batch`.
- `WRITE_STEPS` names every statement of a batch's transaction; `test_crash` checks the list is complete,
  so a step added to `write_batch` without a crash case fails the suite.
- `check_log` is the after-crash check shared by every scenario: the fsck passes, every acknowledged
  record is there once with the index and leaf hash it was acknowledged with, every checkpoint ever
  served is consistent with every later one, and every map root is right (SPEC §2.3: the artist map
  replayed from the public leaves gives each map leaf's root, and every checkpoint ends at a map leaf).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson

from tlog import merkle
from tlog.checkpoint import Checkpoint, open_checkpoint
from tlog.log import LocalLog, open_log
from tlog.verify import verify_log

from .e2e.conftest import free_port
from .mapcheck import map_problems

# (label, SQL prefix): every statement `SqliteStore.write_batch` runs, in order.
WRITE_STEPS: tuple[tuple[str, str], ...] = (
    ("begin", "BEGIN IMMEDIATE"),
    ("read size", "SELECT max(idx) FROM entries"),
    ("read previous leaf hash", "SELECT idx, CAST(hash AS BLOB) FROM entries"),
    ("read next name id", "SELECT coalesce(max(id), 0) FROM names"),
    ("read artist ids", "SELECT artist_id, id FROM artists"),
    ("read erased artists", "SELECT CAST(tag AS BLOB), id FROM artists WHERE artist_id IS NULL"),
    ("read next artist id", "SELECT coalesce(max(id), 0) FROM artists"),
    ("insert artists", "INSERT INTO artists"),
    ("restore returning artists", "UPDATE artists SET artist_id = ?,"),
    ("update preferences", "UPDATE artists SET preferences"),
    ("upsert heads", "INSERT INTO heads"),
    ("insert entries", "INSERT INTO entries"),
    ("insert nodes", "INSERT INTO nodes"),
    ("insert names", "INSERT INTO names"),
    ("insert bindings", "INSERT OR REPLACE INTO bindings"),
    ("delete bindings", "DELETE FROM bindings"),
    ("insert policies", "INSERT INTO policies"),
    ("erase entries", "UPDATE entries SET service = NULL"),
    ("erase artists", "UPDATE artists SET artist_id = NULL"),
    ("read artist tokens", "SELECT id, subject FROM tokens WHERE role = 'artist'"),
    ("narrow artist tokens", "UPDATE tokens SET subject"),
    ("delete artist tokens", "DELETE FROM tokens WHERE id"),
    ("delete artist feed keys", "DELETE FROM feed_keys WHERE artist_id"),
    ("insert erasures", "INSERT INTO erasures"),
    ("upsert stats", "INSERT INTO usage"),
    ("store checkpoint", "INSERT OR REPLACE INTO checkpoints"),
    ("commit", "COMMIT"),
)
STEP_LABELS = tuple(label for label, _ in WRITE_STEPS)


def step_of(sql: str) -> str | None:
    s = " ".join(sql.split())
    for label, prefix in WRITE_STEPS:
        if s.startswith(prefix):
            return label
    return None


Hook = Callable[[str, str, str], None]  # (label or "other", "before" | "after", sql)


class FaultyConnection:
    """A sqlite3 connection whose statements pass through `hook` before and after they run. Everything
    else (in_transaction, close, …) is the real connection's."""

    def __init__(self, conn: sqlite3.Connection, hook: Hook) -> None:
        self._conn = conn
        self._hook = hook

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        label = step_of(sql) or "other"
        self._hook(label, "before", sql)
        cur = self._conn.execute(sql, *args)
        self._hook(label, "after", sql)
        return cur

    def executemany(self, sql: str, rows: Iterable[Any]) -> sqlite3.Cursor:
        label = step_of(sql) or "other"
        self._hook(label, "before", sql)
        cur = self._conn.executemany(sql, rows)
        self._hook(label, "after", sql)
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@contextmanager
def hooked(store: Any, hook: Hook) -> Iterator[None]:
    """Routes `store`'s statements through `hook` for the duration of the block."""
    real = store.conn
    store.conn = FaultyConnection(real, hook)
    try:
        yield
    finally:
        store.conn = real


class Injected(sqlite3.OperationalError):
    """The fault a hook raises: an sqlite3 error, as a failing disk or lock would give."""


def fail_at(label: str, phase: str, *, times: int = 1, exc: Callable[[], BaseException] | None = None) -> Hook:
    """A hook that raises the `times`-th time `label` reaches `phase` (once), or every time if `times` is 0."""
    seen = [0]

    def hook(lab: str, ph: str, sql: str) -> None:
        if lab == label and ph == phase:
            seen[0] += 1
            if seen[0] == times or times == 0:
                raise (exc() if exc else Injected(f"injected fault {phase} {label}"))

    return hook


def within_batch(hook: Hook) -> Hook:
    """`hook`, from a batch's BEGIN on: the reads an operation makes before it (an erasure reads the
    artist's leaves) run statements of the same shape, which are not the step a case means to fail."""
    begun = [False]

    def inner(lab: str, ph: str, sql: str) -> None:
        begun[0] = begun[0] or lab == "begin"
        if begun[0]:
            hook(lab, ph, sql)

    return inner


def recorder(into: list[str]) -> Hook:
    def hook(lab: str, ph: str, sql: str) -> None:
        if ph == "before":
            into.append(lab)

    return hook


# --- the after-crash check ----------------------------------------------------------------------


@dataclass
class Check:
    size: int
    acknowledged: int
    lost: int
    wrong: int
    duplicates: int
    checkpoints: int
    forks: int
    rollbacks: int
    maps: list[str] = field(default_factory=list)  # map leaves whose root is wrong, checkpoints not ending at one

    def problems(self) -> list[str]:
        out = []
        for what in ("lost", "wrong", "duplicates", "forks", "rollbacks"):
            if getattr(self, what):
                out.append(f"{getattr(self, what)} {what}")
        return out + self.maps


def check_log(db: Path | str, *, acked: dict[tuple[str, str], tuple[int, str]] | None = None,
              served: Sequence[bytes] = ()) -> Check:
    """Opens the log from disk (read-only, as after a restart) and checks it holds.

    `acked` maps (service, event_id) to the (index, leaf hash hex) the log acknowledged; `served` lists
    signed checkpoints handed out, in the order they were seen. Raises AssertionError with a readable
    reason unless the fsck passes; counts the rest (lost, duplicates, forks, rollbacks) and lists the
    map problems in the result."""
    log = open_log(db, readonly=True)
    try:
        verify_log(log)
        maps = map_problems(log.store)
        size = log.store.size()
        lost = wrong = 0
        by_service: dict[str, dict[str, tuple[int, str]]] = {}
        for (service, event_id), want in (acked or {}).items():
            by_service.setdefault(service, {})[event_id] = want
        for service, want in by_service.items():
            ids = list(want)
            found = log.store.find_events(service, ids)
            hashes = {}
            for e in found.values():
                hashes[e.index] = log.store.leaf_hashes(e.index, e.index + 1)[0].hex()
            for event_id, (index, leaf_hash) in want.items():
                e = found.get(event_id)
                if e is None:
                    lost += 1
                elif e.index != index or hashes[e.index] != leaf_hash:
                    wrong += 1
        duplicates = log.store.conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM entries WHERE event_id IS NOT NULL "
            "GROUP BY service, event_id HAVING count(*) > 1) AS twice"
        ).fetchone()[0]
        forks, rollbacks = checkpoint_history(log, list(served))
        return Check(size, len(acked or {}), lost, wrong, duplicates, len(set(served)), forks, rollbacks, maps)
    finally:
        log.close()


def checkpoint_history(log: LocalLog, served: list[bytes]) -> tuple[int, int]:
    """(forks, rollbacks) among the served checkpoints (in the order seen) and everything stored: every
    checkpoint must verify and be consistent with the log as it is now (so with every other one), and
    the size seen must never go down."""
    stored = [log.store.checkpoint_at(s) or b"" for s in log.store.checkpoint_sizes()]
    forks = rollbacks = 0
    last = -1
    size_now = log.store.size()
    latest = open_checkpoint(log.store.latest_checkpoint() or b"", log.verifiers)[0]
    for i, note in enumerate([*served, *stored]):
        cp, _ = open_checkpoint(note, log.verifiers)
        if i < len(served):
            if cp.size < last:
                rollbacks += 1
            last = max(last, cp.size)
        if not consistent(log, cp, latest, size_now):
            forks += 1
    return forks, rollbacks


def consistent(log: LocalLog, old: Checkpoint, new: Checkpoint, size_now: int) -> bool:
    """Whether `old` is a prefix of `new`, by an RFC 9162 consistency proof built from the stored tree."""
    if old.size > new.size or new.size > size_now:
        return False
    if old.size == 0:
        return old.root == merkle.EMPTY_ROOT
    if old.size == new.size:
        return old.root == new.root
    proof = merkle.consistency_proof(old.size, new.size, log.store)
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    except Exception:
        return False
    return True


# --- real servers -------------------------------------------------------------------------------


@dataclass
class Served:
    """A `tlog serve` subprocess; its output goes to a file (a pipe nobody reads would block it)."""

    db: Path | str  # a SQLite file, or a postgresql:// URL
    port: int
    proc: subprocess.Popen[bytes]
    out: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""


def serve(db: Path, port: int | None = None, *extra: str, timeout: float = 20) -> Served:
    """Starts `tlog serve` on db and waits until /healthz answers."""
    port = port or free_port()
    out = Path(f"{db}.serve-{port}.out")
    with open(out, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tlog.cli", "serve", "--db", str(db), "--port", str(port), "--rate", "0", *extra],
            stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    s = Served(db, port, proc, out)
    wait_answering(s.url, proc, s.output, timeout, "tlog serve")
    return s


def wait_answering(url: str, proc: subprocess.Popen[bytes], output: Callable[[], str], timeout: float,
                   what: str) -> None:
    """Returns once `url`/healthz answers; RuntimeError with the process's last output if it exits first
    or does not answer in `timeout` (then it is killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {output()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.03)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{what} did not answer in {timeout} s: {output()[-3000:]}")


def stop(s: Served, *, kill: bool = False) -> int:
    if kill:
        s.proc.send_signal(signal.SIGKILL)
    else:
        s.proc.terminate()
    try:
        return s.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        return s.proc.wait()


def cli(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tlog.cli", *args], capture_output=True, text=True,
                          check=check, timeout=timeout)


def make_token(db: Path, *role: str) -> str:
    return cli("token", "create", "--db", str(db), *role).stdout.strip().splitlines()[-1]


def http(method: str, url: str, body: Any = None, token: str | None = None,
         timeout: float = 30) -> tuple[int, bytes]:
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --- figures for scripts/reliability ------------------------------------------------------------

INJECTED: Counter[str] = Counter()  # faults the crash tests injected and the log survived, by kind
_OUTCOMES: dict[str, dict[str, Any]] = {}


def survived(kind: str, n: int = 1) -> None:
    INJECTED[kind] += n


# scripts/reliability loads this module as a pytest plugin (-p tests.faultkit) and reads the figures
# from the file named by TLOG_FAULT_REPORT.
def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call" or report.outcome != "passed":
        entry = {"outcome": report.outcome}
        if report.skipped and isinstance(report.longrepr, tuple):
            entry["reason"] = report.longrepr[2]
        elif report.failed:
            entry["message"] = report.longreprtext[-2000:]
        _OUTCOMES[report.nodeid] = entry


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get("TLOG_FAULT_REPORT")
    if path:
        Path(path).write_bytes(orjson.dumps({"injected": dict(INJECTED), "tests": _OUTCOMES, "status": int(exitstatus)}))
