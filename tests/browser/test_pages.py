"""Both pages in a real headless Chromium, served by a real `tlog serve`: they load without a console
error, the public page's weekly charts (all uses, and purpose by purpose) show the figures of /v1/stats,
the artist signs in by a link and sees its entries and the "complete" verdict computed in the
browser; a server that alters a leaf, a proof or the map proof, or a log holding a wrong decision, makes the
page name the failing index; under a policy that allows generative training by default, the "no AI" switch
turns the next such use from allowed to refused; ids holding markup render as text; axe-core finds no
violation; security headers hold. The run writes screenshots of both pages (desktop and a 390-px phone)
to docs/screenshots ($TLOG_SCREENSHOTS elsewhere)."""

from __future__ import annotations

import base64
import os
import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

import tlog.builder
from tlog.canonical import canonical
from tlog.log import init_log
from tlog.policy import DEFAULT_POLICY, make_policy
from tlog.records import validate_use
from tlog.sequencer import Submission
from tlog.server import pages
from tlog.tokens import new_token

from ..e2e.conftest import Server, start_server, stop_server
from .conftest import PHONE_WIDTH, SCREENSHOTS, axe_source, clean, console_errors, proxy, sign_in, third_party, verdict, wait_for

ALICE = "sc:user:alice"
XSS_ARTIST = "sc:user:<script>alert('artist')</script>\"x"
XSS_TRACK = "sc:track:<img/src=x/onerror=alert('track')>\"'"
LIAR = "sc:user:liar"
NEWCOMER = "sc:user:newcomer"
PURPOSES = ["recommendation", "playlist_generation", "search_indexing", "content_organization",
            "model_training_generative", "fraud_detection", "talent_discovery"]
PHASES = {"model_training_generative": "training"}
START = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=60)


