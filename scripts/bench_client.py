"""Benchmarks of the Python client against a real `tlog serve` on a fresh log: single verified uses
(latency), the batch logger (durable spool rate and end-to-end rate), and the aggregator's add().

    ./scripts/bench_client [--records 50000] [--callers 16] [--singles 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from tlog.client import Aggregator, BatchLogger, TlogClient
from tlog.log import init_log

WHEN = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def use(i: int) -> dict[str, Any]:
    return {
        "event_id": f"bench-{i:09d}", "content_id": f"sc:track:{i % 5000}", "artist_id": f"sc:user:{i % 500}",
        "purpose": "recommendation", "phase": "inference",
        "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.07.3"}, "occurred_at": WHEN,
    }


def serve(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tlog.cli", "serve", "--db", str(db), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


async def singles(client: TlogClient, n: int) -> None:
    latencies = []
    for i in range(n):
        t0 = time.perf_counter()
        await client.use(use(10**8 + i))
        latencies.append(time.perf_counter() - t0)
    q = statistics.quantiles(latencies, n=100)
    print(f"use(), one at a time, receipt verified: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms ({n} calls)")


async def batched(client: TlogClient, spool: Path, n: int, callers: int) -> None:
    async with BatchLogger(client, spool) as logger:
        per = n // callers

        async def caller(k: int) -> None:
            for i in range(k * per, (k + 1) * per):
                await logger.log(use(i))

        t0 = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(callers)))
        spooled = time.perf_counter() - t0
        await logger.flush()
        total = time.perf_counter() - t0
    print(f"BatchLogger.log(), {callers} concurrent callers: {per * callers / spooled:,.0f} records/s durable in the "
          f"spool; {per * callers / total:,.0f} records/s acknowledged by the log ({per * callers} records)")


async def aggregate(client: TlogClient, spool: Path) -> None:
    async with BatchLogger(client, spool) as logger:
        agg = Aggregator(logger, prefix="bench-agg", window=60)
        template = {k: v for k, v in use(0).items() if k not in ("event_id", "occurred_at")}
        keys = [{**template, "content_id": f"sc:track:{i}"} for i in range(1000)]
        n = 1_000_000
        t0 = time.perf_counter()
        for i in range(n):
            agg.add(keys[i % 1000])
        elapsed = time.perf_counter() - t0
        made = await agg.flush()
        await logger.flush()
    print(f"Aggregator.add(): {n / elapsed:,.0f} calls/s in memory; {n:,} calls became {made} records")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--singles", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "tlog.db"
        init_log(db, "bench.tlog.example/log").close()
        token = subprocess.run([sys.executable, "-m", "tlog.cli", "token", "create", "--db", str(db), "--service", "recsys"],
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        proc, url = serve(db)
        try:
            vkey = orjson.loads(urllib.request.urlopen(url + "/v1/log").read())["verifier_keys"][0]
            async with TlogClient(url, token, vkey=vkey) as client:
                await singles(client, args.singles)
                await batched(client, Path(tmp) / "bench.spool", args.records, args.callers)
                await aggregate(client, Path(tmp) / "agg.spool")
        finally:
            proc.terminate()
            proc.wait()
    print(f"({os.cpu_count()} cores; server and client on the same machine)")


if __name__ == "__main__":
    asyncio.run(main())
