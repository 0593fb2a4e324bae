"""Webhook events (events.py) derived from a real log, their signature, the notifier's order of policy
effective times among log events, its cursor tables, and the checks on --notify-url and the secret file.
End-to-end delivery through `tlog serve` is tests/e2e/test_webhooks.py."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tlog.cli import main
from tlog.errors import ValidationError
from tlog.events import entry_event, headers, signature
from tlog.log import init_log, open_log
from tlog.policy import DEFAULT_POLICY
from tlog.sequencer import read_schedule
from tlog.store.sqlite import SqliteStore
from tlog.webhooks import Notifier, Target, load_target

from .conftest import append, make_older, records
from .e2e.conftest import free_port
from .e2e.webhook_receiver import Receiver, verify

ORIGIN = "test.tlog.example/log"
HOUR = 3600.0


def _stricter(*refused: str) -> bytes:
    """The default policy with these purposes refused: a tightening, which may take effect at any time."""
    doc = orjson.loads(DEFAULT_POLICY.document)
    for code in refused:
        doc["purposes"][code]["default"] = "refused"
    return orjson.dumps(doc)


# --- events of entries ------------------------------------------------------------------------------


def test_each_kind_of_entry_makes_its_event_and_others_none(log):
    seq = log.sequencer()
    prefs = seq.set_preferences("sc:user:1", {"purposes": {"fraud_detection": "deny"}}, by="artist").index
    uses = append(seq, records(3, artists=1) + [dict(records(1, artists=1, seed=9)[0], purpose="fraud_detection",
                                                     phase="inference", basis="legal_obligation")])
    policy, _ = seq.publish_policy(_stricter("talent_discovery"), "stricter")
    schedule = read_schedule(log.store)
    made = {e.index: entry_event(ORIGIN, e, schedule) for e in log.store.entries(0, log.store.size())}
    override = next(u for u in uses if u.decision == "allowed_override")
    assert {i for i, ev in made.items() if ev is not None} == {1, prefs, override.index, policy} | {
        u.index for u in uses if u.decision == "refused"}
    ev = made[override.index]
    body = orjson.loads(ev.body)
    assert ev.id == body["id"] == f"{ORIGIN}/{override.index}/use.overridden" and ev.type == body["type"]
    assert body["use"]["basis"] == "legal_obligation" and "nonce" not in body["use"] and "index" not in body["use"]
    assert orjson.loads(made[prefs].body)["by"] == "artist"
    announced = orjson.loads(made[policy].body)
    assert announced["replaces"] == "default" and announced["loosenings"] == []
    # Derived again (after a restart, say), an event has the same id and the same bytes.
    again = {e.index: entry_event(ORIGIN, e, read_schedule(log.store)) for e in log.store.entries(0, log.store.size())}
    assert again == made


def test_an_entry_whose_details_were_erased_makes_no_event(log):
    """`tlog erase` deletes an artist's details: a notifier that is behind has nothing left to send."""
    seq = log.sequencer()
    (refused,) = append(seq, [dict(records(1, seed=4)[0], purpose="model_training_generative", phase="training")])
    artist = log.store.entry(refused.index).artist_id
    assert entry_event(ORIGIN, log.store.entry(refused.index), read_schedule(log.store)) is not None
    seq.erase(artist, "asked to")
    erased = log.store.entry(refused.index)
    assert erased.erased is not None and entry_event(ORIGIN, erased, read_schedule(log.store)) is None


def test_an_announced_loosening_names_what_it_loosens(tmp_path):
    start = time.time() - 40 * 86_400
    lg = init_log(tmp_path / "t.db", ORIGIN, clock=lambda: start)
    doc = orjson.loads(DEFAULT_POLICY.document)
    doc["purposes"]["model_training_generative"]["default"] = "allowed"
    index, _ = lg.sequencer(clock=lambda: start).publish_policy(orjson.dumps(doc), "loose",
                                                               effective_ms=int((start + 31 * 86_400) * 1000))
    event = orjson.loads(entry_event(ORIGIN, lg.store.entry(index), read_schedule(lg.store)).body)
    assert event["loosenings"] == ["model_training_generative: refused → allowed"]
    lg.close()