def use(n: int, artist: str, purpose: str, *, track: str | None = None, days: float = 0) -> dict[str, Any]:
    return {"event_id": f"ev-{artist[-8:].replace('<', '').replace('>', '')}-{n}".replace("'", "").replace('"', "")
            .replace("(", "").replace(")", "").replace("/", ""),
            "content_id": track or f"sc:track:{artist.rsplit(':', 1)[-1][:12]}-{n % 5}", "artist_id": artist,
            "purpose": purpose, "phase": PHASES.get(purpose, "inference"),
            "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.1"},
            "occurred_at": (START + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ"), "invocations": 1 + n % 3}


def append(seq: Any, service: str, recs: list[dict[str, Any]]) -> list[Any]:
    now = datetime.now(timezone.utc)
    valid = [validate_use(r, now=now, purposes=seq.policy.purposes) for r in recs]
    (res,) = seq.append_uses([Submission(service, valid)])
    assert not isinstance(res, Exception), res
    return res


def token(log: Any, role: str, subject: str | None, rights: frozenset[str] = frozenset()) -> str:
    t, d = new_token()
    log.store.add_token(role, subject, d, int(time.time() * 1000), rights=rights)
    return t


class Env:
    def __init__(self, server: Server, tokens: dict[str, str], notes: dict[str, Any]) -> None:
        self.server, self.tokens, self.notes = server, tokens, notes

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str, role: str) -> Any:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.tokens[role]}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return orjson.loads(r.read())

    def post(self, path: str, body: Any, role: str = "service") -> Any:
        req = urllib.request.Request(self.url + path, data=orjson.dumps(body), method="POST",
                                     headers={"Authorization": f"Bearer {self.tokens[role]}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return orjson.loads(r.read())


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    """A log begun 60 days ago with: Alice (no AI on; 60 uses logged one a day over eight weeks, so two
    pages of entries, refusals and weekly charts with weeks to show), an artist whose id and track hold
    markup, and an artist one of whose uses was decided wrongly (the builder's decide() is swapped for one
    record, so the leaf, details, proofs and signature all agree with the lie)."""
    db = tmp_path_factory.mktemp("pages") / "tlog.db"
    clock = [START.timestamp()]
    notes: dict[str, Any] = {}
    log = init_log(db, "pages.test.example/log", clock=lambda: clock[0])
    try:
        tokens = _fill(log, clock, notes)
    finally:
        log.close()
    server = start_server(db)
    yield Env(server, tokens, notes)
    out = stop_server(server)
    assert "Traceback" not in out, out[-3000:]
    for t in tokens.values():
        assert t not in out


def _fill(log: Any, clock: list[float], notes: dict[str, Any]) -> dict[str, str]:
    """Writes the module's log, each batch logged at the time in clock[0]."""
    seq = log.sequencer(clock=lambda: clock[0])
    seq.set_preferences(ALICE, {"no_ai": True, "content": {"sc:track:alice-1": {"strict": True}}}, by="artist")
    for i in range(60):
        clock[0] = (START + timedelta(days=i, hours=1)).timestamp()
        append(seq, "recsys", [use(i, ALICE, PURPOSES[i % len(PURPOSES)], days=i)])
    clock[0] = time.time()
    append(seq, "recsys", [use(i, XSS_ARTIST, "recommendation", track=XSS_TRACK, days=i) for i in range(3)])
    append(seq, "recsys", [use(i, LIAR, "recommendation", days=i) for i in range(2)])
    real = tlog.builder.decide
    tlog.builder.decide = lambda *a, **k: "allowed"  # a refused purpose logged as allowed
    try:
        (res,) = append(seq, "research", [use(9, LIAR, "model_training_generative", days=30)])
    finally:
        tlog.builder.decide = real
    notes["liar_index"] = res.index
    append(seq, "recsys", [use(10, LIAR, "recommendation", days=31)])
    return {"alice": token(log, "artist", ALICE), "xss": token(log, "artist", XSS_ARTIST),
            "liar": token(log, "artist", LIAR), "service": token(log, "service", "recsys"),
            "signin": token(log, "service", "signin", frozenset({"issuer"})),
            "expired": _expired(log, ALICE),
            "auditor": token(log, "auditor", None)}


def _expired(log: Any, artist: str) -> str:
    t, d = new_token()
    log.store.add_token("artist", artist, d, int(time.time() * 1000) - 7200_000, expires_ms=int(time.time() * 1000) - 3600_000)
    return t


def shots() -> Path:
    out = Path(os.environ.get("TLOG_SCREENSHOTS", SCREENSHOTS))
    out.mkdir(parents=True, exist_ok=True)
    return out


def screenshot(driver: Any, name: str, anchor: str | None = None) -> None:
    """Desktop (1280 wide) and phone (390 wide) views of the page as it is, or from the element that the
    CSS selector `anchor` names."""
    for label, (w, h) in (("desktop", (1280, 900)), ("phone", (PHONE_WIDTH, 844))):
        driver.set_window_size(w, h)
        time.sleep(0.2)
        if anchor:
            driver.execute_script("document.querySelector(arguments[0]).scrollIntoView()", anchor)
        driver.save_screenshot(str(shots() / f"{name}-{label}.png"))
    driver.set_window_size(1280, 900)


def test_public_page_loads_with_its_figures_in_the_html_and_checks_the_checkpoint(page, env):
    clean(page, env.url)
    with urllib.request.urlopen(env.url + "/") as r:
        html, headers = r.read().decode(), r.headers
    # Readable without JavaScript: the key figures and the training answer are in the HTML itself.
    assert 'data-figure="logged"' in html and "Was anyone's music used to train AI?" in html
    assert 'data-figure="training-used">Yes: 1 time' in html  # the liar's use (and only it)
    assert "Model training generative" in html and "Refused, unless the artist opts in" in html
    page.get(env.url + "/")
    wait_for(page, "document.querySelector('#browser-check.ok, #browser-check.bad')")
    assert "is genuine" in page.find_element("id", "browser-check").text
    assert console_errors(page) == []
    assert third_party(page, env.url) == []
    screenshot(page, "public")
    # A second visit: the browser remembers the checkpoint and checks the new one extends it.
    env.post("/v1/uses", use(100, ALICE, "recommendation"))
    page.get(env.url + "/")
    wait_for(page, "document.querySelector('#browser-check.ok, #browser-check.bad')")
    assert "extends checkpoint" in page.find_element("id", "browser-check").text
    assert console_errors(page) == []
    _check_headers(headers)


def test_uses_per_purpose_week_by_week_are_the_stats_figures(page, env):
    """The per-purpose weekly charts and their table show what GET /v1/stats counts, purpose by purpose,
    week by week and decision by decision; the table is in the HTML itself (no JavaScript needed)."""
    with urllib.request.urlopen(env.url + "/") as r:
        assert 'id="purpose-weekly-table"' in r.read().decode()
    stats = orjson.loads(urllib.request.urlopen(env.url + "/v1/stats").read())
    page.get(env.url + "/")
    want: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in stats["by_day"]:
        if row["type"] in ("use", "refusal"):
            day = date.fromisoformat(row["day"])
            want[(row["purpose"], (day - timedelta(days=day.weekday())).isoformat(), row["decision"])] += row["leaves"]
    cells = page.execute_script("""return [...document.querySelectorAll('#purpose-weekly-table td[data-decision]')]
        .map(td => [td.parentElement.dataset.purpose, td.parentElement.dataset.week, td.dataset.decision, td.textContent])""")
    got = {(p, w, d): int(n.replace(",", "")) for p, w, d, n in cells if n != "0"}
    assert got == want and len({w for _, w, _ in got}) >= 8
    panels = page.execute_script("""return [...document.querySelectorAll('#purpose-charts figure')]
        .map(f => [f.dataset.purpose, Number(f.dataset.total), f.querySelectorAll('rect').length])""")
    by_purpose = {p: [n for (q, _, _), n in want.items() if q == p] for p, _, _ in want}
    assert {p: (total, rects) for p, total, rects in panels if total} == {p: (sum(ns), len(ns)) for p, ns in by_purpose.items()}
    assert len(panels) == len(DEFAULT_POLICY.purposes)  # a purpose never used has its empty chart too
    assert console_errors(page) == []
    screenshot(page, "public-weekly", "#weekly-title")


def _check_headers(headers: Any) -> None:
    csp = headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"


def test_assets_are_hashed_immutable_and_first_party(env):
    with urllib.request.urlopen(env.url + "/artist") as r:
        html = r.read().decode()
        _check_headers(r.headers)
    a = pages.assets()
    for name in ("site.css", "artist.js", "favicon.svg"):
        assert a.url(name) in html
    for hashed, (body, _) in a.files.items():
        assert hashed.split(".")[-2] and len(hashed.split(".")[-2]) == 12
        # No address of anyone else (the SVG namespace names a specification; nothing is fetched from it).
        assert set(re.findall(rb"https?://[^\s\"'`]+", body)) <= {b"http://www.w3.org/2000/svg"}, hashed
    with urllib.request.urlopen(env.url + a.url("audit.js")) as r:
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert r.headers["Content-Type"].startswith("text/javascript")
        body = r.read().decode()
        assert a.names["merkle.js"] in body  # imports name their dependencies' hashed files
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(env.url + "/static/audit.js")
    assert exc.value.code == 404


def test_artist_signs_in_by_link_sees_entries_and_the_complete_verdict(page, env):
    clean(page, env.url)
    assert sign_in(page, env.url, env.tokens["alice"]) == "complete", verdict(page)
    text = verdict(page)
    assert text.startswith("Complete at checkpoint") and "every decision followed your choices" in text
    assert "#" not in page.current_url  # the sign-in link's token left the address bar
    stored = page.execute_script("return [sessionStorage.getItem('tlog.token'), JSON.stringify(localStorage), document.cookie]")
    assert stored[0] == env.tokens["alice"] and env.tokens["alice"] not in stored[1] and stored[2] == ""
    summary = env.get(f"/v1/artists/{ALICE}/summary", "alice")
    assert page.find_element("css selector", "[data-figure=uses]").text == str(summary["uses"]["leaves"])
    rows = page.find_elements("css selector", "#entries tbody tr")
    assert len(rows) == 50
    page.find_element("id", "next").click()
    wait_for(page, "document.querySelector('#page-no').textContent === 'Page 2'")
    assert len(page.find_elements("css selector", "#entries tbody tr")) == summary["entries"] - 50
    # Filters: only the refusals (generative training under "no AI").
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "f-decision")).select_by_value("refused")
    page.find_element("css selector", "#filters button[type=submit]").click()
    wait_for(page, "document.querySelector('#page-no').textContent === 'Page 1'")
    refused = page.find_elements("css selector", "#entries tbody td.decision-refused")
    assert refused and len(refused) == len(page.find_elements("css selector", "#entries tbody tr"))
    assert page.find_elements("css selector", "#tracks-table tbody tr")
    assert third_party(page, env.url) == []
    page.find_element("id", "csv").click()
    wait_for(page, "document.querySelector('#entries-status').textContent.includes('downloading')")
    assert console_errors(page) == []
    page.execute_script("window.scrollTo(0, 0)")
    screenshot(page, "artist")


