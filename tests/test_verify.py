"""`verify_log` is the fsck: it passes on a sound log and names the first bad index of any tampering.

Every check runs both in this process over one range and in two worker processes over ranges of 32
leaves stitched together, with the same verdict at the same first bad index: the map, the policies in
effect and the decisions need state from before a range, which the stitching must carry."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any

import pytest

from tlog import artistmap
from tlog.errors import VerificationError
from tlog.log import open_log
from tlog.policy import DEFAULT_POLICY, decide, make_policy
from tlog.store.sqlite import node_id
from tlog.verify import verify_log

from .conftest import append, records

OPTED_OUT = "sc:user:1"  # denies recommendation from the start (index 3)


@pytest.fixture
def filled(log):
    """169 leaves: log, policy, map; a preference and its map (3, 4); four batches of 40 uses and a map."""
    seq = log.sequencer()
    seq.set_preferences(OPTED_OUT, {"purposes": {"recommendation": "deny"}}, by="artist")
    for seed in range(4):
        append(seq, records(40, seed=seed))
    return log


def _tamper(log, sql, *args):
    conn = sqlite3.connect(log.path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def _verify(log, **kw):
    fresh = open_log(log.path, readonly=True)
    try:
        return verify_log(fresh, **kw)
    finally:
        fresh.close()


def _fails(log, split, index: int, message: str) -> None:
    with pytest.raises(VerificationError) as err:
        _verify(log, **split)
    assert err.value.index == index, err.value.message
    assert err.value.message.startswith(f"index {index}: ") and message in err.value.message, err.value.message


SPLITS = [{}, {"workers": 2, "range_size": 32}]


@pytest.mark.parametrize("split", SPLITS)
def test_a_sound_log_verifies(filled, split):
    report = _verify(filled, **split)
    assert report.size == 169 and report.leaves == 169 and report.artists == 5
    assert report.checkpoints == 6  # init (3), the preference (5), four batches
    assert "ok:" in report.summary()
    refusals = [e for e in filled.store.entries(0, 169) if e.type == "refusal" and e.artist_id == OPTED_OUT]
    assert refusals  # the opt-out is in force: decisions depend on the preferences the checks carry


@pytest.mark.parametrize(
    "sql, args, index",
    [
        ("UPDATE entries SET content_id = 'sc:track:999' WHERE idx = ?", (57,), 57),
        ("UPDATE entries SET detail = 'altered' WHERE idx = ?", (90,), 90),
        ("UPDATE entries SET nonce = zeroblob(16) WHERE idx = ?", (12,), 12),
        ("UPDATE entries SET invocations = invocations + 1 WHERE idx = ?", (100,), 100),
        ("UPDATE entries SET logged_ms = logged_ms - 1000 WHERE idx = ?", (70,), 70),
        ("UPDATE entries SET aseq = aseq + 1 WHERE idx = ?", (80,), 80),
        ("UPDATE entries SET hash = zeroblob(32) WHERE idx = ?", (33,), 33),
        ("UPDATE nodes SET hash = zeroblob(32) WHERE id = ?", (node_id(3, 5),), 40),
        # With ranges of 32 leaves: a range's own root, and a node above the ranges (this process checks it).
        ("UPDATE nodes SET hash = zeroblob(32) WHERE id = ?", (node_id(5, 2),), 64),
        ("UPDATE nodes SET hash = zeroblob(32) WHERE id = ?", (node_id(6, 1),), 64),
        ("DELETE FROM nodes WHERE id = ?", (node_id(7, 0),), 0),
        ("DELETE FROM entries WHERE idx = ?", (44,), 44),
    ],
)
@pytest.mark.parametrize("split", SPLITS)
def test_tampering_is_found_at_the_first_bad_index(filled, sql, args, index, split):
    _tamper(filled, sql, *args)
    with pytest.raises(VerificationError) as err:
        _verify(filled, **split)
    assert err.value.index == index, err.value.message
    assert f"index {index}" in err.value.message


@pytest.mark.parametrize("split", SPLITS)
def test_a_forged_checkpoint_is_found(filled, split):
    _tamper(filled, "UPDATE checkpoints SET note = replace(note, X'0A0A', X'0A0A20') WHERE size = 87")
    with pytest.raises(VerificationError, match="checkpoint at size 87"):
        _verify(filled, **split)


def test_a_wrong_artist_tag_is_found(filled):
    first = next(e.index for e in filled.store.entries(0, 169) if e.artist_id == "sc:user:3")
    _tamper(filled, "UPDATE artists SET tag = zeroblob(32) WHERE artist_id = 'sc:user:3'")
    _fails(filled, {}, first, "the stored leaf hash does not match")


# --- a dishonest sequencer: every hash, node, signature and table agrees; only the rules can tell ------


def _append_dishonestly(log, monkeypatch, name: str, lie: Any, n: int = 40, seed: int = 9) -> list[Any]:
    """Appends a batch with `name` (in tlog.builder or tlog.artistmap) replaced by `lie` while it is
    built; returns the records and their results."""
    recs = records(n, seed=seed)
    with monkeypatch.context() as m:
        m.setattr(name, lie)
        results = append(log.sequencer(), recs)
    return list(zip(recs, results))


@pytest.mark.parametrize("split", SPLITS)
def test_a_decision_that_ignores_an_opt_out_is_found(filled, monkeypatch, split):
    # The artist's preferences are set at index 3, in another range than the lie: decided after stitching.
    def ignore_preferences(policy, purpose, content_id, prefs, basis=None):
        return decide(policy, purpose, content_id, None, basis)

    done = _append_dishonestly(filled, monkeypatch, "tlog.builder.decide", ignore_preferences)
    bad = next(res.index for rec, res in done if rec["artist_id"] == OPTED_OUT and rec["purpose"] == "recommendation")
    assert bad >= 169
    _fails(filled, split, bad, "the decision 'allowed' does not follow from policy 'default' and the artist's "
                               "preferences, which give 'refused'")


@pytest.mark.parametrize("split", SPLITS)
def test_a_decision_against_the_policy_default_is_found(filled, monkeypatch, split):
    def unflag(*args, **kwargs):
        honest = decide(*args, **kwargs)
        return "allowed" if honest == "flagged" else honest

    done = _append_dishonestly(filled, monkeypatch, "tlog.builder.decide", unflag, n=80)
    bad = next(res.index for rec, res in done if rec["purpose"] == "talent_discovery")
    _fails(filled, split, bad, "the decision 'allowed' does not follow from policy 'default'")


@pytest.mark.parametrize("split", SPLITS)
def test_preferences_unset_in_the_artists_table_are_found(filled, split):
    # Ranges that do not see the preference leaf trust the table to say the artist has none: that trust
    # is checked, and the error names the table, not the decisions it would make look wrong.
    _tamper(filled, "UPDATE artists SET preferences = NULL WHERE artist_id = ?", OPTED_OUT)
    _fails(filled, split, 3, f"the stored preferences of artist {OPTED_OUT!r} differ from its latest preference leaf")


@pytest.mark.parametrize("split", SPLITS)
def test_a_policy_decides_only_once_in_effect(filled, monkeypatch, split):
    seq = filled.sequencer()
    document = filled.store.policies()[0].document
    seq.publish_policy(document, "next", effective_ms=int(time.time() * 1000) + 30 * 86_400_000)  # index 169
    append(seq, records(20, seed=7))  # honest: decided by, and naming, "default" still
    assert _verify(filled, **split).size == 192

    def latest_announced(schedule, ms):
        return max(schedule, key=lambda s: s[1])[2]

    done = _append_dishonestly(filled, monkeypatch, "tlog.builder.in_effect", latest_announced, n=20)
    _fails(filled, split, done[0][1].index, "the use names policy 'next', but policy 'default' was in effect at its logged_at")


@pytest.mark.parametrize("split", SPLITS)
def test_a_loosening_published_without_the_notice_promised_is_found(filled, monkeypatch, split):
    """SPEC §4 Notice: the default policy (index 1, in another range) promised 30 days. Announced with
    them, a loosening passes; published at once by a sequencer whose check is bypassed (every hash,
    signature and table honest), it is found at its policy leaf."""
    def loose(policy_id: str) -> bytes:
        return make_policy(policy_id, [dataclasses.replace(p, default="allowed") if p.code == "model_training_generative"
                                       else p for p in DEFAULT_POLICY.purposes.values()], DEFAULT_POLICY.text).document

    filled.sequencer().publish_policy(loose("later"), "later", effective_ms=int(time.time() * 1000) + 31 * 86_400_000)
    append(filled.sequencer(), records(20, seed=7))  # indexes 171-190, decided by "default" still
    assert _verify(filled, **split).size == 192
    with monkeypatch.context() as m:
        m.setattr("tlog.builder.notice_problem", lambda *args: None)
        index, _ = filled.sequencer().publish_policy(loose("now"), "now")
    append(filled.sequencer(), records(20, seed=8))  # decided by "now", as the log says
    _fails(filled, split, index, "policy 'now' loosens 'default' — model_training_generative: refused → allowed — but "
                                 "takes effect at ")
    _fails(filled, split, index, "before the 30 days' notice 'default' promised (not before ")


@pytest.mark.parametrize("split", SPLITS)
def test_a_map_leaf_that_leaves_out_an_artist_is_found(filled, monkeypatch, split):
    real = artistmap.ArtistMap.update

    def forgetful(self, changes):
        return real(self, dict(sorted(changes.items())[1:]))

    done = _append_dishonestly(filled, monkeypatch, "tlog.artistmap.ArtistMap.update", forgetful)
    map_index = done[-1][1].index + 1  # the map leaf ends the batch
    _fails(filled, split, map_index, "the map leaf's root is not the artist map of the leaves before it")


def test_a_named_key_that_differs_is_refused(filled):
    from tlog.note import generate_key

    _, other = generate_key("test.tlog.example/log")
    fresh = open_log(filled.path, readonly=True)
    try:
        with pytest.raises(VerificationError, match="verifier key"):
            verify_log(fresh, vkey=other)
    finally:
        fresh.close()


def test_trusted_checkpoint_from_a_fork_is_refused(filled):
    # A split view: an older checkpoint signed by the real key over a different history.
    from tlog.checkpoint import Checkpoint
    from tlog.note import sign_note

    forged = sign_note(Checkpoint(filled.origin, 46, bytes(32)).body(), filled.signers)
    fresh = open_log(filled.path, readonly=True)
    try:
        with pytest.raises(VerificationError, match="fork"):
            verify_log(fresh, trusted=forged)
        good = filled.store.checkpoint_at(87)
        assert verify_log(fresh, trusted=good).size == 169
    finally:
        fresh.close()


def test_an_empty_log_is_refused(tmp_path):
    """Signed, but holding not even its log leaf: no checkpoint of size 0 ends at a map leaf."""
    from tlog import merkle
    from tlog.checkpoint import Checkpoint
    from tlog.note import Signer, generate_key, sign_note
    from tlog.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "empty.db", create=True)
    signer, vkey = generate_key("empty.example/log")
    store.set_meta("origin", "empty.example/log")
    store.set_meta("vkey", vkey)
    note = sign_note(Checkpoint("empty.example/log", 0, merkle.EMPTY_ROOT).body(), [Signer.from_key(signer)])
    store.conn.execute("INSERT INTO checkpoints VALUES (0, ?, 0)", (note,))
    store.close()
    empty = open_log(tmp_path / "empty.db", readonly=True)
    try:
        with pytest.raises(VerificationError, match="^a checkpoint of size 0 has no map leaf to end at"):
            verify_log(empty)
    finally:
        empty.close()
