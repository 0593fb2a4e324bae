"""The cluster kill loop: front ends of one PostgreSQL log under load from the real client, the sequencing
one SIGKILLed at random moments and restarted (as a supervisor would), while another takes over.

Shared by tests/test_cluster_killloop.py (a few kills) and scripts/reliability (thirty and more). Each
client sends to the front ends in turn, as a load balancer would, and resends a request unchanged, to
the next front end, until one acknowledges it. At the end every event a client sent must be in the log
exactly once, at the index and leaf hash of its acknowledgement; every checkpoint any front end served
must be consistent with the final log (so with every other), the sizes served never going down; and
`tlog verify --db postgresql://…` must pass.

The failover time of a kill is from the SIGKILL to the first acknowledgement of a request *sent after
it* (so sequenced by another front end: the killed one is gone), through any front end.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp

from tlog.client import TlogClient
from tlog.client.errors import is_transient
from tlog.errors import TlogError
from tlog.pglocal import LocalPostgres

from .clusterkit import Cluster, Front
from .faultkit import check_log
from .killloop import KillReport, keep_checkpoint, use

Say = Callable[[str], None]


@dataclass
class ClusterReport(KillReport):
    fronts: int = 0
    failovers: list[float] = field(default_factory=list)  # seconds, one a kill
    fence_refusals: int = 0  # batches the fence refused, from the front ends' logs
    verified: bool = False  # `tlog verify --db` passed

    def percentile(self, p: float) -> float:
        """The p-th percentile of the failover times (nearest rank), 0 if there were none."""
        xs = sorted(self.failovers)
        return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))] if xs else 0.0

    def ok(self) -> bool:
        return super().ok() and self.verified and len(self.failovers) == self.kills

    def summary(self) -> str:
        med = statistics.median(self.failovers) if self.failovers else 0.0
        return (f"{self.kills} kills of the sequencer among {self.fronts} front ends; failover p50 {med:.2f} s, "
                f"p99 {self.percentile(99):.2f} s, max {max(self.failovers, default=0):.2f} s; "
                f"{self.acknowledged} acknowledged, {self.lost} lost, {self.duplicates} duplicated")


class _Load:
    """The clients and what they saw."""

    def __init__(self, cluster: Cluster, rep: ClusterReport, seed: int) -> None:
        self.cluster, self.rep, self.seed = cluster, rep, seed
        self.acked: dict[tuple[str, str], tuple[int, str]] = {}
        self.acks: list[tuple[float, float]] = []  # (sent at, acknowledged at), monotonic
        self.served: list[bytes] = []
        self.done = False

    async def client(self, c: int, logs: list[TlogClient], max_batch: int) -> None:
        n = 0
        crand = random.Random(self.seed * 1000 + c)
        turn = c
        while not self.done:
            recs = [use(c, n + k) for k in range(crand.randint(1, max_batch))]
            n += len(recs)
            self.rep.sent += len(recs)
            attempt = 0
            while True:
                attempt += 1
                log = logs[turn % len(logs)]
                turn += 1  # the next request, or this one again, goes to the next front end
                sent = time.monotonic()
                try:
                    results = [await log.use(recs[0])] if len(recs) == 1 else await log.log_many(recs)
                    break
                except TlogError as exc:
                    if not is_transient(exc):
                        self.rep.unexpected += 1
                        self.rep.notes.append(f"client {c}: {type(exc).__name__}: {exc.message}")
                        return
                    await asyncio.sleep(0.05)
            self.acks.append((sent, time.monotonic()))
            self.rep.retried += attempt > 1
            for r in results:
                self.rep.duplicate_answers += r.duplicate
                self.acked[("loadgen", r.event_id)] = (r.index, r.leaf_hash.hex())

    async def poll(self, session: aiohttp.ClientSession) -> None:
        """Keeps every checkpoint a front end served, in the order seen."""
        i = 0
        while not self.done:
            fronts = list(self.cluster.fronts.values())
            front = fronts[i % len(fronts)]
            i += 1
            await keep_checkpoint(session, front.url, self.served)
            await asyncio.sleep(0.01)

    def failover(self, killed_at: float) -> float | None:
        after = [acked for sent, acked in self.acks if sent >= killed_at]
        return min(after) - killed_at if after else None


async def cluster_kill_loop(workdir: Path, pg: LocalPostgres, *, kills: int = 3, fronts: int = 3, clients: int = 4,
                            max_batch: int = 25, seed: int = 1, gap: tuple[float, float] = (0.3, 1.5),
                            say: Say = lambda s: None) -> ClusterReport:
    """SIGKILLs the sequencing front end `kills` times under load, restarting it each time."""
    rnd = random.Random(seed)
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    cluster = await loop.run_in_executor(None, Cluster.create, workdir, pg, f"kill{seed}_{int(time.time() * 1000)}")
    rep = ClusterReport("cluster kill loop", fronts=fronts)
    names = [f"f{i}" for i in range(fronts)]
    try:
        for name in names:
            await loop.run_in_executor(None, cluster.start, name)
        load = _Load(cluster, rep, seed)
        async with aiohttp.ClientSession() as session:
            logs = [TlogClient(cluster.fronts[n].url, cluster.token, vkey=cluster.vkey, session=session, retries=0,
                               timeout=15) for n in names]
            tasks = [asyncio.create_task(load.client(c, logs, max_batch)) for c in range(clients)]
            poller = asyncio.create_task(load.poll(session))
            for k in range(kills):
                seq = await loop.run_in_executor(None, cluster.wait_sequencer, 30.0)
                await _wait_acked(load, since=time.monotonic())
                await asyncio.sleep(rnd.uniform(*gap))
                killed_at = await _kill(cluster, seq)
                rep.kills += 1
                await loop.run_in_executor(None, cluster.start, seq.name)  # a supervisor restarts it
                took = await _wait_failover(load, killed_at)
                rep.failovers.append(took)
                say(f"  kill {k + 1}: {seq.name} (pid {seq.pid}); a write was acknowledged {took:.2f} s later")
            load.done = True
            await asyncio.gather(*tasks)
            await poller
    finally:
        await loop.run_in_executor(None, cluster.stop_all)
    outputs = [f.output() for f in cluster.fronts.values()]
    rep.tracebacks = sum(o.count("Traceback") for o in outputs)
    rep.fence_refusals = sum(o.count("refused by the fence") for o in outputs)
    rep.acknowledged = len(load.acked)
    await loop.run_in_executor(None, _check, rep, cluster, load)
    rep.seconds = time.monotonic() - t0
    return rep


async def _wait_acked(load: _Load, since: float, timeout: float = 30) -> None:
    deadline = since + timeout
    while not any(acked >= since for _, acked in load.acks[-50:]):
        if time.monotonic() > deadline:
            raise AssertionError(f"no write acknowledged within {timeout} s")
        await asyncio.sleep(0.02)


async def _kill(cluster: Cluster, seq: Front) -> float:
    killed_at = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, lambda: cluster.stop(seq.name, kill=True))
    return killed_at


async def _wait_failover(load: _Load, killed_at: float, timeout: float = 60) -> float:
    while (took := load.failover(killed_at)) is None:
        if time.monotonic() - killed_at > timeout:
            raise AssertionError(f"no write acknowledged within {timeout} s of the kill")
        await asyncio.sleep(0.01)
    return took


def _check(rep: ClusterReport, cluster: Cluster, load: _Load) -> None:
    c = check_log(cluster.dsn, acked=load.acked, served=load.served)
    rep.lost, rep.wrong, rep.duplicates, rep.forks, rep.rollbacks = c.lost, c.wrong, c.duplicates, c.forks, c.rollbacks
    rep.checkpoints, rep.size = c.checkpoints, c.size
    rep.map_checks += 1
    rep.map_errors += len(c.maps)
    rep.notes.extend(c.maps)
    done = cluster.cli("verify", "--db", cluster.dsn, check=False)
    rep.verified = done.returncode == 0
    if not rep.verified:
        rep.notes.append(f"tlog verify --db: exit {done.returncode}: {done.stderr[-500:]}")


def run_cluster_kill_loop(workdir: Path, pg: LocalPostgres, **kw: Any) -> ClusterReport:
    return asyncio.run(cluster_kill_loop(workdir, pg, **kw))