def test_the_platforms_sign_in_link_leaves_the_address_bar_and_the_page_works(page, env):
    """The platform's sign-in mints a short-lived token (POST /v1/tokens, issuer right) for a manager of two
    artists and sends the browser to /artist#token=…: the page keeps the token in this tab's session
    storage, removes it from the address bar and the history entry, never puts it in a request's URL, and
    shows each of the two artists."""
    clean(page, env.url)
    minted = env.post("/v1/tokens", {"artist_ids": [XSS_ARTIST, ALICE], "ttl_s": 600}, role="signin")["token"]
    assert sign_in(page, env.url, minted) == "complete", verdict(page)
    assert page.execute_script("return location.hash") == "" and "#" not in page.current_url
    assert minted not in page.current_url and page.current_url == f"{env.url}/artist"
    assert page.execute_script("return sessionStorage.getItem('tlog.token')") == minted
    urls = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and not any(minted in u for u in urls)
    page.back()  # the entry before is the page clean() opened: the link's own entry was replaced
    wait_for(page, "location.pathname === '/healthz'")
    page.forward()
    wait_for(page, "document.querySelector('#verdict').dataset.result")
    assert page.current_url == f"{env.url}/artist"
    assert page.find_element("id", "who").text == XSS_ARTIST  # the first of the token's artists
    options = page.execute_script("return [...document.querySelectorAll('#artist-pick option')].map(o => o.value)")
    assert options == [XSS_ARTIST, ALICE] and page.find_element("id", "pick").is_displayed()
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "artist-pick")).select_by_value(ALICE)
    wait_for(page, f"document.querySelector('#who').textContent === {orjson.dumps(ALICE).decode()}")
    wait_for(page, "document.querySelector('#verdict').dataset.result")
    assert page.execute_script("return document.querySelector('#verdict').dataset.result") == "complete", verdict(page)
    summary = env.get(f"/v1/artists/{ALICE}/summary", "alice")
    assert page.find_element("css selector", "[data-figure=uses]").text == str(summary["uses"]["leaves"])
    assert console_errors(page) == []


