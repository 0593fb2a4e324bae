"""The cluster's own connections to PostgreSQL, bounded in time (opened with store.postgres.link_options),
so that a front end cut off from PostgreSQL (a dead route, a stopped server, a network that drops
packets) learns it within seconds instead of waiting for TCP's minutes, and says so (503) instead of
hanging its callers: a statement given a deadline, a dead idle connection told from a live one."""

from __future__ import annotations

import asyncio
import os
import select
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

import psycopg

from ..errors import Unavailable


T = TypeVar("T")


async def within(conn: psycopg.AsyncConnection[Any], work: Coroutine[Any, Any, T], seconds: float) -> T:
    """`work` (a statement on `conn`), or TimeoutError after `seconds`, promptly. Cancelling psycopg's
    statement instead would first spend up to ten seconds asking the server to cancel it, over the same
    dead route: the socket is shut down instead, the statement fails at once, and the caller drops the
    connection (once the statement has failed: a new connection may get the same file descriptor)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    shut(conn)
    await asyncio.wait({task}, timeout=1)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # its error is expected: not logged
    raise TimeoutError(f"PostgreSQL did not answer within {seconds:g} s")


def alive(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection is still worth a statement: not closed, and nothing waiting on its socket
    (on an idle connection that does not LISTEN, that is PostgreSQL's goodbye, or a route's reset). A
    statement sent on a dead connection could not say whether it was done; one not sent needs no doubt."""
    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


def shut(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None) -> None:
    """Shuts down the connection's socket without closing it: a thread or task waiting on it gets an
    error at once and can close it properly (closing it under them would not be safe)."""
    try:
        fd = conn.pgconn.socket if conn is not None else -1
        with socket.socket(fileno=os.dup(fd)) as s:
            s.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        pass  # closed already, or still connecting: nothing waits on it


def reason(exc: BaseException) -> str:
    """An error's first line (psycopg's go on with hints over several), for one line of a log or answer."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unreachable(exc: psycopg.Error, what: str) -> Unavailable:
    """The 503 a caller gets when PostgreSQL could not be reached or failed (Retry-After: 1)."""
    return Unavailable(f"{what}: the log's database is not answering ({reason(exc)}); try again in a moment",
                       retry_after=1)
