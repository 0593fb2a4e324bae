"""A/B of ingest against an earlier commit: batched HTTP ingest (tlog now, tlog at REV, and the bare
pipeline of scripts/bench_server.py), single-record requests, and local durable append, in alternating rounds
on one machine.

This VM's speed drifts by tens of percent within minutes, so each round runs every contender back to
back, in an order that rotates (ABC, CBA, …), and the figures are the medians of the rounds' ratios.
The earlier commit runs from a `git worktree` of REV with this checkout's virtualenv (its own package
on PYTHONPATH first), each side on a log it made itself.

    scripts/ab-ingest --before 8cf0f72 --rounds 6 --records 100000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import machine_speed  # scripts/machine_speed.py
from bench_server import BARE, free_port, run_load, stop, wait_up

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARTISTS = 20_000


def worktree(rev: str, into: Path) -> Path:
    path = into / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(path), rev],
                   check=True, capture_output=True)
    return path


def env_for(code: Path | None) -> dict[str, str]:
    """The environment that runs `code`'s tlog (None: this checkout's)."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def tlog(code: Path | None, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tlog.cli", *args], env=env_for(code), capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def serve(code: Path | None, db: Path, *extra: str) -> tuple[subprocess.Popen, str, str]:
    """A fresh log made by `code`'s tlog init, its service token, and `code`'s tlog serve on it (with the
    options `extra`)."""
    tlog(code, "init", "--db", str(db), "--origin", "ab.tlog.example/log")
    token = tlog(code, "token", "create", "--db", str(db), "--service", "bench")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    p = subprocess.Popen([sys.executable, "-m", "tlog.cli", "serve", "--db", str(db), "--port", str(port), *extra],
                         env=env_for(code), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_up(url, p)
    return p, url, token


def append(code: Path | None, records: int) -> float:
    """Records/s of a durable local append of `records` sample records (20,000 artists), by `code`."""
    script = (
        "import sys, tempfile, pathlib; sys.path.insert(0, sys.argv[1]); import bench_log; "
        "d = tempfile.mkdtemp(); bench_log.bench_append(pathlib.Path(d) / 'b.db', int(sys.argv[2]), 1000, int(sys.argv[3]), 0)"
    )
    scripts = (code / "scripts") if code is not None else HERE
    out = subprocess.run([sys.executable, "-c", script, str(scripts), str(records), str(ARTISTS)], env=env_for(code),
                         capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("append:") and "average" in x)
    return float(line.split()[1].replace(",", ""))


def rotate(names: list[str], k: int) -> list[str]:
    """ABC, CBA, BCA, ACB, …: each contender in each position, none always next to the same one."""
    order = names[k % len(names):] + names[: k % len(names)]
    return order[::-1] if k % 2 else order


def singles(targets: dict[str, tuple[str, str]], args: argparse.Namespace) -> None:
    """Single-record requests from 64 clients against the same two servers: now/before of the median
    latency (lower is better) and of the rate, round by round."""
    ratios: dict[str, list[float]] = {"p50 latency": [], "p99 latency": [], "records/s": []}
    for k in range(args.rounds):
        got = {}
        for name in rotate(["before", "now"], k):
            url, token = targets[name]
            r = run_load("singles", url, token, str(args.singles), "64", str(300 + k))
            lat = sorted(r["latencies"])
            got[name] = (lat[len(lat) // 2], lat[int(len(lat) * 0.99)], len(lat) / r["seconds"])
        for i, figure in enumerate(ratios):
            ratios[figure].append(got["now"][i] / got["before"][i])
        print(f"  singles round {k + 1}: p50 before {got['before'][0] * 1e3:.1f} ms, now {got['now'][0] * 1e3:.1f} ms; "
              f"records/s before {got['before'][2]:,.0f}, now {got['now'][2]:,.0f}", flush=True)
    for figure, rs in ratios.items():
        rs.sort()
        print(f"single-record requests, {figure} now/before: median {statistics.median(rs):.2f} (range {rs[0]:.2f}–"
              f"{rs[-1]:.2f}) over {args.rounds} rounds of {args.singles:,} requests from 64 clients")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--records", type=int, default=100_000, help="records per batched-ingest run")
    ap.add_argument("--singles", type=int, default=3000, help="single-record requests per run (0: skip)")
    ap.add_argument("--append-records", type=int, default=300_000, help="records per local append run (0: skip)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; {machine_speed.describe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        before = worktree(args.before, tmpd)
        procs: list[subprocess.Popen] = []
        try:
            (tmpd / "bare.py").write_text(BARE)
            bare_port = free_port()
            bare_url = f"http://127.0.0.1:{bare_port}"
            procs.append(subprocess.Popen([sys.executable, str(tmpd / "bare.py"), str(tmpd / "bare.db"), str(bare_port),
                                           "rfc8785"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            wait_up(bare_url, procs[-1])
            targets = {"bare": (bare_url, "-")}
            for name, code in (("before", before), ("now", None)):
                (tmpd / f"log-{name}").mkdir()
                p, url, token = serve(code, tmpd / f"log-{name}" / "tlog.db")
                procs.append(p)
                targets[name] = (url, token)
            rates: dict[str, list[float]] = {name: [] for name in targets}
            for k in range(args.rounds):
                got = {}
                for name in rotate(list(targets), k):
                    url, token = targets[name]
                    r = run_load("batched", url, token, str(args.records), str(200 + k), "4", str(ARTISTS))
                    got[name] = r["records"] / r["seconds"]
                    rates[name].append(got[name])
                print(f"  batched round {k + 1}: " + ", ".join(f"{n} {got[n]:,.0f}/s" for n in targets)
                      + f"; now/before {got['now'] / got['before']:.2f}, now/bare {got['now'] / got['bare']:.2f}"
                      + f", before/bare {got['before'] / got['bare']:.2f}", flush=True)
            for a, b in (("now", "before"), ("now", "bare"), ("before", "bare")):
                ratios = sorted(x / y for x, y in zip(rates[a], rates[b]))
                print(f"batched ingest {a}/{b}: median {statistics.median(ratios):.2f} (range {ratios[0]:.2f}–{ratios[-1]:.2f}) "
                      f"over {args.rounds} rounds of {args.records:,} records")
            if args.singles:
                singles(targets, args)
        finally:
            for p in procs:
                stop(p)
        if args.append_records:
            pairs = []
            for k in range(args.rounds):
                got = {}
                for name in rotate(["before", "now"], k):
                    got[name] = append(before if name == "before" else None, args.append_records)
                pairs.append(got["now"] / got["before"])
                print(f"  append round {k + 1}: before {got['before']:,.0f}/s, now {got['now']:,.0f}/s = "
                      f"{got['now'] / got['before']:.2f}", flush=True)
            pairs.sort()
            print(f"local append now/before: median {statistics.median(pairs):.2f} (range {pairs[0]:.2f}–{pairs[-1]:.2f}) "
                  f"over {args.rounds} rounds of {args.append_records:,} records")
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    print("after the run, " + machine_speed.describe())


if __name__ == "__main__":
    main()
