"""scripts/serve-cluster: a log on PostgreSQL with two front ends and a witness, on this machine.

Starts (making them on the first run, in ./data-cluster or $TLOG_CLUSTER_DATA):
  - PostgreSQL from Debian's packages, in a folder of its own (tlog/pglocal.py), on 127.0.0.1;
  - a demo log in its database `tlog`, the keys in data-cluster/keys, and demo tokens;
  - a witness (`tlog witness serve`) on 127.0.0.1:7381 that cosigns the log's checkpoints;
  - two front ends, `tlog serve --db postgresql://… --keys …`, on 127.0.0.1:8081 and :8082.
Prints what to try, including how to kill the sequencing front end and watch the other take over, then
waits; Ctrl-C stops everything (PostgreSQL too: the data stays for the next run; delete the folder to
start over). Front ends that die are not restarted: `scripts/serve-cluster restart NAME` does it while
the rest run (see the printed instructions).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlog.pglocal import LocalPostgres, free_port  # noqa: E402

DATA = Path(os.environ.get("TLOG_CLUSTER_DATA", ROOT / "data-cluster")).resolve()
FRONTS = {"a": int(os.environ.get("PORT_A", "8081")), "b": int(os.environ.get("PORT_B", "8082"))}
WITNESS_PORT = int(os.environ.get("WITNESS_PORT", "7381"))
ORIGIN = "demo.tlog.example/log"


def tlog(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "tlog.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        sys.exit(f"tlog {args[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def postgres() -> LocalPostgres:
    port_file = DATA / "pg.port"
    if port_file.exists():
        pg = LocalPostgres(DATA / "pg", int(port_file.read_text()))
    else:
        DATA.mkdir(parents=True, exist_ok=True)
        pg = LocalPostgres.create(DATA / "pg", free_port())
        port_file.write_text(str(pg.port))
    if pg.pid() is None:
        pg.start()
    return pg


def first_run(pg: LocalPostgres, keys: Path) -> None:
    """The demo log, its tokens, the witness and its policy file."""
    from tlog.demo import build_demo

    dsn = pg.create_database("tlog")
    os.environ["TLOG_KEYS"] = str(keys)
    build_demo(dsn, 200, ORIGIN)
    lines = [f"SERVICE_TOKEN={tlog('token', 'create', '--db', dsn, '--service', 'recsys')}",
             f"AUDITOR_TOKEN={tlog('token', 'create', '--db', dsn, '--auditor')}"]
    wvkey = tlog("witness", "init", "--db", str(DATA / "witness.db"), "--name", "witness.example/w1")
    (DATA / "witnesses.policy").write_text(f"witness w1 {wvkey} http://127.0.0.1:{WITNESS_PORT}\nquorum w1\n")
    tokens = DATA / "demo-tokens.env"
    tokens.write_text("\n".join(lines) + "\n")
    tokens.chmod(0o600)


def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    log = open(DATA / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "tlog.cli", *argv], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)


def wait_up(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited ({proc.returncode}); see its log in {DATA}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # it answers (an HTTP error is an answer)
                return
            time.sleep(0.1)
    sys.exit(f"{what} did not answer at {url} within 30 s; see its log in {DATA}")


def front_argv(dsn: str, keys: Path, port: int) -> list[str]:
    return ["serve", "--db", dsn, "--keys", str(keys), "--host", "127.0.0.1", "--port", str(port),
            "--witness-policy", str(DATA / "witnesses.policy")]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "restart":  # a front end killed while the others run
        pg = LocalPostgres(DATA / "pg", int((DATA / "pg.port").read_text()))
        name = sys.argv[2]
        proc = spawn(name, front_argv(pg.dsn("tlog"), DATA / "keys", FRONTS[name]))
        wait_up(f"http://127.0.0.1:{FRONTS[name]}/healthz", proc, f"front end {name}")
        print(f"front end {name} is back on :{FRONTS[name]} (pid {proc.pid}); it sequences only if elected")
        return
    keys = DATA / "keys"
    fresh = not (DATA / "pg.port").exists()
    pg = postgres()
    if fresh:
        first_run(pg, keys)
    dsn = pg.dsn("tlog")
    vkey = subprocess.run([sys.executable, "-c", "import sys; from tlog.log import open_log; "
                           "print(open_log(sys.argv[1], readonly=True).verifier.key)", dsn],
                          capture_output=True, text=True, check=True).stdout.strip()
    procs = {"witness": spawn("witness", ["witness", "serve", "--db", str(DATA / "witness.db"), "--port",
                                          str(WITNESS_PORT), "--log", vkey])}
    wait_up(f"http://127.0.0.1:{WITNESS_PORT}/", procs["witness"], "the witness")
    for name, port in FRONTS.items():
        procs[name] = spawn(name, front_argv(dsn, keys, port))
    for name, port in FRONTS.items():
        wait_up(f"http://127.0.0.1:{port}/healthz", procs[name], f"front end {name}")
    print(instructions(dsn, vkey))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping the front ends, the witness and PostgreSQL (the data stays in", DATA, ")")
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(30)
        pg.stop()


def instructions(dsn: str, vkey: str) -> str:
    tokens = dict(line.split("=", 1) for line in (DATA / "demo-tokens.env").read_text().split())
    a, b = (f"http://127.0.0.1:{p}" for p in FRONTS.values())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    holder = ("python -c \"import psycopg; print(psycopg.connect('" + dsn + "').execute("
              "'SELECT holder, epoch, expires_at > now() FROM leader').fetchone())\"")
    return f"""
tlog cluster: one log in PostgreSQL ({dsn}), two front ends, a witness
data:           {DATA}   (logs: a.log, b.log, witness.log; demo tokens in demo-tokens.env, mode 0600)
verifier key:   {vkey}
front ends:     {a}   {b}   (either takes writes and serves reads; one sequences)

Who sequences now (holder is host/pid/random; the epoch grows at every change):
  {holder}
  grep -h "holds the lease" {DATA}/a.log {DATA}/b.log

Log a use through either front end (answered once its batch is committed, by whichever sequences):
  curl -s -X POST {a}/v1/uses -H 'Authorization: Bearer {tokens['SERVICE_TOKEN']}' -H 'Content-Type: application/json' \\
    -d '{{"event_id":"try-1","content_id":"sc:track:cluster-1","artist_id":"sc:user:2","purpose":"recommendation","phase":"inference","system":{{"id":"recs-ranker","model":"ranker","version":"2026.07.3"}},"occurred_at":"{now}"}}'
  (send the same to {b}: the same index, "duplicate": true: event_id idempotency holds across front ends)

Kill the sequencer and watch the other take over (within about three seconds: the lease is 2.5 s):
  kill -9 <pid of the holder above>      # then: tail -f {DATA}/a.log {DATA}/b.log
  curl -s {b}/checkpoint                  # the log goes on; the witness cosigns the new checkpoints
  scripts/serve-cluster restart a         # bring the killed one back (as a follower)
Stop it without killing it (a hung host): kill -STOP <pid>, wait 5 s, kill -CONT <pid>: it finds it lost the
lease, its pending batch is refused by the fence, and it steps down ("refused by the fence" in its log).

Check everything, from the database or from the public tiles alone:
  tlog verify --db '{dsn}'
  tlog verify --url {a} --vkey '{vkey}'

Ctrl-C stops the front ends, the witness and PostgreSQL.
"""


if __name__ == "__main__":
    main()
