"""`tlog serve --notify-url --notify-secret-file` against a real receiver (tests/e2e/webhook_receiver.py:
aiohttp on a free loopback port): signed events in order, a receiver down for a while, one answering 500,
restarts (SIGTERM and SIGKILL) with undelivered events, duplicates under the same id, and ingest that
keeps answering while the receiver hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from tlog.log import init_log
from tlog.policy import DEFAULT_POLICY

from .conftest import Server, free_port, start_server
from .roles import make_token
from .webhook_receiver import HANG, Receiver

ORIGIN = "hooks.tlog.example/log"
ARTIST = "sc:user:1"
OTHER = "sc:user:2"


@dataclass
class Hooked:
    """A log, its tokens and secret, and `tlog serve` on it posting to a receiver on `port`."""

    db: Path
    secret: bytes
    secret_file: Path
    port: int
    service: str
    artist: str
    server: Server | None = None
    output: list[str] = field(default_factory=list)
    _drain: threading.Thread | None = None
    _n: int = 0

    def receiver(self, **kw: Any) -> Receiver:
        return Receiver(self.secret, self.port, **kw)

    def serve(self) -> Server:
        url = f"http://127.0.0.1:{self.port}/hooks/tlog"
        self.server = start_server(self.db, "--notify-url", url, "--notify-secret-file", str(self.secret_file))
        proc = self.server.proc

        def drain() -> None:  # a full pipe would stall the server
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                self.output.append(line.decode(errors="replace"))

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        return self.server

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.server is not None
        self.server.proc.send_signal(sig)
        self.server.proc.wait(timeout=20)
        assert self._drain is not None
        self._drain.join(10)
        self.server = None

    def call(self, method: str, path: str, token: str, body: Any) -> tuple[int, Any]:
        assert self.server is not None
        req = urllib.request.Request(self.server.url + path, data=orjson.dumps(body), method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read())

    def use(self, artist: str, purpose: str, **kw: Any) -> dict[str, Any]:
        self._n += 1
        rec = {"event_id": f"hook-{self._n}", "content_id": f"sc:track:{artist.rsplit(':', 1)[1]}-1", "artist_id": artist,
               "purpose": purpose, "phase": "inference", "system": {"id": "s", "model": "m", "version": "1"},
               "occurred_at": "2026-12-01T00:00:00Z", **kw}
        status, body = self.call("POST", "/v1/uses", self.service, rec)
        assert status == 200, body
        return body["results"][0]

    def preferences(self, token: str, prefs: dict[str, Any]) -> int:
        status, body = self.call("PUT", f"/v1/artists/{ARTIST}/preferences", token, prefs)
        assert status == 200, body
        return body["index"]


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[Hooked]:
    db = tmp_path / "tlog.db"
    init_log(db, ORIGIN).close()
    secret = os.urandom(24).hex().encode()
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(secret + b"\n")
    secret_file.chmod(0o600)
    h = Hooked(db, secret, secret_file, free_port(), make_token(db, "--service", "recsys")[0],
               make_token(db, "--artist", ARTIST)[0])
    yield h
    if h.server is not None:
        h.stop(signal.SIGKILL)
    assert "Traceback" not in "".join(h.output), "".join(h.output)
    assert secret.decode() not in "".join(h.output)  # never logged


def make_events(h: Hooked) -> list[tuple[str, int]]:
    """Something of every kind the log notifies, and a use that it does not: (type, index) expected."""
    expected = [("preferences.changed", h.preferences(h.artist, {"purposes": {"fraud_detection": "deny"}}))]
    expected.append(("preferences.changed", h.preferences(h.service, {"purposes": {"fraud_detection": "deny",
                                                                                   "recommendation": "deny"}})))
    h.use(OTHER, "recommendation")  # allowed: no event
    override = h.use(ARTIST, "fraud_detection", basis="legitimate_interest_security")
    assert override["decision"] == "allowed_override"
    expected.append(("use.overridden", override["index"]))
    refusal = h.use(ARTIST, "recommendation")
    assert refusal["decision"] == "refused"
    expected.append(("use.refused", refusal["index"]))
    return expected


def ids(expected: list[tuple[str, int]]) -> list[str]:
    return [f"{ORIGIN}/{index}/{type_}" for type_, index in expected]


def in_order(deliveries: list[Any]) -> list[str]:
    """Accepted event ids, each once, in the order they were first accepted."""
    seen: list[str] = []
    for d in deliveries:
        if d.id not in seen:
            seen.append(d.id)
    return seen


def publish(h: Hooked, tmp: Path, policy_id: str, effective: datetime) -> int:
    doc = orjson.loads(DEFAULT_POLICY.document)
    doc["purposes"]["talent_discovery"]["default"] = "refused"  # a tightening: it may take effect at any time
    path = tmp / f"{policy_id}.json"
    path.write_bytes(orjson.dumps(doc))
    out = subprocess.run([sys.executable, "-m", "tlog.cli", "policy", "publish", "--db", str(h.db), "--id", policy_id,
                          "--effective", effective.strftime("%Y-%m-%dT%H:%M:%SZ"), str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("index ")[1])


def test_events_arrive_signed_in_order_and_say_what_happened(hooked, tmp_path):
    receiver = hooked.receiver().start()
    try:
        hooked.serve()
        expected = make_events(hooked)
        # Far enough ahead that the CLI, which takes seconds to start on a busy machine, announces it first.
        effective = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=10)
        index = publish(hooked, tmp_path, "stricter", effective)
        expected += [("policy.announced", index), ("policy.effective", index)]
        got = receiver.wait_for(len(expected))
        assert in_order(got) == ids(expected)
        assert all(d.valid for d in receiver.deliveries)
        events = {d.id: d.event for d in got}
        assert len(receiver.deliveries) == len(expected)  # nothing twice when nothing failed

        by_artist, by_service, overridden, refused, announced, took_effect = (events[i] for i in ids(expected))
        assert (by_artist["by"], by_artist["service"], by_artist["artist_id"]) == ("artist", None, ARTIST)
        assert by_artist["preferences"]["purposes"] == {"fraud_detection": "deny"}
        assert (by_service["by"], by_service["service"]) == ("service", "recsys")
        assert overridden["artist_id"] == ARTIST and overridden["use"]["decision"] == "allowed_override"
        assert overridden["use"]["basis"] == "legitimate_interest_security" and overridden["use"]["service"] == "recsys"
        assert refused["use"]["decision"] == "refused" and refused["content_id"] == "sc:track:1-1"
        assert "nonce" not in refused["use"] and "nonce" not in by_artist
        assert announced["policy"] == "stricter" and announced["replaces"] == "default"
        assert announced["effective_at"] == effective.strftime("%Y-%m-%dT%H:%M:%S.000Z") == took_effect["at"]
        assert announced["loosenings"] == [] and announced["notice_days"] == 30
        assert took_effect["policy"] == "stricter" and took_effect["replaces"] == "default"
        effective_arrival = next(d.at for d in got if d.event["type"] == "policy.effective")
        assert time.time() >= effective.timestamp()  # it came once its time had come, not before
        assert all(e["log"] == ORIGIN and e["id"] == i for i, e in events.items())

        # The cursor survives a clean restart: what was delivered is not sent again, what is new is.
        hooked.stop()
        hooked.serve()
        later = hooked.use(ARTIST, "recommendation")
        got = receiver.wait_for(len(expected) + 1)
        assert in_order(got)[-1] == f"{ORIGIN}/{later['index']}/use.refused"
        assert len(receiver.deliveries) == len(expected) + 1
        assert effective_arrival <= got[-1].at
    finally:
        receiver.stop()


def test_a_receiver_down_for_a_while_gets_everything_once_it_is_up(hooked):
    hooked.serve()
    expected = make_events(hooked)
    time.sleep(2)  # the notifier tries, fails and backs off
    receiver = hooked.receiver().start()
    try:
        got = receiver.wait_for(len(expected), timeout=30)
        assert in_order(got) == ids(expected) and all(d.valid for d in got)
    finally:
        receiver.stop()
    output = "".join(hooked.output)
    assert f"not delivered to http://127.0.0.1:{hooked.port} (" in output
    assert "/hooks/tlog" not in output  # logs name the receiver's host, never its path


def test_a_receiver_answering_500_gets_the_same_event_again_with_growing_waits(hooked):
    receiver = hooked.receiver(answer=lambda d, n: 500 if n < 4 else 200).start()
    try:
        hooked.serve()
        index = hooked.preferences(hooked.artist, {"no_ai": True})
        (delivered,) = receiver.wait_for(1, timeout=30)
        tries = receiver.deliveries
        assert len(tries) == 5 and {d.id for d in tries} == {f"{ORIGIN}/{index}/preferences.changed"}
        assert {d.body for d in tries} == {delivered.body} and all(d.valid for d in tries)
        gaps = [b.at - a.at for a, b in zip(tries, tries[1:])]
        # Retry n waits between half and all of 0.5·2ⁿ s (webhooks.RETRY_BASE, jitter 0.5): never less.
        for n, gap in enumerate(gaps):
            assert 0.25 * 2**n - 0.05 <= gap <= 0.5 * 2**n + 2.0, gaps
        assert gaps[3] > gaps[0]
    finally:
        receiver.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_undelivered_events_are_delivered_after_a_restart(hooked, sig):
    hooked.serve()
    expected = make_events(hooked)  # each answered 200: durable in the log
    time.sleep(1)
    hooked.stop(sig)
    receiver = hooked.receiver().start()
    try:
        time.sleep(0.5)
        assert receiver.deliveries == []  # nothing sends them but tlog
        hooked.serve()
        got = receiver.wait_for(len(expected), timeout=30)
        assert in_order(got) == ids(expected) and all(d.valid for d in got)
    finally:
        receiver.stop()


def test_an_event_delivered_again_after_a_crash_carries_the_same_id_and_bytes(hooked):
    receiver = hooked.receiver(answer=lambda d, n: HANG if n == 0 else 200).start()
    try:
        hooked.serve()
        expected = make_events(hooked)
        deadline = time.monotonic() + 10
        while receiver.hanging == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.hanging == 1  # the receiver got the first event and never answered
        hooked.stop(signal.SIGKILL)
        hooked.serve()
        got = receiver.wait_for(len(expected), timeout=30)
        assert in_order(got) == ids(expected)
        first, again = (d for d in receiver.deliveries if d.id == ids(expected)[0])
        assert again.body == first.body and again.valid and first.valid
    finally:
        receiver.stop()


def test_ingest_keeps_answering_while_the_receiver_hangs(hooked):
    receiver = hooked.receiver(answer=lambda d, n: HANG).start()
    try:
        hooked.serve()
        make_events(hooked)
        deadline = time.monotonic() + 10
        while receiver.hanging == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.hanging == 1
        slowest = 0.0
        for k in range(30):  # uses that would each make an event, and plain ones
            t = time.monotonic()
            hooked.use(ARTIST if k % 2 else OTHER, "recommendation")
            slowest = max(slowest, time.monotonic() - t)
        assert slowest < 2.0 and receiver.hanging >= 1
        assert len({d.id for d in receiver.deliveries}) == 1  # the notifier waits on the first event, in order
    finally:
        receiver.stop()
