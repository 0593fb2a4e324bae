"""GET /v1/artists/{id}/summary and GET /v1/whoami (the artist page's first view), the pages' server side
(security headers, figures in the HTML, the cache per checkpoint, hashed assets) and the policy diff in
plain words. In-process: an aiohttp test client on a real log."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from tlog.log import init_log, open_log
from tlog.note import ALG_COSIGNATURE_V1, generate_key
from tlog.policy import DEFAULT_POLICY, make_policy
from tlog.server import pages
from tlog.server.app import make_app
from tlog.server.summary import summarize
from tlog.store.base import UseFilter
from tlog.tokens import new_token
from tlog.web.words import policy_diff, quorum_words
from tlog.witness.quorum import parse_witness_quorum

from .conftest import append, records


def _token(log, role: str, subject: str | None) -> str:
    t, d = new_token()
    log.store.add_token(role, subject, d, int(time.time() * 1000))
    return t


@pytest.fixture
async def client(log, aiohttp_client):
    seq = log.sequencer()
    seq.set_preferences("sc:user:1", {"no_ai": True}, by="artist")
    append(seq, records(120, artists=3))
    tokens = {"a1": _token(log, "artist", "sc:user:1"), "a2": _token(log, "artist", "sc:user:2"),
              "auditor": _token(log, "auditor", None), "service": _token(log, "service", "recsys")}
    reader, writer = open_log(log.path), open_log(log.path, secrets_needed=True)
    c = await aiohttp_client(make_app(reader, writer))
    c.tokens = tokens
    c.log = log
    yield c
    reader.close()
    writer.close()


def _auth(c, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {c.tokens[who]}"}


async def test_summary_counts_the_artists_entries(client):
    r = await client.get("/v1/artists/sc:user:1/summary", headers=_auth(client, "a1"))
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    s = await r.json()
    uses = [e for e in client.log.store.artist_entries("sc:user:1", UseFilter(), 10_000)
            if e.type in ("use", "refusal")]
    assert s["uses"]["leaves"] == len(uses) > 0
    assert s["uses"]["invocations"] == sum(e.details["invocations"] for e in uses)
    assert sum(r["leaves"] for r in s["by_purpose"]) == sum(r["leaves"] for r in s["by_week"]) == len(uses)
    assert sum(r["leaves"] for r in s["by_month"]) == len(uses)
    assert sum(t["leaves"] for t in s["tracks"]) == len(uses) and s["track_count"] == len(s["tracks"])
    assert s["entries"] == len(uses) + 1 and s["preference_changes"] == 1  # the no-AI preference
    assert s["preferences"]["no_ai"] is True
    assert [e["index"] for e in s["latest"]] == sorted((e.index for e in uses), reverse=True)[:20]
    assert s["head"]["aseq"] == s["entries"]
    assert all(w["week"] <= w2["week"] for w, w2 in zip(s["by_week"], s["by_week"][1:]))


async def test_summary_access(client):
    assert (await client.get("/v1/artists/sc:user:1/summary")).status == 401
    assert (await client.get("/v1/artists/sc:user:1/summary", headers=_auth(client, "a2"))).status == 403
    assert (await client.get("/v1/artists/sc:user:1/summary", headers=_auth(client, "service"))).status == 403
    assert (await client.get("/v1/artists/sc:user:1/summary", headers=_auth(client, "auditor"))).status == 200
    # Nothing about an unknown artist, for an auditor; another artist's id is 403 whether it exists or not.
    r = await client.get("/v1/artists/sc:user:nobody/summary", headers=_auth(client, "auditor"))
    assert (await r.json())["entries"] == 0
    assert (await client.get("/v1/artists/sc:user:nobody/summary", headers=_auth(client, "a1"))).status == 403


async def test_summary_follows_the_log(client):
    first = await (await client.get("/v1/artists/sc:user:1/summary", headers=_auth(client, "a1"))).json()
    again = await (await client.get("/v1/artists/sc:user:1/summary", headers=_auth(client, "a1"))).json()
    assert first == again
    r = await client.post("/v1/uses", json=records(1, seed=7, artists=1)[0], headers=_auth(client, "service"))
    assert r.status == 200
    after = await (await client.get("/v1/artists/sc:user:1/summary", headers=_auth(client, "a1"))).json()
    assert after["size"] > first["size"] and after["uses"]["leaves"] == first["uses"]["leaves"] + 1


async def test_whoami(client):
    none = {"artist_ids": [], "expires_at": None}
    assert await (await client.get("/v1/whoami", headers=_auth(client, "a1"))).json() == {
        "role": "artist", "artist_id": "sc:user:1", "artist_ids": ["sc:user:1"], "expires_at": None}
    assert await (await client.get("/v1/whoami", headers=_auth(client, "auditor"))).json() == {"role": "auditor", "artist_id": None, **none}
    assert await (await client.get("/v1/whoami", headers=_auth(client, "service"))).json() == {"role": "service", "artist_id": None, **none}
    assert (await client.get("/v1/whoami")).status == 401


def test_summarize_of_nothing():
    s = summarize("sc:user:9", [], 3, None)
    assert s["entries"] == 0 and s["head"] is None and s["uses"] == {"leaves": 0, "invocations": 0} and s["preferences"] == {}


async def test_public_page_has_its_figures_headers_and_a_cache_per_checkpoint(client):
    r = await client.get("/")
    html = await r.text()
    assert r.status == 200 and r.content_type == "text/html"
    for name, value in pages.SECURITY_HEADERS.items():
        assert r.headers[name] == value
    assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
    stats = await (await client.get("/v1/stats")).json()
    logged = sum(t["leaves"] for t in stats["totals"] if t["type"] in ("use", "refusal"))
    assert f'data-figure="logged">{logged:,}<' in html
    assert "<script>" not in html and 'style="' not in html  # nothing inline: the CSP would refuse it
    assert await (await client.get("/")).text() == html
    await client.post("/v1/uses", json=records(1, seed=8, artists=1)[0], headers=_auth(client, "service"))
    assert f'data-figure="logged">{logged + 1:,}<' in await (await client.get("/")).text()


def test_the_charts_show_every_week_up_to_the_latest_26():
    """Weeks without a logged use are in the charts (as no bar), and only the latest CHART_WEEKS weeks."""
    assert pages.chart_weeks([]) == []
    assert pages.chart_weeks(["2026-03-02", "2026-03-23"]) == ["2026-03-02", "2026-03-09", "2026-03-16", "2026-03-23"]
    many = pages.chart_weeks(["2025-01-06", "2026-03-23"])
    assert len(many) == pages.CHART_WEEKS and many[0] == "2025-09-29" and many[-1] == "2026-03-23"
    html = pages.purpose_charts(["recommendation", "model_training_generative"],
                                {"recommendation": {"2026-03-09": {"allowed": 3, "refused": 1}}}, ["2026-03-02", "2026-03-09"])
    assert html.count("<rect") == 2 and 'data-total="4"' in html and "no use in these weeks" in html
    assert 'data-purpose="recommendation" data-week="2026-03-09"' in html and 'data-week="2026-03-02"' not in html


async def test_assets(client):
    a = pages.assets()
    r = await client.get(a.url("artist.js"))
    assert r.status == 200 and r.headers["Cache-Control"] == pages.IMMUTABLE and r.content_type == "text/javascript"
    body = await r.text()
    assert f'from "./{a.names["audit.js"]}"' in body and 'from "./audit.js"' not in body
    assert (await client.get("/static/artist.js")).status == 404
    assert (await client.get("/static/..%2Fpages.py")).status == 404


def test_asset_names_change_with_what_they_import(tmp_path: Path):
    (tmp_path / "a.js").write_text('import { b } from "./b.js";\n')
    (tmp_path / "b.js").write_text("export const b = 1;\n")
    first = pages.build_assets(tmp_path)
    (tmp_path / "b.js").write_text("export const b = 2;\n")
    second = pages.build_assets(tmp_path)
    assert first.names["a.js"] != second.names["a.js"]  # a.js itself did not change
    (tmp_path / "b.js").write_text('import { a } from "./a.js";\n')
    with pytest.raises(RuntimeError, match="cycle"):
        pages.build_assets(tmp_path)


def test_policy_diff_marks_loosenings():
    table = list(DEFAULT_POLICY.purposes.values())
    lenient = make_policy("v2", [dataclasses.replace(p, default="allowed") if p.code == "model_training_generative"
                                 else dataclasses.replace(p, override_eligible=False) if p.code == "fraud_detection"
                                 else p for p in table], "text")
    changes = {c.code: c for c in policy_diff(DEFAULT_POLICY, lenient)}
    assert changes["model_training_generative"].loosens and "refused to allowed" in changes["model_training_generative"].what
    assert not changes["fraud_detection"].loosens and "no longer" in changes["fraud_detection"].what
    assert policy_diff(DEFAULT_POLICY, DEFAULT_POLICY) == []
    shorter = dataclasses.replace(DEFAULT_POLICY, notice_days=7)
    (notice,) = policy_diff(DEFAULT_POLICY, shorter)
    assert notice.loosens and notice.what == "changes are announced 7 days ahead, not 30"
    assert not policy_diff(shorter, DEFAULT_POLICY)[0].loosens


@pytest.mark.parametrize("lines, words", [
    (["quorum a"], "a"),
    (["group g 2 a b c", "quorum g"], "2 of a, b and c"),
    (["group g all a b", "quorum g"], "both of a and b"),
    (["group g any a b c", "quorum g"], "any one of a, b and c"),
    (["group x any c d", "group g all a x", "quorum g"], "both of a and (any one of c and d)"),
    (["group s any a", "group g all s b c", "quorum g"], "all of a, b and c"),
])
def test_a_witness_quorum_in_words(lines, words):
    """The public page's words for a quorum; static/witnesses.js quorumWords says the same."""
    keys = [generate_key(f"witness.example/{n}", ALG_COSIGNATURE_V1)[1] for n in "abcd"]
    policy = parse_witness_quorum("".join(f"witness {n} {k}\n" for n, k in zip("abcd", keys)).encode()
                                  + "\n".join(lines).encode() + b"\n")
    assert quorum_words(policy) == words


