"""Witness cosignatures checked in a real headless Chromium: `tlog serve --witness-policy` with two real
`tlog witness serve` processes and a third witness that is down, under a quorum of two of the three.
Both pages name the witnesses whose cosignatures the browser verified with the keys `GET /v1/log`
publishes, and the one that did not cosign; a server that spoils one cosignature on its way (the
checkpoint and the audit bundle) gets that witness not counted and the quorum reported short."""

from __future__ import annotations

import base64
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tlog.log import init_log
from tlog.witness.store import init_witness

from ..e2e.conftest import Server, free_port, start_server, start_witness, stop_server
from .conftest import axe_source, clean, console_errors, proxy, sign_in, third_party, verdict, wait_for
from .test_pages import _axe, append, screenshot, token, use

ORIGIN = "pages.witnessed.example/log"
ARTIST = "sc:user:witnessed"
QUORUM = "2 of w1, w2 and w3"


@dataclass
class Witnessed:
    server: Server
    witnesses: list[Server]
    keys: dict[str, str]  # policy name → cosignature/v1 verifier key
    token: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witnessed]:
    """A log of one artist's 12 uses, published under the policy "2 of w1, w2, w3", where w1 and w2 are
    running witnesses and w3 names a port nobody listens on."""
    tmp = tmp_path_factory.mktemp("witnessed")
    db = tmp / "tlog.db"
    log = init_log(db, ORIGIN)
    try:
        append(log.sequencer(), "recsys", [use(i, ARTIST, "recommendation", days=i) for i in range(12)])
        artist_token = token(log, "artist", ARTIST)
        log_key, size = log.verifier.key, log.store.size()
    finally:
        log.close()
    keys = {}
    for name in ("w1", "w2", "w3"):
        w = init_witness(tmp / f"{name}.db", f"witness.example/{name}")
        keys[name] = w.vkey
        w.close()
    running = [start_witness(tmp / f"{name}.db", log_key) for name in ("w1", "w2")]
    urls = [running[0].url, running[1].url, f"http://127.0.0.1:{free_port()}"]
    policy = tmp / "witnesses.policy"
    policy.write_text("".join(f"witness {n} {keys[n]} {u}\n" for n, u in zip(keys, urls)) + "group two 2 w1 w2 w3\nquorum two\n")
    server = start_server(db, "--witness-policy", str(policy))
    try:
        wait_for_published(server, size)
        yield Witnessed(server, running, keys, artist_token)
    finally:
        out = stop_server(server)
        for w in running:
            stop_server(w)
    assert "Traceback" not in out, out[-3000:]
    assert "witness w3 did not cosign" in out


