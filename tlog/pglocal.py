"""A PostgreSQL server in a folder of its own, started from Debian's packages: for the tests,
`scripts/serve-cluster`, the reliability loops and the benchmarks. A deployment never uses this: it points
`--db postgresql://…` at a PostgreSQL it runs and backs up itself (README, "Many machines").

PostgreSQL refuses to run as root, and CI runs as root: the server then runs as the unprivileged `postgres`
system user (or `nobody`), which owns the data folder. The folder holds the cluster, its socket and its log
(`server.log`); the server listens on 127.0.0.1 only, trusts local connections (it is a scratch server) and
keeps PostgreSQL's durable defaults (fsync, synchronous_commit on), since the tests check durability.

A primary may be given a synchronous standby (`LocalPostgres.standby`): every commit then waits until the
standby has the WAL, so promoting the standby after the primary's host is lost keeps every acknowledged
batch (SPEC §8).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import StorageError

SUPERUSER = "tlog"
STANDBY_NAME = "tlog_standby"
START_TIMEOUT_S = 60.0


def pg_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (the newest version), or None if not installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    """The user the server runs as: None for the caller itself, unless the caller is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise StorageError("PostgreSQL cannot run as root, and there is no 'postgres' or 'nobody' user to run it")


def _demote(user: pwd.struct_passwd | None):  # type: ignore[no-untyped-def]
    if user is None:
        return None

    def switch() -> None:
        os.setgid(user.pw_gid)
        os.setgroups([])
        os.setuid(user.pw_uid)
    return switch


@dataclass
class LocalPostgres:
    """One server: its data folder and port. `start` makes the cluster on first use."""

    folder: Path
    port: int
    primary: "LocalPostgres | None" = None  # set for a standby made by `standby`

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    # --- life ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, folder: Path | None = None, port: int | None = None, *,
               synchronous_standby: bool = False) -> "LocalPostgres":
        """A new cluster in `folder` (a new temporary one if None), not started."""
        bindir = _need_bin()
        folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="tlog-pg-"))
        folder.mkdir(parents=True, exist_ok=True)
        pg = cls(folder, port or free_port())
        user = _run_as()
        _own(folder, user)
        pg._run(user, [str(bindir / "initdb"), "-D", str(pg.data), "-U", SUPERUSER, "--auth=trust",
                       "--encoding=UTF8", "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C", "-N"])
        pg._configure(synchronous_standby)
        return pg

    def _configure(self, synchronous_standby: bool) -> None:
        lines = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.folder}'",
            "max_connections = 200",
            "shared_buffers = 256MB",
            "wal_level = replica",
            "max_wal_senders = 4",
            "fsync = on",
            "synchronous_commit = on",
            "logging_collector = off",
        ]
        if synchronous_standby:
            lines.append(f"synchronous_standby_names = '{STANDBY_NAME}'")
        with open(self.data / "postgresql.auto.conf", "a") as f:
            f.write("\n".join(lines) + "\n")
        with open(self.data / "pg_hba.conf", "a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")

    def start(self) -> "LocalPostgres":
        bindir = _need_bin()
        user = _run_as()
        self._run(user, [str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file),
                         "-w", "-t", str(int(START_TIMEOUT_S)), "start"])
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise StorageError(f"PostgreSQL did not start on port {self.port}; see {self.log_file}")
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (`mode`: smart, fast or immediate, as pg_ctl has them). Quiet if not running."""
        bindir = _need_bin()
        if not (self.data / "postmaster.pid").exists():
            return
        self._run(_run_as(), [str(bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                  check=False)

    def kill(self) -> None:
        """SIGKILLs the postmaster, as a lost host would leave it (its children exit on their own)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- databases and replication ---------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Creates database `name` and returns its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def standby(self, folder: Path | None = None) -> "LocalPostgres":
        """A streaming standby of this (running) primary, started, named so that a primary made with
        `synchronous_standby=True` waits for it on every commit."""
        bindir = _need_bin()
        folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="tlog-pg-standby-"))
        folder.mkdir(parents=True, exist_ok=True)
        user = _run_as()
        _own(folder, user)
        sb = LocalPostgres(folder, free_port(), primary=self)
        self._run(user, [str(bindir / "pg_basebackup"), "-D", str(sb.data), "-h", "127.0.0.1",
                         "-p", str(self.port), "-U", SUPERUSER, "-X", "stream", "-R"])
        with open(sb.data / "postgresql.auto.conf", "a") as f:
            f.write(f"port = {sb.port}\nunix_socket_directories = '{folder}'\n"
                    f"primary_conninfo = 'host=127.0.0.1 port={self.port} user={SUPERUSER} "
                    f"application_name={STANDBY_NAME}'\n"
                    # Promoted, it has no standby of its own: waiting for one would hang every commit.
                    "synchronous_standby_names = ''\n")
        return sb.start()

    def promote(self) -> None:
        """Makes this standby a primary (after its primary is lost)."""
        self._run(_run_as(), [str(_need_bin() / "pg_ctl"), "-D", str(self.data), "-w", "promote"])

    def _run(self, user: pwd.struct_passwd | None, argv: list[str], check: bool = True) -> None:
        done = subprocess.run(argv, preexec_fn=_demote(user), cwd=self.folder, capture_output=True,
                              text=True, env={**os.environ, "LC_ALL": "C"})
        if check and done.returncode != 0:
            raise StorageError(f"{Path(argv[0]).name} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-2000:]}")


def _need_bin() -> Path:
    found = pg_bin()
    if found is None:
        raise StorageError("PostgreSQL is not installed: run scripts/install-postgres "
                           "(apt-get install postgresql)")
    return found


def _own(folder: Path, user: pwd.struct_passwd | None) -> None:
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)
    os.chmod(folder, 0o700)


def _has_c_utf8() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return any(line.lower() in ("c.utf8", "c.utf-8") for line in out.split())