async def _public_page(path: Path, aiohttp_client) -> str:
    """The public page of the log at `path`, served by a fresh reader as after a restart."""
    reader = open_log(path)
    try:
        return await (await (await aiohttp_client(make_app(reader))).get("/")).text()
    finally:
        reader.close()


async def test_public_page_shows_a_policy_change_purpose_by_purpose(tmp_path, aiohttp_client):
    lenient = make_policy("lenient-2026", [dataclasses.replace(p, default="allowed") if p.code == "model_training_generative"
                                           else p for p in DEFAULT_POLICY.purposes.values()], "Training allowed.")
    # A loosening takes effect only after the default policy's 30 days' notice (SPEC §4): announced by a
    # log started 31 days ago, it is in force now.
    past = time.time() - 31 * 86_400
    log = init_log(tmp_path / "past.db", "test.tlog.example/log", clock=lambda: past)
    try:
        log.sequencer(clock=lambda: past).publish_policy(lenient.document, "lenient-2026",
                                                         effective_ms=int(past * 1000) + 30 * 86_400_000)
    finally:
        log.close()
    html = await _public_page(log.path, aiohttp_client)
    assert "<strong>lenient-2026</strong>, announced" in html and "(replacing default)" in html
    assert "default changed from refused to allowed" in html and "more use of music" in html
    assert "The policy in force is <strong>lenient-2026</strong>" in html