# --- signatures ---------------------------------------------------------------------------------------


@given(key=st.binary(min_size=32, max_size=64), body=st.binary(max_size=300), ts=st.integers(0, 2**40),
       event_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60))
def test_a_signature_holds_for_its_event_alone(key, body, ts, event_id):
    sig = signature(key, event_id, ts, body)
    hdrs = {"webhook-id": event_id, "webhook-timestamp": str(ts), "webhook-signature": sig}
    ever = 2**41  # a replay window wide enough for any generated timestamp
    assert verify(key, hdrs, body, ever)
    assert not verify(key, hdrs, body + b" ", ever)
    assert not verify(bytes([key[0] ^ 1]) + key[1:], hdrs, body, ever)
    assert not verify(key, {**hdrs, "webhook-id": event_id + "x"}, body, ever)
    assert not verify(key, {**hdrs, "webhook-signature": signature(key, event_id, ts + 1, body)}, body, ever)


def test_an_old_signature_is_refused_as_a_replay(log):
    event = entry_event(ORIGIN, log.store.entry(1), read_schedule(log.store))
    old = int(time.time()) - 301
    assert not verify(b"k" * 32, headers(b"k" * 32, event, old), event.body)
    assert verify(b"k" * 32, headers(b"k" * 32, event, int(time.time())), event.body)


# --- the order of `policy.effective` among log events -----------------------------------------------


async def test_policies_take_effect_in_the_stream_where_their_time_falls_and_a_replaced_one_never(tmp_path):
    """A log with a past, delivered to a receiver that was down all along: A (announced first, due at
    T-1h) is replaced before its time by C (same time, later leaf: SPEC §4 ties), B takes effect at once
    between them; each `policy.effective` comes before the first log event logged at or after it."""
    t = [time.time() - 3 * HOUR]
    lg = init_log(tmp_path / "t.db", ORIGIN, clock=lambda: t[0])
    lg.store.save_notify_state(lg.store.size(), {1})  # webhooks configured since the start
    seq = lg.sequencer(clock=lambda: t[0])
    due = int((time.time() - HOUR) * 1000)  # A's and C's effective_at
    t[0] = time.time() - 2 * HOUR
    a, _ = seq.publish_policy(_stricter("talent_discovery"), "A", effective_ms=due)
    t[0] = time.time() - 1.5 * HOUR
    b, _ = seq.publish_policy(_stricter("recommendation"), "B")
    t[0] += 1
    (first,) = append(seq, [dict(records(1, seed=2)[0], purpose="recommendation", phase="inference")])
    t[0] = time.time() - 1.4 * HOUR
    c, _ = seq.publish_policy(_stricter("talent_discovery", "search_indexing"), "C", effective_ms=due)
    t[0] = time.time() - 0.5 * HOUR
    (second,) = append(seq, [dict(records(1, seed=3)[0], purpose="model_training_generative", phase="training")])
    assert first.decision == second.decision == "refused"
    lg.close()

    key = os.urandom(32)
    receiver = Receiver(key, free_port())
    notifier = Notifier(SqliteStore(tmp_path / "t.db"), ORIGIN, Target(receiver.url, key), retry_base=0.05, retry_cap=0.2)
    await notifier.start()
    task = asyncio.create_task(notifier.run())
    try:
        await asyncio.sleep(0.5)
        receiver.start()
        for _ in range(200):
            if len(receiver.accepted()) >= 7:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()
        receiver.stop()
    got = [(d.event["type"], d.event["index"]) for d in receiver.accepted()]
    assert got == [("policy.announced", a), ("policy.announced", b), ("policy.effective", b),
                   ("use.refused", first.index), ("policy.announced", c), ("policy.effective", c),
                   ("use.refused", second.index)]
    # Stopped after all of it: the saved cursor says so, and a new notifier has nothing to send.
    store = SqliteStore(tmp_path / "t.db")
    assert store.notify_state() == (store.size(), {1, b, c})
    store.close()


