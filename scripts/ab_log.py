"""A/B of a benchmark script against an earlier commit, in alternating rounds: the log core's
(`--bench log`, scripts/bench_log.py: durable append, proofs, listings, the artist map, the artist feed,
the reads over HTTP, verify), the client's (`--bench client`, scripts/bench_client.py: single verified
uses, the batch logger, the aggregator) or the web pages' (`--bench pages`, scripts/bench_pages.py: the public
page, the artist summary, the audit page, and in headless Chromium the artist page's first figures and
its verification).

Each round runs the script once with the earlier commit's code (a `git worktree` of REV, its own copy of
the script, its package first on PYTHONPATH) and once with this checkout's, in an order that alternates
(AB, BA, …), each on a log of its own. Every figure both print is paired round by round; the report is
the median of each figure's now/before ratios, with their range, and whether the median is within
`--tolerance` (a time may grow, a rate may fall, by at most that much).

    scripts/ab-log --before a550b2d --rounds 6 --entries 100000
    scripts/ab-log --bench client --before a550b2d --rounds 6
    scripts/ab-log --bench pages --before a550b2d --rounds 6 --entries 200000
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

# "<what>: median 1.234 ms, …" or "<what>: p50 1.2 ms, …" (lower is better), and "<what>: 12,345 records/s
# …" (leaves/s, calls/s; higher is better; each rate of a line counted apart). Numbers inside the label
# (sizes) are left out of its name, since the two sides' logs may end at slightly different sizes.
_TIME = re.compile(r"^(?P<what>.+?): (?:[^;:]*; then |first [0-9]+ ms, then )?(?:median |p50 )?(?P<v>[0-9][0-9,]*\.?[0-9]*) ms")
# The browser's figures (scripts/bench_pages.py): when the artist page first shows figures, and how long
# its in-browser verification took.
_BROWSER = re.compile(r"^browser run [0-9]+: first figures on screen (?P<first>[0-9]+) ms .* verified in (?P<verify>[0-9.]+) s")
_RATE = re.compile(r"(?P<v>[0-9][0-9,]*) (?P<unit>records|leaves|calls)/s(?P<how>[^;(]*)")
BENCHES = {
    "log": ("bench_log.py", lambda a: ["--entries", str(a.entries), "--samples", str(a.samples), "--no-pymerkle"]),
    "client": ("bench_client.py", lambda a: ["--records", str(a.records)]),
    # Each side builds its log once, in a folder of its own (PAGES_DB), and reuses it in later rounds.
    "pages": ("bench_pages.py", lambda a: ["--records", str(a.entries), "--artist-entries", str(a.entries // 100)]),
}


def figures(out: str) -> dict[str, tuple[float, bool]]:
    """{figure: (value, higher is better)} of one bench_log run's output."""
    found: dict[str, tuple[float, bool]] = {}
    for line in out.splitlines():
        what, _, rest = line.partition(": ")
        if m := _BROWSER.match(line):  # the last run's: the first warms the browser's cache
            found["browser: first figures on screen (ms)"] = (float(m["first"]), False)
            found["browser: verification (ms)"] = (float(m["verify"]) * 1000, False)
        elif m := _TIME.match(line):
            what = re.sub(r" ?\{.*\}", " N", m["what"])  # "GET / at size {healthz JSON}"
            found[re.sub(r"[0-9][0-9,]*", "N", what) + " (ms)"] = (float(m["v"].replace(",", "")), False)
        elif rest and not what.startswith(" ") and "for the last" not in rest:  # not a progress line, not a part
            for r in _RATE.finditer(rest.split(" (")[0]):  # what is in parentheses restates it
                name = re.sub(r"[0-9][0-9,]*", "N", f"{what}: {r['unit']}/s{r['how'].rstrip()}")
                found[name] = (float(r["v"].replace(",", "")), True)
    return found


def run(code: Path | None, args: argparse.Namespace) -> dict[str, tuple[float, bool]]:
    name, arguments = BENCHES[args.bench]
    script = (code / "scripts" if code is not None else HERE) / name
    extra = ["--db", str(args.work / ("before" if code else "now") / "tlog.db")] if args.bench == "pages" else []
    done = subprocess.run([sys.executable, str(script), *arguments(args), *extra], env=env_for(code),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{'before' if code else 'now'}: {name} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return figures(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    ap.add_argument("--bench", choices=sorted(BENCHES), default="log", help="which benchmark (default: log)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--entries", type=int, default=100_000, help="log, pages: entries in each side's log")
    ap.add_argument("--records", type=int, default=20_000, help="client: records through the batch logger")
    ap.add_argument("--samples", type=int, default=1000, help="log: samples of each timed read")
    ap.add_argument("--tolerance", type=float, default=0.05, help="how far a median ratio may move (default 5%%)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; {machine_speed.describe()}", flush=True)
    ratios: dict[str, list[float]] = {}
    better: dict[str, bool] = {}
    unpaired: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        args.work = Path(tmp) / "logs"
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
    print(f"\n{BENCHES[args.bench][0]} now/before over {args.rounds} alternating rounds (median ratio, range; "
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
