"""The Python client against a fake log server that keeps the API's contract (SPEC §6) with real tlog
pieces: a real log and sequencer, real receipts. The fake can drop connections, fail with any status,
lose an answer after committing, or tamper with what it says, so every client path is exercised."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tlog import merkle
from tlog.canonical import loads_strict
from tlog.checkpoint import Checkpoint, Receipt
from tlog.client import (
    Aggregator, BatchLogger, ProtocolError, RateLimited, ReceiptError, SpoolError, TlogClient, TransientError,
    UseReceipt, UseRefused,
)
from tlog.client.client import answered_status, response_error
from tlog.client.spool import PendingConflict, Spool
from tlog.errors import Conflict, Forbidden, NotFound, TlogError, Unauthorized, ValidationError
from tlog.log import LocalLog, init_log
from tlog.note import generate_key, parse_note
from tlog.records import validate_use
from tlog.rederive import iter_leaves
from tlog.sequencer import Submission
from tlog.server.errors import error_middleware, error_response

SERVICE_TOKEN = "tlog_service-token-for-tests-0123456789"
ARTIST_TOKEN = "tlog_artist-token-for-tests-0123456789"
OPTED_OUT = "sc:user:1"  # no_ai: training purposes are refused
WHEN = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def use(i: int, **overrides: Any) -> dict[str, Any]:
    r = {
        "event_id": f"recs-{i:06d}", "content_id": f"sc:track:{i % 7}", "artist_id": "sc:user:9",
        "purpose": "recommendation", "phase": "inference",
        "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.07.3"},
        "occurred_at": WHEN, "invocations": 1, "detail": "daily candidate scoring", "basis": None,
    }
    r.update(overrides)
    return r


# --- the fake server -------------------------------------------------------------------------------


@dataclass
class FakeLog:
    """Keeps SPEC §6's contract for the routes the client uses. `faults` are consumed one per POST
    /v1/uses: a status (answered as that error), "drop" (connection closed, nothing done) or
    "lose-answer" (committed, then the connection closed). `down` drops every request."""

    log: LocalLog
    faults: list[int | str] = field(default_factory=list)
    down: bool = False
    tamper: str | None = None
    batches: list[int] = field(default_factory=list)  # records per POST that reached the sequencer

    def __post_init__(self) -> None:
        self.seq = self.log.sequencer()
        self.seq.set_preferences(OPTED_OUT, {"no_ai": True}, by="artist")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[error_middleware])
        app.add_routes([
            web.post("/v1/uses", self.post_uses),
            web.get("/v1/receipts/{index}", self.get_receipt),
            web.get("/v1/artists/{artist_id}/preferences", self.get_preferences),
            web.put("/v1/artists/{artist_id}/preferences", self.put_preferences),
            web.get("/v1/log", self.log_info),
        ])
        return app

    def principal(self, request: web.Request, *roles: str) -> tuple[str, str]:
        who = {SERVICE_TOKEN: ("service", "recsys"), ARTIST_TOKEN: ("artist", OPTED_OUT)}.get(
            request.headers.get("Authorization", "").removeprefix("Bearer ")
        )
        if who is None:
            raise Unauthorized("unknown or revoked token")
        if who[0] not in roles:
            raise Forbidden(f"a {who[0]} token may not do this")
        return who

    async def post_uses(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            return _drop(request)
        fault = self.faults.pop(0) if self.faults else None
        if fault == "drop":
            return _drop(request)
        if isinstance(fault, int):
            return error_response(fault, "injected", "injected failure")
        _, service = self.principal(request, "service")
        if request.content_type != "application/json":
            return error_response(415, "unsupported_media_type", "send the body as application/json")
        body = loads_strict(await request.read())
        batch = "records" in body
        raw = body["records"] if batch else [body]
        if len(raw) > 1000:
            return error_response(413, "too_large", "at most 1000 records per request")
        now = datetime.now(timezone.utc)
        valid, problems = [], []
        for i, r in enumerate(raw):
            try:
                valid.append(validate_use(r, now=now, purposes=self.seq.policy.purposes, at=f"records[{i}]" if batch else ""))
            except ValidationError as exc:
                problems.extend(exc.details)
        if problems:
            raise ValidationError(f"{len(problems)} problem(s); nothing was logged", problems)
        (res,) = self.seq.append_uses([Submission(service, valid)])
        if isinstance(res, TlogError):
            raise res
        self.batches.append(len(valid))
        if fault == "lose-answer":
            return _drop(request)
        out = []
        for r in res:
            item = {"event_id": r.event_id, "index": r.index, "decision": r.decision, "leaf_hash": r.leaf_hash.hex(),
                    "duplicate": r.duplicate, "receipt_url": f"/v1/receipts/{r.index}"}
            if not batch and self.tamper != "no-receipt":
                item["receipt"] = self.receipt(r.index).decode()
            out.append(item)
        if self.tamper == "leaf_hash":
            out[0]["leaf_hash"] = bytes(32).hex()
        if self.tamper == "decision":
            out[0]["decision"] = "flagged"
        if self.tamper == "order":
            out.reverse()
        return web.json_response({"results": out})

    def receipt(self, index: int) -> bytes:
        signed = self.log.store.latest_checkpoint()
        size = Checkpoint.parse(parse_note(signed)[0]).size
        ((_, leaf, _),) = list(iter_leaves(self.log.store, index, index + 1))
        proof = merkle.inclusion_proof(index, size, self.log.store)
        if self.tamper == "proof":
            proof[0] = bytes(b ^ 1 for b in proof[0])
        return Receipt(extra=leaf, index=index, proof=proof, checkpoint=signed).format()

    async def get_receipt(self, request: web.Request) -> web.Response:
        self.principal(request, "service")
        index = int(request.match_info["index"])
        if self.log.store.entry(index) is None:
            raise NotFound(f"no leaf {index}")
        return web.Response(body=self.receipt(index), content_type="text/plain", charset="utf-8")

    async def get_preferences(self, request: web.Request) -> web.Response:
        self.principal(request, "service", "artist")
        artist_id = request.match_info["artist_id"]
        a = self.log.store.artist_state(artist_id)
        return web.json_response({"artist_id": artist_id, "preferences": (a.preferences if a else None) or {}})

    async def put_preferences(self, request: web.Request) -> web.Response:
        role, subject = self.principal(request, "service", "artist")
        artist_id = request.match_info["artist_id"]
        doc = loads_strict(await request.read())
        by, service = ("artist", None) if role == "artist" else ("service", subject)
        change = self.seq.set_preferences(artist_id, doc, by=by, service=service)
        return web.json_response({"artist_id": artist_id, "index": change.index, "leaf_hash": change.leaf_hash.hex(), "by": by,
                                  "preferences": doc})

    async def log_info(self, request: web.Request) -> web.Response:
        pol = self.seq.policy
        return web.json_response({"origin": self.log.origin, "verifier_keys": [self.log.verifier.key],
                                  "size": self.log.store.size(), "policy": pol.id,
                                  "purposes": [{"code": c} for c in pol.purposes]})

    def logged(self, event_ids: list[str]) -> dict[str, Any]:
        return self.log.store.find_events("recsys", event_ids)


def _drop(request: web.Request) -> web.Response:
    """Closes the connection without an answer, as a crashed or unplugged server would."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[FakeLog, str]]:
    lg = init_log(tmp_path / "log.db", "client.test/log")
    f = FakeLog(lg)
    server = TestServer(f.app())
    await server.start_server()
    yield f, str(server.make_url("")).rstrip("/")
    await server.close()
    lg.close()


