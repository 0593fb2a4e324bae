"""Authentication, and the rate limits of ratelimit.py applied to each request.

A request either carries no token (public), or a valid one (its Principal is attached), or a bad one
(401: missing scheme, unknown, revoked). Tokens are never logged: only the token id appears in logs and
metrics."""

from __future__ import annotations

import hmac
import time
from typing import Awaitable, Callable

from aiohttp import web

from ..errors import Forbidden, Unauthorized
from ..records import format_logged_at
from ..tokens import Principal, digest
from .errors import error_response
from .params import check_artist_id
from .state import get_state

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL = web.RequestKey("tlog_principal", Principal)


def _authenticate(request: web.Request) -> Principal | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise Unauthorized("use 'Authorization: Bearer <token>'")
    want = digest(token.strip())
    state = get_state(request)
    now = time.monotonic()
    # Read the version before the lookup: a revocation committed after it changes it for the next request.
    version = state.tokens_version()
    principal = state.token_cache.get(want, version, now)
    if principal is None:
        rec = state.store.token_by_digest(want)
        # The index lookup is by SHA-256 of the token, which no attacker can steer byte by byte; the final
        # comparison is constant-time as well.
        if rec is None or not hmac.compare_digest(want, rec.digest) or rec.revoked_ms is not None:
            raise Unauthorized("unknown or revoked token")
        principal = Principal(rec.role, rec.subject, rec.token_id, rec.rights, rec.expires_ms)
        state.token_cache.put(want, principal, now)
    expires_ms = principal.expires_ms
    if expires_ms is not None and principal.expired(int(time.time() * 1000)):  # the cache outlives no expiry
        raise Unauthorized(f"this token expired at {format_logged_at(expires_ms)}; ask for a new one")
    return principal


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = get_state(request)
    peer = state.rate_limit.client(request.remote, request.headers)
    try:
        principal = _authenticate(request)
    except Unauthorized as exc:
        if not state.rate_limit.failed.allow(peer, time.monotonic()):
            return error_response(429, "rate_limited", "too many failed requests; slow down", headers={"Retry-After": "1"})
        return error_response(401, exc.code, exc.message, headers={"WWW-Authenticate": 'Bearer realm="tlog"'})
    if principal is None and not state.rate_limit.public.allow(peer, time.monotonic()):
        return error_response(429, "rate_limited", "too many requests without a token; slow down", headers={"Retry-After": "1"})
    if principal is not None and not state.rate_limit.per_token.allow(str(principal.token_id), time.monotonic()):
        wait = state.rate_limit.per_token.retry_after(str(principal.token_id))
        return error_response(429, "rate_limited", f"this token sent more requests than the log allows; retry in {wait} s",
                              headers={"Retry-After": wait})
    if principal is not None:  # none: a public request (`principal(request)` reads None)
        request[PRINCIPAL] = principal
    return await handler(request)


def principal(request: web.Request) -> Principal | None:
    return request.get(PRINCIPAL)


def require(request: web.Request, *roles: str) -> Principal:
    """The request's principal, which must hold one of `roles` (401 without a token, 403 otherwise)."""
    p = principal(request)
    if p is None:
        raise Unauthorized("this endpoint needs a bearer token")
    if p.role not in roles:
        raise Forbidden(f"{_a(p.role)} token may not do this; this needs {' or '.join(map(_a, roles))} token")
    return p


def _a(role: str) -> str:
    return f"{'an' if role[0] in 'aeiou' else 'a'} {role}"


def require_right(request: web.Request, right: str) -> Principal:
    """The request's principal, which must be a service token holding `right` (SPEC §1)."""
    p = require(request, "service")
    if right not in p.rights:
        raise Forbidden(f"this needs a service token with the {right} right (tlog token create --service NAME --{right}); "
                        f"this token of {p.subject!r} has not got it")
    return p


def require_artist(request: web.Request, artist_id: str, *roles: str) -> Principal:
    """The request's principal, one of `roles`; an artist token must cover `artist_id` (403 otherwise,
    whether or not that artist exists, so nothing about other artists leaks)."""
    p = require(request, *roles)
    if p.role == "artist" and not p.is_artist(artist_id):
        raise Forbidden("an artist token may only act for the artist ids it was made for")
    return p


def own_artist(request: web.Request) -> str:
    """The path's {artist_id}, which the request may read: the artist's own token, or an auditor's."""
    artist_id = request.match_info["artist_id"]
    require_artist(request, artist_id, "artist", "auditor")
    return check_artist_id(artist_id)