# --- the notifier's tables ------------------------------------------------------------------------------


def test_the_cursor_tables_are_added_on_open_to_a_log_made_without_them(tmp_path):
    init_log(tmp_path / "t.db", ORIGIN).close()
    make_older(tmp_path / "t.db", "DROP TABLE notify_cursor", "DROP TABLE notify_effective")
    lg = open_log(tmp_path / "t.db")
    assert lg.store.notify_state() is None
    lg.store.save_notify_state(3, {1})
    lg.store.save_notify_state(5, {1, 4})
    assert lg.store.notify_state() == (5, {1, 4})
    lg.close()


def test_entries_of_reads_only_the_kinds_asked_for_in_the_range(log):
    seq = log.sequencer()
    seq.set_preferences("sc:user:1", {"no_ai": True}, by="artist")
    append(seq, records(20, artists=2))
    size = log.store.size()
    want = [e.index for e in log.store.entries(0, size) if e.type in ("preference", "refusal")]
    assert [e.index for e in log.store.entries_of(0, size, ("preference", "refusal"), ())] == want
    assert [e.index for e in log.store.entries_of(want[-1], size, ("preference", "refusal"), ())] == [want[-1]]
    assert log.store.entries_of(0, size, ("erasure",), ("allowed_override",)) == []  # never written: no such name


# --- the URL and the secret -------------------------------------------------------------------------------


def _secret(tmp_path: Path, value: bytes, mode: int) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(value)
    path.chmod(mode)
    return path


def test_the_secret_is_read_stripped_and_group_readable_is_allowed(tmp_path):
    target = load_target("https://hooks.example/tlog?token=abc", _secret(tmp_path, b"  " + b"s" * 32 + b"\n", 0o640))
    assert target.key == b"s" * 32 and target.shown == "https://hooks.example" and not target.in_clear
    assert load_target("http://hooks.example/", tmp_path / "secret").in_clear
    assert not load_target("http://127.0.0.1:8000/", tmp_path / "secret").in_clear
    assert "abc" not in repr(target) and "sss" not in repr(target)


@pytest.mark.parametrize("mode", [0o644, 0o602, 0o666])
def test_a_secret_file_every_user_may_read_or_change_is_refused(tmp_path, mode):
    path = _secret(tmp_path, b"k" * 40, mode)
    with pytest.raises(ValidationError) as err:
        load_target("http://127.0.0.1:9/x", path)
    assert "every user of this machine" in err.value.message and f"chmod 600 {path}" in err.value.message
    assert "kkkk" not in err.value.message


def test_a_short_secret_and_a_url_that_is_not_http_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="is 9 bytes long; use at least 32"):
        load_target("http://127.0.0.1:9/x", _secret(tmp_path, b"too short", 0o600))
    path = _secret(tmp_path, b"k" * 40, 0o600)
    for url in ("ftp://hooks.example/", "hooks.example/tlog", "http:///nohost"):
        with pytest.raises(ValidationError, match="must be an http:// or https:// URL"):
            load_target(url, path)


def test_serve_refuses_bad_notification_options_before_starting(tmp_path):
    db = tmp_path / "t.db"
    init_log(db, ORIGIN).close()
    runner = CliRunner()
    loose = _secret(tmp_path, b"k" * 40, 0o644)
    res = runner.invoke(main, ["serve", "--db", str(db), "--notify-url", "http://127.0.0.1:9/", "--notify-secret-file", str(loose)])
    assert res.exit_code == 2 and "every user of this machine" in res.output and "kkkk" not in res.output
    res = runner.invoke(main, ["serve", "--db", str(db), "--notify-url", "http://127.0.0.1:9/"])
    assert res.exit_code == 2 and "--notify-url and --notify-secret-file go together" in res.output


def test_the_verification_snippet_of_the_docs_is_the_one_the_test_receiver_runs():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "OPERATIONS.md").read_text()
    snippet = docs.split("```python\n", 1)[1].split("```", 1)[0]
    assert inspect.getsource(verify) in snippet
