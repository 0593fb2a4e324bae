"""What an artist (or the label or platform acting for one) does on a real server: change preferences in
part (RFC 7396 merge patch) and see what a replacement drops, filter its uses by date and by code, and
reach its page with short-lived tokens minted by the platform's sign-in (SPEC §1, §4, §6)."""

from __future__ import annotations

import calendar
import sqlite3
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from tlog.demo import build_demo
from tlog.leaf import parse_leaf
from tlog.tokens import new_token

from .conftest import start_server, stop_server
from .test_service_api import Api, make_token

PREFS = "/v1/artists/{}/preferences"
MERGE = "application/merge-patch+json"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    db = tmp_path_factory.mktemp("artist") / "tlog.db"
    build_demo(str(db), 120)
    tokens = {
        "recsys": make_token(db, "--service", "recsys"),
        "signin": make_token(db, "--service", "signin", "--issuer"),
        "artist5": make_token(db, "--artist", "sc:user:5"),
        "label": make_token(db, "--artist", "sc:user:1", "--artist", "sc:user:2"),
        "auditor": make_token(db, "--auditor"),
    }
    server = start_server(db)
    yield Api(server), tokens, db
    out = stop_server(server)
    assert "Traceback" not in out, out
    for t in tokens.values():
        assert t not in out  # tokens are never logged


def _leaf(api: Api, index: int) -> Any:
    status, _, body = api.call("GET", f"/v1/leaves/{index}")
    assert status == 200
    return parse_leaf(body)


# --- preferences: PATCH and what a PUT drops ----------------------------------------------------------


def test_a_merge_patch_changes_only_what_it_names_and_logs_a_preference_leaf(env):
    api, tok, _ = env
    path = PREFS.format("sc:user:5")
    status, body = api.json("PUT", path, tok["artist5"], {"purposes": {"talent_discovery": "deny"}})
    assert status == 200 and body["dropped"] == []
    status, body = api.json("PATCH", path, tok["artist5"], {"strict": True, "purposes": {"fraud_detection": "allow"}},
                            content_type=MERGE)
    assert status == 200, body
    assert body["preferences"]["strict"] is True and body["by"] == "artist"
    assert body["preferences"]["purposes"] == {"fraud_detection": "allow", "talent_discovery": "deny"}
    leaf = _leaf(api, body["index"])
    assert leaf.type == "preference" and leaf.by == "artist"
    # null removes a setting; plain application/json is accepted too
    status, body = api.json("PATCH", path, tok["artist5"], {"purposes": {"talent_discovery": None}})
    assert status == 200 and body["preferences"]["purposes"] == {"fraud_detection": "allow"}
    assert body["dropped"] == [{"setting": "purposes.talent_discovery", "was": "deny", "now": None}]
    assert api.json("GET", path, tok["artist5"])[1]["preferences"] == body["preferences"]


def test_a_service_patch_may_only_restrict(env):
    api, tok, _ = env
    path = PREFS.format("sc:user:6")
    status, body = api.json("PATCH", path, tok["recsys"], {"no_ai": True}, content_type=MERGE)
    assert status == 200 and body["by"] == "service" and body["preferences"]["no_ai"] is True
    size = api.size()
    for loosening in ({"no_ai": None}, {"no_ai": False}, {"purposes": {"recommendation": "allow"}}):
        status, err = api.json("PATCH", path, tok["recsys"], loosening, content_type=MERGE)
        assert status == 403 and "only the artist may loosen" in err["error"]["message"], loosening
    assert api.size() == size
    status, body = api.json("PATCH", path, tok["auditor"], {"no_ai": True}, content_type=MERGE)
    assert status == 403 and api.size() == size


def test_a_bad_patch_changes_nothing(env):
    api, tok, _ = env
    path = PREFS.format("sc:user:5")
    size = api.size()
    status, _, _ = api.call("PATCH", path, tok["artist5"], raw=b'{"strict": true}', content_type="text/plain")
    assert status == 415
    for patch, field in (({"strict": "yes"}, "strict"), ({"purposes": {"recommendation": "maybe"}}, "purposes.recommendation"),
                         ({"colour": "blue"}, "colour"), ([1, 2], "")):
        status, err = api.json("PATCH", path, tok["artist5"], patch, content_type=MERGE)
        assert status == 400 and any(d["field"] == field for d in err["error"]["details"]), (patch, err)
    status, _, _ = api.call("PATCH", path, tok["artist5"], raw=b'{"strict": tru', content_type=MERGE)
    assert status == 400
    assert api.size() == size


