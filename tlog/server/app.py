"""The aiohttp application: the factory, and `run` for `tlog serve`."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import IO

from aiohttp import web

from ..background import CleanupContext, task_context
from ..errors import StorageError, TlogError, Unavailable
from ..gctune import tune_for_batches
from ..log import LocalLog, db_location, open_log
from ..webhooks import Target, notifier_context
from ..witness.quorum import NONE, WitnessQuorum
from . import artist, feeds, metrics, openapi, pages, public, service, summary
from .appender import LocalAppender
from .cluster import ClusterAppender, ClusterOptions, LeaderJob
from .auth import auth_middleware
from .publisher import publisher_context
from .errors import error_middleware, hide_server_software, quiet_malformed_requests
from .ratelimit import RateLimit
from .reads import ReadPool
from .state import LRU, STATE_KEY, Limits, State

# The sequencer's thread releases the GIL inside every SQLite call (per row of a batch) and must get it
# back from the event loop's thread, which holds it until the switch interval runs out: 5 ms by default.
# At 0.5 ms both ingest figures of scripts/bench-server rise by about 12%; below 0.2 ms switching costs more.
GIL_SWITCH_INTERVAL = 0.0005
TILE_CACHE_ENTRIES = 4096  # full tiles and bundles are at most ~8-16 KiB each
KEY_RELOAD_SECONDS = 1.0
log = logging.getLogger("tlog.server")


def make_app(reader: LocalLog, writer: LocalLog | None = None, *, limits: Limits = Limits(),
             rate_limit: RateLimit | None = None, witness_quorum: WitnessQuorum | None = None,
             pipelined: bool = False, metrics_access: metrics.MetricsAccess = metrics.MetricsAccess(),
             notify: Target | None = None, cluster: ClusterOptions | None = None) -> web.Application:
    """Builds the app on an opened log: `reader` serves reads on the event loop; `writer` (its own
    connection, with the secrets) feeds the sequencer thread. Without a writer the server is read-only.
    With `cluster` (a PostgreSQL log), the server is one front end of many (cluster.py): it takes writes
    and hands them to the elected sequencer, which it is itself while it holds the lease.
    `pipelined` (`tlog serve`): batches are written by a child process while the next is built, and the
    worker that checks large requests starts at once rather than at the first one. (In-process tests
    that inject faults into the writer's connection go without.)
    With a witness policy, /checkpoint serves only what the policy's quorum cosigned. With `notify`, a
    notifier (webhooks.py) posts the log's events to that receiver.
    Refuses a log whose stored checkpoint does not verify with its key and origin."""
    reader.latest_checkpoint()  # raises StorageError with the reason
    hide_server_software()
    app = web.Application(middlewares=[public.cors_preflight, error_middleware, metrics.middleware, auth_middleware],
                          client_max_size=limits.max_body)
    state = State(log=reader, tile_cache=LRU(TILE_CACHE_ENTRIES), rate_limit=rate_limit or RateLimit(),
                  reads=ReadPool(reader.store.sharing_nodes), limits=limits)
    app[STATE_KEY] = state
    app.on_response_prepare.append(public.cors_headers)
    app.on_cleanup.append(_stop_reads)
    metrics.setup(app, metrics_access, [error_middleware, auth_middleware])
    app.add_routes(public.routes)
    app.add_routes(openapi.routes)
    app.add_routes(summary.routes)
    app.add_routes(feeds.routes)
    pages.setup(app)
    if cluster is not None:
        jobs = _leader_jobs(reader, witness_quorum, notify)
        state.appender = ClusterAppender(reader, replace(cluster, jobs=jobs), limits=limits.preferences)
    elif writer is not None:
        batches = writer.process_writer() if pipelined else None
        seq = writer.sequencer(on_commit=lambda b: reader.store.remember_nodes(b.nodes), writer=batches,
                               preference_limits=limits.preferences)
        state.appender = LocalAppender(writer, seq, eager_intake=pipelined)
    if cluster is not None or writer is not None:
        app.add_routes(service.routes)
        app.add_routes(artist.routes)
        app.add_routes(feeds.key_routes)
        app.on_startup.append(_start_appender)
        app.on_cleanup.append(_stop_appender)
    app.cleanup_ctx.append(_key_watcher(reader, state))
    if witness_quorum is not None and witness_quorum.quorum != NONE:
        witness_quorum.check_for_log([v.key for v in reader.verifiers])
        state.witnessed = True
        state.witness_quorum = witness_quorum
        if cluster is None:
            app.cleanup_ctx.append(publisher_context(reader.path, witness_quorum))
    if notify is not None and cluster is None:
        app.cleanup_ctx.append(notifier_context(reader.path, reader.origin, notify))
    return app


def _leader_jobs(reader: LocalLog, quorum: WitnessQuorum | None, notify: Target | None) -> tuple[LeaderJob, ...]:
    """What a cluster's sequencer runs in its term alone: many front ends would ask the witnesses for the
    same cosignatures and post every event once each."""
    jobs: list[LeaderJob] = []
    if quorum is not None and quorum.quorum != NONE:
        jobs.append(lambda fence: publisher_context(reader.path, quorum, fence=fence))
    if notify is not None:
        jobs.append(lambda fence: notifier_context(reader.path, reader.origin, notify, fence=fence))
    return tuple(jobs)


def _key_watcher(reader: LocalLog, state: State) -> CleanupContext:
    """`tlog key rotate` and `retire` run in another process: within a second the server lists the new
    keys and its sequencer signs with them, without a restart."""

    async def watch() -> None:
        pending = False  # the reader saw new keys that the sequencer has not loaded yet
        while True:
            await asyncio.sleep(KEY_RELOAD_SECONDS)
            try:
                pending |= reader.reload_keys()
                if pending:
                    await state.appender.reload_keys()
                if pending:
                    log.info("the log's keys are now %s", ", ".join(v.key for v in reader.verifiers))
                pending = False
            except TlogError as exc:
                log.error("cannot load the log's keys: %s", exc.message)

    async def setup() -> None:
        return None

    return task_context("tlog-keys", setup, lambda _: watch())


async def _start_appender(app: web.Application) -> None:
    await app[STATE_KEY].appender.start()


async def _stop_reads(app: web.Application) -> None:
    await asyncio.get_running_loop().run_in_executor(None, app[STATE_KEY].reads.close)


async def _stop_appender(app: web.Application) -> None:
    await app[STATE_KEY].appender.close()


def _lock(db: Path) -> IO[str]:
    """One server per database: a second `tlog serve` fails fast instead of racing the sequencer."""
    f = open(f"{db}.lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StorageError(f"another tlog serve is already running on {db}") from None
    return f


def _listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), backlog=1024)
    except OSError as exc:
        raise Unavailable(f"cannot listen on {host}:{port} ({exc.strerror or exc}): is another server using "
                          "that port? Pick another with --port", code="port_unavailable") from None


def run(db: str | os.PathLike[str], *, host: str, port: int, limits: Limits = Limits(),
        rate_limit: RateLimit | None = None, witness_quorum: WitnessQuorum | None = None,
        metrics_access: metrics.MetricsAccess = metrics.MetricsAccess(),
        notify: Target | None = None, keys: str | os.PathLike[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_malformed_requests()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    path = db_location(db)
    reader = open_log(path, keys=keys)
    # A PostgreSQL log has many front ends, one sequencing at a time (cluster.py); a SQLite file one server.
    cluster = ClusterOptions(keys=keys) if isinstance(path, str) else None
    lock = _lock(path) if isinstance(path, Path) else None
    writer = open_log(path, secrets_needed=True, keys=keys) if reader.signers and cluster is None else None
    app = make_app(reader, writer, limits=limits, rate_limit=rate_limit, witness_quorum=witness_quorum, pipelined=True,
                   metrics_access=metrics_access, notify=notify, cluster=cluster)
    sock = _listen(host, port)  # after the log's checks, before saying "serving": a busy port fails here
    port = sock.getsockname()[1]
    cp, _ = reader.latest_checkpoint()
    mode = ("a front end, sequencing when elected" if cluster and reader.signers else
            "a front end that hands writes to the sequencer (no keys: never elected)" if cluster else
            "read-write" if writer else "read-only (the key files are not readable)")
    tune_for_batches()
    print(f"tlog serving {reader.origin} (size {cp.size}, {mode}) on http://{host}:{port}/", flush=True)
    if witness_quorum is not None and witness_quorum.quorum != NONE:
        print(f"witness policy: /checkpoint advances once quorum {witness_quorum.quorum!r} of "
              f"{len(witness_quorum.witnesses)} witness(es) has cosigned", flush=True)
    if notify is not None:
        print(f"notifications: signed events to {notify.shown} (docs/OPERATIONS.md)", flush=True)
        if notify.in_clear:
            print("warning: events carry artist ids and go to that receiver unencrypted over plain http; "
                  "use https beyond this machine", flush=True)
    try:
        web.run_app(app, sock=sock, print=None, access_log=None)
    finally:
        reader.close()
        if writer:
            writer.close()
        if lock:
            lock.close()
