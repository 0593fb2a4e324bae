"""Prometheus text metrics: requests and latencies by route template and role (never by artist or
token), batch sizes, tree size and checkpoint age."""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..checkpoint import Checkpoint
from ..errors import TlogError, Unavailable
from ..note import parse_note
from .auth import PRINCIPAL, require
from .cluster import ClusterAppender
from .errors import http_status
from .state import STATE_KEY, get_state

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class MetricsAccess:
    """Who may read /metrics (SPEC §6: public unless the operator limits it). `token`: only with an
    auditor or metrics token. `bind`: only on this (host, port), a listener of its own (say, an address
    only the monitoring network reaches); the public address then answers 404 there."""

    token: bool = False
    bind: tuple[str, int] | None = None


@dataclass
class Metrics:
    requests: dict[tuple[str, str, str, int], int] = field(default_factory=lambda: defaultdict(int))
    latency: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # bucket counts, then sum

    def observe(self, method: str, route: str, role: str, status: int, seconds: float) -> None:
        self.requests[(method, route, role, status)] += 1
        h = self.latency.get((route, role))
        if h is None:
            h = self.latency[(route, role)] = [0.0] * (len(BUCKETS) + 2)
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                h[i] += 1
        h[-2] += 1
        h[-1] += seconds


METRICS_KEY = web.AppKey("tlog_metrics", Metrics)
ACCESS_KEY = web.AppKey("tlog_metrics_access", MetricsAccess)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    t0 = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except TlogError as exc:
        status = http_status(exc)
        raise
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        p = request.get(PRINCIPAL)
        role = p.role if p is not None else "public"
        request.app[METRICS_KEY].observe(request.method, route, role, status, time.perf_counter() - t0)


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    if request.app[ACCESS_KEY].token:
        require(request, "auditor", "metrics")
    m = request.app[METRICS_KEY]
    state = get_state(request)
    lines = ["# HELP tlog_http_requests_total HTTP requests by route template, role and status.",
             "# TYPE tlog_http_requests_total counter"]
    for (method, route, role, status), n in sorted(m.requests.items()):
        lines.append(f'tlog_http_requests_total{{method="{method}",route="{_label(route)}",role="{role}",status="{status}"}} {n}')
    lines += ["# HELP tlog_http_request_seconds Request latency.", "# TYPE tlog_http_request_seconds histogram"]
    for (route, role), h in sorted(m.latency.items()):
        base = f'route="{_label(route)}",role="{role}"'
        for b, count in zip(BUCKETS, h):
            lines.append(f'tlog_http_request_seconds_bucket{{{base},le="{b}"}} {count:.0f}')
        lines.append(f'tlog_http_request_seconds_bucket{{{base},le="+Inf"}} {h[-2]:.0f}')
        lines.append(f"tlog_http_request_seconds_count{{{base}}} {h[-2]:.0f}")
        lines.append(f"tlog_http_request_seconds_sum{{{base}}} {h[-1]:.6f}")
    try:
        note: bytes | None = state.published_note()
    except Unavailable:  # under a witness policy, until its quorum first cosigns
        note = None
    if note is not None:
        cp = Checkpoint.parse(parse_note(note)[0])
        created = state.store.checkpoint_created_ms(cp.size)
        lines += ["# HELP tlog_tree_size Leaves under the published checkpoint.", "# TYPE tlog_tree_size gauge",
                  f"tlog_tree_size {cp.size}",
                  "# HELP tlog_checkpoint_age_seconds Age of the published checkpoint.", "# TYPE tlog_checkpoint_age_seconds gauge",
                  f"tlog_checkpoint_age_seconds {max(0.0, time.time() - created / 1000):.3f}"]
    st = state.appender.stats()
    if st is not None:
        lines += ["# HELP tlog_batches_total Sequencer batches committed.", "# TYPE tlog_batches_total counter",
                  f"tlog_batches_total {st.batches}",
                  "# HELP tlog_batched_records_total Records committed in batches.", "# TYPE tlog_batched_records_total counter",
                  f"tlog_batched_records_total {st.records}",
                  "# HELP tlog_last_batch_records Records in the last batch.", "# TYPE tlog_last_batch_records gauge",
                  f"tlog_last_batch_records {st.last_batch_records}"]
    if isinstance(state.appender, ClusterAppender):  # a front end of a PostgreSQL log
        lines += state.appender.metric_lines()
    # Named as prometheus_client names them. The server tunes its collector (gctune.py); these show it.
    lines += ["# HELP python_gc_collections_total Runs of the server process's cyclic garbage collector.",
              "# TYPE python_gc_collections_total counter"]
    lines += [f'python_gc_collections_total{{generation="{g}"}} {gen["collections"]}' for g, gen in enumerate(gc.get_stats())]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


def setup(app: web.Application, access: MetricsAccess, middlewares: list[Any]) -> None:
    """Counts the app's requests and serves /metrics as `access` says: on the app itself, or on an app of
    its own listening on `access.bind`, started and stopped with the main one."""
    app[METRICS_KEY] = Metrics()
    app[ACCESS_KEY] = access
    if access.bind is None:
        app.add_routes(routes)
        return
    host, port = access.bind

    async def listener(_app: web.Application) -> AsyncIterator[None]:
        side = web.Application(middlewares=middlewares)
        side[METRICS_KEY], side[ACCESS_KEY], side[STATE_KEY] = app[METRICS_KEY], app[ACCESS_KEY], app[STATE_KEY]
        side.add_routes(routes)
        runner = web.AppRunner(side, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        yield
        await runner.cleanup()

    app.cleanup_ctx.append(listener)
