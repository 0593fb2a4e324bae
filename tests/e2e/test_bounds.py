"""Bounded work and output per request (issue 15), on a real `tlog serve`: error bodies stay small
whatever the request, preferences have a size and a per-content cap and name only purposes of the
policy, per-token rate limits are opt-in, /metrics can be limited to a token or an address, and the
server never names its software versions."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlog.errors import DETAIL_CHARS, DETAILS_SHOWN

from .conftest import free_port, start_server, stop_server
from .roles import ARTIST_A, make_token, record, start_env

# An answer may be at most this multiple of its request plus this many bytes (an error body: a cut
# message and DETAILS_SHOWN cut details, about 10 KiB at most).
SIZE_FACTOR = 2
SIZE_BUDGET = 16 << 10


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = start_env(tmp_path_factory.mktemp("bounds"), "--rate", "0", "--auth-fail-rate", "0", demo_records=5)
    yield env
    env.stop_clean()


def floats_under_a_long_key(key_chars: int, floats: int) -> bytes:
    return b'{"' + b"k" * key_chars + b'": [' + b",".join([b"1.5"] * floats) + b"]}"


def _bounded(status: int, request: bytes, answer: bytes) -> None:
    assert len(answer) <= SIZE_FACTOR * len(request) + SIZE_BUDGET, (status, len(request), len(answer))


def test_a_12kb_body_of_floats_under_one_long_key_gets_a_short_answer(env):
    """Before: one detail per float, each naming the whole key: 16 MB of answer to 12 KB of request."""
    body = floats_under_a_long_key(4000, 2000)
    assert 12_000 <= len(body) <= 13_000
    before = env.state()
    status, _, answer = env.call("POST", "/v1/uses", "service", raw=body)
    assert status == 400
    assert len(answer) < 10_000, len(answer)
    error = orjson.loads(answer)["error"]
    details = error["details"]
    assert len(details) == DETAILS_SHOWN + 1
    assert all(len(d["field"]) <= DETAIL_CHARS and len(d["message"]) <= DETAIL_CHARS for d in details)
    assert details[0]["field"].startswith("kkkk") and details[0]["field"].endswith("…")
    assert details[0]["message"] == "floats are not allowed; use an integer"
    assert details[-1]["more"] == 2000 - DETAILS_SHOWN and "1980 more problems" in details[-1]["message"]
    assert "(and 1999 more)" in error["message"] and len(error["message"]) < 400
    assert env.state() == before


def test_many_bad_records_list_the_first_and_count_the_rest(env):
    bad = [record(f"bounds-{i}", ARTIST_A, purpose="not_a_purpose", invocations=0) for i in range(300)]
    status, _, answer = env.call("POST", "/v1/uses", "service", {"records": bad})
    assert status == 400
    details = orjson.loads(answer)["error"]["details"]
    assert [d["field"] for d in details[:4]] == ["records[0].purpose", "records[0].invocations",
                                                 "records[1].purpose", "records[1].invocations"]
    assert len(details) == DETAILS_SHOWN + 1 and details[-1]["more"] == 600 - DETAILS_SHOWN


def test_a_record_with_a_million_unknown_fields_is_counted_not_listed(env):
    body = b'{"' + b'":0,"'.join(b"f%d" % i for i in range(200_000)) + b'":0}'
    status, _, answer = env.call("POST", "/v1/uses", "service", raw=body)
    assert status == 400
    details = orjson.loads(answer)["error"]["details"]
    assert details[0] == {"field": "f0", "message": "unknown field"}
    # Every unknown field and every missing required one is counted.
    assert sum(d.get("more", 1) for d in details) >= 200_000
    _bounded(status, body, answer)


def json_values(max_leaves: int = 60) -> st.SearchStrategy[object]:
    """JSON with what the SPEC forbids (floats) and what costs (long keys, long strings, deep nests)."""
    scalars = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False, allow_infinity=False) \
        | st.text(max_size=300)
    keys = st.text(max_size=40) | st.text(alphabet="k\u00e9\"\\", min_size=1000, max_size=5000)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=30) | st.dictionaries(keys, inner, max_size=12),
                        max_leaves=max_leaves)


@st.composite
def large_bodies(draw: st.DrawFn) -> bytes:
    """A generated JSON value, wrapped under a long key, repeated and nested as deep as drawn."""
    value = json.dumps(draw(json_values())).encode()
    key = draw(st.text(alphabet="abc\"é", max_size=20_000))
    repeat = draw(st.integers(1, 3000))
    depth = draw(st.integers(0, 300))
    body = b"[" * depth + b"{" + json.dumps(key).encode() + b": [" + b",".join([value] * repeat) + b"]}" + b"]" * depth
    return body[: 2 << 20]  # under --max-body, and sometimes cut mid-value: malformed JSON too


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(body=large_bodies())
def test_answers_to_large_and_nested_bodies_are_bounded(env, body):
    for method, path, role in (("POST", "/v1/uses", "service"),
                               ("PUT", f"/v1/artists/{ARTIST_A}/preferences", "artist_a")):
        status, _, answer = env.call(method, path, role, raw=body)
        assert status < 500, (path, status, answer[:300])
        _bounded(status, body, answer)


# --- preferences ------------------------------------------------------------------------------------


def test_preferences_beyond_64_kib_are_refused_before_anything_is_stored(env):
    path = f"/v1/artists/{ARTIST_A}/preferences"
    content = {f"sc:track:{i:05d}-{'x' * 80}": {"no_ai": True} for i in range(900)}  # under the 1000 cap
    before = env.state()
    status, _, answer = env.call("PUT", path, "artist_a", {"content": content})
    assert status == 413, answer
    assert "at most 65,536 bytes" in orjson.loads(answer)["error"]["message"]
    padded = orjson.dumps({"no_ai": True}) + b" " * (65 << 10)  # small once parsed, but a large body
    status, _, answer = env.call("PUT", path, "artist_a", raw=padded)
    assert status == 413 and orjson.loads(answer)["error"]["code"] == "too_large"
    assert env.state() == before


def test_per_content_settings_are_capped(env):
    content = {f"sc:track:{i}": {"no_ai": True} for i in range(1001)}
    before = env.state()
    status, _, answer = env.call("PUT", f"/v1/artists/{ARTIST_A}/preferences", "artist_a", {"content": content})
    assert status == 400
    message = orjson.loads(answer)["error"]["message"]
    assert "at most 1000 pieces of content" in message and "1001" in message
    assert env.state() == before
    content.popitem()
    assert env.call("PUT", f"/v1/artists/{ARTIST_A}/preferences", "artist_a", {"content": content})[0] == 200


def test_preferences_name_only_purposes_of_the_policy(env):
    before = env.state()
    status, _, answer = env.call("PUT", f"/v1/artists/{ARTIST_A}/preferences", "artist_a",
                                 {"purposes": {"voice_cloning": "deny"}})
    assert status == 400
    assert orjson.loads(answer)["error"]["details"] == [
        {"field": "purposes.voice_cloning", "message": "not a purpose of the policy in effect or of an announced one"}]
    assert env.state() == before


def test_smaller_limits_by_configuration(tmp_path):
    env = start_env(tmp_path, "--max-preferences", "2048", "--max-content-overrides", "3", "--max-error-details", "2",
                    demo_records=1)
    try:
        path = f"/v1/artists/{ARTIST_A}/preferences"
        assert env.call("PUT", path, "artist_a", {"content": {f"sc:track:{i}": {"strict": True} for i in range(4)}})[0] == 400
        assert env.call("PUT", path, "artist_a", raw=b'{"no_ai": true}' + b" " * 2048)[0] == 413
        status, _, answer = env.call("POST", "/v1/uses", "service", raw=floats_under_a_long_key(10, 50))
        details = orjson.loads(answer)["error"]["details"]
        assert status == 400 and len(details) == 3 and details[-1]["more"] == 48
    finally:
        assert "Traceback" not in env.stop()


# --- software versions -----------------------------------------------------------------------------


def _server_header(headers: dict[str, str]) -> str:
    return {k.lower(): v for k, v in headers.items()}.get("server", "")


def test_no_response_names_the_server_software(env):
    answers = [
        env.call("GET", "/checkpoint"),  # 200, text
        env.call("GET", "/v1/log"),  # 200, JSON
        env.call("GET", "/static/merkle.js"),  # a static file
        env.call("GET", "/"),  # a page
        env.call("GET", "/no/such/route"),  # 404 from the router
        env.call("DELETE", "/v1/log"),  # 405
        env.call("GET", "/v1/log", "wrong"),  # 401
        env.call("POST", "/v1/uses", "service", raw=b"{"),  # 400
    ]
    for status, headers, _ in answers:
        server = _server_header(headers)
        assert "aiohttp" not in server.lower() and "python" not in server.lower(), (status, server)
        assert not any(c.isdigit() for c in server), (status, server)
    assert {a[0] for a in answers} == {200, 404, 405, 401, 400}
    # A request aiohttp cannot parse is answered by aiohttp itself, before the app.
    host, port = env.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /v1/log HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n")
        reply = s.recv(4096)
    head = reply.split(b"\r\n\r\n", 1)[0].decode()
    assert head.split(" ", 2)[1] == "400", head
    assert "aiohttp" not in head.lower() and "python" not in head.lower(), head


# --- per-token rate limits, /metrics access ---------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """Per-token limits (5 at once, then 2/s), /metrics only with an auditor or metrics token."""
    env = start_env(tmp_path_factory.mktemp("per-token"), "--rate", "0", "--auth-fail-rate", "0",
                    "--token-rate", "2", "--token-burst", "5", "--metrics-token", demo_records=1)
    env.tokens["metrics"] = make_token(env.server.db, "--metrics")[0]
    time.sleep(2.5)  # start_env's own requests drew on the service token's budget
    yield env
    env.stop_clean()


def test_per_token_rate_limit(limited):
    codes = [limited.call("GET", "/v1/log", "artist_b")[0] for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[-1] == 429, codes
    status, headers, body = limited.call("GET", "/v1/log", "artist_b")
    assert status == 429 and int(headers["Retry-After"]) >= 1
    error = orjson.loads(body)["error"]
    assert error["code"] == "rate_limited" and "this token" in error["message"]
    # Another token, and requests without one, have budgets of their own.
    assert limited.call("GET", "/v1/log", "artist_a")[0] == 200
    assert limited.call("GET", "/v1/log")[0] == 200
    time.sleep(1.1)
    assert limited.call("GET", "/v1/log", "artist_b")[0] == 200


def test_metrics_limited_to_a_token(limited):
    time.sleep(2.5)  # refill the budgets the test above used
    assert limited.call("GET", "/metrics")[0] == 401
    assert limited.call("GET", "/metrics", "artist_a")[0] == 403
    assert limited.call("GET", "/metrics", "service")[0] == 403
    for role in ("auditor", "metrics"):
        status, _, body = limited.call("GET", "/metrics", role)
        assert status == 200 and b"tlog_http_requests_total" in body, role
    # A metrics token reads nothing else that needs a token.
    assert limited.call("GET", f"/v1/artists/{ARTIST_A}/uses", "metrics")[0] == 403
    assert limited.call("GET", "/v1/entries/3", "metrics")[0] == 403


def test_metrics_on_a_separate_address(tmp_path):
    from tlog.demo import build_demo

    db = tmp_path / "tlog.db"
    build_demo(str(db), 1)
    side = free_port()
    server = start_server(db, "--metrics-bind", f"127.0.0.1:{side}")
    try:
        assert server.get("/metrics")[0] == 404
        assert server.get("/v1/log")[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{side}/metrics", timeout=10) as r:
            body = r.read()
            assert r.status == 200 and "aiohttp" not in r.headers.get("Server", "")
        # The main address's requests are counted, the side listener's are not.
        assert b'route="/v1/log"' in body and b'route="/metrics"' not in body
    finally:
        assert "Traceback" not in stop_server(server)


def test_metrics_bind_must_be_host_and_port(tmp_path):
    import subprocess
    import sys

    from tlog.demo import build_demo

    db = tmp_path / "tlog.db"
    build_demo(str(db), 1)
    p = subprocess.run([sys.executable, "-m", "tlog.cli", "serve", "--db", str(db), "--metrics-bind", "9100"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "HOST:PORT" in p.stderr and "--metrics-bind" in p.stderr and "Traceback" not in p.stderr


def test_per_token_limits_are_off_by_default(env):
    assert {env.call("GET", "/healthz", "artist_b")[0] for _ in range(150)} == {200}
