"""The aiohttp application: the factory, and `run` for `tlog serve`."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import IO

from aiohttp import web

from ..committer import GroupCommitter
from ..errors import StorageError
from ..log import LocalLog, open_log
from . import artist, metrics, public, service
from .auth import RateLimit, auth_middleware
from .errors import error_middleware
from .state import STATE_KEY, Limits, State

TILE_CACHE_ENTRIES = 4096  # full tiles and bundles are at most ~8-16 KiB each
log = logging.getLogger("tlog.server")


def make_app(reader: LocalLog, writer: LocalLog | None = None, *, limits: Limits = Limits(),
             rate_limit: RateLimit | None = None) -> web.Application:
    """Builds the app on an opened log: `reader` serves reads on the event loop; `writer` (its own
    connection, with the secrets) feeds the sequencer thread. Without a writer the server is read-only.
    Refuses a log whose stored checkpoint does not verify with its key and origin."""
    reader.latest_checkpoint()  # raises StorageError with the reason
    app = web.Application(middlewares=[error_middleware, metrics.middleware, auth_middleware],
                          client_max_size=limits.max_body)
    state = State(log=reader, tile_cache=public.LRU(TILE_CACHE_ENTRIES), rate_limit=rate_limit or RateLimit(),
                  limits=limits)
    app[STATE_KEY] = state
    app[metrics.METRICS_KEY] = metrics.Metrics()
    app.add_routes(public.routes)
    app.add_routes(metrics.routes)
    if writer is not None:
        state.committer = GroupCommitter(writer.sequencer())
        app.add_routes(service.routes)
        app.add_routes(artist.routes)
        app.on_startup.append(_start_committer)
        app.on_cleanup.append(_stop_committer)
    return app


async def _start_committer(app: web.Application) -> None:
    app[STATE_KEY].committer.start()  # type: ignore[attr-defined]


async def _stop_committer(app: web.Application) -> None:
    await app[STATE_KEY].committer.close()  # type: ignore[attr-defined]


def _lock(db: Path) -> IO[str]:
    """One server per database: a second `tlog serve` fails fast instead of racing the sequencer."""
    f = open(f"{db}.lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StorageError(f"another tlog serve is already running on {db}") from None
    return f


def run(db: str | os.PathLike[str], *, host: str, port: int, limits: Limits = Limits(),
        rate_limit: RateLimit | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = Path(db)
    reader = open_log(path)
    lock = _lock(path)
    writer = open_log(path, secrets_needed=True) if reader.signers else None
    app = make_app(reader, writer, limits=limits, rate_limit=rate_limit)
    cp, _ = reader.latest_checkpoint()
    mode = "read-write" if writer else "read-only (the key files are not readable)"
    print(f"tlog serving {reader.origin} (size {cp.size}, {mode}) on http://{host}:{port}/", flush=True)
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    finally:
        reader.close()
        if writer:
            writer.close()
        lock.close()