def test_a_put_says_which_of_the_artists_settings_it_dropped(env):
    api, tok, _ = env
    path = PREFS.format("sc:user:2")  # the demo's: strict, with a fraud_detection opt-in
    status, body = api.json("PUT", path, tok["label"], {"no_ai": True})
    assert status == 200, body
    assert body["dropped"] == [{"setting": "strict", "was": True, "now": None},
                               {"setting": "purposes.fraud_detection", "was": "allow", "now": None}]
    path = PREFS.format("sc:user:4")  # the demo's per-content setting
    status, body = api.json("PUT", path, tok["auditor"], {})
    assert status == 403
    status, body = api.json("PUT", path, tok["recsys"], {"no_ai": True, "content": {"sc:track:3001": {"strict": True}}})
    assert status == 200 and body["dropped"] == []


# --- filters -----------------------------------------------------------------------------------------


def test_date_filters_accept_a_date_as_well_as_a_time(env):
    api, tok, _ = env
    uses = "/v1/artists/sc:user:3/uses?limit=1000"
    status, everything = api.json("GET", uses, tok["auditor"])
    assert status == 200 and everything["entries"]
    days = sorted({e["logged_at"][:10] for e in everything["entries"]})
    day = days[0]
    status, since = api.json("GET", f"{uses}&since={day}", tok["auditor"])
    status2, since_t = api.json("GET", f"{uses}&since={day}T00:00:00Z", tok["auditor"])
    assert status == status2 == 200 and since == since_t and since["entries"] == everything["entries"]
    status, until = api.json("GET", f"{uses}&until={day}", tok["auditor"])  # a date: through that day
    assert status == 200 and until["entries"] == [e for e in everything["entries"] if e["logged_at"][:10] <= day]
    status, until = api.json("GET", f"{uses}&until=2000-01-01", tok["auditor"])
    assert status == 200 and until["entries"] == []
    status, err = api.json("GET", f"{uses}&since=2026-02-30", tok["auditor"])
    assert status == 400 and err["error"]["details"][0]["field"] == "since"
    status, err = api.json("GET", f"{uses}&until=yesterday", tok["auditor"])
    assert status == 400 and err["error"]["details"][0]["field"] == "until"
    assert "RFC 3339" in err["error"]["details"][0]["message"]


@pytest.mark.parametrize("name, value, listed", [
    ("purpose", "recomendation", "recommendation"),
    ("purpose", "Recommendation", "talent_discovery"),
    ("phase", "inferense", "inference"),
    ("decision", "denied", "refused"),
])
def test_an_unknown_code_in_a_filter_is_a_400_listing_the_valid_ones(env, name, value, listed):
    api, tok, _ = env
    status, err = api.json("GET", f"/v1/artists/sc:user:3/uses?{name}={value}", tok["auditor"])
    assert status == 400, err
    (detail,) = err["error"]["details"]
    message = err["error"]["message"]
    assert detail["field"] == name and listed in message and value in message and "use one of" in message


def test_a_known_code_filters(env):
    api, tok, _ = env
    status, body = api.json("GET", "/v1/artists/sc:user:3/uses?phase=inference&limit=1000", tok["auditor"])
    assert status == 200 and body["entries"]
    assert all(e["details"]["phase"] == "inference" for e in body["entries"])
    status, body = api.json("GET", "/v1/artists/sc:user:3/uses?purpose=model_training_generative", tok["auditor"])
    assert status == 200  # a purpose of the policy, whether or not this artist has such uses


# --- tokens: several artists, expiry, the issuer ------------------------------------------------------


def test_a_label_token_acts_for_each_of_its_artists_and_no_other(env):
    api, tok, _ = env
    for artist in ("sc:user:1", "sc:user:2"):
        for route in ("uses", "summary", "audit", "preferences"):
            status, _ = api.json("GET", f"/v1/artists/{artist}/{route}", tok["label"])
            assert status == 200, (artist, route)
    for route in ("uses", "summary", "audit", "preferences"):
        assert api.json("GET", f"/v1/artists/sc:user:3/{route}", tok["label"])[0] == 403
    status, who = api.json("GET", "/v1/whoami", tok["label"])
    assert status == 200 and who["artist_ids"] == ["sc:user:1", "sc:user:2"] and who["artist_id"] == "sc:user:1"


