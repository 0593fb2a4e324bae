"""Batched ingest through two front ends of a PostgreSQL log, beside SQLite's single node, in the same run.

Each round runs both, one after the other (SQLite first in odd rounds, PostgreSQL first in even ones, so
that the machine's drift falls on both): a fresh log, then `--records` records in requests of 1000 from
`--clients` concurrent clients (scripts/bench_server.py's load generator, each in a process of its own,
started and given its records before the clock starts):
  - SQLite: one `tlog serve --db FILE`, every client sending to it;
  - PostgreSQL: two `tlog serve --db postgresql://… --keys DIR` front ends of one scratch PostgreSQL
    (tlog/pglocal.py: fsync and synchronous_commit on, so every acknowledged batch is durable), half the
    clients sending to each: one sequences, the other hands its requests over through the intake table.
Prints records/s for each, per round and the medians. Both run on this machine, the load generators and
PostgreSQL included.

    scripts/bench-cluster                       # 2 rounds of 100,000 records
    scripts/bench-cluster --rounds 3 --records 200000 --clients 4
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import machine_speed  # noqa: E402  (scripts/machine_speed.py)

from tests.clusterkit import Cluster  # noqa: E402
from tlog.log import init_log  # noqa: E402
from tlog.pglocal import LocalPostgres, free_port  # noqa: E402

TARGET = 10_000  # records/s, durable, through two front ends on PostgreSQL


def load(urls: list[str], token: str, records: int, clients: int, artists: int, seed: int) -> float:
    """Sends `records` in batches of 1000 from `clients` clients spread over `urls`: records/s, measured
    from the moment every generator is ready to the last answer."""
    gens = []
    for k, url in enumerate(urls):
        n, c = records // len(urls), max(1, clients // len(urls))
        gens.append(subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "bench_server.py"), "--load", "batched", url, token, str(n),
             str(seed * 10 + k), str(c), str(artists)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for g in gens:
        g.stdout.readline()  # type: ignore[union-attr]  # its bodies are made: the clock may start
    t0 = time.perf_counter()
    for g in gens:
        g.stdin.write("go\n")  # type: ignore[union-attr]
        g.stdin.flush()  # type: ignore[union-attr]
    sent = 0
    for g in gens:
        out, _ = g.communicate(timeout=3600)
        if g.returncode != 0:
            raise SystemExit(f"load generator failed: {out[-500:]}")
        sent += orjson.loads(out.strip().splitlines()[-1])["records"]
    return sent / (time.perf_counter() - t0)


def sqlite_round(work: Path, args: argparse.Namespace, seed: int) -> float:
    db = work / f"sqlite-{seed}" / "tlog.db"
    init_log(db, "bench.example/log").close()
    token = subprocess.run([sys.executable, "-m", "tlog.cli", "token", "create", "--db", str(db), "--service", "bench"],
                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tlog.cli", "serve", "--db", str(db), "--port", str(port), "--rate", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{port}")
        return load([f"http://127.0.0.1:{port}"], token, args.records, args.clients, args.artists, seed)
    finally:
        server.terminate()
        server.wait(60)


def postgres_round(work: Path, pg: LocalPostgres, args: argparse.Namespace, seed: int) -> float:
    cluster = Cluster.create(work / f"pg-{seed}", pg, f"bench_{seed}")
    token = cluster.cli("token", "create", "--db", cluster.dsn, "--service", "bench").stdout.strip().splitlines()[-1]
    try:
        fronts = [cluster.start(name) for name in ("a", "b")[: args.fronts]]
        cluster.wait_sequencer()
        rate = load([f.url for f in fronts], token, args.records, args.clients, args.artists, seed)
        ways = [_writes(f.url) for f in fronts]
    finally:
        cluster.stop_all()
    _check_logged(cluster, args.records)
    print(f"  postgres: {', '.join(f'front end {n}: {d:,} requests sequenced there, {h:,} handed over' for n, (d, h) in zip('ab', ways))}; "
          f"all {args.records:,} records in the log, tlog verify clean", flush=True)
    return rate


def _writes(url: str) -> tuple[int, int]:
    """(direct, handed) requests of a front end, from its /metrics (tlog_cluster_writes_total)."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    ways = {w: int(line.rsplit(" ", 1)[1]) for line in lines for w in ("direct", "handed")
            if line.startswith(f'tlog_cluster_writes_total{{way="{w}"}}')}
    return ways["direct"], ways["handed"]


def _check_logged(cluster: Cluster, records: int) -> None:
    """A figure counts only if every acknowledged record is in the log once and the log verifies."""
    stats = orjson.loads(cluster.cli("stats", "--db", cluster.dsn, "--json").stdout)
    logged = sum(t["leaves"] for t in stats["totals"] if t["type"] in ("use", "refusal"))
    if logged != records:
        raise SystemExit(f"the PostgreSQL log holds {logged:,} use and refusal leaves, not the {records:,} acknowledged")
    done = cluster.cli("verify", "--db", cluster.dsn, "--quiet", check=False)
    if done.returncode != 0:
        raise SystemExit(f"tlog verify failed on the PostgreSQL log: {done.stdout[-500:]}{done.stderr[-500:]}")


def _wait(url: str) -> None:
    import urllib.request

    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000, help="records per run (default 100,000)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients, split over the front ends")
    ap.add_argument("--artists", type=int, default=2_000, help="distinct artists in the records")
    ap.add_argument("--fronts", type=int, choices=(1, 2), default=2, help="PostgreSQL front ends taking the load")
    args = ap.parse_args()
    print(machine_speed.describe(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="tlog-bench-cluster-"))
    pg = LocalPostgres.create().start()
    figures: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    try:
        for r in range(args.rounds):
            order = ["sqlite", "postgres"] if r % 2 == 0 else ["postgres", "sqlite"]
            for kind in order:
                rate = sqlite_round(work, args, r) if kind == "sqlite" else postgres_round(work, pg, args, r)
                figures[kind].append(rate)
                print(f"round {r + 1}: {kind:<8} {rate:>9,.0f} records/s", flush=True)
    finally:
        pg.remove()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    print("after the run, " + machine_speed.describe())
    sq, pgm = statistics.median(figures["sqlite"]), statistics.median(figures["postgres"])
    print(f"\nbatched ingest, {args.records:,} records of {args.artists:,} artists a run, 1000 a request, "
          f"{args.clients} clients; medians of {args.rounds} rounds")
    print(f"  SQLite, one node:                          {sq:>9,.0f} records/s")
    print(f"  PostgreSQL, {args.fronts} front end(s) (durable):   {pgm:>9,.0f} records/s  ({pgm / sq:.2f}x SQLite; "
          f"target {TARGET:,}: {'met' if pgm >= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
