"""Benchmark of the log core: durable append (every new artist's VRF tag and every batch's map leaf
computed), proofs, artists' first sight and map proofs, verify, bytes per entry.

Run with `scripts/bench` (sets up the venv with pymerkle for the comparison). Prints one line per figure.
"""

from __future__ import annotations

from datetime import datetime, timezone

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import orjson

import machine_speed  # scripts/machine_speed.py

from tlog import merkle, records
from tlog.artistmap import verify_proof
from tlog.canonical import loads_strict
from tlog.demo import sample_records
from tlog.log import init_log, open_log
from tlog.maps import rebuild_map
from tlog.records import validate_use
from tlog.sequencer import Submission
from tlog.store.sqlite import SqliteStore
from tlog.verify import verify_log


FEED_ARTIST = "sc:user:feed-bench"  # one artist with a record in every FEED_EVERY: 10,000 entries in 1M


def _gen_lines(n: int, artists: int, feed_every: int) -> list[tuple[str, bytes]]:
    out = []
    for i, (s, r) in enumerate(sample_records(n, artists=artists, seed=7)):
        if feed_every and i % feed_every == 0:  # spread over the whole log, as a prolific artist's uses are
            r = {**r, "artist_id": FEED_ARTIST, "content_id": f"sc:track:feed-{i // feed_every % 20}"}
        out.append((s, orjson.dumps(r)))
    return out


def bench_append(db: Path, n: int, batch: int, artists: int, feed_every: int) -> None:
    print(f"generating {n:,} realistic records ({artists:,} artists)…", flush=True)
    lines = _gen_lines(n, artists, feed_every)
    gc.freeze()  # the generated input is not part of what is measured: keep it out of the collector's way
    log = init_log(db, "bench.tlog.example/log")
    # As `tlog append` does: batches are written by a child process while the next one is built.
    seq = log.sequencer(writer=log.process_writer())
    purposes = seq.policy.purposes

    def batches() -> Iterator[list[Submission]]:
        # The whole pipeline is timed: parse + validate + decide + canonical JSON + hashing + durable commit.
        for i in range(0, n, batch):
            now = datetime.now(timezone.utc)
            chunk = lines[i : i + batch]
            yield [Submission(chunk[0][0], [validate_use(loads_strict(b), now=now, purposes=purposes) for _, b in chunk])]

    t_start = time.perf_counter()
    marks = [(0, t_start)]
    done = 0
    for (res,) in seq.append_all(batches()):  # each batch durable when it comes out
        if isinstance(res, Exception):
            raise res
        done += len(res)
        if done % 100_000 == 0 or done == n:
            marks.append((done, time.perf_counter()))
            d0, t0 = marks[-2]
            print(f"  {done:>9,} entries: {(done - d0) / (marks[-1][1] - t0):>8,.0f} records/s (last {done - d0:,})", flush=True)
    seq.close()
    total = time.perf_counter() - t_start
    last_n = min(100_000, n)
    last = next((t for d, t in marks if d == n - last_n), None)
    print(f"append: {n / total:,.0f} records/s average over {n:,} (batches of {batch}, durable: WAL + synchronous=FULL)")
    if last is not None:
        print(f"append: {last_n / (marks[-1][1] - last):,.0f} records/s for the last {last_n:,}")
    entries = log.store.size()  # the records, the map leaf of each batch and init's three leaves
    log.close()
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    print(f"database: {size:,} bytes for {entries:,} entries = {size / entries:,.0f} bytes/entry "
          f"({size / n:,.0f} bytes/record)")


def bench_proofs(db: Path, samples: int) -> None:
    store = SqliteStore(db, readonly=True)
    size = store.size()
    rnd = random.Random(1)
    root = merkle.tree_root(size, store)
    for name, fn in (
        ("inclusion", lambda: _inclusion(store, rnd, size, root)),
        ("consistency", lambda: _consistency(store, rnd, size, root)),
    ):
        times = []
        for _ in range(samples):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        times.sort()
        print(f"{name} proof at {size:,}: median {statistics.median(times) * 1e3:.3f} ms, "
              f"p99 {times[int(len(times) * 0.99)] * 1e3:.3f} ms ({samples} random proofs, warm, includes verification)")
    store.close()


def _inclusion(store: SqliteStore, rnd: random.Random, size: int, root: bytes) -> None:
    i = rnd.randrange(size)
    proof = merkle.inclusion_proof(i, size, store)
    merkle.verify_inclusion(store.leaf_hashes(i, i + 1)[0], i, size, proof, root)


def _consistency(store: SqliteStore, rnd: random.Random, size: int, root: bytes) -> None:
    old = rnd.randrange(1, size)
    proof = merkle.consistency_proof(old, size, store)
    merkle.verify_consistency(old, size, merkle.tree_root(old, store), root, proof)


