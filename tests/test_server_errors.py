"""tlog/server/errors.py's table: every error type the server can meet answers with the status SPEC §6
gives it (the statuses the types carried themselves before the table, unchanged), the table names only
types the server can meet, and an error carried by its status (a cluster's handoff) comes back as a type
that answers the same."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from aiohttp import web

from tlog.errors import (Alert, Conflict, Damaged, Forbidden, NoteError, NotFound, ProofError, StorageError, TlogError,
                         TooEarly, TooLarge, Unauthorized, Unavailable, Unreachable, ValidationError, VerificationError)
from tlog.server.errors import STATUSES, UnsupportedMediaType, error_middleware, error_type, http_status
from tlog.witness.core import ForkConflict, SizeConflict

from .test_imports import import_graph

# Each type's status, written out even where it is its base's: a new error type the server can meet fails
# test_every_error_type_the_server_can_meet_has_its_status until it is given one here, deliberately.
EXPECTED: dict[type[TlogError], int] = {
    TlogError: 400, ValidationError: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409,
    SizeConflict: 409, ForkConflict: 409, TooLarge: 413, UnsupportedMediaType: 415, ProofError: 422,
    NoteError: 422, TooEarly: 425, VerificationError: 500, Alert: 500, Unavailable: 503, StorageError: 503,
    Damaged: 503, Unreachable: 503,
}


def server_error_types() -> set[type[TlogError]]:
    """The TlogError types defined in a module the server's app imports, directly or not."""
    graph, seen, todo = import_graph(), set(), ["tlog.server.app"]
    while todo:
        if (name := todo.pop()) not in seen:
            seen.add(name)
            todo.extend(graph[name])
    return {t for name in seen for t in vars(importlib.import_module(name)).values()
            if isinstance(t, type) and issubclass(t, TlogError) and t.__module__ == name}


def test_every_error_type_the_server_can_meet_has_its_status() -> None:
    found = server_error_types()
    assert found - EXPECTED.keys() == set(), "give these a status in EXPECTED (and STATUSES if not inherited)"
    assert {t: http_status(t("x")) for t in found} == {t: EXPECTED[t] for t in found}
    assert not any(t.__module__.startswith("tlog.client") for t in found)  # the client maps at its own edge


def test_the_table_names_only_types_the_server_can_meet() -> None:
    assert STATUSES.keys() <= server_error_types()
    assert all(400 <= s < 600 for s in STATUSES.values())


@pytest.mark.parametrize("status", sorted(set(STATUSES.values())))
def test_an_error_carried_by_its_status_answers_it_again(status: int) -> None:
    assert http_status(error_type(status)("x")) == status


def test_a_503_comes_back_able_to_say_when_to_retry() -> None:
    assert error_type(503) is Unavailable and error_type(425) is TooEarly and error_type(599) is TlogError


async def test_the_middleware_answers_the_tables_status(aiohttp_client: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        raise {"fork": ForkConflict("a fork", size=3), "media": UnsupportedMediaType("send JSON"),
               "early": TooEarly("not yet", retry_after=7), "bad": VerificationError("a bug"),
               "busy": Unavailable("busy", retry_after=2.5), "down": Unavailable("down")}[request.match_info["k"]]

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/{k}", handler)
    client = await aiohttp_client(app)
    answers = {k: await client.get(f"/{k}") for k in ("fork", "media", "early", "bad", "busy", "down")}
    assert {k: r.status for k, r in answers.items()} == {"fork": 409, "media": 415, "early": 425, "bad": 500,
                                                         "busy": 503, "down": 503}
    assert answers["early"].headers["Retry-After"] == "7"
    # Retry-After is whole seconds (RFC 9110 §10.2.3): a fractional wait is rounded up, none given is 1.
    assert answers["busy"].headers["Retry-After"] == "3" and answers["down"].headers["Retry-After"] == "1"
    assert (await answers["media"].json())["error"]["code"] == "unsupported_media_type"
    assert (await answers["bad"].json())["error"] == {"code": "internal", "message": "internal error", "details": []}