@pytest.fixture
async def client(fake: tuple[FakeLog, str]) -> AsyncIterator[TlogClient]:
    f, url = fake
    async with TlogClient(url, SERVICE_TOKEN, vkey=f.log.verifier.key, timeout=5) as c:
        yield c


def new_leaves(f: FakeLog, start: int) -> list[str]:
    """The types of the leaves appended since the log had `start` leaves."""
    return [e.type for e in f.log.store.entries(start, f.log.store.size())]


def quick(client: TlogClient, spool: Path, **kwargs: Any) -> BatchLogger:
    """A batch logger with test-sized backoff."""
    kwargs.setdefault("backoff_base", 0.005)
    kwargs.setdefault("backoff_cap", 0.02)
    return BatchLogger(client, spool, **kwargs)


# --- TlogClient ----------------------------------------------------------------------------------


async def test_use_returns_a_verified_receipt(fake, client):
    f, _ = fake
    result = await client.use(use(1))
    assert isinstance(result, UseReceipt)
    assert (result.event_id, result.decision, result.duplicate, result.refused) == ("recs-000001", "allowed", False, False)
    assert result.receipt is not None and result.checkpoint is not None
    assert result.checkpoint.origin == "client.test/log" and result.checkpoint.size == f.log.store.size()
    assert merkle.leaf_hash(result.receipt.extra) == result.leaf_hash == f.log.store.leaf_hashes(result.index, result.index + 1)[0]
    assert result.raise_if_refused() is result


