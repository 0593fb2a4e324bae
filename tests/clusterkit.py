"""A cluster on this machine, for the tests and scripts/reliability: a log in a scratch PostgreSQL
(tlog/pglocal.py) and `tlog serve --db postgresql://…` front ends, real processes on free loopback ports,
sharing it. Which front end sequences is read from the lease row itself (its holder names the process)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tlog.pglocal import LocalPostgres, free_port

from .faultkit import Served, stop, wait_answering

ORIGIN = "cluster.example/log"


@dataclass
class Front(Served):
    """One `tlog serve` front end, by name."""

    name: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Cluster:
    workdir: Path
    pg: LocalPostgres
    dsn: str
    keys: Path
    token: str = ""
    vkey: str = ""
    fronts: dict[str, Front] = field(default_factory=dict)

    @classmethod
    def create(cls, workdir: Path, pg: LocalPostgres, dbname: str) -> "Cluster":
        """A new log in database `dbname` of `pg`, its keys in workdir/keys, and a service token."""
        workdir.mkdir(parents=True, exist_ok=True)
        c = cls(workdir, pg, pg.create_database(dbname), workdir / "keys")
        done = c.cli("init", "--db", c.dsn, "--keys", str(c.keys), "--origin", ORIGIN)
        c.vkey = done.stdout.strip().splitlines()[-1]
        c.token = c.cli("token", "create", "--db", c.dsn, "--service", "loadgen").stdout.strip().splitlines()[-1]
        return c

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tlog.cli", *args], capture_output=True, text=True,
                              check=check, timeout=120, env={k: v for k, v in os.environ.items() if k != "TLOG_KEYS"})

    def start(self, name: str, *extra: str, keys: bool = True, dsn: str | None = None, port: int | None = None,
              timeout: float = 30) -> Front:
        """Starts front end `name` (again, on its old port, if it ran before) and waits until it answers."""
        port = port or (self.fronts[name].port if name in self.fronts else free_port())
        out = self.workdir / f"{name}.out"
        argv = [sys.executable, "-m", "tlog.cli", "serve", "--db", dsn or self.dsn, "--port", str(port), "--rate", "0",
                *(["--keys", str(self.keys)] if keys else []), *extra]
        with open(out, "ab") as f:
            # A session of its own: `pause` stops the front end with its writer and worker processes, as a
            # hung host would, and nothing else.
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        front = self.fronts[name] = Front(dsn or self.dsn, port, proc, out, name)
        wait_answering(front.url, proc, front.output, timeout, f"front end {name}")
        return front

    def stop(self, name: str, *, kill: bool = False) -> int:
        front = self.fronts[name]
        if front.proc.poll() is not None:
            return front.proc.returncode
        os.killpg(front.pid, signal.SIGCONT)  # a stopped process would not act on SIGTERM until it runs again
        return stop(front, kill=kill)

    def pause(self, name: str) -> None:
        """SIGSTOP to the front end and its child processes: alive, connections open, doing nothing."""
        os.killpg(self.fronts[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.killpg(self.fronts[name].pid, signal.SIGCONT)

    def stop_all(self) -> None:
        for name in list(self.fronts):
            self.stop(name, kill=False)

    def holder(self) -> tuple[str | None, int, bool]:
        """The lease row: (holder, epoch, not expired), by PostgreSQL's clock."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT holder, epoch, expires_at > clock_timestamp() FROM leader").fetchone()
        assert row is not None
        return row[0], int(row[1]), bool(row[2])

    def sequencer(self) -> Front | None:
        """The running front end that holds the lease now, if any (its holder id names its pid)."""
        holder, _, live = self.holder()
        pid = _pid_of(holder)
        for front in self.fronts.values():
            if live and front.pid == pid and front.alive():
                return front
        return None

    def wait_sequencer(self, timeout: float = 15, *, other_than: Front | None = None) -> Front:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            front = self.sequencer()
            if front is not None and front is not other_than:
                return front
            time.sleep(0.05)
        raise AssertionError(f"no front end took the lease within {timeout} s: {self.holder()}")


def _pid_of(holder: str | None) -> int | None:
    m = re.fullmatch(r"[^/]*/(\d+)/[0-9a-f]+", holder or "")
    return int(m.group(1)) if m else None