async def test_an_announced_policy_is_not_shown_in_force_before_it_takes_effect(log, aiohttp_client):
    later = make_policy("later-2027", list(DEFAULT_POLICY.purposes.values()), "The same table, later.")
    log.sequencer().publish_policy(later.document, "later-2027", effective_ms=int(time.time() * 1000) + 86_400_000)
    html = await _public_page(log.path, aiohttp_client)
    assert "The policy in force is <strong>default</strong>" in html
    assert "<strong>later-2027</strong> is announced and takes effect" in html


async def test_each_change_is_shown_against_the_policy_it_replaces_not_the_leaf_before_it(tmp_path, aiohttp_client):
    """SPEC §4: a policy is compared with the one that would be in effect at its effective_at. Announced
    second but effective first, `strict-now` replaces `default`, not the still-pending `lenient-later`."""
    lenient = make_policy("lenient-later", [dataclasses.replace(p, default="allowed") if p.code == "model_training_generative"
                                            else p for p in DEFAULT_POLICY.purposes.values()], "Training allowed later.")
    strict = make_policy("strict-now", [dataclasses.replace(p, default="refused") if p.code == "talent_discovery"
                                        else p for p in DEFAULT_POLICY.purposes.values()], "Talent discovery refused.")
    log = init_log(tmp_path / "pending.db", "test.tlog.example/log")
    try:
        now_ms = int(time.time() * 1000)
        log.sequencer().publish_policy(lenient.document, "lenient-later", effective_ms=now_ms + 40 * 86_400_000)
        log.sequencer().publish_policy(strict.document, "strict-now")
    finally:
        log.close()
    html = await _public_page(log.path, aiohttp_client)
    strict_item = html.split("<strong>strict-now</strong>, announced", 1)[1].split("</li></ul></li>", 1)[0]
    assert "(replacing default)" in strict_item
    assert "Model training generative" not in strict_item  # that change is lenient-later's, not strict-now's
    assert "(replacing default)" in html.split("<strong>lenient-later</strong>, announced", 1)[1]
