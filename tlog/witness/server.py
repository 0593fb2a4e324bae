"""`tlog witness serve`: c2sp.org/tlog-witness over aiohttp.

`POST /add-checkpoint` is the whole protocol; `GET /healthz` says the witness is up and names its key.
Answers are plain text as the spec has them, not tlog's JSON errors: other logs' clients read them. Every
refusal is logged with its reason, and a refusal of a validly signed checkpoint (409, 422) is also kept in
the database as evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from aiohttp import web

from ..errors import (Conflict, Forbidden, NotFound, ProofError, StorageError, TlogError, Unavailable, ValidationError,
                      by_type)
from ..note import Verifier
from ..server.errors import hide_server_software
from . import core
from .replay import Replayer
from .store import Witness

log = logging.getLogger("tlog.witness")

MAX_BODY = 64 << 10  # a checkpoint with 100 signatures and 63 proof lines is well under 20 KiB
# c2sp.org/tlog-witness's statuses, by error type (a type not listed answers as its nearest listed base):
# 404 and 403 for a log or a key the witness does not trust, 400 for a malformed request, 409 for an old
# size it did not cosign, 422 for a proof or a replay that fails; 503 when the witness cannot do its part.
STATUSES: dict[type[TlogError], int] = {
    TlogError: 400, ValidationError: 400, Forbidden: 403, NotFound: 404, Conflict: 409, ProofError: 422,
    Unavailable: 503, StorageError: 503,
}
WITNESS_KEY = web.AppKey("tlog_witness", Witness)
LOGS_KEY = web.AppKey("tlog_witness_logs", dict)
REPLAY_KEY = web.AppKey("tlog_witness_replay", dict)


def log_keys(vkeys: Sequence[str]) -> dict[str, list[Verifier]]:
    """The logs a witness trusts, by origin: each verifier key must be a log's Ed25519 key, named after
    its origin. Several keys may share an origin (a log rotating its key)."""
    logs: dict[str, list[Verifier]] = {}
    for vkey in vkeys:
        v = Verifier.from_key(vkey)
        if v.is_cosigner:
            raise ValidationError(f"--log {vkey}: that is a witness key (type 0x04), not a log's key")
        logs.setdefault(v.name, []).append(v)
    return logs


def make_witness_app(witness: Witness, logs: Mapping[str, Sequence[Verifier]],
                     replay: Mapping[str, Replayer] | None = None) -> web.Application:
    """`replay`: the logs, by origin, whose new leaves are replayed (witness/replay.py) before cosigning."""
    hide_server_software()
    app = web.Application(client_max_size=MAX_BODY)
    app[WITNESS_KEY] = witness
    app[LOGS_KEY] = dict(logs)
    app[REPLAY_KEY] = dict(replay or {})
    app.add_routes([web.post("/add-checkpoint", add_checkpoint), web.get("/healthz", healthz)])
    return app


async def add_checkpoint(request: web.Request) -> web.Response:
    witness, logs = request.app[WITNESS_KEY], request.app[LOGS_KEY]
    body = await request.read()
    req: core.AddCheckpoint | None = None
    try:
        req = core.parse_request(body)
        core.authenticate(req, logs)
        origin = req.checkpoint.origin
        latest = witness.store.log_state(origin)
        core.check(req, latest)
        replayer = request.app[REPLAY_KEY].get(origin)
        if replayer is not None:  # after the spec's checks: a 422 here is about what the leaves say
            await replayer.check(req.checkpoint)
        witness.store.advance(origin, latest, core.LogState(req.checkpoint.size, req.checkpoint.root))
    except TlogError as exc:
        return _refuse(witness, req, exc, body)
    log.info("cosigned %s at size %d", req.checkpoint.origin, req.checkpoint.size)
    return web.Response(body=core.cosign(witness.signer, req), content_type="text/plain", charset="utf-8")


def _refuse(witness: Witness, req: core.AddCheckpoint | None, exc: TlogError, body: bytes) -> web.Response:
    origin = req.checkpoint.origin if req else "?"
    status = by_type(STATUSES, exc) or 400  # never the default: TlogError is listed
    if status >= 500:
        log.error("could not cosign %s: %s", origin, exc.message)
        if isinstance(exc, Unavailable):  # the log's tiles could not be read to replay them: it may retry
            return web.Response(status=503, text=exc.message + "\n")
        return web.Response(status=503, text="the witness cannot record checkpoints right now\n")
    log.warning("refused %s (%d): %s", origin, status, exc.message)
    if req is not None and isinstance(exc, (core.ForkConflict, ProofError)):
        # Validly signed (check runs after authenticate) yet inconsistent: possibly a split view.
        witness.store.add_refusal(origin, status, exc.message, body)
    if isinstance(exc, core.SizeConflict):
        return web.Response(status=409, body=b"%d\n" % exc.size, headers={"Content-Type": core.SIZE_CONTENT_TYPE})
    return web.Response(status=status, text=exc.message + "\n")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text=request.app[WITNESS_KEY].vkey + "\n")


def run_witness(witness: Witness, logs: Mapping[str, Sequence[Verifier]], *, host: str, port: int,
                replay: Mapping[str, Replayer] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_witness_app(witness, logs, replay)

    async def close(_app: web.Application) -> None:
        witness.close()

    app.on_cleanup.append(close)
    origins = ", ".join(sorted(logs))
    print(f"tlog witness {witness.signer.name} on http://{host}:{port}/add-checkpoint for {origins}", flush=True)
    for origin, r in sorted((replay or {}).items()):
        print(f"replaying {origin} from {r.url} before cosigning", flush=True)
    print(witness.vkey, flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)
