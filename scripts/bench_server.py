"""Benchmark of the HTTP service (issue 3). Prints one line per figure.

- batched ingest: 1000 records per request from 4 concurrent clients, against the real server, beside a
  bare aiohttp + canonical JSON + SHA-256 + SQLite pipeline (no validation, no tree) in the same run:
  `--rounds` alternating runs of each (bare, tlog, tlog, bare, ...) with canonical JSON by rfc8785 (the
  reference Python implementation of RFC 8785), and the ratio is the median of the rounds' ratios; then
  one run of the bare pipeline with orjson's sorted keys instead (a shortcut that equals RFC 8785 only
  for ASCII keys and no floats, as here);
- the same past `--entries` (default 1M) entries;
- single-record requests from 64 concurrent clients: records/s and p50/p99 latency;
- time from a successful append to a published checkpoint covering it (p50/p99);
- an artist's audit bundle of ~1000 entries with proofs at that size.

The server and the load generator run as separate processes on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import orjson

import machine_speed  # scripts/machine_speed.py

from tlog.demo import sample_records
from tlog.log import init_log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen) -> None:
    import urllib.request

    for _ in range(400):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


# --- the bare baseline server -------------------------------------------------------------------


BARE = r'''
import hashlib, sqlite3, sys, orjson, rfc8785
from aiohttp import web
if sys.argv[3] == "rfc8785":
    canon = rfc8785.dumps
else:
    canon = lambda r: orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, event TEXT, hash BLOB, leaf BLOB)")
db.execute("CREATE UNIQUE INDEX IF NOT EXISTS ev ON leaves(event)")
n = [0]
async def uses(request):
    body = orjson.loads(await request.read())
    rows = []
    for r in body["records"]:
        leaf = canon(r)
        rows.append((n[0], r["event_id"], hashlib.sha256(b"\0" + leaf).digest(), leaf))
        n[0] += 1
    db.execute("BEGIN")
    db.executemany("INSERT INTO leaves VALUES (?, ?, ?, ?)", rows)
    db.execute("COMMIT")
    return web.json_response({"n": len(rows)})
async def health(request):
    return web.Response(text="ok")
app = web.Application(client_max_size=64 << 20)
app.add_routes([web.post("/v1/uses", uses), web.get("/healthz", health)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
'''


# --- load generation (runs in a child process so it has its own core) ---------------------------


def _bodies(n: int, seed: int, batch: int, artists: int) -> list[bytes]:
    recs = [r for _, r in sample_records(n, artists=artists, seed=seed)]
    return [orjson.dumps({"records": recs[i : i + batch]}) for i in range(0, n, batch)]


async def _batched(url: str, token: str, bodies: list[bytes], clients: int) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    queue = list(reversed(bodies))
    sent = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while queue:
            body = queue.pop()
            async with session.post(url + "/v1/uses", data=body, headers=headers) as r:
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status}: {(await r.text())[:300]}")
                await r.read()
            sent += body.count(b'"event_id"')

    t = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
        await asyncio.gather(*(worker(s) for _ in range(clients)))
    return time.perf_counter() - t, sent


async def _singles(url: str, token: str, n: int, clients: int, seed: int) -> tuple[float, list[float], list[float]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [orjson.dumps(r) for _, r in sample_records(n, artists=5000, seed=seed)]
    latencies: list[float] = []
    lags: list[float] = []
    queue = list(reversed(bodies))

    async def worker(session: aiohttp.ClientSession, k: int) -> None:
        while queue:
            body = queue.pop()
            t = time.perf_counter()
            async with session.post(url + "/v1/uses", data=body, headers=headers) as r:
                data = await r.read()
                if r.status != 200:
                    raise SystemExit(f"HTTP {r.status}: {data[:300]!r}")
            latencies.append(time.perf_counter() - t)
            if k == 0 and len(lags) < 200:  # one client also measures append → covering checkpoint
                index = orjson.loads(data)["results"][0]["index"]
                t0 = time.perf_counter()
                while True:
                    async with session.get(url + "/checkpoint") as r:
                        size = int((await r.read()).split(b"\n")[1])
                    if size > index:
                        break
                    await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t0)

    t = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
        await asyncio.gather(*(worker(s, k) for k in range(clients)))
    return time.perf_counter() - t, latencies, lags


def load_main(args: list[str]) -> None:
    mode, url, token = args[:3]
    if mode == "batched":
        n, seed, clients, artists = map(int, args[3:7])
        bodies = _bodies(n, seed, 1000, artists)
        print(f"ready {len(bodies)}", flush=True)
        sys.stdin.readline()
        secs, sent = asyncio.run(_batched(url, token, bodies, clients))
        print(orjson.dumps({"seconds": secs, "records": sent}).decode(), flush=True)
    else:
        n, clients, seed = map(int, args[3:6])
        secs, lat, lags = asyncio.run(_singles(url, token, n, clients, seed))
        print(orjson.dumps({"seconds": secs, "latencies": lat, "lags": lags}).decode(), flush=True)


def run_load(*args: str) -> dict:
    p = subprocess.Popen([sys.executable, __file__, "--load", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if args[0] == "batched":
        p.stdout.readline()  # generation done before the clock starts
        p.stdin.write("go\n")
        p.stdin.flush()
    out, _ = p.communicate(timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"load generator failed: {out[-500:]}")
    return orjson.loads(out.strip().splitlines()[-1])


# --- the benchmark --------------------------------------------------------------------------------


def start(cmd: list[str], url: str) -> subprocess.Popen:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_up(url, p)
    return p


def stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()


def make_token(db: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tlog.cli", "token", "create", "--db", str(db), *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000, help="grow the log to this size with batched ingest")
    ap.add_argument("--baseline", type=int, default=200_000, help="records per run of the bare-pipeline comparison")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of that comparison (the ratio is their median)")
    ap.add_argument("--singles", type=int, default=20_000)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; server and load generator are separate processes")
    print(machine_speed.describe(), flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmpd = Path(tmp)
        # 1. batched ingest, tlog against the bare pipeline, in alternating rounds: this VM's speed drifts
        # by tens of percent within a minute, so one run of each, a minute apart, can compare two machines.
        bare = tmpd / "bare.py"
        bare.write_text(BARE)
        servers: list[subprocess.Popen] = []  # every server started, stopped at the end whatever happens
        bare_urls = {}
        db = tmpd / "tlog.db"
        init_log(db, "bench.tlog.example/log").close()
        service = make_token(db, "--service", "bench")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        try:
            bare_servers = []
            for canon in ("rfc8785", "orjson"):
                bare_port = free_port()
                bare_urls[canon] = f"http://127.0.0.1:{bare_port}"
                bare_servers.append(start([sys.executable, str(bare), str(tmpd / f"bare-{canon}.db"), str(bare_port), canon],
                                          bare_urls[canon]))
                servers.append(bare_servers[-1])
            servers.append(start([sys.executable, "-m", "tlog.cli", "serve", "--db", str(db), "--port", str(port)], url))

            def batched(target: str, token: str, seed: int) -> float:
                r = run_load("batched", target, token, str(args.baseline), str(seed), "4", "20000")
                return r["records"] / r["seconds"]

            ratios, rates = [], []
            for k in range(args.rounds):
                seed = 11 + k
                if k % 2 == 0:  # ABBA order: a steady drift favours neither side
                    b = batched(bare_urls["rfc8785"], "-", seed)
                    rate = batched(url, service, seed)
                else:
                    rate = batched(url, service, seed)
                    b = batched(bare_urls["rfc8785"], "-", seed)
                ratios.append(rate / b)
                rates.append(rate)
                print(f"  round {k + 1}: bare (rfc8785) {b:,.0f} records/s, tlog {rate:,.0f} records/s = {rate / b:.0%}", flush=True)
            orjson_rate = batched(bare_urls["orjson"], "-", 11)
            for bare_server in bare_servers:  # idle from here on, but out of the way of what follows
                stop(bare_server)
            print(f"bare aiohttp + canonical JSON (orjson) + SHA-256 + SQLite (no validation, no tree): {orjson_rate:,.0f} records/s")
            print(f"tlog batched ingest (1000/request, 4 clients, durable): median {statistics.median(rates):,.0f} records/s; "
                  f"median {statistics.median(ratios):.0%} of bare with rfc8785 over {args.rounds} alternating rounds, "
                  f"{statistics.median(rates) / orjson_rate:.0%} of bare with orjson")
            done = args.baseline * args.rounds
            seed = 100
            while done < args.entries:
                n = min(200_000, args.entries - done)
                r = run_load("batched", url, service, str(n), str(seed), "4", "20000")
                done += n
                seed += 1
                print(f"  {done:>9,} entries: {r['records'] / r['seconds']:,.0f} records/s (last {n:,})", flush=True)
            r = run_load("single", url, service, str(args.singles), "64", "7")
            lat = sorted(r["latencies"])
            print(f"single-record requests, 64 clients: {len(lat) / r['seconds']:,.0f} records/s, "
                  f"p50 {statistics.median(lat) * 1e3:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1e3:.1f} ms")
            lags = sorted(r["lags"])
            print(f"append → covering checkpoint served: p50 {statistics.median(lags) * 1e3:.1f} ms, "
                  f"p99 {lags[int(len(lags) * 0.99)] * 1e3:.1f} ms ({len(lags)} samples; the answer already carries it)")
            bench_artist_query(db, url)
        finally:
            for server in servers:
                stop(server)
    print("after the run, " + machine_speed.describe())


def bench_artist_query(db: Path, url: str) -> None:
    """Gives one artist ~1000 entries, then times its audit bundle (entries, details, proofs)."""
    import urllib.request

    conn = sqlite3.connect(db)
    size = conn.execute("SELECT max(idx) + 1 FROM entries").fetchone()[0]
    conn.close()
    service = make_token(db, "--service", "artist-bench")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    recs = [{"event_id": f"ab-{i}", "content_id": f"sc:track:ab{i % 40}", "artist_id": "sc:user:bench",
             "purpose": "recommendation", "phase": "inference",
             "system": {"id": "recs-ranker", "model": "ranker", "version": "1"}, "occurred_at": now} for i in range(1000)]
    req = urllib.request.Request(url + "/v1/uses", data=orjson.dumps({"records": recs}), method="POST",
                                 headers={"Authorization": f"Bearer {service}", "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
    token = make_token(db, "--artist", "sc:user:bench")
    times = []
    for _ in range(5):
        t = time.perf_counter()
        req = urllib.request.Request(url + "/v1/artists/sc:user:bench/audit", headers={"Authorization": f"Bearer {token}"})
        body = urllib.request.urlopen(req).read()
        times.append(time.perf_counter() - t)
    n = len(orjson.loads(body)["entries"])
    print(f"artist audit bundle: {n} entries with proofs at {size:,} entries: median {statistics.median(times) * 1e3:.0f} ms "
          f"({len(body):,} bytes)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_main(sys.argv[2:])
    else:
        main()
