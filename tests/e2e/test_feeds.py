"""Policy diffs and Atom feeds against a real `tlog serve` (SPEC §4, §6).

The log is written with a controllable clock before the server starts: it begins 40 days ago, a
loosening is announced with its 30 days' notice and took effect 9 days ago, and a tightening is
announced for 10 days from now. Two artists: alice denied generative training before the loosening,
bob set nothing. Every feed is parsed by feedparser, which must find nothing malformed (bozo 0)."""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import feedparser
import orjson
import pytest

from tlog.log import init_log
from tlog.policy import DEFAULT_POLICY
from tlog.records import validate_use
from tlog.sequencer import Submission
from tlog.server.feeds import FEED_PAGE

from .conftest import Server, start_server, stop_server
from .roles import cli, make_token, record

DAY = 86_400
ALICE, BOB = "sc:user:alice", "sc:user:bob"
NEWCOMER = "sc:user:newcomer"  # nothing logged about it yet
ALICE_USES = FEED_PAGE + 25  # more than a page
START = time.time() - 40 * DAY
LOOSE_AT = START + 3600 + 31 * DAY  # announced an hour after the start, with a day to spare
STRICT_AT = time.time() + 10 * DAY


def _doc(base: bytes, **defaults: str) -> bytes:
    doc = orjson.loads(base)
    for code, default in defaults.items():
        doc["purposes"][code]["default"] = default
    return orjson.dumps(doc)


LOOSE = _doc(DEFAULT_POLICY.document, model_training_generative="allowed")
STRICT = _doc(LOOSE, talent_discovery="refused")


def _uses(seq, artist: str, n: int, clock: list[float], tag: str) -> None:
    recs = [validate_use(record(f"{tag}-{artist}-{i}", artist, content_id=f"{artist}/track-{i % 3}",
                                detail="a <b>bold</b> & \"quoted\" detail\x01"), now=_dt(clock[0]),
                         purposes=seq.policy.purposes) for i in range(n)]
    (res,) = seq.append_uses([Submission("recsys", recs)])
    assert not isinstance(res, Exception), res


def _dt(t: float):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    db = tmp_path_factory.mktemp("feeds") / "tlog.db"
    clock = [START]
    log = init_log(db, "feeds.tlog.example/log", clock=lambda: clock[0])
    seq = log.sequencer(clock=lambda: clock[0])
    seq.set_preferences(ALICE, {"purposes": {"model_training_generative": "deny"}}, by="artist")
    _uses(seq, ALICE, ALICE_USES, clock, "early")
    _uses(seq, BOB, 3, clock, "early")
    clock[0] += 3600
    seq.publish_policy(LOOSE, "2026-loose", effective_ms=int(LOOSE_AT * 1000))
    clock[0] = time.time() - DAY
    seq.publish_policy(STRICT, "2027-strict", effective_ms=int(STRICT_AT * 1000))
    log.close()
    tokens = {who: make_token(db, "--artist", who)[0] for who in (ALICE, BOB, NEWCOMER)}
    tokens["service"] = make_token(db, "--service", "recsys")[0]
    server = start_server(db)
    yield server, tokens
    out = stop_server(server)
    assert "Traceback" not in out, out
    for token in tokens.values():
        assert token not in out


