"""Which PostgreSQL driver for the store: psycopg 3 (synchronous) against asyncpg (async only), on a scratch
PostgreSQL (tlog/pglocal.py) with the store's own schema, durable commits (synchronous_commit on).

Measured, in alternating rounds so that the machine's other load falls on every method alike:
- a 1000-row batch into `entries` (rows shaped as a use's) and its ~1000 `nodes`, one committed transaction
  each: psycopg COPY (text and binary), psycopg executemany (pipelined), asyncpg copy_records_to_table,
  asyncpg executemany;
- 1000 nodes read by id in one query (what a proof page or a tile read does);
- one one-row read, as `tokens_version` does once per event-loop iteration;
- the store's whole `write_batch` of a 1000-record batch built by the real sequencer (entries, nodes,
  artists' heads, names, figures, checkpoint, log head; the write guard), on PostgreSQL and on SQLite,
  alternating batches.

Run with `scripts/bench-pg-driver [--rounds N]`. asyncpg is not a dependency: `pip install asyncpg` into
.venv for the comparison; without it its columns are skipped with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from tlog.demo import sample_records
from tlog.log import init_log
from tlog.pglocal import LocalPostgres
from tlog.records import validate_use
from tlog.sequencer import Submission
from tlog.store import postgres_schema
from tlog.store.rows import ENTRY_COLUMNS, node_id
from tlog.store.writer import InlineWriter

BATCH = 1000
COLUMNS = [c.strip() for c in ENTRY_COLUMNS.split(",")]
TYPES = ["bigint", "integer", "bigint", "integer", "bigint", "bigint", "integer", "text", "text", "integer",
         "integer", "integer", "text", "text", "bigint", "text", "integer", "integer", "integer", "bytea", "text",
         "bytea"]


def entry_rows(start: int) -> list[tuple[Any, ...]]:
    """Rows as the store writes a use: names as small ids, private strings, a nonce and the leaf hash."""
    return [(i, 1, 1_765_000_000_000 + i, i % 5000 + 1, i // 5000, i - 1, 2, f"ev-{i:012d}", f"sc:track:{i % 90_000}",
             3, 4, 5, "2026-12-06T12:00:00Z", None, 1 + i % 7, None, 6, 7, 8, os.urandom(16), None, os.urandom(32))
            for i in range(start, start + BATCH)]


def node_rows(start: int) -> list[tuple[int, bytes]]:
    return [(node_id(1 + (i & 7), i), os.urandom(32)) for i in range(start, start + BATCH)]


class Psycopg:
    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def copy(self, entries: list[tuple[Any, ...]], nodes: list[tuple[int, bytes]], binary: bool = False) -> None:
        fmt = " (FORMAT BINARY)" if binary else ""
        with self.conn.transaction(), self.conn.cursor() as cur:
            for table, columns, types, rows in (("entries", ENTRY_COLUMNS, TYPES, entries),
                                                ("nodes", "id, hash", ["bigint", "bytea"], nodes)):
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN{fmt}") as copy:
                    if binary:
                        copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)

    def executemany(self, entries: list[tuple[Any, ...]], nodes: list[tuple[int, bytes]]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES ({', '.join(['%s'] * len(COLUMNS))})", entries)
            cur.executemany("INSERT INTO nodes (id, hash) VALUES (%s, %s)", nodes)

    def read_nodes(self, ids: list[int], binary: bool = False) -> int:
        q = "SELECT id, hash FROM nodes WHERE id = ANY(%s)"
        return len(self.conn.execute(q, (ids,), binary=binary).fetchall())

    def one_row(self) -> int:
        return int(self.conn.execute("SELECT version FROM tokens_version").fetchone()[0])  # type: ignore[index]


class Asyncpg:
    def __init__(self, dsn: str) -> None:
        import asyncpg  # type: ignore[import-not-found]

        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(dsn))

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def copy(self, entries: list[tuple[Any, ...]], nodes: list[tuple[int, bytes]]) -> None:
        async def go() -> None:
            async with self.conn.transaction():
                await self.conn.copy_records_to_table("entries", records=entries, columns=COLUMNS)
                await self.conn.copy_records_to_table("nodes", records=nodes, columns=["id", "hash"])
        self._run(go())

    def executemany(self, entries: list[tuple[Any, ...]], nodes: list[tuple[int, bytes]]) -> None:
        async def go() -> None:
            async with self.conn.transaction():
                await self.conn.executemany(
                    f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES ({', '.join(f'${k + 1}' for k in range(len(COLUMNS)))})",
                    entries)
                await self.conn.executemany("INSERT INTO nodes (id, hash) VALUES ($1, $2)", nodes)
        self._run(go())

    def read_nodes(self, ids: list[int]) -> int:
        return len(self._run(self.conn.fetch("SELECT id, hash FROM nodes WHERE id = ANY($1::bigint[])", ids)))

    def one_row(self) -> int:
        return int(self._run(self.conn.fetchval("SELECT version FROM tokens_version")))


class _Timed(InlineWriter):
    """The sequencer's writer, timing each `write_batch`."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.times: list[float] = []

    def send(self, batch: Any) -> None:
        t = time.perf_counter()
        super().send(batch)
        self.times.append(time.perf_counter() - t)