async def test_refused_use_is_logged_and_easy_to_act_on(client):
    result = await client.use(use(2, artist_id=OPTED_OUT, purpose="model_training_generative", phase="training"))
    assert result.refused and result.decision == "refused"
    with pytest.raises(UseRefused, match="must not go ahead") as info:
        result.raise_if_refused()
    assert info.value.receipt is result and isinstance(info.value, TlogError)


async def test_same_use_again_is_a_duplicate_and_another_body_a_conflict(client):
    first = await client.use(use(3))
    again = await client.use(use(3))
    assert again.duplicate and again.index == first.index and again.leaf_hash == first.leaf_hash
    with pytest.raises(Conflict) as info:
        await client.use(use(3, detail="something else"))
    assert "different body" in str(info.value)


async def test_errors_are_types_with_messages_for_people(fake, client):
    f, url = fake
    with pytest.raises(ValidationError) as info:
        await client.use(use(4, purpose="no_such_purpose", phase="dreaming"))
    assert {d["field"] for d in info.value.details} == {"purpose", "phase"}
    assert "purpose" in str(info.value) and "phase" in str(info.value)
    async with TlogClient(url, "wrong", vkey=f.log.verifier.key) as bad:
        with pytest.raises(Unauthorized, match="did not accept the token"):
            await bad.use(use(5))
    async with TlogClient(url, ARTIST_TOKEN, vkey=f.log.verifier.key) as artist:
        with pytest.raises(Forbidden, match="may not do this"):
            await artist.use(use(5))
    with pytest.raises(NotFound):
        await client.receipt(10**6)
    with pytest.raises(ValidationError, match="1 to 1000"):
        await client.log_many([use(i) for i in range(1001)])


@pytest.mark.parametrize("tamper", ["leaf_hash", "decision", "proof"])
async def test_a_receipt_that_does_not_prove_the_answer_is_refused(fake, client, tamper):
    f, _ = fake
    await client.use(use(5))  # so the tree has more than a couple of leaves
    f.tamper = tamper
    with pytest.raises(ReceiptError) as info:
        await client.use(use(6))
    assert info.value.code == "bad_receipt"


async def test_a_key_the_log_does_not_publish_is_refused_at_open_and_its_receipts_do_not_verify(fake, client):
    f, url = fake
    _, other = generate_key("client.test/log")
    with pytest.raises(ValidationError, match="is not a key of the log at .* use the key its operator published"):
        async with TlogClient(url, SERVICE_TOKEN, vkey=other):
            pass
    assert f.batches == []  # nothing was sent
    good = await client.use(use(7))
    with pytest.raises(ReceiptError, match="does not verify against the key client.test/log"):
        TlogClient(url, SERVICE_TOKEN, vkey=other).verify_receipt(good.receipt.format(), index=good.index)
    with pytest.raises(ValidationError, match="not 'another.origin'"):
        TlogClient(url, SERVICE_TOKEN, vkey=f.log.verifier.key, origin="another.origin")


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "log.example", "ftp://log.example", "http://"])
def test_a_url_without_a_scheme_or_host_is_a_configuration_error_at_once(url):
    with pytest.raises(ValidationError, match="must start with http:// or https://"):
        TlogClient(url, SERVICE_TOKEN, vkey=generate_key("client.test/log")[1])


