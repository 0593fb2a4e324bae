"""`tlog erase` (SPEC §2.2, §7) on a log on disk: what goes (every private field of the artist, its id,
preferences and tokens, down to the raw bytes of the database and its WAL), what stays (every public
leaf, checkpoint, map root and statistic), the fsck's verdicts (an entry is erased only where a later
erasure leaf of its tag says so; tampering with an erased entry's public fields is still caught), an
artist whose id comes back, idempotence, and the command's prompt and exit codes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from tlog import erasure
from tlog.cli import main
from tlog.errors import VerificationError
from tlog.leaf import parse_leaf
from tlog.log import LocalLog, open_log
from tlog.records import artist_tag
from tlog.rederive import iter_leaves
from tlog.tokens import new_token
from tlog.verify import verify_log

from .conftest import append

GONE = "sc:user:erase-me"
KEPT = "sc:user:stays"
# Strings only the erased artist's data holds: none may be left anywhere in the files.
SECRETS = [GONE, "sc:track:secret-1", "sc:track:secret-2", "ev-secret-1", "ev-secret-2", "a secret detail text",
           "sc:track:secret-pref"]


def use(event_id: str, artist: str, content: str, purpose: str = "recommendation", detail: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id, "content_id": content, "artist_id": artist, "purpose": purpose,
            "phase": "inference", "system": {"id": "recs", "model": "ranker", "version": "1"},
            "occurred_at": "2026-08-01T12:00:00Z", "invocations": 3, "detail": detail}


def fill(log: LocalLog) -> None:
    """Two artists' uses, preferences (one naming a track of the erased artist) and tokens."""
    seq = log.sequencer()
    append(seq, [use("ev-secret-1", GONE, "sc:track:secret-1", detail="a secret detail text"),
                 use("ev-kept-1", KEPT, "sc:track:kept-1")])
    seq.set_preferences(GONE, {"purposes": {"recommendation": "deny"}, "content": {"sc:track:secret-pref": {"no_ai": True}}},
                        by="artist")
    (refused,) = append(seq, [use("ev-secret-2", GONE, "sc:track:secret-2")])
    assert refused.decision == "refused"  # the preferences decide
    append(seq, [use("ev-kept-2", KEPT, "sc:track:kept-2")])
    seq.close()
    for subject in (GONE, GONE, KEPT):
        log.store.add_token("artist", subject, new_token()[1], 0)


