"""Tamper detection: flip one byte (or bit) in each thing tlog stores and show `tlog verify` finds it and
says where: the first bad index where there is one, else the checkpoint, table or file.

Leaves themselves are not stored (they are re-derived from the details, see ARCHITECTURE.md), so "a
leaf" here is its details row, its names, its artist row and its leaf hash. tests/test_verify.py covers
zeroed nodes and a few details columns through the library; this covers every stored kind through the
CLI, malformed rows that once crashed the fsck, the key files, and what a remote verifier sees.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from click.testing import CliRunner

from tlog import merkle
from tlog.checkpoint import Checkpoint
from tlog.cli import main
from tlog.demo import build_demo
from tlog.log import key_paths, open_log
from tlog.note import sign_note
from tlog.rederive import entry_leaf
from tlog.store.sqlite import node_id
from tlog.vrf import VrfSecret

from .faultkit import serve, stop


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """314 leaves: the log leaf, the default policy and a map leaf (0-2); 4 preferences, each with its map
    leaf (3-10); 300 uses (11-310) and a map leaf; a second policy and its map leaf (312, 313). A full
    tile of 256 and a partial one."""
    db = tmp_path_factory.mktemp("tamper-src") / "tlog.db"
    build_demo(str(db), 300, origin="tamper.example/log")
    log = open_log(db, secrets_needed=True)
    try:
        log.sequencer().publish_policy(log.store.policies()[0].document, "2026-12")
    finally:
        log.close()
    return db


@pytest.fixture
def db(source, tmp_path) -> Path:
    """A private copy of the source log with its key files."""
    out = tmp_path / "tlog.db"
    shutil.copy(source, out)
    for src, dst in zip(key_paths(source), key_paths(out)):
        shutil.copy(src, dst)
    return out


def _q(db: Path, sql: str, *args: Any) -> Any:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchone()
    finally:
        conn.close()


def _x(db: Path, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def flip(db: Path, table: str, column: str, where: str, *args: Any, byte: int = 0, bit: int = 0,
         as_text: bool = False) -> None:
    """Flips one bit of one stored value: the low bit of an integer, bit `bit` of byte `byte` of a string
    or blob (negative `byte` counts from the end). `as_text` writes the flipped bytes back as TEXT
    even if they are no longer UTF-8, as a disk's bit rot would."""
    (value,) = _q(db, f"SELECT {column} FROM {table} WHERE {where}", *args)
    if isinstance(value, int):
        new: Any = value ^ (1 << bit)
    else:
        raw = bytearray(value.encode() if isinstance(value, str) else value)
        raw[byte] ^= 1 << bit
        new = bytes(raw) if isinstance(value, bytes) else raw.decode("utf-8", "surrogateescape")
        if as_text:
            _x(db, f"UPDATE {table} SET {column} = CAST(? AS TEXT) WHERE {where}", bytes(raw), *args)
            return
    _x(db, f"UPDATE {table} SET {column} = ? WHERE {where}", new, *args)


