"""`tlog verify --url`: a remote log checked from its public tiles alone. A sound log passes; a database
altered under a real server, and every lie a malicious server can tell, are caught at the first bad index."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from tlog import remote
from tlog.cli import main
from tlog.demo import build_demo
from tlog.errors import NotFound, Unavailable, VerificationError
from tlog.leaf import parse_leaf
from tlog.log import open_log
from tlog.note import Signer, generate_key
from tlog.policy import DEFAULT_POLICY, make_policy
from tlog.records import format_logged_at, parse_logged_at
from tlog.store.sqlite import node_id
from tlog.verify import verify_remote

from ..conftest import append, records
from .conftest import start_server, stop_server
from .fakelog import Source, edit, rechain, with_erasure, with_policy


def grown_demo(db: Path) -> None:
    """617 leaves: the log leaf, the default policy, a map leaf; 4 preferences, each with its map leaf;
    six batches of 100 uses by 50 artists, each ending with a map leaf (at 111, 212, 313, 414, 515, 616).
    Checkpoints end at every map leaf; two full tiles and a partial one of 105."""
    build_demo(str(db), 0)
    log = open_log(db, secrets_needed=True)
    try:
        seq = log.sequencer()
        for batch in range(6):
            append(seq, records(100, seed=20 + batch, artists=50))
    finally:
        log.close()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("remote") / "tlog.db"
    grown_demo(db)
    return db


@pytest.fixture(scope="module")
def source(demo_db) -> Source:
    return Source.from_db(demo_db)


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF", 0.01)


def _vkey(server) -> str:
    return orjson.loads(server.get("/v1/log")[2])["verifier_keys"][0]


# --- a real server ---------------------------------------------------------------------------------


def test_a_sound_log_verifies_over_http(served, tmp_path):
    log = open_log(served.db, readonly=True)
    try:
        old = log.store.checkpoint_at(11)  # after the first batch and the four preferences
    finally:
        log.close()
    (tmp_path / "old.checkpoint").write_bytes(old)
    seen = []
    report = verify_remote(served.url, _vkey(served), trusted=old, progress=lambda done, total: seen.append((done, total)))
    assert (report.size, report.leaves, report.checkpoints) == (312, 312, 2)
    assert report.artists == 50 and seen[-1] == (312, 312)
    result = CliRunner().invoke(main, ["verify", "--url", served.url + "/", "--vkey", _vkey(served),
                                       "--trusted", str(tmp_path / "old.checkpoint")])
    assert result.exit_code == 0, result.output
    assert "ok: demo.tlog.example/log size 312: 312 leaves" in result.output


def test_url_and_db_are_alternatives_and_url_needs_a_key(served, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["verify", "--url", served.url, "--db", str(tmp_path / "x.db"), "--vkey", _vkey(served)])
    assert result.exit_code == 2 and "alternatives" in result.output
    result = runner.invoke(main, ["verify", "--url", served.url])
    assert result.exit_code == 2 and "--url needs --vkey" in result.output
    other = generate_key("demo.tlog.example/log")[1]
    result = runner.invoke(main, ["verify", "--url", served.url, "--vkey", other])
    assert result.exit_code == 1 and "does not verify" in result.output


@pytest.fixture
def own_server(demo_db, tmp_path):
    """A copy of the demo log behind its own server, to alter under it."""
    db = tmp_path / "tlog.db"
    shutil.copy(demo_db, db)
    server = start_server(db)
    yield server
    stop_server(server)


def _alter(db: Path, sql: str, *args) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def test_an_altered_tree_node_under_a_real_server_is_caught(own_server):
    _alter(own_server.db, "UPDATE nodes SET hash = zeroblob(32) WHERE id = ?", node_id(8, 1))
    with pytest.raises(VerificationError) as err:
        verify_remote(own_server.url, _vkey(own_server))
    assert err.value.index == 256
    assert "hash tile tile/1/000.p/2 differs from the recomputed tree at node (8, 1)" in err.value.message


def test_altered_details_under_a_real_server_are_refused_by_it(own_server, fast_retries):
    # The server re-derives each leaf and refuses one whose stored hash no longer matches (503), so a
    # remote verifier cannot be shown the altered leaf at all: it fails, naming the server's reason.
    _alter(own_server.db, "UPDATE entries SET detail = 'altered' WHERE idx = 300")
    with pytest.raises(Unavailable, match=r"tile/entries/001: 503 leaf 300 does not match its stored hash"):
        verify_remote(own_server.url, _vkey(own_server))


def test_an_altered_checkpoint_under_a_real_server_fails_its_signature(own_server):
    log = open_log(own_server.db, readonly=True)
    try:
        note = log.store.latest_checkpoint()
    finally:
        log.close()
    body, sigs = note.split(b"\n\n")
    origin, size, root = body.split(b"\n")[:3]
    forged = b"\n".join([origin, size, root[:-6] + b"AAAAA=", b""]) + b"\n" + sigs  # same signature line
    _alter(own_server.db, "UPDATE checkpoints SET note = ? WHERE size = 617", forged)
    result = CliRunner().invoke(main, ["verify", "--url", own_server.url, "--vkey", _vkey(own_server)])
    assert result.exit_code == 1
    assert result.output.startswith("error: the log's checkpoint does not verify")


# --- a malicious server ----------------------------------------------------------------------------


def _with_artist(leaves: list[bytes], start: int) -> int:
    """The first index from `start` on of a leaf continuing an artist chain (aseq > 1)."""
    return next(i for i in range(start, len(leaves)) if (parse_leaf(leaves[i]).aseq or 0) > 1)


def lie_prev(src, fake):
    leaves = list(src.leaves)
    leaves[300] = edit(leaves[300], prev=bytes(32))
    fake.publish(leaves)
    return 300, "prev does not match the hash of the leaf before it"


def lie_artist_gap(src, fake):
    i = _with_artist(src.leaves, 400)
    leaves = list(src.leaves)
    aseq = parse_leaf(leaves[i]).aseq
    leaves[i] = edit(leaves[i], aseq=aseq + 1)
    fake.publish(rechain(leaves, i + 1))
    return i, f"artist chain broken: aseq {aseq + 1} skips (expected aseq {aseq}"


def lie_artist_repeat(src, fake):
    i = _with_artist(src.leaves, 400)
    leaves = list(src.leaves)
    aseq = parse_leaf(leaves[i]).aseq
    leaves[i] = edit(leaves[i], aseq=aseq - 1, aprev=None if aseq == 2 else parse_leaf(leaves[i]).aprev)
    fake.publish(rechain(leaves, i + 1))
    return i, f"artist chain broken: aseq {aseq - 1} repeats an earlier one (expected aseq {aseq}"


def lie_map_root(src, fake):
    leaves = list(src.leaves)
    leaves[313] = edit(leaves[313], root=bytes(32))  # every tree, tile and signature agrees with it
    fake.publish(rechain(leaves, 314))
    return 313, "the map leaf's root is not the artist map of the leaves before it"


def lie_checkpoint_mid_batch(src, fake):
    fake.publish(src.leaves[:300])  # an honest tree and signature, over a size that ends at a use leaf
    return 299, "the checkpoint of size 300 does not end at a map leaf: leaf 299 is a use leaf"


def lie_policy_not_in_effect(src, fake):
    i = next(i for i in range(400, len(src.leaves)) if parse_leaf(src.leaves[i]).type == "use")
    leaves = list(src.leaves)
    leaves[i] = edit(leaves[i], policy="2027-01")
    fake.publish(rechain(leaves, i + 1))
    return i, "the use names policy '2027-01', but policy 'default' was in effect at its logged_at"


# Allows generative training by default: a loosening of the default policy, which promised 30 days' notice.
LOOSE = make_policy("loose", [dataclasses.replace(p, default="allowed") if p.code == "model_training_generative" else p
                              for p in DEFAULT_POLICY.purposes.values()], DEFAULT_POLICY.text)


def lie_loosening_without_notice(src, fake):
    # As a sequencer whose notice check is bypassed would write it: every hash and signature honest.
    fake.publish(with_policy(src.leaves, "loose", LOOSE.document), documents={"loose": LOOSE.document})
    logged_at = parse_leaf(src.leaves[-1]).logged_at
    earliest = format_logged_at(parse_logged_at(logged_at) + 30 * 86_400_000)
    return 617, (f"policy 'loose' loosens 'default' — model_training_generative: refused → allowed — but takes effect "
                 f"at {logged_at}, before the 30 days' notice 'default' promised (not before {earliest})")


def chain_of_a_tag(src) -> tuple[bytes, int]:
    """A tag of the source log and how many chain leaves it has."""
    tags = [leaf.artist for leaf in map(parse_leaf, src.leaves) if leaf.aseq is not None]
    return tags[0], tags.count(tags[0])


def lie_erasure_count(src, fake):
    # An erasure leaf that claims more entries than its tag's chain has: as a log hiding how many it erased.
    tag, n = chain_of_a_tag(src)
    fake.publish(with_erasure(src.leaves, tag, n + 1))
    return len(src.leaves), (f"the erasure leaf says erased {n + 1}, but the chain leaves of its tag before it that "
                             f"no earlier erasure leaf covered number {n}")


def lie_policy_document(src, fake):
    fake.publish(src.leaves)
    fake.files["v1/policies/default"] = LOOSE.document
    return 1, "the document of policy 'default' is not the one its policy leaf commits to"


def lie_policy_document_missing(src, fake):
    fake.publish(src.leaves)
    del fake.files["v1/policies/default"]
    return 1, "the log does not serve the document of policy 'default': GET"


def lie_log_leaf(src, fake):
    leaves = list(src.leaves)
    leaves[0] = edit(leaves[0], origin="other.example/log")
    fake.publish(rechain(leaves, 1))
    return 0, "the log leaf names origin 'other.example/log', not 'demo.tlog.example/log'"


def lie_logged_at(src, fake):
    leaves = list(src.leaves)
    leaves[200] = edit(leaves[200], logged_at=parse_leaf(leaves[0]).logged_at)
    fake.publish(rechain(leaves, 201))
    return 200, "goes back before"


def lie_non_canonical_leaf(src, fake):
    leaves = list(src.leaves)
    leaves[77] = leaves[77].replace(b'"v":2', b'"v": 2')
    fake.publish(leaves)
    return 77, "malformed leaf: leaf is not in canonical form"


def lie_level0_tile(src, fake):
    fake.publish(src.leaves)
    fake.corrupt("tile/0/001", 9 * 32, bytes(32))
    return 265, "differs from the one in the level-0 hash tile"


def lie_upper_tile(src, fake):
    fake.publish(src.leaves)
    fake.corrupt("tile/1/000.p/2", 0, bytes(32))
    return 0, "hash tile tile/1/000.p/2 differs from the recomputed tree at node (8, 0)"


def lie_split_view(src, fake):
    # Tiles of one tree, and a checkpoint signed with the log's own key over another root.
    fake.publish(src.leaves, src.checkpoint(src.leaves, root=bytes(32)))
    return 616, "the tree of size 617 does not match the signed checkpoint"


def lie_missing_bundle(src, fake):
    fake.publish(src.leaves)
    del fake.files["tile/entries/001"]
    return 256, "the log does not serve its tiles: GET"


def lie_truncated_bundle(src, fake):
    fake.publish(src.leaves)
    fake.files["tile/entries/002.p/105"] = fake.files["tile/entries/002.p/105"][:-1]
    return 512, "tile/entries/002.p/105: entry bundle ends inside entry 104"


def lie_short_hash_tile(src, fake):
    fake.publish(src.leaves)
    fake.files["tile/0/002.p/105"] += b"\0"
    return 512, "tile/0/002.p/105 is 3361 bytes, want 3360"


@pytest.mark.parametrize("lie", [lie_prev, lie_artist_gap, lie_artist_repeat, lie_map_root, lie_checkpoint_mid_batch,
                                 lie_policy_not_in_effect, lie_loosening_without_notice, lie_policy_document,
                                 lie_policy_document_missing, lie_log_leaf, lie_logged_at, lie_non_canonical_leaf,
                                 lie_level0_tile, lie_upper_tile, lie_split_view, lie_missing_bundle,
                                 lie_truncated_bundle, lie_short_hash_tile, lie_erasure_count], ids=lambda f: f.__name__)
def test_a_lying_server_is_caught_at_the_first_bad_index(source, fake, lie):
    index, message = lie(source, fake)
    with pytest.raises(VerificationError) as err:
        verify_remote(fake.url, source.vkey)
    assert err.value.index == index, err.value.message
    assert err.value.message.startswith(f"index {index}: ") and message in err.value.message, err.value.message


def test_an_erasure_that_counts_its_tags_chain_verifies(source, fake):
    tag, n = chain_of_a_tag(source)
    fake.publish(with_erasure(source.leaves, tag, n))
    assert verify_remote(fake.url, source.vkey).size == len(source.leaves) + 2


def test_a_loosening_announced_with_the_notice_promised_verifies(source, fake):
    logged_at = parse_logged_at(parse_leaf(source.leaves[-1]).logged_at)
    leaves = with_policy(source.leaves, "loose", LOOSE.document, format_logged_at(logged_at + 30 * 86_400_000))
    fake.publish(leaves, documents={"loose": LOOSE.document})
    assert verify_remote(fake.url, source.vkey).size == 619
    assert fake.hits["v1/policies/loose"] == fake.hits["v1/policies/default"] == 1


def test_the_cli_names_the_first_bad_index_in_one_line(source, fake):
    lie_prev(source, fake)
    result = CliRunner().invoke(main, ["verify", "--url", fake.url, "--vkey", source.vkey])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "error: index 300: prev does not match the hash of the leaf before it (the hash chain is broken)\n"


def _forked(src):
    """Another history under the same key: leaf 100 commits to other details, the rest re-chained."""
    leaves = list(src.leaves)
    leaves[100] = edit(leaves[100], details=bytes(32))
    return rechain(leaves, 101)


def test_a_fork_from_a_trusted_checkpoint_is_named(source, fake):
    trusted = source.checkpoint(source.leaves[:314])
    fake.publish(_forked(source))  # every chain rule holds; only the history differs
    with pytest.raises(VerificationError) as err:
        verify_remote(fake.url, source.vkey, trusted=trusted)
    assert err.value.index == 313
    assert "the tree of size 314 does not match the trusted checkpoint (a fork)" in err.value.message
    fake.publish(source.leaves)
    assert verify_remote(fake.url, source.vkey, trusted=trusted).checkpoints == 2


def test_a_trusted_checkpoint_must_end_at_a_map_leaf(source, fake):
    fake.publish(source.leaves)
    with pytest.raises(VerificationError, match="^index 299: the checkpoint of size 300 does not end at a map leaf"):
        verify_remote(fake.url, source.vkey, trusted=source.checkpoint(source.leaves[:300]))


def test_a_same_size_fork_and_a_rollback_are_named(source, fake):
    fake.publish(_forked(source))
    with pytest.raises(VerificationError, match="^index 616: fork: the log's checkpoint and the trusted one"):
        verify_remote(fake.url, source.vkey, trusted=source.checkpoint(source.leaves))
    fake.publish(source.leaves[:516])
    with pytest.raises(VerificationError, match="^rollback: the log's checkpoint has size 516, smaller than the trusted checkpoint's 617"):
        verify_remote(fake.url, source.vkey, trusted=source.checkpoint(source.leaves))


def test_a_checkpoint_signed_by_another_key_is_refused(source, fake):
    impostor = Signer.from_key(generate_key(source.signer.name)[0])
    fake.publish(source.leaves, source.checkpoint(source.leaves, signer=impostor))
    with pytest.raises(VerificationError, match="^the log's checkpoint does not verify"):
        verify_remote(fake.url, source.vkey)


def test_transient_errors_are_retried_and_a_4xx_is_not(source, fake, fast_retries):
    fake.publish(source.leaves)
    fake.fail_once |= {"checkpoint", "tile/entries/001", "tile/1/000.p/2"}
    assert verify_remote(fake.url, source.vkey).leaves == 617
    assert fake.hits["tile/entries/001"] == 2 and fake.hits["tile/0/000"] == 1
    with pytest.raises(NotFound, match=r"GET http://.*/nowhere/checkpoint: 404 no nowhere/checkpoint$"):
        verify_remote(fake.url + "/nowhere/", source.vkey)
    assert fake.hits["nowhere/checkpoint"] == 1


def test_an_unreachable_log_is_a_clear_error(fast_retries, tmp_path):
    from .conftest import free_port

    with pytest.raises(Unavailable, match=r"GET http://127.0.0.1:\d+/checkpoint: .* \(gave up after 5 tries\)"):
        verify_remote(f"http://127.0.0.1:{free_port()}", generate_key("x.example/log")[1])
