"""`verify_log` is the fsck: it passes on a sound log and names the first bad index of any tampering."""

from __future__ import annotations

import sqlite3

import pytest

from tlog.errors import VerificationError
from tlog.log import open_log
from tlog.store.sqlite import node_id
from tlog.verify import verify_log

from .conftest import append, records


@pytest.fixture
def filled(log):
    seq = log.sequencer()
    seq.set_preferences("sc:user:1", {"no_ai": True}, by="artist")
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


# One range in this process, and small ranges in two worker processes stitched together: the same
# verdicts, at the same first bad index.
SPLITS = [{}, {"workers": 2, "range_size": 32}]


@pytest.mark.parametrize("split", SPLITS)
def test_a_sound_log_verifies(filled, split):
    report = _verify(filled, **split)
    assert report.size == 162 and report.leaves == 162
    assert report.checkpoints == 7  # size 0, init, preference, four batches
    assert "ok:" in report.summary()


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
    _tamper(filled, "UPDATE checkpoints SET note = replace(note, X'0A0A', X'0A0A20') WHERE size = 82")
    with pytest.raises(VerificationError, match="checkpoint at size 82"):
        _verify(filled, **split)


def test_a_wrong_artist_tag_is_found(filled):
    _tamper(filled, "UPDATE artists SET tag = zeroblob(32) WHERE artist_id = 'sc:user:3'")
    with pytest.raises(VerificationError):
        _verify(filled)


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

    forged = sign_note(Checkpoint(filled.origin, 41, bytes(32)).body(), filled.signers)
    fresh = open_log(filled.path, readonly=True)
    try:
        with pytest.raises(VerificationError, match="fork"):
            verify_log(fresh, trusted=forged)
        good = filled.store.checkpoint_at(82)
        assert verify_log(fresh, trusted=good).size == 162
    finally:
        fresh.close()