def verify_cli(db: Path) -> str:
    """Runs `tlog verify --db`; returns its one-line error (it must fail with exactly one line)."""
    result = CliRunner().invoke(main, ["verify", "--db", str(db), "--quiet"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert not re.match(r"error: index \d+: index ", lines[0]), lines[0]
    return lines[0].removeprefix("error: ")


def test_the_source_log_verifies(source):
    result = CliRunner().invoke(main, ["verify", "--db", str(source), "--quiet"])
    assert result.exit_code == 0 and "size 314: 314 leaves" in result.output, result.output


def _use(db: Path, at_least: int = 0, extra: str = "") -> int:
    return _q(db, f"SELECT min(idx) FROM entries WHERE event_id IS NOT NULL AND idx >= ? {extra}", at_least)[0]


def _first_with_name(db: Path, kind: str, column: str, value: str) -> int:
    return _q(db, f"SELECT min(e.idx) FROM entries e JOIN names n ON n.id = e.{column} "
                  "WHERE n.kind = ? AND n.value = ?", kind, value)[0]


# Each case tampers with the copy and returns what the one-line error must contain.
Case = Callable[[Path], str]


def details_text(column: str, index: int) -> Case:
    def case(db: Path) -> str:
        flip(db, "entries", column, "idx = ?", index, byte=-1)
        return f"index {index}: the stored leaf hash does not match"
    return case


def details_int(column: str, index: int) -> Case:
    def case(db: Path) -> str:
        flip(db, "entries", column, "idx = ?", index)
        return f"index {index}: "
    return case


def name_id(column: str, kind: str, index: int, other: str) -> Case:
    """Points a details column at another (existing) name: another purpose, service, decision…"""
    def case(db: Path) -> str:
        _x(db, f"UPDATE entries SET {column} = (SELECT id FROM names WHERE kind = ? AND value = ?) WHERE idx = ?",
           kind, other, index)
        return f"index {index}: "
    return case


def preference_extra(db: Path) -> str:
    (extra,) = _q(db, "SELECT extra FROM entries WHERE idx = 3")
    flip(db, "entries", "extra", "idx = 3", byte=extra.index('"nonce":"') + 10)
    return "index 3: the stored leaf hash does not match"


def preference_extra_not_json(db: Path) -> str:
    flip(db, "entries", "extra", "idx = 3", byte=-1, bit=1)  # the closing brace
    return "index 3: entry 3 cannot be read"


def policy_extra(db: Path) -> str:
    flip(db, "entries", "extra", "idx = 312", byte=3)  # a key of {"effective_at", "policy", "sha256"} no longer there
    return "index 312: leaf 312 cannot be derived from its stored details"


def map_extra(db: Path) -> str:
    """One hex digit of the stored map root changed to another hex digit (flipping a bit could make it
    a non-hex character, a different failure)."""
    (extra,) = _q(db, "SELECT extra FROM entries WHERE idx = 311")
    at = extra.index('"root":"') + 9
    _x(db, "UPDATE entries SET extra = ? WHERE idx = 311", extra[:at] + ("1" if extra[at] == "0" else "0") + extra[at + 1:])
    return "index 311: the stored leaf hash does not match"


def invalid_utf8(db: Path) -> str:
    i = _use(db, 100)
    flip(db, "entries", "detail", "idx = ?", i, byte=0, bit=7, as_text=True)
    return f"index {i}: entry {i} cannot be read"


def dangling_name_id(db: Path) -> str:
    i = _use(db, 110)
    _x(db, "UPDATE entries SET purpose = 99999 WHERE idx = ?", i)
    return f"index {i}: entry {i} cannot be read"


def type_column(db: Path) -> str:
    i = _use(db, 120, "AND decision = (SELECT id FROM names WHERE kind = 'decision' AND value = 'allowed')")
    _x(db, "UPDATE entries SET type = (SELECT id FROM names WHERE kind = 'type' AND value = 'refusal') WHERE idx = ?", i)
    return f"index {i}: the stored type 'refusal' differs from the leaf's 'use'"


def node(level: int, n: int, index: int) -> Case:
    def case(db: Path) -> str:
        if level == 0:  # leaf hashes are kept in their entry's row
            flip(db, "entries", "hash", "idx = ?", n, byte=31, bit=3)
        else:
            flip(db, "nodes", "hash", "id = ?", node_id(level, n), byte=31, bit=3)
        return f"index {index}: " + ("the stored leaf hash" if level == 0 else f"stored tree node ({level}, {n}) differs")
    return case


def node_beyond(db: Path) -> str:
    _x(db, "INSERT INTO nodes VALUES (?, zeroblob(32))", node_id(1, 200))
    return "index 314: the store holds tree node (1, 200) beyond the log's size"


def checkpoint_root(db: Path) -> str:
    flip(db, "checkpoints", "note", "size = 314", byte=len("tamper.example/log\n314\n") + 5)
    return "the latest checkpoint does not verify"


def checkpoint_size_line(db: Path) -> str:
    flip(db, "checkpoints", "note", "size = 3", byte=len("tamper.example/log\n"))  # "3" → "2"
    return "checkpoint at size 3 does not verify"


def checkpoint_signature(db: Path) -> str:
    flip(db, "checkpoints", "note", "size = 5", byte=-10)
    return "checkpoint at size 5 does not verify"


def checkpoint_deleted(db: Path) -> str:
    _x(db, "DELETE FROM checkpoints WHERE size = 314")
    return "index 312: the latest checkpoint covers 312 leaves but the store holds 314"


def artist_tag(db: Path) -> str:
    flip(db, "artists", "tag", "artist_id = 'sc:user:9'", byte=7, bit=5)
    i = _q(db, "SELECT min(e.idx) FROM entries e JOIN artists a ON a.id = e.artist WHERE a.artist_id = 'sc:user:9'")[0]
    return f"index {i}: "


def artist_id(db: Path) -> str:
    i = _q(db, "SELECT min(e.idx) FROM entries e JOIN artists a ON a.id = e.artist WHERE a.artist_id = 'sc:user:9'")[0]
    flip(db, "artists", "artist_id", "artist_id = 'sc:user:9'", byte=0)
    return f"index {i}: the stored leaf hash does not match"


def artist_head(db: Path) -> str:
    where = "id = (SELECT id FROM artists WHERE artist_id = 'sc:user:9')"
    (head,) = _q(db, f"SELECT head FROM heads WHERE {where}")
    flip(db, "heads", "head", where)
    return f"index {head}: the stored artist heads do not match"


def artist_preferences(db: Path) -> str:
    """Once unnoticed: the preferences the sequencer decides by, changed without a preference leaf (the
    artist's "no AI" opt-out silently dropped)."""
    (prefs,) = _q(db, "SELECT preferences FROM artists WHERE artist_id = 'sc:user:1'")
    assert '"no_ai":true' in prefs
    _x(db, "UPDATE artists SET preferences = ? WHERE artist_id = 'sc:user:1'", prefs.replace('"no_ai":true', '"no_ai":false'))
    return "index 3: the stored preferences of artist 'sc:user:1' differ from its latest preference leaf"


def artist_preferences_bit(db: Path) -> str:
    (prefs,) = _q(db, "SELECT preferences FROM artists WHERE artist_id = 'sc:user:1'")
    flip(db, "artists", "preferences", "artist_id = 'sc:user:1'", byte=prefs.index("true") + 3)  # true → trud
    return "the stored preferences of artist 'sc:user:1' are not a JSON object"


def names_row(kind: str, value: str, column: str) -> Case:
    def case(db: Path) -> str:
        i = _first_with_name(db, kind, column, value)
        flip(db, "names", "value", "kind = ? AND value = ?", kind, value, byte=-1)
        return f"index {i}: "
    return case


def policy_document(db: Path) -> str:
    flip(db, "policies", "document", "policy_id = '2026-12'", byte=100)
    return "index 312: the document of policy '2026-12' is not the one its policy leaf commits to"


def policy_effective_at_dropped(db: Path) -> str:
    """The default policy's stored details lose their effective_at: its leaf cannot be re-derived."""
    with sqlite3.connect(db) as c:
        (extra,) = c.execute("SELECT extra FROM entries WHERE idx = 1").fetchone()
        c.execute("UPDATE entries SET extra = ? WHERE idx = 1", (extra.replace('"effective_at"', '"effective"'),))
    return "the policy leaf at index 1 cannot be read back (the database was altered)"


def stats_row(db: Path) -> str:
    flip(db, "usage", "uses", "rowid = 3")
    return "the statistics table does not match a recount of the leaves"


def signer_key_file(db: Path) -> str:
    path = key_paths(db)[0]
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 1
    path.write_bytes(bytes(raw))
    return f"{path} is not a valid signer key"


def vrf_key_file(db: Path) -> str:
    path = key_paths(db)[1]
    text = path.read_text()
    path.write_text(("1" if text[0] != "1" else "2") + text[1:])
    return f"{path} is not the VRF key this log committed to in its first leaf"


# --- forged consistently: what a forger holding the signing key does ---------------------------------


def reseal(db: Path, start: int) -> None:
    """After an edit of what leaf `start` says: every leaf hash from `start` on (each leaf's prev changes),
    every tree node and every checkpoint, re-signed with the log's key. Hashes, tree and signatures then
    all agree, and only the rules about what the leaves say can catch the edit."""
    log = open_log(db, readonly=True)
    try:
        store = log.store
        hashes = store.leaf_hashes(0, start)
        for e in store.entries(start, store.size()):
            hashes.append(merkle.leaf_hash(entry_leaf(e, hashes[-1] if hashes else bytes(32))))
        tree = merkle.MemoryHashes(hashes)
        notes = [(sign_note(Checkpoint(log.origin, size, merkle.tree_root(size, tree)).body(), log.signers), size)
                 for size in store.checkpoint_sizes()]
    finally:
        log.close()
    frontier = merkle.Frontier()
    nodes = [(node_id(level, n), h) for leaf in hashes for level, n, h in frontier.append(leaf) if level]
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany("UPDATE entries SET hash = ? WHERE idx = ?", [(h, i) for i, h in enumerate(hashes) if i >= start])
        conn.execute("DELETE FROM nodes")
        conn.executemany("INSERT INTO nodes VALUES (?, ?)", nodes)
        conn.executemany("UPDATE checkpoints SET note = ? WHERE size = ?", notes)
    conn.close()


def edit_extra(db: Path, index: int, **changes: Any) -> None:
    """Changes fields of the details stored as JSON (log, map, policy and preference entries)."""
    (extra,) = _q(db, "SELECT extra FROM entries WHERE idx = ?", index)
    _x(db, "UPDATE entries SET extra = ? WHERE idx = ?", orjson.dumps({**orjson.loads(extra), **changes}).decode(), index)


def forged_map_root(db: Path) -> str:
    edit_extra(db, 311, root=bytes(range(32)).hex())  # the map leaf after the 300 uses
    reseal(db, 311)
    return "index 311: the map leaf's root is not the artist map of the leaves before it"


def forged_aseq_skip(db: Path) -> str:
    i = _use(db, 200, "AND aseq > 1")
    (aseq,) = _q(db, "SELECT aseq FROM entries WHERE idx = ?", i)
    _x(db, "UPDATE entries SET aseq = aseq + 1 WHERE idx = ?", i)
    reseal(db, i)
    return f"index {i}: artist chain broken: aseq {aseq + 1} skips (expected aseq {aseq}"


def checkpoint_mid_batch(db: Path) -> str:
    """A checkpoint, correctly signed, of a size that ends at a use leaf: it commits to no artist map."""
    log = open_log(db, readonly=True)
    try:
        note = sign_note(Checkpoint(log.origin, 100, merkle.tree_root(100, log.store)).body(), log.signers)
    finally:
        log.close()
    _x(db, "INSERT INTO checkpoints (size, note, created_ms) VALUES (100, ?, 0)", note)
    return "index 99: the checkpoint of size 100 does not end at a map leaf: leaf 99 is a use leaf"


def forged_policy_not_in_effect(db: Path) -> str:
    # '2026-12' (index 312) holds the same table as 'default', so the decision still follows from it:
    # only the policy in effect at the use's logged_at tells the lie.
    i = _use(db, 150)
    _x(db, "INSERT INTO names (kind, value) VALUES ('policy', '2026-12')")
    _x(db, "UPDATE entries SET policy = (SELECT id FROM names WHERE kind = 'policy' AND value = '2026-12') WHERE idx = ?", i)
    reseal(db, i)
    return f"index {i}: policy-in-effect rule broken: the use names policy '2026-12', but policy 'default' was in effect at its logged_at"


def forged_decision(db: Path) -> str:
    """An allowed use logged as flagged, with the statistics recounted: nothing disagrees but the decision."""
    allowed = "(SELECT id FROM names WHERE kind = 'decision' AND value = 'allowed')"
    i = _use(db, 160, f"AND decision = {allowed}")
    day, purpose, phase, uses = _q(db, "SELECT date(logged_ms / 1000, 'unixepoch'), n.value, p.value, invocations "
                                       "FROM entries e JOIN names n ON n.id = e.purpose JOIN names p ON p.id = e.phase "
                                       "WHERE idx = ?", i)
    _x(db, "UPDATE entries SET decision = (SELECT id FROM names WHERE kind = 'decision' AND value = 'flagged') WHERE idx = ?", i)
    _x(db, "UPDATE usage SET leaves = leaves - 1, uses = uses - ? WHERE day = ? AND type = 'use' AND purpose = ? "
           "AND phase = ? AND decision = 'allowed'", uses, day, purpose, phase)
    _x(db, "INSERT INTO usage VALUES (?, 'use', ?, ?, 'flagged', 1, ?) ON CONFLICT DO UPDATE SET leaves = leaves + 1, "
           "uses = uses + excluded.uses", day, purpose, phase, uses)
    reseal(db, i)
    return (f"index {i}: the decision 'flagged' does not follow from policy 'default' and the artist's preferences, "
            "which give 'allowed'")


def swapped_vrf_proof(db: Path) -> str:
    _x(db, "UPDATE artists SET proof = (SELECT proof FROM artists WHERE artist_id = 'sc:user:8') WHERE artist_id = 'sc:user:9'")
    i = _q(db, "SELECT min(e.idx) FROM entries e JOIN artists a ON a.id = e.artist WHERE a.artist_id = 'sc:user:9'")[0]
    return f"index {i}: the stored VRF proof of artist 'sc:user:9' does not give its tag under the log's VRF key"


def forged_log_origin(db: Path) -> str:
    edit_extra(db, 0, origin="other.example/log")
    reseal(db, 0)
    return "index 0: the log leaf names origin 'other.example/log', not 'tamper.example/log'"


def forged_log_vrf_key(db: Path) -> str:
    """A log leaf committing to another (valid) VRF key than the one the log keeps and tags with."""
    edit_extra(db, 0, vrf=VrfSecret.from_secret(bytes(32)).pk.hex())
    reseal(db, 0)
    return "index 0: the VRF public key stored in the database differs from the one the log leaf commits to"


def forged_log_vrf_key_invalid(db: Path) -> str:
    edit_extra(db, 0, vrf=bytes(32).hex())  # not a point of the prime-order subgroup
    reseal(db, 0)
    return "index 0: the log leaf's VRF key is not valid"


CASES: dict[str, Case] = {
    "details event_id": details_text("event_id", 20),
    "details occurred_at": details_text("occurred_at", 21),
    "details content_id last byte": details_text("content_id", 22),
    "details nonce": details_text("nonce", 23),
    "details invocations": details_int("invocations", 24),
    "details aprev": details_int("aprev", 250),
    "details service id": name_id("service", "service", 30, "contentid"),
    "details purpose id": name_id("purpose", "purpose", 31, "talent_discovery"),
    "details decision id": name_id("decision", "decision", 32, "flagged"),
    "details phase id": name_id("phase", "phase", 33, "training"),
    "details system id": name_id("system", "system", 34, '["support-assist","llm-support","2026.07.3"]'),
    "details of a preference (extra)": preference_extra,
    "details of a preference no longer JSON": preference_extra_not_json,
    "details of a policy (extra)": policy_extra,
    "details of a map leaf (extra)": map_extra,
    "details no longer UTF-8": invalid_utf8,
    "details name id dangling": dangling_name_id,
    "type column": type_column,
    "leaf hash node": node(0, 77, 77),
    "interior node level 1": node(1, 40, 80),
    "tile-level node (8, 0)": node(8, 0, 0),
    "node beyond the size": node_beyond,
    "checkpoint root": checkpoint_root,
    "checkpoint size line": checkpoint_size_line,
    "checkpoint signature": checkpoint_signature,
    "latest checkpoint deleted": checkpoint_deleted,
    "artist tag": artist_tag,
    "artist id": artist_id,
    "artist head": artist_head,
    "artist preferences": artist_preferences,
    "artist preferences bit": artist_preferences_bit,
    "names purpose": names_row("purpose", "recommendation", "purpose"),
    "names service": names_row("service", "recsys", "service"),
    "names system": names_row("system", '["recs-ranker","ranker","2026.07.3"]', "system"),
    "names type": names_row("type", "use", "type"),
    "policy document": policy_document,
    "stats row": stats_row,
    "signer key file": signer_key_file,
    "vrf key file": vrf_key_file,
    "map root, re-signed": forged_map_root,
    "aseq skips, re-signed": forged_aseq_skip,
    "checkpoint not at a map leaf": checkpoint_mid_batch,
    "policy not in effect, re-signed": forged_policy_not_in_effect,
    "decision, re-signed": forged_decision,
    "VRF proof swapped": swapped_vrf_proof,
    "log leaf origin, re-signed": forged_log_origin,
    "log leaf VRF key, re-signed": forged_log_vrf_key,
    "log leaf VRF key invalid, re-signed": forged_log_vrf_key_invalid,
}


@pytest.mark.parametrize("name", list(CASES))
def test_local_verify_names_where(db, name):
    want = CASES[name](db)
    got = verify_cli(db)
    assert want in got, got


@pytest.mark.parametrize("case, want", [
    (signer_key_file, "is not a valid signer key"),
    (checkpoint_root, "the stored checkpoint does not verify with the log's key"),
    (policy_effective_at_dropped, "the policy leaf at index 1 cannot be read back"),
], ids=["signer key file", "checkpoint root", "policy leaf details"])
def test_the_server_refuses_to_start_on_a_damaged_log(db, case, want):
    case(db)
    result = CliRunner().invoke(main, ["serve", "--db", str(db), "--port", "1"])
    assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert want in result.stderr


# --- remote -------------------------------------------------------------------------------------


@pytest.fixture
def fast_retries(monkeypatch):
    remote = pytest.importorskip("tlog.remote")
    monkeypatch.setattr(remote, "BACKOFF", 0.01)


def _vkey(db: Path) -> str:
    log = open_log(db, readonly=True)
    try:
        return log.verifier.key
    finally:
        log.close()


# What a remote verifier (public tiles only) can see of each local tamper, at indexes in the partial tile
# (full tiles, once served, are immutable and cached by the server; a fresh server serves from disk).
REMOTE: dict[str, tuple[Case, str]] = {
    "details": (details_text("detail", 300), "leaf 300 does not match its stored hash"),
    "details of a map leaf (extra)": (map_extra, "leaf 311 does not match its stored hash"),
    "leaf hash node": (node(0, 290, 290), "leaf 290 does not match its stored hash"),
    "names row": (names_row("purpose", "search_indexing", "purpose"), "does not match its stored hash"),
    "tile-level node (8, 0)": (node(8, 0, 0), "index 0: hash tile tile/1/000.p/1 differs from the recomputed tree at node (8, 0)"),
    # GET /v1/policies/{id} serves the stored bytes: the notice rule needs them, so they are checked too.
    "policy document": (policy_document, "index 312: the document of policy '2026-12' is not the one its policy leaf commits to"),
}


@pytest.mark.parametrize("name", list(REMOTE))
def test_remote_verify_sees_what_is_public(db, name, fast_retries):
    """The server refuses to serve a leaf whose details no longer match its stored hash (503, naming the
    leaf), so `tlog verify --url` fails there; altered tree nodes and checkpoints fail their checks."""
    vkey = _vkey(db)
    case, want = REMOTE[name]
    case(db)
    server = serve(db)
    try:
        result = CliRunner().invoke(main, ["verify", "--url", server.url, "--vkey", vkey, "--quiet"])
    finally:
        stop(server)
    # A leaf the server will not serve (503, naming it) is a log that cannot be read (3); what it serves
    # and does not hold is a failed verification (1).
    assert result.exit_code == (3 if "does not match its stored hash" in want else 1), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and want in lines[0], result.stderr
    assert "Traceback" not in server.output()


def test_what_a_remote_verifier_cannot_see_the_local_one_does(db, fast_retries):
    """Private state (artist rows, statistics, the VRF key) is not in the public tiles: remote
    verification passes, and only the operator's fsck catches it."""
    vkey = _vkey(db)
    artist_preferences(db)
    server = serve(db)
    try:
        result = CliRunner().invoke(main, ["verify", "--url", server.url, "--vkey", vkey, "--quiet"])
        assert result.exit_code == 0, result.output
        got = orjson.loads(CliRunner().invoke(main, ["stats", "--db", str(db), "--json"]).output)
        assert got  # the server and CLI still read the log
    finally:
        stop(server)
    assert "differ from its latest preference leaf" in verify_cli(db)
