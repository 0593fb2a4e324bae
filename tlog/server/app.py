"""The aiohttp application: the factory, and `run` for `tlog serve`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from aiohttp import web

from ..log import LocalLog, open_log
from . import public
from .errors import error_middleware
from .state import STATE_KEY, State

TILE_CACHE_ENTRIES = 4096  # full tiles and bundles are at most ~8-16 KiB each


def make_app(log: LocalLog) -> web.Application:
    """Builds the app on an opened log. Refuses a log whose stored checkpoint does not verify."""
    log.latest_checkpoint()  # raises StorageError with the reason
    app = web.Application(middlewares=[error_middleware], client_max_size=1 << 20)
    app[STATE_KEY] = State(log=log, tile_cache=public.LRU(TILE_CACHE_ENTRIES))
    app.add_routes(public.routes)
    return app


def run(db: str | os.PathLike[str], *, host: str, port: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = open_log(Path(db))
    app = make_app(log)
    app.on_cleanup.append(lambda _app: _close(log))
    cp, _ = log.latest_checkpoint()
    print(f"tlog serving {log.origin} (size {cp.size}) on http://{host}:{port}/ (read-only: the write API comes with the service issue)", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


async def _close(log: LocalLog) -> None:
    log.close()
