"""Rate limits by client address (tlog/server/ratelimit.py): the connection's peer, unless the operator names
the header a trusted load balancer passes the client's address in; then its last entry, never the ones a
client wrote before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tlog.log import init_log, open_log
from tlog.server.app import make_app
from tlog.server.ratelimit import ADDRESS_CHARS, RateLimit


@pytest.mark.parametrize("header, want", [
    (None, "10.0.0.1"),
    ("203.0.113.7", "203.0.113.7"),
    ("198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the client's own claim first, the balancer's last
    ("  ", "10.0.0.1"),
    ("x" * 500, "x" * ADDRESS_CHARS),
])
def test_the_client_is_the_last_forwarded_address_when_the_header_is_trusted(header: str | None, want: str) -> None:
    headers = {} if header is None else {"X-Forwarded-For": header}
    assert RateLimit(proxy_header="X-Forwarded-For").client("10.0.0.1", headers) == want
    assert RateLimit().client("10.0.0.1", headers) == "10.0.0.1"  # never believed unless named


@pytest.fixture
async def served(tmp_path: Path) -> Any:
    init_log(tmp_path / "tlog.db", "limits.example/log").close()
    clients = []

    async def serve(limit: RateLimit) -> TestClient:
        client = TestClient(TestServer(make_app(open_log(tmp_path / "tlog.db"), rate_limit=limit)))
        await client.start_server()
        clients.append(client)
        return client

    yield serve
    for c in clients:
        await c.close()


async def statuses(client: TestClient, forwarded: str, n: int) -> list[int]:
    return [(await client.get("/checkpoint", headers={"X-Forwarded-For": forwarded})).status for _ in range(n)]


async def test_behind_a_balancer_each_client_has_its_own_budget(served: Any) -> None:
    client = await served(RateLimit(rate=0.001, burst=2, proxy_header="X-Forwarded-For"))
    assert await statuses(client, "203.0.113.1", 3) == [200, 200, 429]
    assert await statuses(client, "203.0.113.2", 2) == [200, 200]  # another client, through the same balancer
    assert await statuses(client, "203.0.113.3, 203.0.113.1", 1) == [429]  # a claimed address changes nothing


async def test_without_the_option_the_header_is_ignored(served: Any) -> None:
    client = await served(RateLimit(rate=0.001, burst=2))
    assert await statuses(client, "203.0.113.1", 2) == [200, 200]
    assert await statuses(client, "203.0.113.2", 1) == [429]  # the same peer, whatever the header says
