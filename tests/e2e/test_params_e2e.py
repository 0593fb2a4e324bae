"""One rule for numbers on every route (server/params.py), on a real `tlog serve`: the same spellings are
refused with 400 naming the parameter, on queries and paths, public and authenticated routes alike."""

from __future__ import annotations

import orjson
import pytest

from .roles import ARTIST_A, start_env

# (role, path with {} where the number goes, the parameter's name)
ROUTES = [
    ("none", "/v1/proof/inclusion?index={}&size=5", "index"),
    ("none", "/v1/proof/inclusion?index=0&size={}", "size"),
    ("none", "/v1/proof/consistency?old={}&new=1", "old"),
    ("none", "/v1/export?start={}", "start"),
    ("none", "/v1/map/proof?tag=" + "0" * 64 + "&size={}", "size"),
    ("none", "/v1/leaves/{}", "index"),
    ("auditor", "/v1/receipts/{}", "index"),
    ("auditor", "/v1/entries/{}", "index"),
    ("auditor", f"/v1/artists/{ARTIST_A}/uses?limit={{}}", "limit"),
    ("artist_a", f"/v1/artists/{ARTIST_A}/audit?from_aseq={{}}", "from_aseq"),
]
REFUSED = ["01", "007", "+1", "-1", "1.0", "1e3", "%201", "9223372036854775808", "99999999999999999999"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = start_env(tmp_path_factory.mktemp("params"), "--rate", "0", "--auth-fail-rate", "0", demo_records=5)
    yield env
    env.stop_clean()


@pytest.mark.parametrize("role, template, name", ROUTES)
def test_every_route_refuses_the_same_spellings_naming_the_parameter(env, role: str, template: str, name: str) -> None:
    for raw in REFUSED:
        status, _, body = env.call("GET", template.format(raw), role)
        assert status == 400, (template, raw, status, body[:300])
        assert orjson.loads(body)["error"]["details"][0]["field"] == name, (template, raw, body[:300])


@pytest.mark.parametrize("role, template, name", ROUTES)
def test_every_route_takes_the_plain_spelling(env, role: str, template: str, name: str) -> None:
    status, _, body = env.call("GET", template.format("1"), role)
    assert status in (200, 404), (template, status, body[:300])


def test_a_feed_key_id_follows_the_rule(env) -> None:
    status, _, body = env.call("DELETE", f"/v1/artists/{ARTIST_A}/feed-keys/007", "artist_a")
    assert status == 400 and orjson.loads(body)["error"]["details"][0]["field"] == "key_id", body
    assert env.call("DELETE", f"/v1/artists/{ARTIST_A}/feed-keys/7", "artist_a")[0] == 404