def raw_bytes(db: Path) -> bytes:
    wal = Path(f"{db}-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def public_view(log: LocalLog, size: int) -> list[bytes]:
    return [leaf for _, leaf, _ in iter_leaves(log.store, 0, size)]


def test_erasure_deletes_the_private_data_and_keeps_every_proof(log):
    fill(log)
    store = log.store
    size = store.size()
    before = public_view(log, size)
    checkpoints = list(store.iter_checkpoints())
    stats = store.stats()
    tag = store.artist_state(GONE).tag
    assert all(s.encode() in raw_bytes(log.path) for s in SECRETS)  # the test would see them

    done, tokens = erasure.erase(log, GONE, "account deleted")

    assert done is not None and done.index == size and len(done.entries) == 3  # two uses and a preference
    assert tokens == 0  # deleted within the batch
    assert public_view(log, size) == before and list(store.iter_checkpoints())[: len(checkpoints)] == checkpoints
    erasure_leaf, map_leaf = (parse_leaf(leaf) for leaf in public_view(log, size + 2)[size:])
    assert (erasure_leaf.type, erasure_leaf.artist, erasure_leaf.erased) == ("erasure", tag, 3)
    assert map_leaf.type == "map" and map_leaf.root == parse_leaf(before[-1]).root  # the map did not change
    assert [row for row in store.stats() if row[1] != "erasure" and row[1] != "map"] == \
           [row for row in stats if row[1] != "map"]  # the uses' figures are unchanged
    assert store.artist_state(GONE) is None and store.artist_state(KEPT) is not None
    assert [t.subject for t in store.tokens()] == [KEPT]
    assert [(x.index, x.tag, x.reason) for x in store.erasures()] == [(size, tag, "account deleted")]
    erased = [e for e in store.entries(0, size) if e.tag == tag]
    assert [e.erased for e in erased] == [size] * 3 and all("content_id" not in e.details for e in erased)
    verify_log(log)
    data = raw_bytes(log.path)
    assert not [s for s in SECRETS if s.encode() in data]
    assert Path(f"{log.path}-wal").stat().st_size == 0
    assert b"sc:track:kept-1" in data  # the other artist's data stays


def test_erasing_again_changes_nothing_but_deletes_a_new_token(log):
    fill(log)
    erasure.erase(log, GONE, "account deleted")
    size, cp = log.store.size(), log.store.latest_checkpoint()
    assert erasure.plan(log.store, GONE).empty
    assert erasure.erase(log, GONE, "account deleted") == (None, 0)
    assert (log.store.size(), log.store.latest_checkpoint()) == (size, cp)
    log.store.add_token("artist", GONE, new_token()[1], 0)  # made after the erasure
    assert erasure.plan(log.store, GONE).tokens == 1
    assert erasure.erase(log, GONE, "account deleted") == (None, 1)
    assert log.store.size() == size and [t.subject for t in log.store.tokens()] == [KEPT]
    assert erasure.erase(log, "sc:user:never-seen", "account deleted") == (None, 0)
    verify_log(log)


def test_a_token_of_several_artists_keeps_covering_the_others(log):
    """A label's token names the erased artist among others: it loses that id and keeps the rest."""
    fill(log)
    label = log.store.add_token("artist", f"sc:user:other {GONE} {KEPT}", new_token()[1], 0)
    assert erasure.plan(log.store, GONE).tokens == 3
    erasure.erase(log, GONE, "account deleted")
    assert [(t.token_id, t.subject) for t in log.store.tokens() if t.subject != KEPT] == [(label, f"sc:user:other {KEPT}")]
    assert GONE.encode() not in raw_bytes(log.path)


def test_an_erased_artist_that_returns_keeps_its_tag_and_its_chain_goes_on(log):
    fill(log)
    tag = log.store.artist_state(GONE).tag
    first = erasure.erase(log, GONE, "account deleted")[0]
    seq = log.sequencer()
    (again,) = append(seq, [use("ev-back-1", GONE, "sc:track:back-1")])
    seq.close()
    state = log.store.artist_state(GONE)
    assert state.tag == tag == artist_tag(log.vrf, GONE)[0]
    assert (state.aseq, state.head) == (4, again.index)  # three erased entries, then this one
    leaf = parse_leaf(again.leaf)
    assert (leaf.aseq, leaf.aprev) == (4, first.entries[-1][0])
    # The erased preferences denied recommendation: after the erasure leaf they count as none (SPEC §4).
    assert again.decision == "allowed"
    verify_log(log)
    second = erasure.erase(log, GONE, "asked again")[0]
    assert [i for i, _ in second.entries] == [again.index]  # only what the first erasure did not cover
    assert parse_leaf(public_view(log, second.index + 1)[-1]).erased == 1
    verify_log(log)
    assert not [s for s in [*SECRETS, "sc:track:back-1"] if s.encode() in raw_bytes(log.path)]


def _entry_row(log: LocalLog, index: int) -> dict[str, Any]:
    conn = sqlite3.connect(log.path)
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM entries WHERE idx = ?", (index,)).fetchone())
    finally:
        conn.close()


def _write(log: LocalLog, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(log.path)
    try:
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def _fsck_fails(log: LocalLog, index: int, message: str) -> None:
    with pytest.raises(VerificationError) as err:
        verify_log(open_log(log.path, readonly=True))
    assert err.value.index == index and message in err.value.message, err.value.message


def test_the_fsck_believes_an_erasure_only_from_a_later_erasure_leaf(log):
    """An entry of another artist made to look erased (its public fields kept, so its leaf and hash still
    match) is refused: no erasure leaf of its tag follows it."""
    fill(log)
    erasure.erase(log, GONE, "account deleted")
    kept = next(e for e in log.store.entries(0, log.store.size()) if e.artist_id == KEPT and e.type == "use")
    ((_, leaf, _),) = list(iter_leaves(log.store, kept.index, kept.index + 1))
    public = {k: v for k, v in orjson.loads(leaf).items() if k not in ("v", "type", "prev", "logged_at", "artist", "aseq", "aprev")}
    erasure_index = log.store.erasures()[0].index
    _write(log, "UPDATE entries SET event_id = NULL, content_id = NULL, service = NULL, system = NULL, occurred_at = NULL, "
                "nonce = NULL, extra = ? WHERE idx = ?", orjson.dumps({"erased": erasure_index, "leaf": public}).decode(),
           kept.index)
    _fsck_fails(log, kept.index, "no erasure leaf of its artist follows it")


def test_a_flipped_byte_in_an_erased_entrys_public_leaf_is_caught(log):
    fill(log)
    done = erasure.erase(log, GONE, "account deleted")[0]
    index = done.entries[0][0]
    extra = _entry_row(log, index)["extra"]
    _write(log, "UPDATE entries SET extra = ? WHERE idx = ?", extra.replace('"invocations":3', '"invocations":4'), index)
    _fsck_fails(log, index, "does not match")


def test_an_erasure_left_half_done_is_caught(tmp_path, log):
    """An entry that an erasure leaf covers but that still holds its details (as if the erasure had not
    deleted it, nor the artist's id) fails the fsck: erasure is all or nothing."""
    fill(log)
    copy = tmp_path / "before.db"
    log.store.conn.execute(f"VACUUM INTO '{copy}'")
    done = erasure.erase(log, GONE, "account deleted")[0]
    index = done.entries[0][0]
    conn = sqlite3.connect(log.path)
    conn.execute(f"ATTACH '{copy}' AS old")
    conn.execute("UPDATE entries SET (service, event_id, content_id, purpose, phase, system, occurred_at, window_end, "
                 "invocations, detail, basis, decision, policy, nonce, extra) = (SELECT service, event_id, content_id, "
                 "purpose, phase, system, occurred_at, window_end, invocations, detail, basis, decision, policy, nonce, "
                 "extra FROM old.entries o WHERE o.idx = entries.idx) WHERE idx = ?", (index,))
    conn.execute("UPDATE artists SET (artist_id, proof, preferences) = (SELECT artist_id, proof, preferences FROM "
                 "old.artists o WHERE o.id = artists.id) WHERE artist_id IS NULL")
    conn.commit()
    conn.close()
    _fsck_fails(log, index, "still holds private details")


def test_a_log_written_without_secure_delete_is_vacuumed(log):
    """Measured: secure_delete switched on only for the erasure leaves copies that earlier page splits
    left in the slack of pages. A log whose history may have been written without it (no meta mark) is
    rebuilt by VACUUM before the WAL is truncated."""
    log.store.conn.execute("PRAGMA secure_delete = OFF")
    log.store.conn.execute("DELETE FROM meta WHERE key = 'secure_delete'")
    seq = log.sequencer()
    for k in range(40):  # enough rows to split pages of the event index, each batch its own transaction
        append(seq, [use(f"ev-secret-{k}-{n}", GONE, f"sc:track:secret-{k}") if n % 7 == 0 else  # each track one artist's
                     use(f"ev-secret-{k}-{n}", f"sc:user:o{n}", f"sc:track:other-{k}-{n}") for n in range(30)])
        append(seq, [use(f"ev-kept-{k}", KEPT, "sc:track:kept-1")])
    seq.close()
    erasure.erase(log, GONE, "account deleted")
    assert log.store.get_meta("secure_delete") == "since vacuum"
    data = raw_bytes(log.path)
    assert GONE.encode() not in data and b"ev-secret-0-0" not in data and b"ev-secret-0-1" in data
    verify_log(log)


# --- the command ----------------------------------------------------------------------------------------


def run(log: LocalLog, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["erase", "--db", str(log.path), *args], input=input)


def test_the_command_says_what_it_removes_and_asks(log):
    fill(log)
    size = log.store.size()
    result = run(log, "--artist", GONE, "--reason", "account deleted", input="n\n")
    assert result.exit_code == 2, result.output
    assert ("this erases, for artist sc:user:erase-me: its id, the private details of 3 entries (1 preference change, "
            "1 refusal, 1 use), its current preferences, 2 tokens") in result.output
    assert "nothing was erased" in result.output
    assert log.store.size() == size and log.store.artist_state(GONE) is not None
    assert run(log, "--artist", GONE, "--reason", "account deleted", input="").exit_code == 2  # no answer: no
    result = run(log, "--artist", GONE, "--reason", "account deleted", input="y\n")
    assert result.exit_code == 0, result.output
    assert f"erased 3 entries of artist {GONE}: erasure leaf at index {size}" in result.output
    result = run(log, "--artist", GONE, "--reason", "account deleted")
    assert result.exit_code == 0 and "nothing to erase" in result.output, result.output


def test_the_command_with_yes_does_not_ask(log):
    fill(log)
    result = run(log, "--artist", GONE, "--reason", "account deleted", "--yes")
    assert result.exit_code == 0 and "erased 3 entries" in result.output, result.output


@pytest.mark.parametrize("reason, why", [("", "1–500 printable"), ("  ", "1–500 printable"), ("x" * 501, "1–500"),
                                         ("asked by sc:user:erase-me", "must not name the artist")])
def test_a_bad_reason_is_refused_and_nothing_changes(log, reason, why):
    fill(log)
    size = log.store.size()
    result = run(log, "--artist", GONE, "--reason", reason, "--yes")
    assert result.exit_code == 2 and why in result.output and "Traceback" not in result.output, result.output
    assert log.store.size() == size and log.store.artist_state(GONE) is not None


def test_erasure_deletes_the_artists_feed_keys(log):
    fill(log)
    keys = {who: new_token("tlogfeed_") for who in (GONE, KEPT)}
    for who, (_, digest) in keys.items():
        log.store.add_feed_key(who, digest, 0)
    erasure.erase(log, GONE, "account deleted")
    assert log.store.feed_key(keys[GONE][1]) is None
    assert log.store.feed_key(keys[KEPT][1])[1] == KEPT
    later = new_token("tlogfeed_")  # made after the erasure, with nothing left to erase: deleted all the same
    log.store.add_feed_key(GONE, later[1], 0)
    assert erasure.erase(log, GONE, "account deleted") == (None, 0)
    assert log.store.feed_key(later[1]) is None
    assert GONE.encode() not in raw_bytes(log.path)


async def test_a_returning_artists_feed_shows_its_erased_entries_as_erased(aiohttp_client, log):
    import feedparser

    from tlog.server.app import make_app

    fill(log)
    erasure.erase(log, GONE, "account deleted")
    seq = log.sequencer()
    append(seq, [use("ev-back-1", GONE, "sc:track:back-1")])  # the id comes back
    seq.close()
    key, digest = new_token("tlogfeed_")
    log.store.add_feed_key(GONE, digest, 0)
    reader = open_log(log.path)
    try:
        client = await aiohttp_client(make_app(reader))
        response = await client.get(f"/feeds/artists/{GONE}.atom", params={"key": key})
        assert response.status == 200
        body = await response.text()
    finally:
        reader.close()
    feed = feedparser.parse(body)
    assert feed.bozo == 0
    titles = [e.title for e in feed.entries]
    assert titles[0] == "Recommendation of sc:track:back-1: allowed"
    assert sorted(titles[1:]) == ["An entry erased on request (preference)", "An entry erased on request (refusal)",
                                  "An entry erased on request (use)"]
    assert not [s for s in SECRETS[1:] if s in body]
