"""The OpenAPI document (GET /openapi.json) describes exactly the routes the app serves."""

from __future__ import annotations


import pytest
from aiohttp.test_utils import make_mocked_request

from tlog.log import open_log
from tlog.server import openapi
from tlog.server.app import make_app

IMPLIED = {"HEAD"}  # aiohttp answers HEAD wherever it answers GET; HTTP implies it, so it is not listed


@pytest.fixture
def app(log):
    reader = open_log(log.path)
    writer = open_log(log.path, secrets_needed=True)
    yield make_app(reader, writer)
    reader.close()
    writer.close()


def registered(app) -> set[tuple[str, str]]:
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.resource is not None and route.method not in IMPLIED}


def documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in openapi.DOCUMENT["paths"].items() for method in ops}


def example_url(path: str, op: dict) -> str:
    for p in op.get("parameters", []):
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", str(p["example"]))
    return path


async def test_every_route_is_documented_and_every_documented_route_exists(app):
    assert registered(app) == documented()
    for path, ops in openapi.DOCUMENT["paths"].items():
        for method, op in ops.items():
            url = example_url(path, op)
            assert "{" not in url, f"{method} {path}: a path parameter has no example"
            match = await app.router.resolve(make_mocked_request(method.upper(), url, app=app))
            assert match.http_exception is None, (method, path, url)
            assert match.route.resource.canonical == path, (method, path, url)


def test_read_only_server_documents_a_subset(log):
    reader = open_log(log.path)
    try:
        assert registered(make_app(reader)) < documented()
    finally:
        reader.close()


def test_document_shape():
    doc = openapi.DOCUMENT
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"] == {**doc["components"]["securitySchemes"]["bearer"],
                                                             "type": "http", "scheme": "bearer"}
    use = doc["components"]["schemas"]["UseRecord"]
    assert use["additionalProperties"] is False
    assert set(use["properties"]) == {"event_id", "content_id", "artist_id", "purpose", "phase", "system", "occurred_at",
                                      "invocations", "window_end", "detail", "basis"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["x-tlog-roles"], (method, path)
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert len(ok) == 1 and {"401", "429"} <= set(op["responses"]), (method, path)
            for status, resp in op["responses"].items():
                if status not in ok:
                    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_served_and_valid(aiohttp_client, log):
    reader = open_log(log.path)
    writer = open_log(log.path, secrets_needed=True)
    try:
        client = await aiohttp_client(make_app(reader, writer))
        resp = await client.get("/openapi.json")
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.json() == openapi.DOCUMENT
        await client.close()
    finally:
        reader.close()
        writer.close()
    import schemathesis  # validates the document as OpenAPI 3.1 when it loads it

    schema = schemathesis.openapi.from_dict(openapi.DOCUMENT)
    assert len(list(schema.get_all_operations())) == len(documented())
