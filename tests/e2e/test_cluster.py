"""Many front ends on one PostgreSQL log (SPEC §8), as an operator runs them: real `tlog serve` processes
on free loopback ports, the real client, a real PostgreSQL. Exactly one front end sequences; any of
them takes writes; a sequencer killed, stopped or cut off is replaced within seconds, and nothing
acknowledged is lost, written twice or forked."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tlog.client import TlogClient
from tlog.client.errors import is_transient
from tlog.errors import TlogError
from tlog.pglocal import LocalPostgres, free_port

from ..clusterkit import Cluster, Front
from ..faultkit import check_log, http
from ..killloop import use
from ..postgres import need_postgres
from ..tcpproxy import Proxy

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def cluster(tmp_path: Path, pg_server: LocalPostgres) -> Any:
    c = Cluster.create(tmp_path, pg_server, f"cluster_{os.getpid()}_{time.monotonic_ns()}")
    yield c
    c.stop_all()
    for front in c.fronts.values():
        assert "Traceback" not in front.output(), front.output()[-3000:]


def terms(front: Front) -> list[tuple[int, int]]:
    """(epoch, size it started from) of each term the front end sequenced, from its log."""
    return [(int(e), int(s)) for s, e in re.findall(r"sequencing the log from size (\d+) \(epoch (\d+)\)", front.output())]


class Load:
    """Clients writing through the given front ends in turn (as behind a load balancer), each request
    resent to the next front end until acknowledged; what was acknowledged, and when."""

    def __init__(self, cluster: Cluster, fronts: list[Front], clients: int = 3, max_batch: int = 10) -> None:
        self.cluster, self.fronts, self.clients, self.max_batch = cluster, fronts, clients, max_batch
        self.acked: dict[tuple[str, str], tuple[int, str]] = {}
        self.acks: list[tuple[float, float, str]] = []  # (sent, acknowledged, front end)
        self.transient = 0
        self.done = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop(check=exc_type is None)  # a failure inside says more than clients left waiting by it

    def stop(self, check: bool = True) -> None:
        self.done.set()
        self._thread.join(120 if check else 5)
        assert not check or not self._thread.is_alive(), "clients still waiting for an acknowledgement after 2 minutes"

    def acked_after(self, t: float) -> list[str]:
        """The front ends through which requests sent after `t` were acknowledged."""
        return [f for sent, _, f in self.acks if sent >= t]

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            logs = [(f.name, TlogClient(f.url, self.cluster.token, vkey=self.cluster.vkey, session=session,
                                        retries=0, timeout=15)) for f in self.fronts]
            await asyncio.gather(*(self._client(c, logs) for c in range(self.clients)))

    async def _client(self, c: int, logs: list[tuple[str, TlogClient]]) -> None:
        n, turn = 0, c
        while not self.done.is_set():
            recs = [use(c, n + k) for k in range(1 + (n % self.max_batch))]
            n += len(recs)
            while True:
                name, log = logs[turn % len(logs)]
                turn += 1
                sent = time.monotonic()
                try:
                    results = [await log.use(recs[0])] if len(recs) == 1 else await log.log_many(recs)
                    break
                except TlogError as exc:
                    assert is_transient(exc), exc
                    self.transient += 1
                    await asyncio.sleep(0.05)
            self.acks.append((sent, time.monotonic(), name))
            for r in results:
                self.acked[("loadgen", r.event_id)] = (r.index, r.leaf_hash.hex())


@contextmanager
def under_load(cluster: Cluster) -> Iterator[Load]:
    """Front ends a and b, one sequencing, clients writing through both; all stopped at the end, and none
    may have printed a traceback."""
    try:
        for name in ("a", "b"):
            cluster.start(name)
        cluster.wait_sequencer()
        with Load(cluster, [cluster.fronts["a"], cluster.fronts["b"]]) as load:
            yield load
    finally:
        cluster.stop_all()
    for front in cluster.fronts.values():
        assert "Traceback" not in front.output(), front.output()[-3000:]


def wait_until(pred: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def verified(cluster: Cluster, load: Load) -> None:
    """Everything acknowledged is in the log once, where it was acknowledged, and the log verifies."""
    c = check_log(cluster.dsn, acked=load.acked)
    assert (c.lost, c.wrong, c.duplicates, c.forks) == (0, 0, 0, 0), c
    done = cluster.cli("verify", "--db", cluster.dsn, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_two_front_ends_race_for_the_lease_and_exactly_one_sequences(cluster: Cluster) -> None:
    starting = [threading.Thread(target=cluster.start, args=(name,)) for name in ("a", "b")]
    for t in starting:
        t.start()
    for t in starting:
        t.join()
    seq = cluster.wait_sequencer()
    a, b = cluster.fronts["a"], cluster.fronts["b"]
    with Load(cluster, [a, b]) as load:
        wait_until(lambda: len(load.acks) > 40, 60, "writes through both front ends")
    assert {f for _, _, f in load.acks} == {"a", "b"}
    assert [len(terms(f)) for f in (a, b)].count(1) == 1 and terms(seq) == [(1, 3)]  # one term, one sequencer
    # event_id idempotency across front ends: the same record sent to the other one is a duplicate
    other = b if seq is a else a
    record = use(0, 0)
    status, body = http("POST", other.url + "/v1/uses", {"records": [record]}, cluster.token)
    assert status == 200 and b'"duplicate":true' in body, body
    assert str(load.acked[("loadgen", record["event_id"])][0]).encode() in body
    verified(cluster, load)


def stopped_terms(front: Front) -> list[tuple[int, int, int]]:
    """(epoch, start, end) of each term the front end stopped sequencing, from its log."""
    return [(int(e), int(s), int(t)) for e, s, t in
            re.findall(r"stopped sequencing \(epoch (\d+)\): its batches were \[(\d+), (\d+)\)", front.output())]


def metric(front: Front, name: str) -> float:
    status, body = http("GET", front.url + "/metrics")
    assert status == 200, body
    (value,) = [line.split()[-1] for line in body.decode().splitlines() if line.startswith(name + " ")]
    return float(value)


def test_the_sequencer_killed_under_load_is_replaced_within_seconds(cluster: Cluster) -> None:
    with under_load(cluster) as load:
        seq = cluster.wait_sequencer()
        other = cluster.fronts["b" if seq.name == "a" else "a"]
        wait_until(lambda: len(load.acks) > 20, 60, "writes before the kill")
        killed_at = time.monotonic()
        cluster.stop(seq.name, kill=True)
        took = wait_until(lambda: load.acked_after(killed_at), 30, "a write acknowledged after the kill")
        assert cluster.sequencer() is other
        wait_until(lambda: len(load.acked_after(killed_at)) > 20, 60, "writes after the kill")
    assert took < 10  # the lease (2.5 s), one try (0.5 s), and the new sequencer's start; p99 in the kill loop
    assert set(load.acked_after(killed_at)) == {other.name}
    verified(cluster, load)


def test_a_stopped_sequencer_is_replaced_and_its_commits_refused_when_it_resumes(cluster: Cluster) -> None:
    import psycopg

    for name in ("a", "b"):
        cluster.start(name)
    seq = cluster.wait_sequencer()
    other = cluster.fronts["b" if seq.name == "a" else "a"]
    with Load(cluster, [seq, other]) as before:
        wait_until(lambda: len(before.acks) > 10, 60, "writes before the stop")
    # Stop the sequencer in the middle of building a batch: its read of a new artist's chain head waits on
    # a lock this test holds (nothing else reads the heads now), it is stopped, then the read goes through.
    locker = psycopg.connect(cluster.dsn)
    locker.execute("LOCK TABLE heads IN ACCESS EXCLUSIVE MODE")
    pending: list[tuple[int, bytes]] = []
    record = {**use(9, 0), "content_id": "sc:track:stopped-1", "artist_id": "sc:user:stopped-1"}
    sender = threading.Thread(target=lambda: pending.append(http("POST", seq.url + "/v1/uses", record, cluster.token)))
    sender.start()

    def build_waits() -> bool:
        locker.execute("SELECT pg_stat_clear_snapshot()")  # a transaction sees the activity of its first look
        return locker.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
                              "query LIKE '%JOIN heads h%'").fetchone()[0] > 0

    wait_until(build_waits, 30, "the build waits")
    cluster.pause(seq.name)  # its connections stay open, its lease is not renewed
    stopped_at = time.monotonic()
    locker.commit()
    with Load(cluster, [other]) as after:
        wait_until(lambda: cluster.sequencer() is other, 15, "the other front end took the lease")
        wait_until(lambda: after.acked_after(stopped_at), 30, "writes through the new sequencer")
    # Resumed with the log quiet (while the new sequencer writes, the old one's batch would more likely
    # be refused first by the head check, STALE_STATE), it finishes its batch: the fence refuses it.
    cluster.resume(seq.name)
    wait_until(lambda: "a batch was refused by the fence" in seq.output(), 15, "the refusal")
    sender.join(30)
    assert "lost the lease" in seq.output() and cluster.sequencer() is other  # it took nothing back
    # The request the old sequencer was building, refused, went to the new one through the intake table.
    [(status, body)] = pending
    assert status == 200, body
    [result] = orjson.loads(body)["results"]
    after.acked[("loadgen", record["event_id"])] = (result["index"], result["leaf_hash"])  # checked below, once
    assert metric(seq, "tlog_cluster_fence_refusals_total") == 1 and metric(seq, "tlog_cluster_sequencing") == 0
    assert metric(other, "tlog_cluster_sequencing") == 1
    for load in (before, after):
        verified(cluster, load)
    # Terms never interleave: each one's batches end where the next one's begin, or before.
    spans = sorted(stopped_terms(seq) + stopped_terms(other))
    starts = dict(sorted(terms(seq) + terms(other)))
    for epoch, start, end in spans:
        assert starts[epoch] == start and (epoch + 1 not in starts or end <= starts[epoch + 1]), (spans, starts)


def test_a_front_end_cut_off_from_postgresql_answers_503_and_recovers(cluster: Cluster, pg_server: LocalPostgres) -> None:
    cluster.start("a")
    proxy = Proxy(pg_server.port)
    try:
        cut_off = cluster.start("c", keys=False, dsn=proxy.dsn(cluster.dsn))  # never the sequencer
        assert http("POST", cut_off.url + "/v1/uses", use(7, 0), cluster.token)[0] == 200
        proxy.cut()
        for method, path, body in (("POST", "/v1/uses", use(7, 1)), ("GET", "/checkpoint", None)):
            status, headers, _ = request(method, cut_off.url + path, body, cluster.token)
            assert status == 503 and headers.get("Retry-After") == "1", (method, path, status)
        assert http("POST", cluster.fronts["a"].url + "/v1/uses", use(7, 2), cluster.token)[0] == 200
        proxy.heal()
        status, body = http("POST", cut_off.url + "/v1/uses", use(7, 1), cluster.token)
        assert status == 200, body
    finally:
        proxy.close()


def request(method: str, url: str, body: Any, token: str) -> tuple[int, dict[str, str], bytes]:
    """faultkit.http, with the answer's headers."""
    req = urllib.request.Request(url, data=None if body is None else orjson.dumps(body), method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def own_pg(tmp_path: Path) -> Any:
    """A PostgreSQL of this test's own, to restart or lose (the session's serves the others)."""
    need_postgres()
    pg = LocalPostgres.create(synchronous_standby=True).start()  # in a folder the server user may enter
    standby: list[LocalPostgres] = []
    yield pg, standby
    for p in (*standby, pg):
        p.remove()


def test_postgresql_restarted_under_load_loses_nothing(tmp_path: Path, own_pg: Any) -> None:
    pg, _ = own_pg
    with open(pg.data / "postgresql.auto.conf", "a") as f:
        f.write("synchronous_standby_names = ''\n")  # no standby in this test
    pg.stop()
    pg.start()
    cluster = Cluster.create(tmp_path / "c", pg, "restarted")
    with under_load(cluster) as load:
        wait_until(lambda: len(load.acks) > 20, 60, "writes before the restart")
        pg.stop("immediate")  # as a crash: no shutdown checkpoint, PostgreSQL recovers from its WAL
        down_at = time.monotonic()
        time.sleep(1)
        pg.start()
        wait_until(lambda: len(load.acked_after(down_at)) > 20, 60, "writes after the restart")
    assert load.transient > 0  # the clients saw the outage (503s, refused connections) and resent
    verified(cluster, load)


def test_a_synchronous_standby_keeps_every_acknowledged_batch_when_the_primary_is_lost(tmp_path: Path, own_pg: Any) -> None:
    primary, standbys = own_pg
    standby = primary.standby()
    standbys.append(standby)
    cluster = Cluster.create(tmp_path / "c", primary, "replicated")
    with under_load(cluster) as load:
        wait_until(lambda: len(load.acks) > 30, 60, "writes acknowledged by the primary")
        primary.kill()  # its host is lost
        lost_at = time.monotonic()
        before = dict(load.acked)
        standby.promote()
        cluster.dsn = cluster.dsn.replace(f":{primary.port}/", f":{standby.port}/")
        for name in ("a", "b"):  # the operator points the front ends at the new primary
            cluster.stop(name, kill=True)
            cluster.start(name)
        wait_until(lambda: len(load.acked_after(lost_at)) > 10, 60, "writes through the promoted standby")
    c = check_log(cluster.dsn, acked=before)
    assert (c.lost, c.wrong) == (0, 0), c  # every batch acknowledged before the loss is there
    verified(cluster, load)


def test_only_the_sequencer_notifies_and_each_event_arrives_once(cluster: Cluster, tmp_path: Path) -> None:
    from .webhook_receiver import Receiver

    secret = os.urandom(24).hex().encode()
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(secret + b"\n")
    secret_file.chmod(0o600)
    receiver = Receiver(secret, free_port()).start()
    try:
        for name in ("a", "b"):
            cluster.start(name, "--notify-url", receiver.url, "--notify-secret-file", str(secret_file))
        seq = cluster.wait_sequencer()
        other = cluster.fronts["b" if seq.name == "a" else "a"]
        artist = use(1, 0)["artist_id"]
        status, body = http("PUT", f"{other.url}/v1/artists/{artist}/preferences", {"purposes": {"recommendation": "deny"}},
                            cluster.token)
        assert status == 200, body
        for n, front in enumerate((other, seq)):  # refused, whichever front end takes it
            status, body = http("POST", front.url + "/v1/uses", use(1, 60 * n), cluster.token)
            assert status == 200 and b'"refused"' in body, body
        receiver.wait_for(3)
        time.sleep(1.5)  # time enough for a second notifier to post its copies, were there one, and for this
        ids = [d.id for d in receiver.accepted()]  # one to save how far it got (webhooks.SAVE_EVERY)
        assert len(ids) == len(set(ids)) == 3, ids
        cluster.stop(seq.name, kill=True)
        cluster.wait_sequencer(other_than=seq)
        status, body = http("POST", other.url + "/v1/uses", use(1, 120), cluster.token)
        assert status == 200 and b'"refused"' in body, body
        receiver.wait_for(4)
        time.sleep(1.5)
        ids = [d.id for d in receiver.accepted()]
        assert len(ids) == len(set(ids)) == 4, ids  # the next sequencer's notifier went on from the saved cursor
    finally:
        receiver.stop()
