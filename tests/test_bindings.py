"""Content bound to its artists (SPEC §2.1) on a real log: first sight, catalogue bindings and releases as
`binding` leaves, the 409 that keeps a mislabelled artist id from routing around an opt-out (nothing of the
request logged), the log's own id pattern, the bindings table on open, and what `tlog verify --db`
replays and reports."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tlog import verify
from tlog.bindings import BindingReplay, unshared
from tlog.errors import Conflict, StorageError, ValidationError, VerificationError
from tlog.leaf import parse_leaf
from tlog.log import init_log, open_log
from tlog.records import validate_use
from tlog.rederive import iter_leaves
from tlog.server.errors import http_status
from tlog.sequencer import Submission
from tlog.store.base import UseFilter
from tlog.store.sqlite import SqliteStore

from .conftest import append, make_older, records

A, B, C = "sc:user:42", "sc:user:77", "sc:user:9"


def use(event_id: str, artist_id: str, content_id: str = "sc:track:1", **kw):
    return records(1, artist_id=artist_id, content_id=content_id, event_id=event_id, **kw)[0]


def leaves(log, start: int, end: int):
    return [parse_leaf(leaf) for _, leaf, _ in iter_leaves(log.store, start, end)]


def test_first_sight_binds_the_content_to_the_artist_its_first_use_names(log):
    seq = log.sequencer()
    size = log.store.size()
    (first,) = append(seq, [use("e1", A)])
    assert log.store.content_artists("sc:track:1") == [(A, first.index)]
    assert log.store.size() == size + 2  # the use and the map leaf: no binding leaf of its own
    append(seq, [use("e2", A)])  # the same artist again: fine
    with pytest.raises(Conflict) as exc:
        append(seq, [use("e3", B)])
    assert http_status(exc.value) == 409
    assert exc.value.message.startswith("content 'sc:track:1' is bound to 'sc:user:42', not to 'sc:user:77'")
    assert exc.value.details == [{"field": "records[0].artist_id", "message": "'sc:track:1' is not bound to 'sc:user:77'"}]


@pytest.mark.parametrize("lookalike", ["SC:USER:42", "sc:user:42/", "sc:user:042", "sc:user:42.", "sc:user:4２"])
def test_a_lookalike_artist_id_does_not_escape_the_artists_opt_out(log, lookalike):
    seq = log.sequencer()
    seq.set_preferences(A, {"no_ai": True}, by="artist")
    (refused,) = append(seq, [use("t1", A, purpose="model_training_generative", phase="training")])
    assert refused.decision == "refused"
    size, note = log.store.size(), log.store.latest_checkpoint()
    with pytest.raises((Conflict, ValidationError)) as exc:  # 409 by the binding, 400 by the id pattern (non-ASCII)
        append(seq, [use("t2", lookalike, purpose="model_training_generative", phase="training")])
    assert http_status(exc.value) == (400 if not lookalike.isascii() else 409)
    assert (log.store.size(), log.store.latest_checkpoint()) == (size, note)
    assert log.store.artist_state(lookalike) is None


def test_a_refused_request_logs_nothing_and_binds_nothing(log):
    seq = log.sequencer()
    append(seq, [use("e1", A)])
    size = log.store.size()
    # The first record would bind sc:track:new to B at first sight; the second is refused, so neither stands.
    with pytest.raises(Conflict):
        append(seq, [use("e2", B, "sc:track:new"), use("e3", B)])
    assert log.store.size() == size and log.store.content_artists("sc:track:new") == []
    append(seq, [use("e4", C, "sc:track:new")])  # still unbound: C's first use binds it
    assert [a for a, _ in log.store.content_artists("sc:track:new")] == [C]


def test_a_rejected_submission_does_not_undo_the_others_in_its_batch(log):
    seq = log.sequencer()
    append(seq, [use("e1", A)])
    now = datetime.now(timezone.utc)
    ok = Submission("recsys", [validate_use(use("e2", B, "sc:track:2"), now=now, purposes=seq.policy.purposes)])
    bad = Submission("recsys", [validate_use(use("e3", C, "sc:track:3"), now=now, purposes=seq.policy.purposes),
                                validate_use(use("e4", C), now=now, purposes=seq.policy.purposes)])
    later = Submission("other", [validate_use(use("e5", C, "sc:track:3"), now=now, purposes=seq.policy.purposes)])
    first, refused, last = seq.append_uses([ok, bad, later])
    assert isinstance(refused, Conflict) and not isinstance(first, Exception) and not isinstance(last, Exception)
    assert {c: [a for a, _ in log.store.content_artists(c)] for c in ("sc:track:2", "sc:track:3")} == {
        "sc:track:2": [B], "sc:track:3": [C]}


def test_the_catalogue_binds_co_owners_who_then_log_their_own_uses(log):
    seq = log.sequencer()
    append(seq, [use("e1", A)])
    changes = seq.set_content_artists("sc:track:1", [A, B], service="catalogue")
    assert [(c.artist_id, c.change) for c in changes] == [(B, "bind")]  # A was bound at first sight
    (own,) = append(seq, [use("e2", B)])
    assert own.decision == "allowed"
    leaf = leaves(log, changes[0].index, changes[0].index + 1)[0]
    details = log.store.entry(changes[0].index).details
    assert leaf.type == "binding" and leaf.artist == log.store.artist_state(B).tag and leaf.aseq == 1
    assert {k: details[k] for k in ("artist_id", "content_id", "change", "service")} == {
        "artist_id": B, "content_id": "sc:track:1", "change": "bind", "service": "catalogue"}
    assert len(details["nonce"]) == 24  # 16 bytes, base64: the commitment hides the content id
    # Releasing A (the list replaces the content's artists): A's chain gets the release, A's uses stop.
    (release,) = seq.set_content_artists("sc:track:1", [B], service="catalogue")
    assert (release.artist_id, release.change) == (A, "release")
    assert log.store.entry(release.index).details["change"] == "release"
    with pytest.raises(Conflict):
        append(seq, [use("e3", A)])
    assert seq.set_content_artists("sc:track:1", [B]) == []  # no change, no leaf
    verify.verify_log(log)


def test_bind_and_release_from_the_shell_keep_at_least_one_artist(log):
    seq = log.sequencer()
    assert [c.change for c in seq.bind_content("sc:track:9", [A, B])] == ["bind", "bind"]
    assert [c.change for c in seq.release_content("sc:track:9", B)] == ["release"]
    size = log.store.size()
    with pytest.raises(ValidationError, match="must stay bound to at least one artist"):
        seq.release_content("sc:track:9", A)
    with pytest.raises(ValidationError, match="is not bound to"):
        seq.release_content("sc:track:9", C)
    with pytest.raises(ValidationError, match="not a platform id"):
        seq.bind_content("sc:track:9", ["sc:user:4 2"])
    assert log.store.size() == size and [a for a, _ in log.store.content_artists("sc:track:9")] == [A]


def test_a_duplicate_event_is_answered_as_before_even_after_a_rebinding(log):
    seq = log.sequencer()
    (first,) = append(seq, [use("e1", A)])
    seq.set_content_artists("sc:track:1", [B])
    (again,) = append(seq, [use("e1", A)])
    assert again.duplicate and (again.index, again.leaf_hash) == (first.index, first.leaf_hash)


def test_bindings_cross_the_process_writer(log):
    seq = log.sequencer(writer=log.process_writer())
    try:
        tickets = [seq.submit_uses([Submission("recsys", [validate_use(use(f"p{i}", A, f"sc:track:p{i}"), now=datetime.now(timezone.utc),
                                                                       purposes=seq.policy.purposes)])]) for i in range(3)]
        for t in tickets:
            seq.wait(t)
        # Built while the first batches were in flight: the binding they made is seen before it is durable.
        (refused,) = seq.wait(seq.submit_uses([Submission("recsys", [validate_use(
            use("p9", B, "sc:track:p0"), now=datetime.now(timezone.utc), purposes=seq.policy.purposes)])]))
        assert isinstance(refused, Conflict)
        seq.bind_content("sc:track:p1", [B])
    finally:
        seq.close()
    assert [a for a, _ in log.store.content_artists("sc:track:p1")] == [A, B]
    verify.verify_log(log)


def test_the_logs_own_id_pattern_narrows_the_default(tmp_path: Path):
    with pytest.raises(ValidationError, match="not a regular expression"):
        init_log(tmp_path / "bad.db", "test.tlog.example/log", id_pattern="sc:(")
    assert not (tmp_path / "bad.db").exists()
    log = init_log(tmp_path / "t.db", "test.tlog.example/log", id_pattern=r"sc:(track|user):[0-9]+")
    try:
        seq = log.sequencer()
        append(seq, [use("ok", "sc:user:1", "sc:track:5")])
        size = log.store.size()
        with pytest.raises(ValidationError) as exc:
            append(seq, [use("no", "sc:user:x1", "sc:track:5")])
        assert exc.value.details[0]["field"] == "records[0].artist_id"
        with pytest.raises(ValidationError, match="does not match the log's id pattern"):
            seq.bind_content("sc:track:five", ["sc:user:1"])
        with pytest.raises(ValidationError, match="does not match the log's id pattern"):
            seq.set_preferences("sc:artist:1", {"no_ai": True}, by="artist")
        assert log.store.size() == size
    finally:
        log.close()


def test_a_log_from_before_bindings_binds_each_content_to_its_first_uses_artist_on_open(log):
    seq = log.sequencer()
    append(seq, [use("e1", A), use("e2", B, "sc:track:2")])
    path = log.path
    log.close()
    make_older(path, "DROP TABLE bindings",
               "CREATE TABLE t AS SELECT id, role, subject, digest, created_ms, revoked_ms FROM tokens",
               "DROP TABLE tokens", "ALTER TABLE t RENAME TO tokens")
    with pytest.raises(StorageError, match=r"needs its tables upgraded \(tables, .*bindings, token_rights_expiry, usage\)"
                       r".*tlog upgrade --db"):
        SqliteStore(path, readonly=True)  # read-only: nothing is added, so nothing would be bound
    again = open_log(path)
    try:
        assert {c: [x for x, _ in again.store.content_artists(c)] for c in ("sc:track:1", "sc:track:2")} == {
            "sc:track:1": [A], "sc:track:2": [B]}
        token_id = again.store.add_token("service", "cat", b"d" * 32, 1, rights=frozenset({"catalog"}))
        assert again.store.token_by_digest(b"d" * 32).rights == {"catalog"} and token_id == 1
        verify.verify_log(again)
    finally:
        again.close()


def test_verify_finds_a_stored_binding_the_leaves_do_not_make(log):
    seq = log.sequencer()
    (first,) = append(seq, [use("e1", A)])
    artist_b = seq.bind_content("sc:track:2", [B])[0]
    conn = sqlite3.connect(log.path)
    conn.execute("UPDATE bindings SET artist = (SELECT id FROM artists WHERE artist_id = ?) WHERE content_id = 'sc:track:1'", (B,))
    conn.commit()
    conn.close()
    with pytest.raises(VerificationError, match=rf"index {first.index}: the stored artists of content 'sc:track:1' differ"):
        verify.verify_log(log)
    assert artist_b.index > first.index


def test_verify_reports_uses_of_co_owned_content_not_logged_for_every_artist(log):
    seq = log.sequencer()
    seq.bind_content("sc:track:1", [A, B])
    both = [use("a1", A), use("b1", B)]  # the same use (same service, content, purpose, system, time) for each
    append(seq, both)
    (lone,) = append(seq, [use("a2", A, occurred_at="2026-01-02T00:00:00Z")])
    append(seq, [use("o1", C, "sc:track:solo")])  # content of one artist: nothing to share
    report = verify.verify_log(log)
    assert [(u.index, u.logged_for, u.missing) for u in report.unshared] == [(lone.index, (A,), (B,))]
    assert report.unshared[0].message().startswith(f"index {lone.index}: recsys's recommendation use of 'sc:track:1' at "
                                                   f"2026-01-02T00:00:00Z was logged for {A} but not for {B}")


def test_replay_of_bindings_is_first_sight_then_leaves():
    r = BindingReplay()
    r.use(3, "c", A)
    r.use(4, "c", B)  # not the sequencer's doing (it refuses this), but a replay only records
    r.binding(5, "c", B, "bind")
    r.use(6, "c", A)
    r.binding(7, "c", A, "release")
    r.use(8, "c", B)
    assert r.bound == {"c": {B: 5}} and r.co_owned == {6: frozenset({A, B})}
    key = ("c", "svc", "p", "ph", "s", "m", "v", "t", None)
    assert unshared([(6, A, key)], r.co_owned)[0].missing == (B,)
    assert unshared([(6, A, key), (9, B, key)], r.co_owned) == []


def test_binding_entries_are_listed_with_their_content(log):
    seq = log.sequencer()
    (c,) = seq.bind_content("sc:track:1", [A])
    listed = log.store.artist_entries(A, UseFilter(content_id="sc:track:1"), 10)
    assert [(e.index, e.type) for e in listed] == [(c.index, "binding")]
    assert listed[0].details["content_id"] == "sc:track:1"


def test_an_erased_artists_contents_are_released_with_it(log):
    seq = log.sequencer()
    append(seq, [use("e1", A), use("e2", A, "sc:track:2")])
    seq.bind_content("sc:track:2", [B])
    assert seq.erase(A, "account deleted") is not None
    assert log.store.content_artists("sc:track:1") == []
    assert [a for a, _ in log.store.content_artists("sc:track:2")] == [B]
    (again,) = append(seq, [use("e3", C)])  # sc:track:1 was A's alone: its next first use binds it
    assert log.store.content_artists("sc:track:1") == [(C, again.index)]
    with pytest.raises(Conflict):
        append(seq, [use("e4", A, "sc:track:2")])  # the id, returning, finds its co-owned track rebound
    verify.verify_log(log)