def _call(server: Server, method: str, path: str, token: str | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(server.url + path, method=method,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _feed(server: Server, path: str):
    status, headers, body = server.get(path)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/atom+xml")
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    return parsed, body.decode()


def _new_key(server: Server, artist: str, token: str) -> dict:
    status, body = _call(server, "POST", f"/v1/artists/{artist}/feed-keys", token)
    assert status == 200, body
    return orjson.loads(body)


def _artist_feed(server: Server, artist: str, key: str, before: int | None = None) -> str:
    query = {"key": key, **({"before": str(before)} if before else {})}
    return f"/feeds/artists/{artist}.atom?{urllib.parse.urlencode(query)}"


# --- the diff ------------------------------------------------------------------------------------


def test_the_diff_marks_each_change_and_whether_it_loosens(env):
    server, _ = env
    status, _, body = server.get("/v1/policies/default/diff/2026-loose")
    assert status == 200
    diff = orjson.loads(body)
    assert diff["from"] == "default" and diff["to"] == "2026-loose" and diff["loosens"] is True
    assert diff["changes"] == [{"purpose": "model_training_generative", "change": "default", "from": "refused",
                                "to": "allowed", "loosens": True,
                                "summary": "model_training_generative: refused → allowed",
                                "words": "default changed from refused to allowed"}]
    back = orjson.loads(server.get("/v1/policies/2027-strict/diff/2026-loose")[2])
    assert back["loosens"] is True and [c["purpose"] for c in back["changes"]] == ["talent_discovery"]
    tighter = orjson.loads(server.get("/v1/policies/2026-loose/diff/2027-strict")[2])
    assert tighter["loosens"] is False and tighter["changes"][0]["summary"] == "talent_discovery: flagged → refused"
    same = orjson.loads(server.get("/v1/policies/default/diff/default")[2])
    assert same["changes"] == [] and same["loosens"] is False


def test_the_diff_of_an_unknown_policy_is_404_naming_it(env):
    server, _ = env
    status, _, body = server.get("/v1/policies/default/diff/2099-nope")
    assert status == 404
    assert "'2099-nope'" in orjson.loads(body)["error"]["message"]
    status, _, body = server.get("/v1/policies/nope/diff/default")
    assert status == 404 and "'nope'" in orjson.loads(body)["error"]["message"]


def test_tlog_policy_diff_says_the_same(env):
    server, _ = env
    out = orjson.loads(cli(server.db, "policy", "diff", "default", "2026-loose", "--json")[0])
    assert out == orjson.loads(server.get("/v1/policies/default/diff/2026-loose")[2])


# --- the public feed ------------------------------------------------------------------------------


def test_the_policy_feed_lists_each_announcement_with_its_date_and_diff(env):
    server, _ = env
    feed, text = _feed(server, "/feeds/policies.atom")
    titles = [e.title for e in feed.entries]
    assert len(titles) == 3
    assert titles[0].startswith("Policy 2027-strict from ") and "replacing 2026-loose" in titles[0]
    assert titles[1].startswith("Policy 2026-loose from ") and titles[1].endswith(": more use of music")
    assert titles[2].startswith("Policy default, the log's first")
    loose = feed.entries[1]
    assert "- Model training generative: default changed from refused to allowed (more use of music)" in loose.content[0].value
    assert "Announced " in loose.content[0].value
    ids = [e.id for e in feed.entries]
    assert len(set(ids)) == 3 and all(i.startswith("tag:feeds.tlog.example,") for i in ids)
    assert ids == [e.id for e in _feed(server, "/feeds/policies.atom")[0].entries]  # stable
    assert feed.feed.updated == feed.entries[0].updated
    for who in (ALICE, BOB, "track-"):  # nothing about any artist
        assert who not in text


# --- an artist's feed -----------------------------------------------------------------------------


def test_an_artist_feed_tells_each_artist_what_a_change_means_for_its_own_music(env):
    server, tokens = env
    alice = _new_key(server, ALICE, tokens[ALICE])
    bob = _new_key(server, BOB, tokens[BOB])
    assert alice["key"] != bob["key"] and alice["url"] == f"/feeds/artists/{ALICE}.atom?key={alice['key']}"
    feed, a_text = _feed(server, alice["url"])
    _, b_text = _feed(server, bob["url"])
    effects = {e.title: e.content[0].value for e in feed.entries if "policy" in e.title}
    loose = next(v for k, v in effects.items() if "2026-loose" in k)
    assert ("model_training_generative becomes allowed by default, but nothing changes for your tracks: "
            "you denied it.") in loose
    assert "nothing changes for your music" in next(k for k in effects if "2026-loose" in k)
    b_feed = feedparser.parse(b_text)
    b_loose = next(e.content[0].value for e in b_feed.entries if "2026-loose" in e.title)
    assert "model_training_generative becomes allowed for your tracks unless you deny it." in b_loose
    b_strict = next(e.content[0].value for e in b_feed.entries if "2027-strict" in e.title)
    assert "talent_discovery becomes refused for your tracks unless you allow it." in b_strict
    # Never another artist's data: its id, its tracks or its tag.
    assert BOB not in a_text and "bob/track" not in a_text
    assert ALICE not in b_text and "alice/track" not in b_text
    _, _, leaf = server.get(f"/v1/leaves/{_an_index(server, tokens[BOB])}")
    assert orjson.loads(leaf)["artist"] not in a_text


def _an_index(server: Server, token: str) -> int:
    status, body = _call(server, "GET", f"/v1/artists/{BOB}/uses?limit=1", token)
    return orjson.loads(body)["entries"][0]["index"]


def test_an_artist_with_nothing_logged_yet_is_told_of_the_changes(env):
    server, tokens = env
    feed, _ = _feed(server, _new_key(server, NEWCOMER, tokens[NEWCOMER])["url"])
    assert [e.title.split(", policy ")[1] for e in feed.entries] == [
        "2027-strict changes 1 purpose for your music", "2026-loose changes 1 purpose for your music"]
    assert "you can change your choices on your artist page before then." in feed.entries[0].content[0].value
    assert feed.entries[1].content[0].value.endswith("replacing default.")  # in effect already


def test_an_artist_feed_is_paged_newest_first(env):
    server, tokens = env
    key = _new_key(server, ALICE, tokens[ALICE])["key"]
    seen: list[str] = []
    path: str | None = _artist_feed(server, ALICE, key)
    pages = 0
    while path:
        feed, _ = _feed(server, path)
        pages += 1
        assert len(feed.entries) <= FEED_PAGE
        updated = [e.updated for e in feed.entries]
        assert updated == sorted(updated, reverse=True)
        seen += [e.id for e in feed.entries]
        nxt = [link.href for link in feed.feed.links if link.rel == "next"]
        path = urllib.parse.urlsplit(nxt[0])._replace(scheme="", netloc="").geturl() if nxt else None
    uses = [i for i in seen if "/entries/" in i]
    assert pages == 2 and len(seen) == len(set(seen))
    assert len(uses) == ALICE_USES + 1  # every use and the preference entry, once each
    assert sum("/policies/" in i for i in seen) == 2  # the two changes, not the first policy


def test_a_feed_key_opens_only_its_artists_feed_and_a_revoked_one_is_404_at_once(env):
    server, tokens = env
    made = _new_key(server, ALICE, tokens[ALICE])
    other = _new_key(server, BOB, tokens[BOB])
    assert _feed(server, made["url"])
    nobody = server.get(_artist_feed(server, ALICE, "tlogfeed_" + "A" * 43))
    for path in (_artist_feed(server, BOB, made["key"]),  # alice's key on bob's feed
                 _artist_feed(server, "sc:user:nobody", made["key"]),
                 _artist_feed(server, "sc:user:nobody", other["key"]),
                 f"/feeds/artists/{ALICE}.atom"):
        status, _, body = server.get(path)
        assert (status, body) == (404, nobody[2]), path
    # Only the artist itself makes and revokes its keys.
    assert _call(server, "POST", f"/v1/artists/{ALICE}/feed-keys", tokens[BOB])[0] == 403
    assert _call(server, "POST", f"/v1/artists/{ALICE}/feed-keys", tokens["service"])[0] == 403
    assert _call(server, "POST", f"/v1/artists/{ALICE}/feed-keys")[0] == 401
    assert _call(server, "DELETE", f"/v1/artists/{BOB}/feed-keys/{made['id']}", tokens[BOB])[0] == 404
    assert _call(server, "DELETE", f"/v1/artists/{ALICE}/feed-keys/{made['id']}", tokens[BOB])[0] == 403
    status, body = _call(server, "DELETE", f"/v1/artists/{ALICE}/feed-keys/{made['id']}", tokens[ALICE])
    assert status == 200 and orjson.loads(body) == {"id": made["id"], "revoked": True}
    status, _, body = server.get(made["url"])
    assert (status, body) == (404, nobody[2])
    assert _call(server, "DELETE", f"/v1/artists/{ALICE}/feed-keys/{made['id']}", tokens[ALICE])[0] == 404
    assert _feed(server, other["url"])  # other keys still work


def test_feed_keys_are_stored_as_their_sha256(env):
    import hashlib
    import sqlite3

    server, tokens = env
    made = _new_key(server, BOB, tokens[BOB])
    conn = sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT digest FROM feed_keys WHERE id = ?", (made["id"],)).fetchall()
        dump = b"".join(bytes(r[0]) for r in conn.execute("SELECT digest FROM feed_keys"))
    finally:
        conn.close()
    assert rows == [(hashlib.sha256(made["key"].encode()).digest(),)]
    assert made["key"].encode() not in Path(server.db).read_bytes() + dump
