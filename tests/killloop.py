"""The kill loop: a real `tlog serve` under load from real clients, SIGKILLed at random moments.

Shared by tests/test_killloop.py (a few kills) and scripts/reliability (fifty and more). Every request a
client sends is resent, unchanged, until the log acknowledges it (as the client library's spool does),
so at the end every event a client ever sent must be in the log exactly once, at the index and with the
leaf hash of its acknowledgement. A poller keeps every checkpoint `/checkpoint` ever served; each must
be consistent with the final log (so with every later one), and the size served must never go down.
After every restart (a recovery), every map root must be right (SPEC §2.3): the artist map replayed from
the stored public leaves gives the root of every map leaf, every checkpoint ends at a map leaf, and the
restarted server's `/v1/map/proof` answers verify against the map leaf ending the checkpoint they name.

`spool_outage` does the same through the client's BatchLogger (durable SQLite spool): the service keeps
logging through server outages of a second or more; nothing it logged may be lost.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp
import orjson

from tlog.checkpoint import Checkpoint, open_checkpoint
from tlog.client import BatchLogger, TlogClient
from tlog.client.errors import is_transient
from tlog.errors import TlogError
from tlog.log import init_log, open_log
from tlog.note import parse_note

from .faultkit import Served, check_log, free_port, http, make_token, serve, stop
from .mapcheck import MapReplay, check_map_proof_answer

Say = Callable[[str], None]


@dataclass
class KillReport:
    scenario: str
    kills: int = 0
    sent: int = 0  # distinct events the clients logged
    acknowledged: int = 0
    lost: int = 0
    wrong: int = 0  # acknowledged at an index or leaf hash the log does not hold
    duplicates: int = 0
    unexpected: int = 0  # answers that are neither success nor transient (4xx, broken receipts)
    retried: int = 0  # requests resent after a kill
    duplicate_answers: int = 0  # resends answered "already logged": saved but not acknowledged before the kill
    checkpoints: int = 0
    forks: int = 0
    rollbacks: int = 0
    map_checks: int = 0  # recoveries after which every map root was checked
    map_errors: int = 0  # wrong map roots, checkpoints not ending at a map leaf, map proofs that fail
    size: int = 0
    seconds: float = 0.0
    tracebacks: int = 0
    notes: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (self.lost or self.wrong or self.duplicates or self.unexpected or self.forks or self.rollbacks
                    or self.tracebacks or self.map_errors or self.acknowledged != self.sent)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


WHEN = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))


def use(client: int, n: int) -> dict[str, Any]:
    return {
        # Each track is one artist's (SPEC §2.1: a use naming another artist is refused).
        "event_id": f"c{client}-{n:07d}", "content_id": f"sc:track:{(client * 31 + n) % 60}-{(client * 7919 + n) % 17}",
        "artist_id": f"sc:user:{(client * 31 + n) % 60}", "purpose": "recommendation", "phase": "inference",
        "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.07.3"},
        "occurred_at": WHEN, "invocations": 1 + n % 3, "detail": "kill loop",
    }


def _setup(workdir: Path) -> tuple[Path, str, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "tlog.db"
    log = init_log(db, "killloop.example/log")
    vkey = log.verifier.key
    log.close()
    return db, vkey, make_token(db, "--service", "loadgen")


def map_check(db: Path, url: str, replay: MapReplay) -> list[str]:
    """What is wrong with the map roots of a running log (nothing, normally): the stored map leaves up
    to the latest checkpoint, replayed from the public leaves (`replay` goes on from where the last
    check left it: only what was appended since is read), every checkpoint since ending at a map leaf,
    and the server's map proofs for a tag in the map and one that is not, each checked against the map
    leaf ending the checkpoint it names and against the map replayed at that size. Safe while the
    server appends: only leaves under a checkpoint are read, and those never change."""
    log = open_log(db, readonly=True)
    try:
        before = replay.size
        latest = Checkpoint.parse(parse_note(log.store.latest_checkpoint() or b"")[0]).size
        problems = replay.advance(log.store, latest)
        problems += replay.checkpoint_problems(s for s in log.store.checkpoint_sizes() if before < s <= latest)
        tags = [next(iter(replay.values))] if replay.values else []
        for tag in [*tags, "00" * 32]:
            status, body = http("GET", f"{url}/v1/map/proof?tag={tag}")
            if status != 200:
                problems.append(f"GET /v1/map/proof: {status} {body[:200]!r}")
                continue
            answer = orjson.loads(body)
            # The server may have moved on: the checkpoint named is checked from the store, signature first.
            cp, _ = open_checkpoint(log.store.checkpoint_at(answer["size"]) or b"", log.verifiers)
            try:
                got = check_map_proof_answer(lambda path: http("GET", url + path), tag, answer, cp)
            except (AssertionError, TlogError) as exc:
                problems.append(f"the map proof of {tag} at size {cp.size} does not verify: {exc}")
                continue
            if cp.size < replay.size:
                problems.append(f"the server answered a map proof for size {cp.size}, older than {replay.size}")
                continue
            problems += replay.advance(log.store, cp.size)
            if got != replay.values.get(tag):
                problems.append(f"the map proof of {tag} at size {cp.size} shows {got}, the leaves say "
                                f"{replay.values.get(tag)}")
        return problems
    finally:
        log.close()


class _Run:
    """The moving parts of one kill loop: the server (restarted in place) and what was seen."""

    def __init__(self, db: Path, port: int, rep: KillReport) -> None:
        self.db, self.port, self.rep = db, port, rep
        self.server: Served | None = None
        self.served: list[bytes] = []
        self.replay = MapReplay()  # the map replayed so far, carried from one restart's check to the next
        self.up = asyncio.Event()
        self.answered = asyncio.Event()  # a write acknowledged since the last (re)start
        self.done = False

    async def start(self) -> None:
        """Starts (or restarts: a recovery) the server, and checks every map root once it answers."""
        loop = asyncio.get_running_loop()
        self.answered.clear()
        self.server = await loop.run_in_executor(None, serve, self.db, self.port)
        self.up.set()
        problems = await loop.run_in_executor(None, map_check, self.db, self.server.url, self.replay)
        self.rep.map_checks += 1
        self.rep.map_errors += len(problems)
        self.rep.notes.extend(problems)

    async def kill(self) -> None:
        self.up.clear()
        assert self.server is not None
        await asyncio.get_running_loop().run_in_executor(None, lambda: stop(self.server, kill=True))  # type: ignore[arg-type]

    async def poll_checkpoints(self, session: aiohttp.ClientSession) -> None:
        while not self.done:
            await keep_checkpoint(session, f"http://127.0.0.1:{self.port}", self.served)
            await asyncio.sleep(0.01)


async def keep_checkpoint(session: aiohttp.ClientSession, url: str, served: list[bytes]) -> None:
    """Appends the checkpoint `url` serves to `served` if it is not the last one there."""
    try:
        async with session.get(url + "/checkpoint", timeout=aiohttp.ClientTimeout(total=2)) as r:
            if r.status == 200:
                note = await r.read()
                if not served or served[-1] != note:
                    served.append(note)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass


async def kill_loop(workdir: Path, *, kills: int = 5, clients: int = 4, max_batch: int = 25, seed: int = 1,
                    gap: tuple[float, float] = (0.05, 0.5), say: Say = lambda s: None) -> KillReport:
    """SIGKILLs `tlog serve` `kills` times, at random moments under load, restarting it each time."""
    rnd = random.Random(seed)
    t0 = time.monotonic()
    db, vkey, token = await asyncio.get_running_loop().run_in_executor(None, _setup, workdir)
    rep = KillReport("kill loop")
    run = _Run(db, free_port(), rep)
    await run.start()
    acked: dict[tuple[str, str], tuple[int, str]] = {}

    async def client(c: int, log: TlogClient) -> None:
        n = 0
        crand = random.Random(seed * 1000 + c)
        while not run.done:
            recs = [use(c, n + k) for k in range(crand.randint(1, max_batch))]
            n += len(recs)
            rep.sent += len(recs)
            attempt = 0
            while True:
                attempt += 1
                try:
                    if len(recs) == 1 and crand.random() < 0.5:
                        results = [await log.use(recs[0])]  # the inline receipt is verified against vkey
                    else:
                        results = await log.log_many(recs)
                    break
                except TlogError as exc:
                    if not is_transient(exc):  # only "could not answer now" is worth resending
                        rep.unexpected += 1
                        rep.notes.append(f"client {c}: {type(exc).__name__}: {exc.message}")
                        return
                    await asyncio.sleep(0.02 if run.up.is_set() else 0.05)
            if attempt > 1:
                rep.retried += 1
            run.answered.set()
            for r in results:
                rep.duplicate_answers += r.duplicate
                acked[("loadgen", r.event_id)] = (r.index, r.leaf_hash.hex())

    async with aiohttp.ClientSession() as session:
        logs = [TlogClient(f"http://127.0.0.1:{run.port}", token, vkey=vkey, session=session, retries=0, timeout=10)
                for _ in range(clients)]
        tasks = [asyncio.create_task(client(c, lg)) for c, lg in enumerate(logs)]
        poller = asyncio.create_task(run.poll_checkpoints(session))
        for k in range(kills):
            # The random moment is counted from the restarted server's first acknowledged write: /healthz
            # answers while start-up work (the intake worker's imports) still competes for the CPU, and on a
            # busy machine a gap counted from there can end every time before the first commit, leaving the
            # loop to kill only servers that never sequenced anything.
            await asyncio.wait_for(run.answered.wait(), timeout=30)
            await asyncio.sleep(rnd.uniform(*gap))
            await run.kill()
            rep.kills += 1
            await run.start()
            if (k + 1) % 10 == 0:
                say(f"  {k + 1} kills, {len(acked)} acknowledged")
        await asyncio.sleep(rnd.uniform(*gap))
        run.done = True  # clients finish (and resend until acknowledged) what they have in flight
        await asyncio.gather(*tasks)
        await poller
    assert run.server is not None
    rc = stop(run.server)
    out = run.server.output()
    rep.tracebacks = out.count("Traceback")
    if rc != 0:
        rep.notes.append(f"the last server exited {rc} on SIGTERM")
    rep.acknowledged = len(acked)
    _check(rep, db, acked, run.served)
    rep.seconds = time.monotonic() - t0
    return rep


def _check(rep: KillReport, db: Path, acked: dict[tuple[str, str], tuple[int, str]], served: list[bytes]) -> None:
    c = check_log(db, acked=acked, served=served)
    rep.lost, rep.wrong, rep.duplicates, rep.forks, rep.rollbacks = c.lost, c.wrong, c.duplicates, c.forks, c.rollbacks
    rep.checkpoints, rep.size = c.checkpoints, c.size
    rep.map_checks += 1  # check_log replays the map of the final log too
    rep.map_errors += len(c.maps)
    rep.notes.extend(c.maps)
    log = open_log(db, readonly=True)
    try:  # nothing in the log that no client sent (an unacknowledged half of a batch, say)
        extra = log.store.conn.execute("SELECT count(*) FROM entries WHERE event_id IS NOT NULL").fetchone()[0] - len(acked)
    finally:
        log.close()
    if extra:
        rep.notes.append(f"{extra} uses in the log that were never acknowledged")
        rep.unexpected += abs(extra)


async def spool_outage(workdir: Path, *, records: int = 400, outages: int = 3, outage: float = 1.0,
                       rate: float = 200.0, seed: int = 2, say: Say = lambda s: None) -> KillReport:
    """A service logs uses through BatchLogger at about `rate`/s (at least `records` of them) while the
    server is SIGKILLed and kept down for `outage` seconds, `outages` times; then the logger drains.
    Nothing the service logged may be lost."""
    rnd = random.Random(seed)
    t0 = time.monotonic()
    db, vkey, token = await asyncio.get_running_loop().run_in_executor(None, _setup, workdir)
    rep = KillReport("spool outage")
    run = _Run(db, free_port(), rep)
    await run.start()
    futures: list[asyncio.Future[Any]] = []
    async with aiohttp.ClientSession() as session:
        poller = asyncio.create_task(run.poll_checkpoints(session))
        client = TlogClient(f"http://127.0.0.1:{run.port}", token, vkey=vkey, session=session, retries=0, timeout=5)
        logger = BatchLogger(client, workdir / "service.spool", max_delay=0.02, backoff_cap=0.5)
        await logger.start()

        async def outages_() -> None:
            for _ in range(outages):
                await asyncio.sleep(rnd.uniform(0.2, 0.6))
                await run.kill()
                rep.kills += 1
                await asyncio.sleep(outage)  # the service keeps logging into its spool meanwhile
                await run.start()

        downs = asyncio.create_task(outages_())
        i = 0
        while i < records or not downs.done():
            futures.append(await logger.log(use(99, i)))
            i += 1
            await asyncio.sleep(1 / rate)
        rep.sent = i
        await downs
        left = await logger.close(timeout=60)
        if left:
            rep.notes.append(f"{left} records still in the spool after 60 s")
        run.done = True
        await poller
    acked: dict[tuple[str, str], tuple[int, str]] = {}
    for f in futures:
        if f.done() and not f.cancelled() and f.exception() is None:
            r = f.result()
            rep.duplicate_answers += r.duplicate
            acked[("loadgen", r.event_id)] = (r.index, r.leaf_hash.hex())
        else:
            rep.notes.append(f"a spooled record was not acknowledged: {f.exception() if f.done() else 'pending'}")
    assert run.server is not None
    stop(run.server)
    rep.tracebacks = run.server.output().count("Traceback")
    rep.acknowledged = len(acked)
    _check(rep, db, acked, run.served)
    rep.seconds = time.monotonic() - t0
    say(f"  spool: {rep.sent} logged through {rep.kills} outages of {outage:.1f} s, {rep.acknowledged} acknowledged")
    return rep


def run_kill_loop(workdir: Path, **kw: Any) -> KillReport:
    return asyncio.run(kill_loop(workdir, **kw))


def run_spool_outage(workdir: Path, **kw: Any) -> KillReport:
    return asyncio.run(spool_outage(workdir, **kw))