async def test_answers_out_of_order_are_a_protocol_error(fake, client):
    f, _ = fake
    f.tamper = "order"
    with pytest.raises(ProtocolError, match="where 'recs-000010' was expected"):
        await client.log_many([use(10), use(11)])


async def test_receipt_fetched_when_the_server_sends_only_a_url(fake, client):
    f, _ = fake
    f.tamper = "no-receipt"
    result = await client.use(use(8))
    assert result.receipt is not None and result.receipt.index == result.index
    fetched = await client.receipt(result.index, leaf_hash=result.leaf_hash)
    assert fetched.leaf.decision == "allowed" and fetched.checkpoint.size >= result.index + 1
    with pytest.raises(ReceiptError, match="different leaf"):
        await client.receipt(result.index, leaf_hash=bytes(32))


async def test_log_many_answers_in_order_without_receipts(fake, client):
    f, _ = fake
    results = await client.log_many([use(i) for i in range(20, 30)])
    assert [r.event_id for r in results] == [f"recs-{i:06d}" for i in range(20, 30)]
    assert [r.index for r in results] == list(range(results[0].index, results[0].index + 10))
    assert all(r.receipt is None for r in results) and f.batches == [10]


async def test_preferences_round_trip(client):
    change = await client.set_preferences("sc:user:77", {"purposes": {"talent_discovery": "deny"}})
    assert change.by == "service" and change.artist_id == "sc:user:77" and len(change.leaf_hash) == 32
    assert (await client.get_preferences("sc:user:77"))["purposes"] == {"talent_discovery": "deny"}
    assert await client.get_preferences("sc:user:nobody") == {}
    refused = await client.use(use(9, artist_id="sc:user:77", purpose="talent_discovery"))
    assert refused.refused


async def test_log_info(fake, client):
    f, _ = fake
    info = await client.log_info()
    assert info.origin == "client.test/log" and info.verifier_keys == [f.log.verifier.key]
    assert "recommendation" in info.purposes and info.size == f.log.store.size()


async def test_transient_failures_are_retried_with_the_same_event_id(fake, client):
    f, _ = fake
    f.faults = [503, "drop", 429]  # one more than retries=2
    with pytest.raises(RateLimited):
        await client.use(use(12))
    f.faults = ["lose-answer", 500]
    result = await client.use(use(13))
    assert result.duplicate  # the first attempt was committed; its answer was lost
    assert len(f.logged(["recs-000013"])) == 1


def test_response_errors_map_to_types():
    err = response_error(429, b'{"error":{"code":"rate_limited","message":"slow down","details":[]}}', "2")
    assert isinstance(err, RateLimited) and err.retry_after == 2.0 and "slow down" in str(err)
    err = response_error(502, b"<html>Bad gateway</html>", None)
    assert isinstance(err, TransientError) and "HTTP 502: <html>Bad gateway" in str(err)
    err = response_error(400, b'{"error":{"code":"invalid_input","message":"bad","details":[{"field":"records[1].purpose","message":"unknown"}]}}', None)
    assert isinstance(err, ValidationError) and str(err) == "bad (records[1].purpose: unknown)"
    err = response_error(425, b'{"error":{"code":"too_early","message":"not cosigned yet","details":[]}}', "1")
    assert isinstance(err, TransientError) and err.retry_after == 1.0 and err.code == "too_early"  # asked again


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413])
def test_a_refused_answers_status_is_read_back_from_its_type(status: int) -> None:
    """The spool keeps a refused record's status: the client's table gives it back from the type."""
    assert answered_status(response_error(status, b'{"error":{"code":"x","message":"no","details":[]}}', None)) == status


# --- the spool -----------------------------------------------------------------------------------


