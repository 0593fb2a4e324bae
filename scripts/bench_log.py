"""Benchmark of the log core: durable append (every new artist's VRF tag and every batch's map leaf
computed), proofs, artists' first sight and map proofs, artists' listings, verify, bytes per entry.

Run with `scripts/bench` (sets up the venv with pymerkle for the comparison). Prints one line per figure.
`--backend postgres` runs the same on a scratch PostgreSQL (tlog/pglocal.py, synchronous_commit on);
`--backend both` runs SQLite, then PostgreSQL, in the same run.
"""

from __future__ import annotations

from datetime import datetime, timezone

import argparse
import contextlib
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

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
from tlog.store import open_store
from tlog.store.base import UseFilter
from tlog.verify import verify_log


FEED_ARTIST = "sc:user:feed-bench"  # one artist with a record in every FEED_EVERY: 10,000 entries in 1M


def _gen_lines(n: int, artists: int, feed_every: int) -> list[tuple[str, bytes]]:
    out = []
    for i, (s, r) in enumerate(sample_records(n, artists=artists, seed=7)):
        if feed_every and i % feed_every == 0:  # spread over the whole log, as a prolific artist's uses are
            r = {**r, "artist_id": FEED_ARTIST, "content_id": f"sc:track:feed-{i // feed_every % 20}"}
        out.append((s, orjson.dumps(r)))
    return out


def bench_append(db: Path | str, n: int, batch: int, artists: int, feed_every: int) -> None:
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
    durable = "synchronous_commit on" if isinstance(db, str) else "WAL + synchronous=FULL"
    print(f"append: {n / total:,.0f} records/s average over {n:,} (batches of {batch}, durable: {durable})")
    if last is not None:
        print(f"append: {last_n / (marks[-1][1] - last):,.0f} records/s for the last {last_n:,}")
    entries = log.store.size()  # the records, the map leaf of each batch and init's three leaves
    if isinstance(db, str):
        size = log.store.conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    log.close()
    if isinstance(db, Path):
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    print(f"database: {size:,} bytes for {entries:,} entries = {size / entries:,.0f} bytes/entry "
          f"({size / n:,.0f} bytes/record)")


def bench_proofs(db: Path | str, samples: int) -> None:
    store = open_store(db, readonly=True)
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


def _inclusion(store: Any, rnd: random.Random, size: int, root: bytes) -> None:
    i = rnd.randrange(size)
    proof = merkle.inclusion_proof(i, size, store)
    merkle.verify_inclusion(store.leaf_hashes(i, i + 1)[0], i, size, proof, root)


def _consistency(store: Any, rnd: random.Random, size: int, root: bytes) -> None:
    old = rnd.randrange(1, size)
    proof = merkle.consistency_proof(old, size, store)
    merkle.verify_consistency(old, size, merkle.tree_root(old, store), root, proof)


def bench_artists(db: Path | str, samples: int) -> None:
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


