"""The one place where errors become HTTP answers: `{"error": {"code", "message", "details"}}`.

A TlogError gets the status STATUSES gives its type, or its nearest listed base (`http_status`): the
types know nothing of HTTP, as Tessera's ErrPushback becomes a 503 only at its edge. aiohttp's HTTP
exceptions (unknown route, wrong method, body too large) keep their statuses but get the same JSON shape;
anything else is a bug, logged with its traceback on the server and answered 500 with no detail, so
nothing internal leaks."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import (DETAILS_SHOWN, Conflict, Forbidden, NotFound, ProofError, StorageError, TlogError, TooEarly,
                      TooLarge, Unauthorized, Unavailable, Unreachable, ValidationError, VerificationError,
                      bounded_details, by_type, cut)
from .state import STATE_KEY

log = logging.getLogger("tlog.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 415: "unsupported_media_type", 429: "rate_limited", 503: "unavailable",
}


@dataclass
class UnsupportedMediaType(TlogError):
    """A body sent as a media type the route does not read."""

    code: str = "unsupported_media_type"


# The status of each error type; a type not listed answers as its nearest listed base (TlogError: 400).
# VerificationError's 500 is the server's own fault, answered as "internal error" with no detail.
STATUSES: dict[type[TlogError], int] = {
    TlogError: 400, ValidationError: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409,
    TooLarge: 413, UnsupportedMediaType: 415, ProofError: 422, TooEarly: 425, VerificationError: 500,
    Unavailable: 503, StorageError: 503, Unreachable: 503,
}


def http_status(exc: TlogError) -> int:
    return by_type(STATUSES, exc) or 400  # never the default: TlogError is listed


def error_type(status: int) -> type[TlogError]:
    """The type the server answers `status` for (the first listed), so that an error carried by its status
    (a cluster's handoff) is answered as it was raised; TlogError for a status no type has."""
    return next((t for t, s in STATUSES.items() if s == status), TlogError)


MESSAGE_CHARS = 1000  # an error's message, which may quote the request, is cut to this


def error_response(status: int, code: str, message: str, details: list[Any] | None = None,
                   headers: dict[str, str] | None = None, *, max_details: int = DETAILS_SHOWN) -> web.Response:
    """The error body, bounded whatever the request was: a cut message and at most `max_details`
    details (then one counting the rest), each cut (errors.bounded_details)."""
    shown = bounded_details(details or [], max_details)
    body = orjson.dumps({"error": {"code": code, "message": cut(message, MESSAGE_CHARS), "details": shown}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TlogError as exc:
        status = http_status(exc)
        if status >= 500 and status != 503:
            log.error("internal error on %s: %s", request.path, exc.message)
            return error_response(500, "internal", "internal error")
        # RFC 9110 §15.5.2: a 401 names the scheme that would work.
        headers = {"WWW-Authenticate": 'Bearer realm="tlog"'} if status == 401 else None
        if isinstance(exc, TooEarly):
            headers = {"Retry-After": str(exc.retry_after)}
        elif status == 503:  # the log's writer or database is not answering now: a moment later it may
            headers = {"Retry-After": str(math.ceil(getattr(exc, "retry_after", None) or 1))}  # whole seconds
        return error_response(status, exc.code, exc.message, exc.details, headers=headers,
                              max_details=_max_details(request))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason if exc.text is None or exc.text.startswith(f"{exc.status}:") else exc.text
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "error"), message,
                              headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")


def _max_details(request: web.Request) -> int:
    state = request.app.get(STATE_KEY)  # an app made by make_app has one; a bare one uses the default
    return DETAILS_SHOWN if state is None else state.limits.max_details


class MalformedRequestLogFilter(logging.Filter):
    """aiohttp answers a request it cannot parse (a control byte in a header, a line too long) with a
    400 itself, before any middleware, and logs it at ERROR with a traceback and the offending bytes,
    which may be an Authorization header. That is the client's error, not ours: one line at INFO, with
    the peer and the kind of error but nothing of the request (tokens are never logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "rejected a malformed HTTP request from %s (%s)", (peer, type(exc).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def hide_server_software() -> None:
    """aiohttp names itself and Python, with their versions, in the Server header of every answer, which
    tells an attacker which published flaws to try. It sets the header from a module constant when it
    writes any response, including its own answers to requests it cannot parse, which no middleware or
    signal sees; so the constant is what is replaced."""
    web_response.SERVER_SOFTWARE = "tlog"  # type: ignore[attr-defined]  # not exported: a private constant


def quiet_malformed_requests() -> None:
    """Installs MalformedRequestLogFilter on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestLogFilter) for f in logger.filters):
        logger.addFilter(MalformedRequestLogFilter())