def test_spool_is_durable_ordered_and_refuses_a_second_body(tmp_path):
    path = tmp_path / "s.spool"
    s = Spool(path)
    assert s.add([("a", b'{"a":1}'), ("b", b'{"b":1}')]) == [(1, True), (2, True)]
    assert s.add([("a", b'{"a":1}')]) == [(1, False)]
    with pytest.raises(PendingConflict) as info:
        s.add([("c", b"{}"), ("a", b'{"a":2}')])
    assert info.value.positions == [1] and s.count() == 2  # all or nothing: "c" was not spooled
    s.remove([1, 2])
    assert s.add([("d", b"{}")]) == [(3, True)]  # seq never reused: a cursor behind it stays valid
    db = s._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(SpoolError, match="in use by another process"):
        Spool(path)
    s.close()
    reopened = Spool(path)
    assert [(r.seq, r.event_id) for r in reopened.take(0, 10)] == [(3, "d")]
    reopened.fail(reopened.take(0, 10), 409, "conflict", "used for another body")
    assert reopened.count() == 0 and [f.event_id for f in reopened.failed()] == ["d"]
    reopened.close()


def test_spool_files_are_private(tmp_path):
    """The spool holds the records (artist and content ids): 0600, its -wal and -shm too, in a 0700 folder."""
    old = os.umask(0o022)
    try:
        s = Spool(tmp_path / "new" / "s.spool")
        s.add([("a", b'{"a":1}')])
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "new").iterdir()}
    s.close()
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert "s.spool-wal" in modes and set(modes.values()) == {0o600}, modes


def test_spool_refuses_a_file_that_is_not_a_spool(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=7")
    with pytest.raises(SpoolError, match="not a tlog spool"):
        Spool(path)


# --- BatchLogger ---------------------------------------------------------------------------------


async def test_batch_logger_coalesces_and_answers_every_record(fake, client, tmp_path):
    f, _ = fake
    seen: list[UseReceipt] = []
    async with quick(client, tmp_path / "s.spool", on_result=seen.append) as logger:
        futures = await asyncio.gather(*(logger.log(use(i)) for i in range(2500)))
        results = await asyncio.gather(*futures)
        assert logger.pending == 0
    assert [r.event_id for r in results] == [f"recs-{i:06d}" for i in range(2500)]
    assert len({r.index for r in results}) == 2500 and len(seen) == 2500
    assert sum(f.batches) == 2500 and max(f.batches) <= 1000 and len(f.batches) <= 20  # not one per record


async def test_batch_logger_sends_a_lone_record_within_max_delay(client, tmp_path):
    async with quick(client, tmp_path / "s.spool", max_delay=0.05) as logger:
        t0 = time.monotonic()
        result = await (await logger.log(use(1)))
        assert result.index > 0 and time.monotonic() - t0 < 0.5


async def test_batch_logger_checks_records_before_spooling(client, tmp_path):
    async with quick(client, tmp_path / "s.spool") as logger:
        with pytest.raises(ValidationError) as info:
            await logger.log(use(1, phase="dreaming", occurred_at="yesterday"))
        assert {d["field"] for d in info.value.details} == {"phase", "occurred_at"}
        with pytest.raises(ValidationError) as info:
            await logger.log_many([use(1), use(2, invocations=0)])
        assert [d["field"] for d in info.value.details] == ["records[1].invocations"]
        await logger.log(use(3))
        with pytest.raises(Conflict, match="already waiting in the spool"):
            await logger.log(use(3, detail="another body"))
        assert logger.pending <= 1


async def test_lost_answers_are_retried_and_logged_once(fake, client, tmp_path):
    f, _ = fake
    size = f.log.store.size()
    f.faults = ["lose-answer", 503, "drop", 429, "lose-answer"]
    async with quick(client, tmp_path / "s.spool", concurrency=1) as logger:
        futures = await logger.log_many([use(i) for i in range(300)])
        results = await asyncio.gather(*futures)
    ids = [f"recs-{i:06d}" for i in range(300)]
    assert len(f.logged(ids)) == 300 and new_leaves(f, size) == ["use"] * 300 + ["map"]  # the resends: duplicates
    assert {r.event_id for r in results if r.duplicate} and not f.faults


async def test_a_conflict_fails_only_its_record(fake, client, tmp_path):
    f, _ = fake
    await client.use(use(5))
    errors: list[tuple[str, TlogError]] = []
    async with quick(client, tmp_path / "s.spool", on_error=lambda e, x: errors.append((e, x))) as logger:
        futures = await logger.log_many([use(i, detail="batch") if i == 5 else use(i) for i in range(40)])
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        failed = await logger.failed()
    assert isinstance(outcomes[5], Conflict) and errors == [("recs-000005", outcomes[5])]
    assert all(isinstance(o, UseReceipt) for i, o in enumerate(outcomes) if i != 5)
    assert [(r.event_id, r.status, r.code) for r in failed] == [("recs-000005", 409, "conflict")]
    assert len(f.logged([f"recs-{i:06d}" for i in range(40)])) == 40  # 39 from the batch, 1 from before


async def test_records_a_400_names_fail_alone_without_bisection(fake, client, tmp_path):
    f, _ = fake
    async with quick(client, tmp_path / "s.spool") as logger:
        futures = await logger.log_many([use(i, purpose="made_up") if i in (3, 7) else use(i) for i in range(10)])
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, ValidationError)] == [3, 7]
    assert outcomes[3].details[0]["field"] == "purpose"  # named as in the record itself
    assert f.batches == [8]


