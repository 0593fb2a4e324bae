"""Access control on a real `tlog serve`: every endpoint × every role, table-driven (SPEC §1, §6).

Roles: no token, a wrong token, a revoked token, a service, two artists (A and B) and an auditor.
401 for a missing, wrong or revoked token (on public routes too, for a token that is not valid); 403 for
a valid token whose role may not; an artist asking about another artist gets 403 whether that artist
exists or not, byte for byte the same answer. Nothing leaks: no token in any body, header or server log
line; no artist's ids or details in public answers, in errors, or in another artist's answers. A
refused write changes nothing. Rate limits (429) hit unauthenticated and failed-auth traffic only."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import orjson
import pytest

from tlog.server import openapi, pages

from .conftest import start_server
from .roles import ARTIST_A, ARTIST_B, ROLES, SERVICE, RoleEnv, cli, make_token, record, start_env

NOBODY = "sc:user:nobody-at-all"
PRIVATE = {  # what only the artist itself (and auditors, and the service that logged it) may see
    "artist_a": (ARTIST_A, "roles-alice", "sc:track:alice-1"),
    "artist_b": (ARTIST_B, "roles-bob", "sc:track:bob-1"),
}
_events = count()


def public() -> dict[str, int]:
    return {"none": 200, "wrong": 401, "revoked": 401, "service": 200, "artist_a": 200, "artist_b": 200, "auditor": 200}


def not_found() -> dict[str, int]:
    return {**public(), **{r: 404 for r in ("none", "service", "artist_a", "artist_b", "auditor")}}


def protected(service: int, artist_a: int, artist_b: int, auditor: int) -> dict[str, int]:
    return {"none": 401, "wrong": 401, "revoked": 401, "service": service, "artist_a": artist_a, "artist_b": artist_b,
            "auditor": auditor}


@dataclass(frozen=True)
class Row:
    name: str
    operation: str  # "METHOD /template" as in the OpenAPI document
    path: str  # may name {a} (A's leaf), {atag} (A's artist tag), {other} (a leaf another service logged), {last}
    expect: dict[str, int]
    body: Any = None
    public: bool = False  # the answer must hold nothing private, whoever asks
    heads: bool = True  # also check HEAD (aiohttp answers HEAD wherever GET is)
    extra: dict[str, str] = field(default_factory=dict)


A, B = ARTIST_A, ARTIST_B
ROWS = [
    Row("checkpoint", "GET /checkpoint", "/checkpoint", public(), public=True),
    Row("hash tile", "GET /tile/{path}", "/tile/0/000.p/1", public(), public=True),
    Row("entry bundle", "GET /tile/{path}", "/tile/entries/000.p/{last}", public(), public=True),
    Row("log info", "GET /v1/log", "/v1/log", public(), public=True),
    Row("inclusion proof", "GET /v1/proof/inclusion", "/v1/proof/inclusion?index={a}&size={last}", public(), public=True),
    Row("consistency proof", "GET /v1/proof/consistency", "/v1/proof/consistency?old=1&new={last}", public(), public=True),
    Row("leaf of A", "GET /v1/leaves/{index}", "/v1/leaves/{a}", public(), public=True),
    Row("map proof of A's tag", "GET /v1/map/proof", "/v1/map/proof?tag={atag}", public(), public=True),
    Row("stats", "GET /v1/stats", "/v1/stats", public(), public=True),
    Row("stats of a period", "GET /v1/stats", "/v1/stats?since=2020-01-01&phase=inference", public(), public=True),
    Row("export", "GET /v1/export", "/v1/export?start=0&end={last}", public(), public=True),
    Row("export as CSV", "GET /v1/export", "/v1/export?format=csv", public(), public=True),
    Row("policies", "GET /v1/policies", "/v1/policies", public(), public=True),
    Row("policy", "GET /v1/policies/{policy_id}", "/v1/policies/default", public(), public=True),
    Row("policy diff", "GET /v1/policies/{a}/diff/{b}", "/v1/policies/default/diff/default", public(), public=True),
    Row("policy feed", "GET /feeds/policies.atom", "/feeds/policies.atom", public(), public=True),
    Row("A's feed with a key never made", "GET /feeds/artists/{artist_id}.atom",
        f"/feeds/artists/{A}.atom?key=tlogfeed_{'A' * 43}", not_found(), public=True),
    Row("A's feed without a key", "GET /feeds/artists/{artist_id}.atom", f"/feeds/artists/{A}.atom", not_found(),
        public=True),
    Row("make a feed key of A", "POST /v1/artists/{artist_id}/feed-keys", f"/v1/artists/{A}/feed-keys",
        protected(403, 200, 403, 403)),
    Row("revoke a feed key A does not have", "DELETE /v1/artists/{artist_id}/feed-keys/{key_id}",
        f"/v1/artists/{A}/feed-keys/999999", protected(403, 404, 403, 403)),
    Row("healthz", "GET /healthz", "/healthz", public(), public=True),
    Row("metrics", "GET /metrics", "/metrics", public(), public=True),
    Row("openapi", "GET /openapi.json", "/openapi.json", public(), public=True),
    Row("log a use", "POST /v1/uses", "/v1/uses", protected(200, 403, 403, 403), body="record"),
    Row("bad use", "POST /v1/uses", "/v1/uses", protected(400, 403, 403, 403), body={"event_id": "x"}),
    Row("receipt of A's leaf", "GET /v1/receipts/{index}", "/v1/receipts/{a}", protected(200, 200, 403, 200)),
    Row("receipt of another service's leaf", "GET /v1/receipts/{index}", "/v1/receipts/{other}", protected(403, 403, 403, 200)),
    Row("receipt of the log leaf", "GET /v1/receipts/{index}", "/v1/receipts/0", protected(403, 403, 403, 200)),
    Row("receipt of the default policy leaf", "GET /v1/receipts/{index}", "/v1/receipts/1", protected(403, 403, 403, 200)),
    Row("receipt beyond the log", "GET /v1/receipts/{index}", "/v1/receipts/99999999", protected(404, 404, 404, 404)),
    Row("A's preferences", "GET /v1/artists/{artist_id}/preferences", f"/v1/artists/{A}/preferences", protected(200, 200, 403, 200)),
    Row("B's preferences", "GET /v1/artists/{artist_id}/preferences", f"/v1/artists/{B}/preferences", protected(200, 403, 200, 200)),
    Row("nobody's preferences", "GET /v1/artists/{artist_id}/preferences", f"/v1/artists/{NOBODY}/preferences",
        protected(200, 403, 403, 200)),
    Row("restrict A's preferences", "PUT /v1/artists/{artist_id}/preferences", f"/v1/artists/{A}/preferences",
        protected(200, 200, 403, 403), body={"purposes": {"model_training_generative": "deny"}}),
    Row("loosen A's preferences", "PUT /v1/artists/{artist_id}/preferences", f"/v1/artists/{A}/preferences",
        protected(403, 200, 403, 403), body={}),  # after the restriction above: only A may lift it
    Row("restrict nobody's preferences", "PUT /v1/artists/{artist_id}/preferences", f"/v1/artists/{NOBODY}/preferences",
        protected(200, 403, 403, 403), body={"no_ai": True}),
    Row("restrict A's preferences in part", "PATCH /v1/artists/{artist_id}/preferences", f"/v1/artists/{A}/preferences",
        protected(200, 200, 403, 403), body={"purposes": {"talent_discovery": "deny"}}),
    Row("loosen A's preferences in part", "PATCH /v1/artists/{artist_id}/preferences", f"/v1/artists/{A}/preferences",
        protected(403, 200, 403, 403), body={"purposes": {"talent_discovery": None}}),
    Row("mint a token for A", "POST /v1/tokens", "/v1/tokens",  # the service here lacks the issuer right
        protected(403, 403, 403, 403), body={"artist_id": A, "ttl_s": 60}),
    Row("A's uses", "GET /v1/artists/{artist_id}/uses", f"/v1/artists/{A}/uses", protected(403, 200, 403, 200)),
    Row("B's uses as CSV", "GET /v1/artists/{artist_id}/uses", f"/v1/artists/{B}/uses?format=csv", protected(403, 403, 200, 200)),
    Row("nobody's uses", "GET /v1/artists/{artist_id}/uses", f"/v1/artists/{NOBODY}/uses", protected(403, 403, 403, 200)),
    Row("A's audit bundle", "GET /v1/artists/{artist_id}/audit", f"/v1/artists/{A}/audit", protected(403, 200, 403, 200)),
    Row("B's audit bundle", "GET /v1/artists/{artist_id}/audit", f"/v1/artists/{B}/audit", protected(403, 403, 200, 200)),
    Row("nobody's audit bundle", "GET /v1/artists/{artist_id}/audit", f"/v1/artists/{NOBODY}/audit", protected(403, 403, 403, 200)),
    Row("A's summary", "GET /v1/artists/{artist_id}/summary", f"/v1/artists/{A}/summary", protected(403, 200, 403, 200)),
    Row("nobody's summary", "GET /v1/artists/{artist_id}/summary", f"/v1/artists/{NOBODY}/summary",
        protected(403, 403, 403, 200)),
    Row("whoami", "GET /v1/whoami", "/v1/whoami", protected(200, 200, 200, 200)),
    Row("public page", "GET /", "/", public(), public=True),
    Row("artist page", "GET /artist", "/artist", public(), public=True),
    Row("a page's stylesheet", "GET /static/{name}", pages.assets().url("site.css"), public(), public=True),
    Row("bind content without the catalog right", "PUT /v1/content/{content_id}/artists", "/v1/content/sc:track:bound/artists",
        protected(403, 403, 403, 403), body={"artists": [A]}),
    Row("entry of A", "GET /v1/entries/{index}", "/v1/entries/{a}", protected(403, 403, 403, 200)),
    Row("entry beyond the log", "GET /v1/entries/{index}", "/v1/entries/99999999", protected(403, 403, 403, 404)),
    Row("unknown route", "", "/v1/nothing-here", {**public(), **{r: 404 for r in ROLES if r not in ("wrong", "revoked")}},
        public=True),
]
CELLS: list[int] = []


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = start_env(tmp_path_factory.mktemp("access"), "--rate", "0", "--auth-fail-rate", "0")
    size = env.state()[1]
    for i in range(1, size):  # a use leaf that another service logged (the demo's)
        status, _, body = env.call("GET", f"/v1/entries/{i}", "auditor")
        details = orjson.loads(body)["details"]
        if status == 200 and details.get("event_id") and details.get("service") != SERVICE:
            env.indexes["other"] = i
            break
    yield env
    out = env.stop()
    assert "Traceback" not in out, out[-3000:]
    for role, token in env.tokens.items():
        assert not token or token not in out, f"the {role} token is in the server's output"
    assert "leakcheck" not in out


def _fill(env: RoleEnv, path: str) -> str:
    a = env.indexes["artist_a"]
    tag = orjson.loads(env.call("GET", f"/v1/leaves/{a}")[2])["artist"] if "{atag}" in path else ""
    return path.format(a=a, atag=tag, other=env.indexes["other"], last=env.state()[1])


def _secrets(env: RoleEnv) -> list[str]:
    return [t for t in env.tokens.values() if t]


def _leaks(env: RoleEnv, row: Row, role: str, status: int, headers: dict[str, str], body: bytes) -> list[str]:
    text = body.decode(errors="replace") + "\n" + "\n".join(f"{k}: {v}" for k, v in headers.items())
    found = [f"a token ({t[:9]}…)" for t in _secrets(env) if t in text]
    if "set-cookie" in {k.lower() for k in headers}:
        found.append("Set-Cookie")
    private = list(PRIVATE.values())
    if row.public or status >= 400:
        hidden = [s for group in private for s in group]
    elif role in PRIVATE:  # an artist sees its own, never another's
        hidden = [s for other, group in PRIVATE.items() if other != role for s in group]
    else:
        hidden = []
    found += [repr(s) for s in hidden if s in text]
    if status == 401 and orjson.loads(body)["error"]["details"]:
        found.append("error details on a 401")
    return found


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_matrix(env, row):
    wrong = []
    for role in ROLES:
        for method in ("GET", "HEAD") if row.operation.startswith("GET") and row.heads else (row.operation.split(" ")[0] or "GET",):
            path = _fill(env, row.path)
            body = row.body
            if body == "record":
                body = record(f"access-{next(_events)}", ARTIST_A)
            before = env.state() if method in ("POST", "PUT", "PATCH") else None
            status, headers, data = env.call(method, path, role, body)
            CELLS.append(status)
            if status != row.expect[role]:
                wrong.append(f"{method} {path} as {role}: {status}, want {row.expect[role]}: {data[:200]!r}")
                continue
            if status >= 400:
                if method != "HEAD":
                    err = orjson.loads(data)["error"]
                    assert set(err) == {"code", "message", "details"} and err["message"], data
                if status == 401:
                    assert headers.get("WWW-Authenticate", "").startswith("Bearer"), headers
                if before is not None:
                    assert env.state() == before, f"a refused {method} {path} as {role} changed the log"
            if method != "HEAD":
                leaks = _leaks(env, row, role, status, headers, data)
                if leaks:
                    wrong.append(f"{method} {path} as {role} leaks {', '.join(leaks)}")
    assert not wrong, "\n".join(wrong)


def test_every_documented_operation_is_in_the_matrix():
    documented = {f"{m.upper()} {p}" for p, ops in openapi.DOCUMENT["paths"].items() for m in ops}
    assert documented == {r.operation for r in ROWS if r.operation}


def test_matrix_agrees_with_the_documented_roles():
    """x-tlog-roles in /openapi.json says who may call what; the matrix must not contradict it."""
    ops = {f"{m.upper()} {p}": op for p, o in openapi.DOCUMENT["paths"].items() for m, op in o.items()}
    for row in ROWS:
        if not row.operation:
            continue
        roles = set(ops[row.operation]["x-tlog-roles"])
        for role, status in row.expect.items():
            kind = "artist" if role.startswith("artist") else role
            if status == 200:
                assert "public" in roles or kind in roles, (row.name, role)
            if "public" not in roles and kind not in roles:
                assert status in (401, 403), (row.name, role)


def test_another_artist_existing_or_not_gets_the_same_answer(env):
    for suffix in ("uses", "audit", "preferences", "uses?format=csv&limit=1"):
        answers = {who: env.call("GET", f"/v1/artists/{who}/{suffix}", "artist_a") for who in (ARTIST_B, NOBODY, "x" * 300)}
        assert {(s, b) for s, _, b in answers.values()} == {(403, answers[NOBODY][2])}, (suffix, answers)
        assert len({tuple(sorted((k, v) for k, v in h.items() if k not in ("Date",))) for _, h, _ in answers.values()}) == 1


def test_revocation_takes_effect_on_the_running_server(env):
    db = env.server.db
    token, token_id = make_token(db, "--auditor")
    assert env.call("GET", "/v1/entries/0", headers={"Authorization": f"Bearer {token}"})[0] == 200
    cli(db, "token", "revoke", str(token_id))
    status, headers, body = env.call("GET", "/v1/entries/0", headers={"Authorization": f"Bearer {token}"})
    assert status == 401 and token.encode() not in body
    env.tokens["revoked_later"] = token  # the teardown checks it never reached the log either


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer tlog_leakcheck", "Token tlog_leakcheck",
                                    "Bearer " + "x" * 300, "Bearer tlog_leakcheck extra"])
def test_malformed_authorization_is_401(env, header):
    status, headers, body = env.call("GET", "/v1/log", headers={"Authorization": header})
    assert status == 401 and b"leakcheck" not in body, body
    assert orjson.loads(body)["error"]["code"] == "unauthorized"


def test_unparseable_request_is_refused_without_logging_it(env):
    """A header aiohttp cannot parse (a control byte) is refused by aiohttp itself, before any middleware;
    the server's log line must not quote the request, since the bad header may be the token. (aiohttp's
    400 body quotes the bad line back to the client that sent it: its own bytes, to itself.)"""
    host, port = env.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /v1/log HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tlog_leakcheck\x01\r\n\r\n")
        reply = s.recv(4096)
    assert reply.split(b" ", 2)[1] == b"400", reply[:100]
    time.sleep(0.2)  # let the server's log line arrive; the fixture's teardown checks it


def test_cells_counted():
    if len(CELLS) < len(ROWS):
        pytest.skip("the matrix did not run (deselected)")
    assert len(CELLS) >= 300, len(CELLS)


# --- rate limits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """Tight limits: 10 requests without a token, then 2/s; 5 failed authentications, then 1/s."""
    env = start_env(tmp_path_factory.mktemp("limited"), "--rate", "2", "--burst", "10",
                    "--auth-fail-rate", "1", "--auth-fail-burst", "5", demo_records=5)
    yield env
    env.stop_clean()


def _flood(env: RoleEnv, role: str, n: int, path: str = "/v1/log") -> list[int]:
    return [env.call("GET", path, role)[0] for _ in range(n)]


def _is_429(env: RoleEnv, role: str) -> None:
    status, headers, body = env.call("GET", "/v1/log", role)
    assert status == 429 and headers.get("Retry-After"), (role, status)
    assert orjson.loads(body)["error"]["code"] == "rate_limited" and b"tlog_" not in body


def test_rate_limits(limited):
    env = limited
    # start_env's own calls used valid tokens, which no budget counts: both buckets are still full.
    codes = _flood(env, "none", 14)
    assert codes[:9] == [200] * 9 and codes[-1] == 429, codes
    _is_429(env, "none")
    codes = _flood(env, "wrong", 8) + _flood(env, "revoked", 2)
    assert codes[:4] == [401] * 4 and codes[-1] == 429, codes
    _is_429(env, "revoked")
    # Valid tokens from the same address are never throttled, however many requests they make.
    for role in ("service", "artist_a", "artist_b", "auditor"):
        assert set(_flood(env, role, 30, "/healthz")) == {200}, role
    assert env.call("POST", "/v1/uses", "service", record("limited-1", ARTIST_A))[0] == 200
    # Each bucket refills at its own rate.
    time.sleep(1.2)
    assert env.call("GET", "/v1/log", "none")[0] == 200
    assert env.call("GET", "/v1/log", "wrong")[0] == 401


def test_rate_limits_off(tmp_path):
    """--rate 0 and --auth-fail-rate 0 turn the limits off (the matrix above ran that way)."""
    db = tmp_path / "tlog.db"
    from tlog.demo import build_demo

    build_demo(str(db), 1)
    server = start_server(db, "--rate", "0", "--auth-fail-rate", "0")
    try:
        env = RoleEnv(server, {"none": None, "wrong": "tlog_" + "B" * 43})
        assert set(_flood(env, "none", 120)) == {200}
        assert set(_flood(env, "wrong", 60)) == {401}
    finally:
        server.proc.terminate()
        server.proc.communicate(timeout=10)
