"""A real headless Chromium (Debian's `chromium` and `chromium-driver`) driven by selenium, and the small
servers the browser tests load pages from.

Nothing here downloads a browser: with CI=true, `scripts/install-browser` installs Debian's packages
(as `scripts/install-go-interop` does for the Go tests); elsewhere, where they are missing, the tests
skip and say why. axe-core comes from the npm registry (`npm pack`) into a cache in the venv, for the
accessibility test only: the pages never load it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STATIC = ROOT / "tlog" / "web" / "static"
VECTORS = ROOT.parent / "shared" / "vectors"
SCREENSHOTS = ROOT / "docs" / "screenshots"
AXE_VERSION = "4.10.3"
PHONE_WIDTH = 390


def _browser_paths() -> tuple[str | None, str | None]:
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    browser, driver = _browser_paths()
    if (browser is None or driver is None) and os.environ.get("CI") == "true":
        subprocess.run([str(ROOT / "scripts" / "install-browser")], check=True)
        browser, driver = _browser_paths()
    if browser is None or driver is None:
        pytest.skip("Chromium and chromedriver are not installed: run scripts/install-browser "
                    "(apt-get install chromium chromium-driver) to run the browser tests")
    return browser, driver


@pytest.fixture(scope="session")
def browser(chromium_paths: tuple[str, str]) -> Iterator[Any]:
    """One headless Chromium for the session (starting one costs about half a second)."""
    os.environ["SE_OFFLINE"] = "true"  # selenium must never fetch a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--disable-sync", "--no-first-run", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromium_paths[1]), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The console's errors since the last call (reading the log empties it), but for a 404 of
    /favicon.ico: Chromium asks for that by itself on the JSON page `clean` opens, and its answer comes
    whenever it comes, often during the next test (the pages declare their own icon; test_assets checks)."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "/favicon.ico - " not in e["message"]]


def wait_for(driver: Any, script: str, timeout: float = 30.0) -> Any:
    """Polls a JavaScript expression until it is truthy; its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(f"return {script}"))


class ThreadServer:
    """An aiohttp app on a free loopback port, run in a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.url = ""
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextmanager
def proxy(upstream: str, change: Callable[[str, bytes], bytes]) -> Iterator[str]:
    """A server in front of the real one (its URL), passing every request on and every 200 answer back
    through `change(path, body)`: a server that tampers with what the pages are shown."""

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with aiohttp.ClientSession() as s:
            async with s.request(request.method, upstream + request.path_qs, headers=headers,
                                 data=await request.read()) as r:
                body = await r.read()
                keep = {k: v for k, v in r.headers.items() if k.lower() not in
                        ("content-length", "content-encoding", "transfer-encoding", "date", "server")}
        if r.status == 200:
            body = change(request.path, body)
        return web.Response(body=body, status=r.status, headers=keep)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = ThreadServer(app)
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """The shared browser, emptied of what an earlier test left (storage, console, window size)."""
    browser.set_window_size(1280, 900)
    yield browser
    console_errors(browser)


def clean(driver: Any, url: str) -> None:
    driver.get(url + "/healthz")
    driver.execute_script("localStorage.clear(); sessionStorage.clear();")
    console_errors(driver)


def sign_in(driver: Any, url: str, tok: str) -> str:
    """Opens the artist page by a sign-in link; the verdict's result ("complete" or "failed")."""
    driver.get(f"{url}/artist#token={tok}")
    wait_for(driver, "document.querySelector('#verdict').dataset.result")
    return driver.execute_script("return document.querySelector('#verdict').dataset.result")


def verdict(driver: Any) -> str:
    return driver.find_element("id", "verdict").text


def third_party(driver: Any, origin: str) -> list[str]:
    """Every resource the page loaded that is not from the log's own origin."""
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [u for u in urls if not u.startswith(origin + "/")]


@pytest.fixture(scope="session")
def vectors_server() -> Iterator[ThreadServer]:
    """Test-only: the JS modules as they are in the tree (unhashed), the vectors page and the shared
    vectors, with an index of the RFC 6962 files and the default policy's document."""
    if not VECTORS.is_dir():
        pytest.skip(f"the shared vectors are not at {VECTORS}")
    from tlog.policy import DEFAULT_POLICY

    index = sorted(str(p.relative_to(VECTORS)) for p in (VECTORS / "rfc6962-proofs").rglob("*.json"))
    app = web.Application()

    async def rfc6962_index(_: web.Request) -> web.Response:
        return web.json_response(index)

    async def policy(_: web.Request) -> web.Response:
        return web.Response(body=DEFAULT_POLICY.document, content_type="application/json")

    app.router.add_get("/vectors/rfc6962-index.json", rfc6962_index)
    app.router.add_get("/vectors/policy.json", policy)
    app.router.add_static("/vectors/", VECTORS)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/", _file(HERE / "vectors.html"))
    app.router.add_get("/vectors.js", _file(HERE / "vectors.js"))
    server = ThreadServer(app)
    yield server
    server.close()


def axe_source(cache: Path | None = None) -> str:
    """axe-core's axe.min.js, fetched once from the npm registry with `npm pack` into the venv's cache."""
    cache = cache or ROOT / ".venv" / "cache" / "axe-core"
    script = cache / f"axe-{AXE_VERSION}.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed, so axe-core cannot be fetched for the accessibility test")
        cache.mkdir(parents=True, exist_ok=True)
        out = subprocess.run([npm, "pack", f"axe-core@{AXE_VERSION}", "--silent"], cwd=cache, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(cache / out) as tar:
            member = tar.extractfile("package/axe.min.js")
            assert member is not None
            script.write_bytes(member.read())
        (cache / out).unlink()
    return script.read_text()


Screenshot = Callable[[str], None]


def _file(path: Path) -> Callable[[web.Request], Any]:
    async def handler(_: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    return handler