async def test_outage_loses_nothing_and_the_next_process_drains_the_spool(fake, client, tmp_path):
    f, url = fake
    spool = tmp_path / "s.spool"
    size = f.log.store.size()
    async with quick(client, spool, max_pending=10_000) as logger:
        await logger.log_many([use(i) for i in range(100)])
        await logger.flush()
        f.down = True
        for i in range(100, 600):
            await logger.log(use(i))  # returns at once: durable in the spool, not yet in the log
        assert logger.pending == 500
        assert await logger.close(timeout=0.3) == 500
    f.down = False
    seen: list[UseReceipt] = []
    async with TlogClient(url, SERVICE_TOKEN, vkey=f.log.verifier.key) as fresh:
        async with quick(fresh, spool, on_result=seen.append) as logger:  # as a restarted process would
            await logger.flush()
            assert logger.pending == 0
    assert sorted(r.event_id for r in seen) == [f"recs-{i:06d}" for i in range(100, 600)]
    assert len(f.logged([f"recs-{i:06d}" for i in range(600)])) == 600
    added = new_leaves(f, size)  # the 600 uses, in batches each ending with its map leaf, nothing else
    assert added.count("use") == 600 and set(added) == {"use", "map"} and added[-1] == "map"


async def test_backpressure_blocks_log_while_the_spool_is_full(fake, client, tmp_path):
    f, _ = fake
    f.down = True
    async with quick(client, tmp_path / "s.spool", max_pending=5) as logger:
        for i in range(5):
            await logger.log(use(i))
        blocked = asyncio.create_task(logger.log(use(5)))
        await asyncio.sleep(0.2)
        assert not blocked.done() and logger.pending == 5
        f.down = False
        await asyncio.wait_for(blocked, 5)
        await logger.flush()
    assert len(f.logged([f"recs-{i:06d}" for i in range(6)])) == 6


async def test_a_refused_token_stops_the_logger_and_keeps_the_records(fake, tmp_path):
    f, url = fake
    spool = tmp_path / "s.spool"
    async with TlogClient(url, "revoked", vkey=f.log.verifier.key) as bad:
        logger = quick(bad, spool)
        await logger.start()
        future = await logger.log(use(1))
        with pytest.raises(Unauthorized):
            await future
        with pytest.raises(Unauthorized):
            await logger.log(use(2))
        with pytest.raises(Unauthorized):
            await logger.close()
    s = Spool(spool)
    assert [r.event_id for r in s.take(0, 10)] == ["recs-000001"]
    s.close()


# --- Aggregator ----------------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def window_use(content: str, purpose: str = "recommendation") -> dict[str, Any]:
    r = use(0, content_id=content, purpose=purpose)
    for k in ("event_id", "occurred_at", "invocations"):
        del r[k]
    return r