@contextlib.contextmanager
def _serving(db: Path | str) -> Iterator[str]:
    """A real `tlog serve` on the log (its keys found as `tlog serve` finds them); yields its base URL."""
    import subprocess
    import urllib.request

    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([sys.executable, "-m", "tlog.cli", "serve", "--db", str(db), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def _http_times(urls: Callable[[], str], samples: int, headers: dict[str, str] | None = None) -> list[float]:
    import urllib.request

    times = []
    for _ in range(samples):
        req = urllib.request.Request(urls(), headers=headers or {})
        t = time.perf_counter()
        urllib.request.urlopen(req, timeout=10).read()
        times.append(time.perf_counter() - t)
    return sorted(times)


def bench_feed(db: Path | str, samples: int) -> None:
    """Issue 14's figure: the Atom feed of an artist with many entries (FEED_ARTIST), served by a real
    `tlog serve` over HTTP: its first page and older pages at random `before`, each FEED_PAGE items."""
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
    with _serving(db) as url:
        base = f"{url}/feeds/artists/{FEED_ARTIST}.atom?key={key}"
        rnd = random.Random(3)
        for label, page in (("first page", lambda: base),
                            ("older page", lambda: f"{base}&before={rnd.randrange(size // 10, size)}")):
            times = _http_times(page, samples)
            print(f"artist feed, {label} ({FEED_PAGE} entries) of an artist with {state.aseq:,} entries at {size:,}: "
                  f"median {statistics.median(times) * 1e3:.1f} ms, p99 {times[int(len(times) * 0.99)] * 1e3:.1f} ms "
                  f"over {samples} HTTP requests")


def _cursor(after: int) -> str:
    """The listing's cursor (server/artist.py): `after:<index>`, base64url without padding."""
    import base64

    return base64.urlsafe_b64encode(f"after:{after}".encode()).decode().rstrip("=")


def bench_http(dbs: list[Path | str], samples: int) -> None:
    """Proofs and artists' listings as a client gets them: over HTTP from a real server on each log, one
    request to each in turn, so that the machine's other load falls on every backend alike. The logs hold
    the same records (the same seed), so each request is asked of every server."""
    from tlog.tokens import new_token

    tokens = []
    for db in dbs:
        with open_log(db) as log:
            token, digest = new_token()
            log.store.add_token("auditor", None, digest, 0)
            tokens.append({"Authorization": f"Bearer {token}"})
            size = log.store.size()
            artists = [a.artist_id for a in log.store.artists() if a.aseq > 1]
    rnd = random.Random(5)
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(_serving(db)) for db in dbs]
        for label, path, auth in (
            ("inclusion proof", lambda: f"/v1/proof/inclusion?index={rnd.randrange(size)}&size={size}", False),
            ("artist listing, page of 100 from a random cursor",
             lambda: f"/v1/artists/{rnd.choice(artists)}/uses?limit=100&cursor={_cursor(rnd.randrange(size))}", True),
        ):
            times: list[list[float]] = [[] for _ in dbs]
            for _ in range(samples):
                p = path()
                for k, url in enumerate(urls):
                    times[k] += _http_times(lambda: url + p, 1, tokens[k] if auth else None)
            for db, ts in zip(dbs, times):
                ts.sort()
                print(f"{label} over HTTP at {size:,}, {_backend(db)}: median {statistics.median(ts) * 1e3:.2f} ms, "
                      f"p99 {ts[int(len(ts) * 0.99)] * 1e3:.2f} ms ({samples} requests, alternating backends)")


def _backend(db: Path | str) -> str:
    return "PostgreSQL" if isinstance(db, str) else "SQLite"


def bench_listings(db: Path | str, samples: int) -> None:
    """What an artist's API asks of the store: a page of an artist's uses from a random cursor, and a
    listing filtered by a purpose (read until a page is full or the artist's history ends)."""
    store = open_store(db, readonly=True)
    artists = [a for a in store.artists() if a.aseq > 1]
    rnd = random.Random(4)
    for label, flt in (("page of 100 from a random cursor", lambda a: UseFilter(after=rnd.randrange(a.head))),
                       ("page of 100 filtered by a rare purpose", lambda a: UseFilter(purpose="model_training_generative"))):
        times = []
        for _ in range(samples):
            a = rnd.choice(artists)
            f = flt(a)
            t = time.perf_counter()
            store.artist_entries(a.artist_id, f, 100)
            times.append(time.perf_counter() - t)
        times.sort()
        print(f"artist listing, {label} at {store.size():,}: median {statistics.median(times) * 1e3:.2f} ms, "
              f"p99 {times[int(len(times) * 0.99)] * 1e3:.2f} ms ({samples} random artists of {len(artists):,})")
    store.close()


def bench_verify(db: Path | str) -> None:
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


def _databases(backend: str, tmp: Path, stack: contextlib.ExitStack) -> list[Path | str]:
    """The database of each backend to measure: a file, or a database on a scratch PostgreSQL (removed with
    `stack`) whose key folder $TLOG_KEYS names (for this process and the servers it starts)."""
    dbs: list[Path | str] = []
    for name in ("sqlite", "postgres") if backend == "both" else (backend,):
        if name == "sqlite":
            dbs.append(tmp / "bench.db")
            continue
        from tlog.pglocal import LocalPostgres

        pg = LocalPostgres.create().start()  # a folder of its own: the server runs as another user under root
        stack.callback(pg.remove)
        os.environ["TLOG_KEYS"] = str(tmp / "keys")
        dbs.append(pg.create_database("bench"))
    return dbs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
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
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, contextlib.ExitStack() as stack:
        print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        print(machine_speed.describe(), flush=True)
        dbs = _databases(args.backend, Path(tmp), stack)
        for db in dbs:
            print(f"--- {_backend(db)}", flush=True)
            bench_append(db, args.entries, args.batch, args.artists, args.feed_every)
            bench_feed(db, min(args.samples, 300))
            if args.only_feed:
                continue
            bench_proofs(db, args.samples)
            bench_listings(db, min(args.samples, 500))
            bench_artists(db, args.artists)
            bench_verify(db)
        if not args.only_feed:
            print("--- over HTTP", flush=True)
            bench_http(dbs, min(args.samples, 500))
        if not args.no_pymerkle:
            bench_pymerkle(args.entries, min(args.samples, 500), Path(tmp))
        print("after the run, " + machine_speed.describe())

if __name__ == "__main__":
    main()