def bench_artists(db: Path, samples: int) -> None:
    """Issue 11's figures: an artist's first sight (its VRF tag and proof computed), the artist map's
    size and proofs at the log's size, and what the map and the tags cost in storage."""
    log = open_log(db, secrets_needed=True)
    times = []
    for k in range(samples):
        t = time.perf_counter()
        records.artist_tag(log.vrf, f"new:artist:{k}")  # type: ignore[arg-type]
        times.append(time.perf_counter() - t)
    print(f"first sight of an artist (VRF tag and proof): median {statistics.median(times) * 1e3:.3f} ms, "
          f"p99 {sorted(times)[int(len(times) * 0.99)] * 1e3:.3f} ms over {samples:,} new artists")
    size = log.store.size()
    t = time.perf_counter()
    amap = rebuild_map(log.store, size)
    print(f"artist map at {size:,}: {len(amap):,} artists, rebuilt from the store and checked against its map "
          f"leaf in {(time.perf_counter() - t) * 1e3:.0f} ms")
    tags = [a.tag for a in log.store.artists()]
    rnd = random.Random(2)
    times = []
    for _ in range(2000):
        tag = rnd.choice(tags)
        t = time.perf_counter()
        proof = amap.prove(tag)
        verify_proof(amap.root(), proof)
        times.append(time.perf_counter() - t)
    print(f"map proof at {size:,}: median {statistics.median(times) * 1e3:.3f} ms (2000 random artists, includes verification)")
    maps = log.store.conn.execute("SELECT count(*) FROM entries e JOIN names n ON n.id = e.type WHERE n.value = 'map'").fetchone()[0]
    proofs = sum(len(a.proof) for a in log.store.artists())
    print(f"map and tags in storage: {maps:,} map leaves and {proofs:,} bytes of VRF proofs "
          f"(about {(maps * 120 + proofs) / size:.1f} bytes/entry; a map leaf row is about 120 bytes)")
    log.close()


def bench_feed(db: Path, samples: int) -> None:
    """Issue 14's figure: the Atom feed of an artist with many entries (FEED_ARTIST), served by a real
    `tlog serve` over HTTP: its first page and older pages at random `before`, each FEED_PAGE items."""
    import subprocess
    import urllib.request

    from tlog.server.feeds import FEED_PAGE
    from tlog.tokens import FEED_KEY_PREFIX, new_token

    log = open_log(db)
    state = log.store.artist_state(FEED_ARTIST)
    key, digest = new_token(FEED_KEY_PREFIX)
    log.store.add_feed_key(FEED_ARTIST, digest, 0)
    size = log.store.size()
    log.close()
    if state is None:
        print("artist feed: skipped (--feed-every 0)")
        return
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([sys.executable, "-m", "tlog.cli", "serve", "--db", str(db), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/feeds/artists/{FEED_ARTIST}.atom?key={key}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        rnd = random.Random(3)
        for label, url in (("first page", lambda: base),
                           ("older page", lambda: f"{base}&before={rnd.randrange(size // 10, size)}")):
            times = []
            for _ in range(samples):
                u = url()
                t = time.perf_counter()
                body = urllib.request.urlopen(u, timeout=10).read()
                times.append(time.perf_counter() - t)
            assert body.count(b"<entry>") == FEED_PAGE, body[:500]
            print(f"artist feed, {label} ({FEED_PAGE} entries) of an artist with {state.aseq:,} entries at {size:,}: "
                  f"median {statistics.median(times) * 1e3:.1f} ms, p99 {sorted(times)[int(len(times) * 0.99)] * 1e3:.1f} ms "
                  f"over {samples} HTTP requests")
    finally:
        server.terminate()
        server.wait()


def bench_verify(db: Path) -> None:
    log = open_log(db, readonly=True)
    report = verify_log(log)
    log.close()
    print(f"verify: {report.leaves / report.seconds:,.0f} leaves/s ({report.summary()})")


def bench_pymerkle(n: int, samples: int, workdir: Path) -> None:
    try:
        from pymerkle import SqliteTree
    except ImportError:
        print("pymerkle: not installed (scripts/bench installs it); skipped")
        return
    path = workdir / "pymerkle.db"
    print(f"pymerkle: building a {n:,}-leaf SqliteTree for comparison…", flush=True)
    t = time.perf_counter()
    with SqliteTree(str(path)) as tree:
        for i in range(0, n, 10_000):
            tree.append_entries([f"entry-{j}".encode() for j in range(i, min(i + 10_000, n))])
        build = time.perf_counter() - t
        rnd = random.Random(1)
        times = []
        for _ in range(samples):
            i = rnd.randrange(1, n + 1)
            t = time.perf_counter()
            tree.prove_inclusion(i, n)
            times.append(time.perf_counter() - t)
    print(f"pymerkle 7 SqliteTree: append {n / build:,.0f} entries/s (not durable per batch); "
          f"inclusion proof at {n:,}: median {statistics.median(times) * 1e3:.3f} ms (warm)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--artists", type=int, default=20_000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--feed-every", type=int, default=100,
                    help="one record in N is by one artist, whose Atom feed is timed (0: no feed figure)")
    ap.add_argument("--only-feed", action="store_true", help="build the log, then time the artist feed only")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--no-pymerkle", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        db = Path(tmp) / "bench.db"
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        print(machine_speed.describe(), flush=True)
        bench_append(db, args.entries, args.batch, args.artists, args.feed_every)
        bench_feed(db, min(args.samples, 300))
        if args.only_feed:
            return
        bench_proofs(db, args.samples)
        bench_artists(db, args.artists)
        bench_verify(db)
        if not args.no_pymerkle:
            bench_pymerkle(args.entries, min(args.samples, 500), Path(tmp))
        print("after the run, " + machine_speed.describe())


if __name__ == "__main__":
    main()
