"""A/B of HTTP batched ingest with webhooks off and on (issue 14): the batched load of
`scripts/bench-server` (1000 records a request, 4 clients, 20,000 artists; about 1% of the records are
refused, each refusal an event) against two `tlog serve` on logs of their own: A without notifications,
B posting them to a receiver that takes `--receiver-delay` seconds (default 1) per event. Rounds
alternate A B, B A, …, both sides get the same records in a round, and the figure is the median of the
rounds' B/A ratios, with their range; beside it, the servers' CPU time per record (each server process
and its children), which a machine shared with other work disturbs less than throughput. The receiver
runs in a process of its own.

    scripts/ab-webhooks --rounds 6 --records 100000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import machine_speed  # scripts/machine_speed.py
from ab_ingest import serve
from bench_server import free_port, run_load, stop, wait_up

ARTISTS = 20_000

RECEIVER = r'''
import asyncio, sys
from aiohttp import web
delay, seen = float(sys.argv[2]), set()
async def hook(request):
    await request.read()
    await asyncio.sleep(delay)
    seen.add(request.headers["webhook-id"])
    return web.Response()
async def count(request):
    return web.Response(text=str(len(seen)))
async def health(request):
    return web.Response(text="ok")
app = web.Application()
app.add_routes([web.post("/hook", hook), web.get("/count", count), web.get("/healthz", health)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
'''


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by process `pid` and its children (the batch writer, the intake worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, parents = 0.0, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree = {pid}
    for _ in range(3):
        tree |= {p for p, (ppid, _) in parents.items() if ppid in tree}
    for p in tree:
        total += parents.get(p, (0, 0.0))[1]
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--records", type=int, default=100_000, help="records per batched-ingest run")
    ap.add_argument("--receiver-delay", type=float, default=1.0, help="seconds the receiver takes per event")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; {machine_speed.describe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        procs: list[subprocess.Popen] = []
        try:
            (tmpd / "receiver.py").write_text(RECEIVER)
            rport = free_port()
            receiver = f"http://127.0.0.1:{rport}"
            procs.append(subprocess.Popen([sys.executable, str(tmpd / "receiver.py"), str(rport), str(args.receiver_delay)]))
            wait_up(receiver, procs[-1])
            secret = tmpd / "webhook.secret"
            secret.write_text(os.urandom(32).hex())
            secret.chmod(0o600)
            targets, pids = {}, {}
            for name, extra in (("off", ()), ("on", ("--notify-url", receiver + "/hook", "--notify-secret-file", str(secret)))):
                (tmpd / name).mkdir()
                p, url, token = serve(None, tmpd / name / "tlog.db", *extra)
                procs.append(p)
                targets[name], pids[name] = (url, token), p.pid
            rates: dict[str, list[float]] = {"off": [], "on": []}
            cpu: dict[str, list[float]] = {"off": [], "on": []}  # server CPU ms per 1000 records
            for k in range(args.rounds):
                got = {}
                for name in (("off", "on") if k % 2 == 0 else ("on", "off")):
                    url, token = targets[name]
                    before = tree_cpu(pids[name])
                    r = run_load("batched", url, token, str(args.records), str(300 + k), "4", str(ARTISTS))
                    cpu[name].append((tree_cpu(pids[name]) - before) * 1e6 / r["records"])
                    got[name] = r["records"] / r["seconds"]
                    rates[name].append(got[name])
                delivered = urllib.request.urlopen(receiver + "/count").read().decode()
                print(f"  round {k + 1}: off {got['off']:,.0f}/s, on {got['on']:,.0f}/s = {got['on'] / got['off']:.3f}; "
                      f"server CPU per 1000 records off {cpu['off'][-1]:.0f} ms, on {cpu['on'][-1]:.0f} ms"
                      f" ({delivered} events delivered so far)", flush=True)
            ratios = sorted(b / a for a, b in zip(rates["off"], rates["on"]))
            print(f"batched ingest with webhooks on / off: median {statistics.median(ratios):.3f} "
                  f"(range {ratios[0]:.3f}–{ratios[-1]:.3f}) over {args.rounds} alternating rounds of "
                  f"{args.records:,} records; medians off {statistics.median(rates['off']):,.0f}/s, "
                  f"on {statistics.median(rates['on']):,.0f}/s")
            cpu_ratios = sorted(b / a for a, b in zip(cpu["off"], cpu["on"]))
            print(f"server CPU (main process and children) per record, on / off: median {statistics.median(cpu_ratios):.3f} "
                  f"(range {cpu_ratios[0]:.3f}–{cpu_ratios[-1]:.3f})")
        finally:
            for p in procs:
                stop(p)
    print("after the run, " + machine_speed.describe())


if __name__ == "__main__":
    main()