async def test_aggregator_folds_uses_into_windows(fake, client, tmp_path):
    f, _ = fake
    base = (int(time.time()) // 60 - 10) * 60  # a minute boundary ten minutes ago
    clock = Clock(base + 30.25)
    seen: list[UseReceipt] = []
    async with quick(client, tmp_path / "s.spool", on_result=seen.append) as logger:
        agg = Aggregator(logger, prefix="recs-pod-1", window=60, clock=clock)
        for _ in range(1000):
            agg.add(window_use("sc:track:1"))
        agg.add(window_use("sc:track:2"), count=5)
        agg.add(window_use("sc:track:1", purpose="search_indexing"))
        clock.t = base + 75  # the next window
        agg.add(window_use("sc:track:1"), count=7)
        clock.t = base + 80
        assert await agg.emit_closed() == 3
        assert await agg.flush() == 1  # the open window, cut at now
        await logger.flush()
    entries = f.logged([r.event_id for r in seen]).values()
    rows = {(e.details["content_id"], e.details["purpose"], e.details["occurred_at"], e.details["window_end"]):
            e.details["invocations"] for e in entries}
    assert rows == {
        ("sc:track:1", "recommendation", _ts(base, 30.25), _ts(base, 60)): 1000,
        ("sc:track:2", "recommendation", _ts(base, 30.25), _ts(base, 60)): 5,
        ("sc:track:1", "search_indexing", _ts(base, 30.25), _ts(base, 60)): 1,
        ("sc:track:1", "recommendation", _ts(base, 60), _ts(base, 80)): 7,
    }
    assert all(r.event_id.startswith("recs-pod-1-") and len(r.event_id) == len("recs-pod-1-") + 40 for r in seen)


def _ts(base: int, offset: float) -> str:
    ms = int((base + offset) * 1000)
    return datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


async def test_aggregator_event_ids_are_deterministic_and_spans_never_reused(client, tmp_path):
    base = (int(time.time()) // 60 - 10) * 60
    seen: list[UseReceipt] = []
    async with quick(client, tmp_path / "s.spool", on_result=seen.append) as logger:
        for _ in range(2):  # the same counts at the same times: the same records, so the log dedupes
            clock = Clock(base + 1)
            agg = Aggregator(logger, prefix="recs-pod-1", window=60, clock=clock)
            agg.add(window_use("sc:track:1"), count=3)
            clock.t = base + 10
            await agg.flush()
            agg.add(window_use("sc:track:1"), count=3)  # the same count after the cut: a new span, a new id
            clock.t = base + 20
            await agg.flush()
            await logger.flush()
    first, second = seen[:2], seen[2:]
    assert len({r.event_id for r in first}) == 2 and not any(r.duplicate for r in first)
    assert [r.event_id for r in second] == [r.event_id for r in first] and all(r.duplicate for r in second)


async def test_aggregator_emits_closed_windows_in_the_background(client, tmp_path):
    seen: list[UseReceipt] = []
    async with quick(client, tmp_path / "s.spool", on_result=seen.append) as logger:
        async with Aggregator(logger, prefix="bg", window=0.05) as agg:
            agg.add(window_use("sc:track:1"), count=2)
            await asyncio.sleep(0.2)  # the window closed, and the background task handed it over
            await logger.flush()
            assert len(seen) == 1
            agg.add(window_use("sc:track:1"), count=3)
        await logger.flush()  # close() handed over the open window too
    assert len(seen) == 2 and len({r.event_id for r in seen}) == 2


def test_aggregator_refuses_malformed_uses_and_prefixes(tmp_path):
    logger = BatchLogger(None, tmp_path / "s.spool")  # type: ignore[arg-type]
    agg = Aggregator(logger, prefix="p", window=60)
    with pytest.raises(ValidationError, match="sets event_id"):
        agg.add(use(1))
    with pytest.raises(ValidationError) as info:
        agg.add({**window_use("c"), "phase": "dreaming"})
    assert info.value.details[0]["field"] == "phase"
    with pytest.raises(ValidationError):
        agg.add({"content_id": "c"})
    with pytest.raises(ValidationError, match="prefix"):
        Aggregator(logger, prefix="has space", window=60)