def test_an_expired_token_by_link_asks_to_sign_in_again(page, env):
    clean(page, env.url)
    page.get(f"{env.url}/artist#token={env.tokens['expired']}")
    wait_for(page, "!document.querySelector('#signin').hidden && document.querySelector('#signin-error').textContent")
    assert "expired" in page.find_element("id", "signin-error").text and "#" not in page.current_url
    assert page.execute_script("return sessionStorage.getItem('tlog.token')") is None
    console_errors(page)  # the 401 is expected


def tampering(upstream: str, mode: str) -> AbstractContextManager[str]:
    """A server in front of the real one that alters the first audit page as `mode` says."""

    def change(path: str, body: bytes) -> bytes:
        return orjson.dumps(alter(orjson.loads(body), mode)) if path.endswith("/audit") else body

    return proxy(upstream, change)


def alter(bundle: dict[str, Any], mode: str) -> dict[str, Any]:
    if bundle.get("next_aseq") is not None or bundle.get("map") is None:
        return bundle  # later pages of a walk pass unaltered
    e = bundle["entries"][5]
    if mode == "leaf":
        leaf = orjson.loads(base64.b64decode(e["leaf"]))
        leaf["invocations"] += 1
        e["leaf"] = base64.b64encode(canonical(leaf)).decode()
    elif mode == "proof":
        h = bytearray(base64.b64decode(e["proof"][3]))
        h[0] ^= 1
        e["proof"][3] = base64.b64encode(bytes(h)).decode()
    elif mode == "map":
        bundle["map"]["map_proof"]["found"]["head"] -= 1  # as if the artist's latest entry were another
    return bundle


@pytest.mark.parametrize("mode", ["leaf", "proof", "map"])
def test_a_server_that_alters_the_bundle_is_caught_by_index(page, env, mode):
    with tampering(env.url, mode) as url:
        clean(page, url)
        assert sign_in(page, url, env.tokens["alice"]) == "failed"
        index = page.execute_script("return document.querySelector('#verdict').dataset.index")
        with urllib.request.urlopen(urllib.request.Request(
                env.url + f"/v1/artists/{ALICE}/audit", headers={"Authorization": f"Bearer {env.tokens['alice']}"})) as r:
            real = orjson.loads(r.read())
        want = real["map"]["index"] if mode == "map" else real["entries"][5]["index"]
        assert index == str(want), verdict(page)
        assert f"log entry {want:,}" in verdict(page)
        assert console_errors(page) == []