def test_an_expired_token_gets_a_plain_401(env):
    api, _, db = env
    secret, digest = new_token()
    now_ms = int(time.time() * 1000)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO tokens (role, subject, digest, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
                     ("artist", "sc:user:3", digest, now_ms, now_ms + 4000))
    conn.close()
    assert api.json("GET", "/v1/artists/sc:user:3/summary", secret)[0] == 200  # now in the server's cache
    time.sleep(max(0.0, (now_ms + 4100) / 1000 - time.time()))
    status, err = api.json("GET", "/v1/artists/sc:user:3/summary", secret)
    assert status == 401 and err["error"]["message"].startswith("this token expired at 20")
    assert "ask for a new one" in err["error"]["message"]


def test_token_create_expires_and_lists_it(env):
    _, _, db = env
    out = subprocess.run([sys.executable, "-m", "tlog.cli", "token", "create", "--db", str(db), "--artist", "sc:user:9",
                          "--expires", "30d"], capture_output=True, text=True)
    assert out.returncode == 0 and "expires 20" in out.stderr
    listed = subprocess.run([sys.executable, "-m", "tlog.cli", "token", "list", "--db", str(db), "--json"],
                            capture_output=True, text=True, check=True)
    rows = orjson.loads(listed.stdout)
    row = rows[-1]
    assert row["artist_ids"] == ["sc:user:9"] and row["role"] == "artist" and row["revoked_at"] is None
    created, expires = (calendar.timegm(time.strptime(row[k][:19], "%Y-%m-%dT%H:%M:%S")) for k in ("created_at", "expires_at"))
    assert expires - created == 30 * 86400
    assert any(r["rights"] == ["issuer"] and r["service"] == "signin" for r in rows)
    bad = subprocess.run([sys.executable, "-m", "tlog.cli", "token", "create", "--db", str(db), "--artist", "a",
                          "--expires", "30 days"], capture_output=True, text=True)
    assert bad.returncode == 2 and "is not a duration" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "tlog.cli", "token", "create", "--db", str(db), "--artist", "a",
                          "--issuer"], capture_output=True, text=True)
    assert bad.returncode == 2 and "only a service token holds rights" in bad.stderr


def test_an_issuer_mints_short_lived_artist_tokens(env):
    api, tok, _ = env
    status, body = api.json("POST", "/v1/tokens", tok["signin"], {"artist_id": "sc:user:3", "ttl_s": 600})
    assert status == 201, body
    assert body["artist_ids"] == ["sc:user:3"] and body["token"].startswith("tlog_")
    expires = calendar.timegm(time.strptime(body["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 590 < expires - time.time() <= 601
    minted = body["token"]
    assert api.json("GET", "/v1/artists/sc:user:3/summary", minted)[0] == 200
    assert api.json("GET", "/v1/artists/sc:user:4/summary", minted)[0] == 403
    status, who = api.json("GET", "/v1/whoami", minted)
    assert who["artist_ids"] == ["sc:user:3"] and who["expires_at"] == body["expires_at"]
    status, body = api.json("POST", "/v1/tokens", tok["signin"], {"artist_ids": ["sc:user:1", "sc:user:2"], "ttl_s": 60})
    assert status == 201 and body["artist_ids"] == ["sc:user:1", "sc:user:2"]
    assert api.json("GET", "/v1/artists/sc:user:2/uses", body["token"])[0] == 200


@pytest.mark.parametrize("who, body, status", [
    ("recsys", {"artist_id": "sc:user:3", "ttl_s": 60}, 403),  # a service without the issuer right
    ("label", {"artist_id": "sc:user:1", "ttl_s": 60}, 403),
    ("auditor", {"artist_id": "sc:user:3", "ttl_s": 60}, 403),
    (None, {"artist_id": "sc:user:3", "ttl_s": 60}, 401),
    ("signin", {"artist_id": "sc:user:3", "ttl_s": 86401}, 400),
    ("signin", {"artist_id": "sc:user:3", "ttl_s": 0}, 400),
    ("signin", {"artist_id": "sc:user:3"}, 400),
    ("signin", {"artist_id": "sc:user:3", "artist_ids": ["sc:user:4"], "ttl_s": 60}, 400),
    ("signin", {"artist_ids": [], "ttl_s": 60}, 400),
    ("signin", {"artist_ids": ["has space"], "ttl_s": 60}, 400),
    ("signin", {"artist_id": "sc:user:3", "ttl_s": 60, "role": "auditor"}, 400),
])
def test_minting_is_refused_plainly(env, who, body, status):
    api, tok, _ = env
    answer, err = api.json("POST", "/v1/tokens", tok[who] if who else None, body)
    assert answer == status and err["error"]["message"], err
