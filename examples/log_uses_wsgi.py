"""Ask the log before using content, from a synchronous WSGI service (Flask, Django and the like work the
same way), with tlog's blocking client.

    TLOG_TOKEN=<a service token> python examples/log_uses_wsgi.py http://127.0.0.1:8080 'VERIFIER-KEY'
    TLOG_TOKEN=… python examples/log_uses_wsgi.py URL VKEY --serve 8000   # then: curl localhost:8000/recommend/sc:user:7

One SyncTlogClient serves every request thread of the process: it runs its own event loop on a thread of
its own, and each call blocks only the thread that makes it. Without --serve, the script sends one request
through the WSGI app and prints the answer.
"""

from __future__ import annotations

import io
import os
import sys
import uuid
from datetime import datetime, timezone
from wsgiref.simple_server import make_server
from wsgiref.util import setup_testing_defaults

from tlog.client import SyncTlogClient

log: SyncTlogClient | None = None  # opened once per process, in main()


def application(environ: dict, start_response) -> list[bytes]:  # type: ignore[no-untyped-def]
    """GET /recommend/<artist id>: recommend that artist's track, if the artist allows it."""
    artist_id = environ.get("PATH_INFO", "").removeprefix("/recommend/")
    track = f"sc:track:{artist_id.rsplit(':', 1)[-1]}01"  # the artist's own track: a use names one of its artists
    assert log is not None
    answer = log.use({
        "event_id": f"example-wsgi-{uuid.uuid4()}", "content_id": track, "artist_id": artist_id,
        "purpose": "recommendation", "phase": "inference",
        "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.07.3"},
        "occurred_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    if answer.refused:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{artist_id} opted out: no recommendation (the refusal is logged at {answer.index})\n".encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"recommended {track} of {artist_id} ({answer.decision}, logged at {answer.index})\n".encode()]


def main(url: str, vkey: str, token: str, serve_port: int | None) -> None:
    global log
    with SyncTlogClient(url, token, vkey=vkey) as log:
        if serve_port is not None:
            make_server("127.0.0.1", serve_port, application).serve_forever()
            return
        environ: dict = {"PATH_INFO": "/recommend/sc:user:7", "wsgi.input": io.BytesIO()}
        setup_testing_defaults(environ)
        print(b"".join(application(environ, lambda status, headers: None)).decode(), end="")


if __name__ == "__main__":
    args = sys.argv[1:]
    port = int(args[args.index("--serve") + 1]) if "--serve" in args else None
    if len(args) not in (2, 4) or "TLOG_TOKEN" not in os.environ:
        sys.exit(__doc__)
    main(args[0], args[1], os.environ["TLOG_TOKEN"], port)