def test_a_wrong_decision_in_the_log_is_caught_by_index(page, env):
    clean(page, env.url)
    assert sign_in(page, env.url, env.tokens["liar"]) == "failed"
    index = env.notes["liar_index"]
    assert page.execute_script("return document.querySelector('#verdict').dataset.index") == str(index)
    assert 'the decision was "allowed"' in verdict(page) and '"refused"' in verdict(page)
    assert console_errors(page) == []


def test_ids_holding_markup_render_as_text(page, env):
    clean(page, env.url)
    assert sign_in(page, env.url, env.tokens["xss"]) == "complete", verdict(page)  # an alert would fail this
    assert page.find_element("id", "who").text == XSS_ARTIST
    cells = [c.text for c in page.find_elements("css selector", "#entries tbody code")]
    assert XSS_TRACK in cells
    assert page.execute_script("return document.querySelectorAll('#dashboard img, #dashboard script').length") == 0
    assert console_errors(page) == []


def test_no_ai_turns_the_next_generative_training_use_from_allowed_to_refused(page, tmp_path):
    """Under a policy that allows generative training by default (announced 60 days ago, in effect after
    the default policy's 30 days' notice), the artist's "no AI" switch, set on the page, refuses the next
    such use."""
    db = tmp_path / "tlog.db"
    log = init_log(db, "pages.noai.example/log", clock=START.timestamp)
    try:
        lenient = make_policy("lenient-2026", [
            p if p.code != "model_training_generative" else type(p)(p.code, p.covers, p.category, "allowed", False)
            for p in DEFAULT_POLICY.purposes.values()], "Generative training is allowed unless the artist says no.")
        log.sequencer(clock=START.timestamp).publish_policy(
            lenient.document, "lenient-2026", effective_ms=int((START + timedelta(days=31)).timestamp() * 1000))
        tokens = {"artist": token(log, "artist", NEWCOMER), "service": token(log, "service", "research")}
    finally:
        log.close()
    server = start_server(db)
    try:
        env = Env(server, tokens, {})
        first = env.post("/v1/uses", use(1, NEWCOMER, "model_training_generative"))["results"][0]
        assert first["decision"] == "allowed"
        clean(page, env.url)
        assert sign_in(page, env.url, tokens["artist"]) == "complete", verdict(page)
        box = page.find_element("id", "p-no-ai")
        assert not box.is_selected()
        box.click()
        page.find_element("css selector", "#prefs button[type=submit]").click()
        wait_for(page, "document.querySelector('#prefs-status').textContent.startsWith('Saved')")
        wait_for(page, "document.querySelector('#verdict').dataset.result === 'complete'")
        second = env.post("/v1/uses", use(2, NEWCOMER, "model_training_generative"))["results"][0]
        assert second["decision"] == "refused"
        page.refresh()
        wait_for(page, "document.querySelector('#verdict').dataset.result")
        assert page.execute_script("return document.querySelector('#verdict').dataset.result") == "complete", verdict(page)
        assert page.find_element("css selector", "[data-figure=refused]").text == "1"
        assert page.find_element("id", "p-no-ai").is_selected()
        assert console_errors(page) == []
    finally:
        stop_server(server)


def test_axe_finds_no_violation_and_the_keyboard_works(page, env):
    axe = axe_source()
    found = {}
    clean(page, env.url)
    for name, path in (("public", "/"), ("sign-in", "/artist")):
        page.get(env.url + path)
        found[name] = _axe(page, axe)
    sign_in(page, env.url, env.tokens["alice"])
    found["artist"] = _axe(page, axe)
    assert found == {"public": [], "sign-in": [], "artist": []}
    # Keyboard: the first Tab reaches the skip link, and focus is visible.
    from selenium.webdriver.common.keys import Keys

    page.get(env.url + "/")
    page.find_element("tag name", "body").send_keys(Keys.TAB)
    assert page.execute_script("return document.activeElement.className") == "skip"
    outline = page.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    console_errors(page)


def _axe(driver: Any, source: str) -> list[str]:
    driver.execute_script(source)
    result = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
           .then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' (' + v.nodes.length + ')')), e => done(['axe failed: ' + e]));
    """)
    return result
