"""The Python client against the real server (`tlog serve` as a subprocess), with a token made by the CLI:
receipts verified, refusals, preferences, and a batch logger that loses nothing while the server is killed
in mid-stream and restarted, nor when the client process itself restarts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import orjson
import pytest

from tlog.client import BatchLogger, TlogClient, UseReceipt, UseRefused
from tlog.demo import build_demo

from .conftest import Server, start_server, stop_server

WHEN = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_token(db: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tlog.cli", "token", "create", "--db", str(db), *args],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def use(i: int, **overrides: Any) -> dict[str, Any]:
    r = {
        "event_id": f"e2e-{i:07d}", "artist_id": f"sc:user:{10 + i % 40}",
        "purpose": "recommendation", "phase": "inference",
        "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.07.3"},
        "occurred_at": WHEN, "invocations": 1 + i % 3, "detail": "daily candidate scoring",
    }
    r.update(overrides)
    r.setdefault("content_id", f"sc:track:{r['artist_id']}-{i % 997}")  # one artist's track (SPEC §2.1)
    return r


def logged_event_ids(db: Path, service: str) -> Counter[str]:
    """Every event_id the service has in the log, with its count, from `tlog export` (the operator's view)."""
    out = subprocess.run([sys.executable, "-m", "tlog.cli", "export", "--db", str(db)], capture_output=True, check=True)
    rows = (orjson.loads(line) for line in out.stdout.splitlines())
    return Counter(r["details"]["event_id"] for r in rows if r["details"].get("service") == service and "event_id" in r["details"])



def kill_server(server: Server) -> str:
    """SIGKILL: a crash, with requests in flight (some committed, their answers never sent)."""
    server.proc.kill()
    out, _ = server.proc.communicate(timeout=10)
    return out.decode()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Server, str, str, list[Server]]]:
    """A demo log served, a service token for it, its verifier key, and the list of servers the test
    (re)started, all stopped at the end whatever happens."""
    db = tmp_path / "tlog.db"
    build_demo(str(db), 20)  # with the demo preferences: sc:user:1 has opted out of AI training
    token = make_token(db, "--service", "recsys")
    server = start_server(db)
    with urllib.request.urlopen(server.url + "/v1/log", timeout=10) as r:
        vkey = orjson.loads(r.read())["verifier_keys"][0]
    servers = [server]
    yield server, token, vkey, servers
    for s in servers:
        if s.proc.poll() is None:
            out = stop_server(s)
            assert "Traceback" not in out, out


async def test_single_uses_refusals_and_preferences(live):
    server, token, vkey, _ = live
    async with TlogClient(server.url, token, vkey=vkey, origin="demo.tlog.example/log") as client:
        result = await client.use(use(1))
        assert not result.refused and not result.duplicate and result.receipt is not None
        assert result.checkpoint is not None and result.checkpoint.size > result.index
        again = await client.use(use(1))
        assert again.duplicate and again.index == result.index

        refused = await client.use(use(2, artist_id="sc:user:1", purpose="model_training_generative", phase="training"))
        assert refused.refused and refused.receipt is not None  # the refusal is logged, with its receipt
        with pytest.raises(UseRefused):
            refused.raise_if_refused()
        proof = await client.receipt(refused.index, leaf_hash=refused.leaf_hash)
        assert proof.leaf.type == "refusal"

        await client.set_preferences("sc:user:77", {"purposes": {"talent_discovery": "deny"}})
        assert (await client.get_preferences("sc:user:77"))["purposes"] == {"talent_discovery": "deny"}
        assert (await client.use(use(3, artist_id="sc:user:77", purpose="talent_discovery"))).refused

        batch = await client.log_many([use(i) for i in range(10, 20)])
        assert [r.event_id for r in batch] == [f"e2e-{i:07d}" for i in range(10, 20)]
        assert (await client.log_info()).verifier_keys[0] == vkey


async def test_batch_logger_loses_nothing_through_a_crash_and_a_client_restart(live, tmp_path):
    server, token, vkey, servers = live
    port = int(server.url.rsplit(":", 1)[1])
    spool = tmp_path / "recsys.spool"
    answered: list[UseReceipt] = []

    async with TlogClient(server.url, token, vkey=vkey, timeout=5) as client:
        logger = BatchLogger(client, spool, backoff_base=0.02, backoff_cap=0.5,
                             on_result=answered.append)
        await logger.start()
        # 3,000 uses from concurrent callers; the server is killed while they are being sent.
        callers = [asyncio.create_task(_log_range(logger, start, start + 300)) for start in range(0, 3000, 300)]
        while len(answered) < 500:
            await asyncio.sleep(0.002)
        out = await asyncio.to_thread(kill_server, server)
        assert "Traceback" not in out, out
        await asyncio.gather(*callers)  # every log() returned: the records are durable in the spool
        for i in range(3000, 4000):  # and the service goes on logging through the outage
            await logger.log(use(i))
        during_outage = logger.pending
        assert during_outage >= 1000
        server = await asyncio.to_thread(start_server, server.db, port=port)
        servers.append(server)
        await asyncio.wait_for(logger.flush(), 60)
        assert logger.pending == 0

        # The server goes down again and this client process "restarts" with records still spooled.
        out = await asyncio.to_thread(stop_server, server)
        assert "Traceback" not in out, out
        await logger.log_many([use(i) for i in range(4000, 4500)])
        assert await logger.close(timeout=0.3) == 500

    server = await asyncio.to_thread(start_server, server.db, port=port)
    servers.append(server)
    async with TlogClient(server.url, token, vkey=vkey) as client, \
            BatchLogger(client, spool, on_result=answered.append) as restarted:
        await asyncio.wait_for(restarted.flush(), 60)
        assert await restarted.failed() == []

    want = {f"e2e-{i:07d}" for i in range(4500)}
    counts = Counter({e: n for e, n in logged_event_ids(server.db, "recsys").items() if e.startswith("e2e-")})
    lost = want - set(counts)
    twice = {e: n for e, n in counts.items() if n > 1}
    resent = sum(r.duplicate for r in answered)
    print(f"\noutage: {during_outage} records spooled while the server was down, {resent} answers were to resends "
          f"of committed records; lost {len(lost)}, logged twice {len(twice)}")
    assert not lost and not twice and set(counts) == want
    assert {r.event_id for r in answered} == want  # every record got its answer, the restarted process's included


async def _log_range(logger: BatchLogger, start: int, end: int) -> None:
    for i in range(start, end):
        await logger.log(use(i))
