"""A/B of the log core's benchmark (scripts/bench_log.py: durable append, proofs, listings, the artist map,
the artist feed and the reads over HTTP, verify) against an earlier commit, in alternating rounds.

Each round runs scripts/bench_log.py once with the earlier commit's code (a `git worktree` of REV, its
own bench_log.py, its package first on PYTHONPATH) and once with this checkout's, in an order that
alternates (AB, BA, …), each building a log of its own. Every figure both print is paired round by
round; the report is the median of each figure's now/before ratios, with their range, and whether the
median is within `--tolerance` (a time may grow, a rate may fall, by at most that much).

    scripts/ab-log --before a550b2d --rounds 6 --entries 100000
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import machine_speed  # scripts/machine_speed.py
from ab_ingest import env_for, worktree

HERE = Path(__file__).resolve().parent

# "<what>: median 1.234 ms, …" (lower is better) and "append: 12,345 records/s average …",
# "verify: 67,890 leaves/s …" (higher is better). Numbers inside the label (sizes) are left out of its
# name, since the two sides' logs may end at slightly different sizes.
_TIME = re.compile(r"^(?P<what>.+?): median (?P<v>[0-9][0-9,]*\.?[0-9]*) ms")
_RATE = re.compile(r"^(?P<what>append|verify): (?P<v>[0-9][0-9,]*) (?:records|leaves)/s(?P<avg> average)?")


def figures(out: str) -> dict[str, tuple[float, bool]]:
    """{figure: (value, higher is better)} of one bench_log run's output."""
    found: dict[str, tuple[float, bool]] = {}
    for line in out.splitlines():
        if m := _RATE.match(line):
            if m["what"] == "append" and not m["avg"]:
                continue  # the rate of the last part only: the average is the figure
            found[f"{m['what']} (per s)"] = (float(m["v"].replace(",", "")), True)
        elif m := _TIME.match(line):
            found[re.sub(r"[0-9][0-9,]*", "N", m["what"]) + " (ms)"] = (float(m["v"].replace(",", "")), False)
    return found


def run(code: Path | None, args: argparse.Namespace) -> dict[str, tuple[float, bool]]:
    script = (code / "scripts" if code is not None else HERE) / "bench_log.py"
    cmd = [sys.executable, str(script), "--entries", str(args.entries), "--samples", str(args.samples), "--no-pymerkle"]
    done = subprocess.run(cmd, env=env_for(code), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{'before' if code else 'now'}: bench_log failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return figures(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--entries", type=int, default=100_000, help="entries in each run's log")
    ap.add_argument("--samples", type=int, default=1000, help="samples of each timed read")
    ap.add_argument("--tolerance", type=float, default=0.05, help="how far a median ratio may move (default 5%%)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; {machine_speed.describe()}", flush=True)
    ratios: dict[str, list[float]] = {}
    better: dict[str, bool] = {}
    unpaired: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        before = worktree(args.before, Path(tmp))
        try:
            for k in range(args.rounds):
                order = [("before", before), ("now", None)]
                got = {name: run(code, args) for name, code in (order if k % 2 == 0 else order[::-1])}
                for side, other in (("before", "now"), ("now", "before")):
                    for name in sorted(set(got[side]) - set(got[other]) - unpaired):
                        unpaired.add(name)
                        print(f"  not compared (only {side} prints it): {name}", flush=True)
                for name in sorted(set(got["before"]) & set(got["now"])):
                    (b, higher), (n, _) = got["before"][name], got["now"][name]
                    ratios.setdefault(name, []).append(n / b)
                    better[name] = higher
                print(f"  round {k + 1} ({'before first' if k % 2 == 0 else 'now first'}): {len(ratios)} figures paired",
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(before)],
                           capture_output=True)
    print(f"\nnow/before over {args.rounds} alternating rounds, {args.entries:,} entries (median ratio, range; "
          f"a time should not grow, a rate not fall, by more than {args.tolerance:.0%}):")
    worst = 0
    for name, rs in sorted(ratios.items()):
        rs.sort()
        med = statistics.median(rs)
        off = (1 - med) if better[name] else (med - 1)  # how much worse now is
        worst += off > args.tolerance
        print(f"  {name:<95} {med:5.2f}  ({rs[0]:.2f}–{rs[-1]:.2f})  {'ok' if off <= args.tolerance else 'WORSE'}")
    print(f"{len(ratios) - worst} of {len(ratios)} figures within {args.tolerance:.0%}")
    print("after the run, " + machine_speed.describe())


if __name__ == "__main__":
    main()