def bench_write_batch(dsn: str, folder: Path, batches: int) -> None:
    logs = {"PostgreSQL": init_log(dsn, "bench.tlog.example/log", keys=folder / "keys"),
            "SQLite": init_log(folder / "bench.db", "bench.tlog.example/log")}
    writers = {name: _Timed(log.store) for name, log in logs.items()}
    sequencers = {name: log.sequencer(writer=writers[name]) for name, log in logs.items()}
    purposes = next(iter(sequencers.values())).policy.purposes
    for k in range(batches):
        now = datetime.now(timezone.utc)
        recs = [validate_use(r, now=now, purposes=purposes) for _, r in sample_records(BATCH, artists=5000, seed=k)]
        for seq in sequencers.values():
            (res,) = seq.append_uses([Submission("recsys", recs)])
            assert not isinstance(res, Exception), res
    for name, writer in writers.items():
        ts = sorted(writer.times[1:])  # the first batch is init's
        print(f"write_batch of 1000 records, {name:10}  median {statistics.median(ts) * 1e3:7.2f} ms  p90 "
              f"{ts[int(len(ts) * 0.9)] * 1e3:7.2f} ms  ({len(ts)} batches, committed)")
    for seq in sequencers.values():
        seq.close()
    for log in logs.values():
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    pg = LocalPostgres.create().start()
    try:
        dsn = pg.create_database("bench")
        with psycopg.connect(dsn, autocommit=True) as c:
            postgres_schema.migrate(c, 0)
        pc = Psycopg(dsn)
        try:
            ac: Asyncpg | None = Asyncpg(dsn)
        except ImportError:
            ac = None
            print("asyncpg is not installed (pip install asyncpg into .venv): its columns are skipped")
        writes: dict[str, Callable[[list[Any], list[Any]], None]] = {
            "psycopg COPY (text)": pc.copy,
            "psycopg COPY (binary)": lambda e, n: pc.copy(e, n, binary=True),
            "psycopg executemany": pc.executemany,
        }
        reads: dict[str, Callable[[list[int]], int]] = {"psycopg (text)": pc.read_nodes,
                                                        "psycopg (binary)": lambda ids: pc.read_nodes(ids, binary=True)}
        one: dict[str, Callable[[], int]] = {"psycopg": pc.one_row}
        if ac is not None:
            writes |= {"asyncpg copy_records_to_table": ac.copy, "asyncpg executemany": ac.executemany}
            reads["asyncpg"] = ac.read_nodes
            one["asyncpg"] = ac.one_row
        times: dict[str, list[float]] = {k: [] for k in [*writes, *(f"read 1000 nodes: {k}" for k in reads),
                                                         *(f"one-row read: {k}" for k in one)]}
        start = 0
        for r in range(args.rounds):
            for name, write in writes.items():
                entries, nodes = entry_rows(start), node_rows(start)
                start += BATCH
                t = time.perf_counter()
                write(entries, nodes)
                times[name].append(time.perf_counter() - t)
            for name, read in reads.items():
                ids = [node_id(1 + (i & 7), i) for i in range(0, start, max(1, start // BATCH))][:BATCH]
                t = time.perf_counter()
                assert read(ids) == len(ids)
                times[f"read 1000 nodes: {name}"].append(time.perf_counter() - t)
            for name, read_one in one.items():
                t = time.perf_counter()
                for _ in range(100):
                    read_one()
                times[f"one-row read: {name}"].append((time.perf_counter() - t) / 100)
        print(f"PostgreSQL {pg.dsn()} (synchronous_commit on); {args.rounds} alternating rounds; median and p90")
        for name, ts in times.items():
            ts.sort()
            unit, scale = ("µs", 1e6) if name.startswith("one-row") else ("ms", 1e3)
            what = "per read" if name.startswith("one-row") else ("per query" if name.startswith("read") else
                                                                  "per 1000-row batch (+1000 nodes), committed")
            print(f"{name:36} {statistics.median(ts) * scale:8.2f} {unit}  p90 {ts[int(len(ts) * 0.9)] * scale:8.2f} "
                  f"{unit}  {what}")
        with tempfile.TemporaryDirectory() as folder:
            bench_write_batch(pg.create_database("batches"), Path(folder), args.rounds)
    finally:
        pg.remove()


if __name__ == "__main__":
    main()
