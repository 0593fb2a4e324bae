"""Timings of the web pages on a large log: the public page served, the artist summary, and in a real
headless Chromium the artist page's first figures and its in-browser verification.

    python scripts/bench_pages.py --db /tmp/pagesbench/tlog.db [--records 1000000] [--artist-entries 10000]

Builds the log once (reused when it exists): `--records` realistic uses, one artist in every
records/artist-entries of them being `sc:user:big`. Then serves it with `tlog serve` and measures."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIG = "sc:user:big"


def build(db: Path, n: int, big: int) -> None:
    from tlog.demo import sample_records
    from tlog.log import init_log
    from tlog.records import validate_use
    from tlog.sequencer import Submission

    db.parent.mkdir(parents=True, exist_ok=True)
    log = init_log(db, "bench.pages.example/log")
    seq = log.sequencer(writer=log.process_writer())
    seq.set_preferences(BIG, {"no_ai": True}, by="artist")
    every = max(n // big, 1)
    purposes = seq.policy.purposes
    t0 = time.perf_counter()

    def batches():
        chunk = []
        for i, (service, r) in enumerate(sample_records(n, artists=20_000, seed=11)):
            if i % every == 0:
                r["artist_id"] = BIG
                r["content_id"] = f"sc:track:big-{i % 40}"
            chunk.append(r)
            if len(chunk) == 1000:
                now = datetime.now(timezone.utc)
                yield [Submission("recsys", [validate_use(x, now=now, purposes=purposes) for x in chunk])]
                chunk = []
        if chunk:
            yield [Submission("recsys", [validate_use(x, now=datetime.now(timezone.utc), purposes=purposes) for x in chunk])]

    done = 0
    for (res,) in seq.append_all(batches()):
        if isinstance(res, Exception):
            raise res
        done += len(res)
        if done % 100_000 == 0:
            print(f"  {done:,} records, {done / (time.perf_counter() - t0):,.0f}/s", flush=True)
    seq.close()
    print(f"built {log.store.size():,} entries in {time.perf_counter() - t0:.0f} s", flush=True)
    log.close()


def timed_get(url: str, headers: dict[str, str] | None = None) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=120) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, body


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, default=Path("/tmp/pagesbench/tlog.db"))
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--artist-entries", type=int, default=10_000)
    ap.add_argument("--port", type=int, default=8977)
    args = ap.parse_args()
    if not args.db.exists():
        build(args.db, args.records, args.artist_entries)
    tlog = [sys.executable, "-m", "tlog.cli"]
    token = subprocess.run([*tlog, "token", "create", "--artist", BIG, "--db", str(args.db)], capture_output=True,
                           text=True, check=True).stdout.strip().splitlines()[-1]
    server = subprocess.Popen([*tlog, "serve", "--db", str(args.db), "--port", str(args.port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        cold, _ = timed_get(url + "/")
        warm = sorted(timed_get(url + "/")[0] for _ in range(100))
        print(f"GET / at size {timed_get(url + '/healthz')[1].decode()}: first (renders) {cold:.1f} ms; "
              f"then median {statistics.median(warm):.2f} ms, p95 {warm[94]:.2f} ms, max {warm[-1]:.2f} ms (100 requests)")
        cold, body = timed_get(f"{url}/v1/artists/{BIG}/summary", auth)
        warm = sorted(timed_get(f"{url}/v1/artists/{BIG}/summary", auth)[0] for _ in range(20))
        import orjson

        print(f"summary of {orjson.loads(body)['entries']:,} entries: first {cold:.0f} ms, then median "
              f"{statistics.median(warm):.1f} ms ({len(body):,} bytes)")
        ms, body = timed_get(f"{url}/v1/artists/{BIG}/audit?limit=1000", auth)
        print(f"audit page of 1000 entries: {ms:.0f} ms ({len(body):,} bytes)")
        browser(url, token)
    finally:
        server.terminate()
        server.wait(10)


def browser(url: str, token: str) -> None:
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        for run in (1, 2):
            d.get(url + "/healthz")
            d.execute_script("localStorage.clear(); sessionStorage.clear();")
            d.get(f"{url}/artist#token={token}")
            WebDriverWait(d, 600, 0.05).until(lambda d: d.execute_script("return document.querySelector('#verdict').dataset.result"))
            t = d.execute_script("return window.__tlogTimings")
            result = d.execute_script("return document.querySelector('#verdict').dataset.result")
            pages = t.get("pageMs", [])
            print(f"browser run {run}: first figures on screen {t['firstFiguresAt']:.0f} ms after navigation; "
                  f"verdict {result}: {t['verifiedEntries']:,} entries verified in {t['verifyMs'] / 1000:.2f} s "
                  f"({len(pages)} pages: first {pages[0]:.0f} ms incl. signature, VRF, policies and map; then median "
                  f"{statistics.median(pages[1:] or pages):.0f} ms per 1000 entries, fetch included)")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