def wait_for_published(server: Server, size: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = server.get("/v1/log")
        if status == 200 and orjson.loads(body)["size"] == size:
            return
        time.sleep(0.1)
    raise AssertionError(f"the witnesses did not cosign size {size} in {timeout} s")


def witness_items(driver: Any) -> dict[str, str]:
    """The public page's witness list: name → status ("verified", "invalid", "missing"; "cosigned"
    before the browser's check)."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#witness-list li')].map(li => [li.dataset.witness, li.dataset.status]))")


def test_log_info_publishes_the_policys_witnesses_and_quorum(witnessed: Witnessed) -> None:
    status, _, body = witnessed.server.get("/v1/log")
    assert status == 200
    assert orjson.loads(body)["witness_policy"] == {
        "quorum": "two",
        "witnesses": [{"name": n, "key": k} for n, k in witnessed.keys.items()],  # no URL: where the log submits
        "groups": [{"name": "two", "threshold": 2, "members": ["w1", "w2", "w3"]}],
    }


def test_both_pages_name_the_witnesses_the_browser_verified(page: Any, witnessed: Witnessed) -> None:
    with urllib.request.urlopen(witnessed.url + "/") as r:
        html = r.read().decode()
    # Without JavaScript: the server's own list (its cosigners, checked with the policy's keys), the keys, the quorum.
    assert 'data-witness="w1" data-status="cosigned"' in html and 'data-witness="w3" data-status="missing"' in html
    assert all(k in html for k in witnessed.keys.values()) and f'id="quorum">{QUORUM}<' in html
    assert "Those keys come from the log itself" in html and "tlog audit --witness-policy" in html

    clean(page, witnessed.url)
    page.get(witnessed.url + "/")
    wait_for(page, "document.querySelector('#browser-check').dataset.witnesses")
    check = page.find_element("id", "browser-check")
    assert check.get_attribute("class") == "verdict ok" and check.get_attribute("data-witnesses") == "met", check.text
    assert "Cosigned by w1 and w2, witnesses of this log: your browser checked their signatures." in check.text
    assert "w3 did not cosign it." in check.text and f"That meets the log's witness quorum: {QUORUM}." in check.text
    assert witness_items(page) == {"w1": "verified", "w2": "verified", "w3": "missing"}
    assert console_errors(page) == [] and third_party(page, witnessed.url) == []
    assert _axe(page, axe_source()) == []
    screenshot(page, "public-witnesses", "#checkpoint-title")

    assert sign_in(page, witnessed.url, witnessed.token) == "complete", verdict(page)
    box = page.find_element("id", "verdict")
    assert box.get_attribute("data-witnesses") == "met" and box.get_attribute("class") == "verdict ok"
    text = verdict(page)
    assert "Cosigned by w1 and w2, witnesses of this log: your browser checked their signatures." in text
    assert f"That meets the log's witness quorum: {QUORUM}." in text
    assert "come from this log itself" in text and "tlog audit --witness-policy" in text
    assert console_errors(page) == []


def spoil(note: str, witness: str) -> str:
    """The signed note with one byte of the named witness's cosignature flipped."""
    lines = note.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(f"\u2014 {witness} "):
            raw = bytearray(base64.b64decode(line.rsplit(" ", 1)[1]))
            raw[-1] ^= 1
            lines[i] = f"\u2014 {witness} {base64.b64encode(bytes(raw)).decode()}"
            return "\n".join(lines)
    raise AssertionError(f"no cosignature by {witness} on the checkpoint")


def spoiling(path: str, body: bytes) -> bytes:
    """w2's cosignature spoiled wherever the checkpoint is shown: /checkpoint and every audit page."""
    if path == "/checkpoint":
        return spoil(body.decode(), "witness.example/w2").encode()
    if path.endswith("/audit"):
        bundle = orjson.loads(body)
        bundle["checkpoint"] = spoil(bundle["checkpoint"], "witness.example/w2")
        return orjson.dumps(bundle)
    return body


def test_a_cosignature_that_does_not_verify_is_not_counted(page: Any, witnessed: Witnessed) -> None:
    with proxy(witnessed.url, spoiling) as url:
        clean(page, url)
        page.get(url + "/")
        wait_for(page, "document.querySelector('#browser-check').dataset.witnesses")
        check = page.find_element("id", "browser-check")
        assert check.get_attribute("class") == "verdict warn" and check.get_attribute("data-witnesses") == "short", check.text
        assert "but its witnesses have not confirmed it" in check.text
        assert "Cosigned by w1, a witness of this log: your browser checked its signature." in check.text
        assert "The cosignature of w2 does not verify, so it is not counted." in check.text
        assert f"That is short of the log's witness quorum ({QUORUM})" in check.text
        assert witness_items(page) == {"w1": "verified", "w2": "invalid", "w3": "missing"}

        assert sign_in(page, url, witnessed.token) == "complete", verdict(page)
        box = page.find_element("id", "verdict")
        assert box.get_attribute("data-witnesses") == "short" and box.get_attribute("class") == "verdict warn"
        text = verdict(page)
        assert "but the log's witnesses have not confirmed this checkpoint" in text
        assert "Cosigned by w1, a witness of this log" in text and "Cosigned by w1 and w2" not in text
        assert "The cosignature of w2 does not verify, so it is not counted." in text
        assert f"That is short of the log's witness quorum ({QUORUM})" in text
        assert console_errors(page) == []
