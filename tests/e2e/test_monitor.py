"""`tlog monitor`: follows a log across runs from its public API; an honest log passes round after round,
and a fork (two copies of a log under one key), a rollback or any lie about new leaves is an alert."""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from tlog import remote
from tlog.cli import main
from tlog.demo import build_demo
from tlog.errors import StorageError, ValidationError, VerificationError
from tlog.leaf import parse_leaf
from tlog.log import key_paths, open_log
from tlog.monitor import STATE_FILE, run_monitor
from tlog.note import ALG_COSIGNATURE_V1, Signer, generate_key
from tlog.policy import DEFAULT_POLICY, make_policy

from ..conftest import append, records
from .conftest import start_server, stop_server
from .fakelog import Source, edit, rechain, with_erasure, with_policy
from .test_remote_verify import LOOSE, chain_of_a_tag, grown_demo


def _monitor(url: str, vkey: str, state: Path, *extra: str) -> Result:
    return CliRunner().invoke(main, ["monitor", "--url", url, "--vkey", vkey, "--state", str(state), *extra])


def _state_root(state: Path) -> str:
    """The root of the last checkpoint the state holds, base64 (as a checkpoint writes it)."""
    return orjson.loads((state / STATE_FILE).read_bytes())["checkpoint"].split("\n")[2]


def _state_size(state: Path) -> int | None:
    try:
        raw = orjson.loads((state / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return None
    return int(raw["checkpoint"].split("\n")[1])


def _append(db: Path, n: int, seed: int) -> None:
    log = open_log(db, secrets_needed=True)
    try:
        append(log.sequencer(), records(n, seed=seed))
    finally:
        log.close()


# --- real servers: a log that grows, and a copy of it that forks ----------------------------------


def test_state_is_kept_across_runs_and_a_fork_between_runs_is_caught(tmp_path):
    a = tmp_path / "a" / "tlog.db"
    build_demo(str(a), 300)
    b = tmp_path / "b" / "tlog.db"
    b.parent.mkdir()
    for src, dst in zip((a, *key_paths(a)), (b, *key_paths(b))):
        shutil.copy(src, dst)  # the same log and the same key: the operator's second copy
    vkey = Source.from_db(a).vkey
    state = tmp_path / "state"
    server_a = start_server(a)
    try:
        first = _monitor(server_a.url, vkey, state)
        assert first.exit_code == 0, first.output
        assert "first run" in first.output and "leaves 0..311: " in first.output
        assert "/v1/stats agrees with the recount (312 leaves" in first.output
        _append(a, 40, seed=11)  # the log grows under the running server
        second = _monitor(server_a.url, vkey, state)
        assert second.exit_code == 0, second.output
        assert "consistent with the checkpoint of size 312 checked before" in second.output
        assert "leaves 312..352: " in second.output and _state_size(state) == 353

        _append(b, 60, seed=12)  # the copy grows another way
        server_b = start_server(b)
        try:
            forked = _monitor(server_b.url, vkey, state)
            forked_json = _monitor(server_b.url, vkey, state, "--json")
        finally:
            stop_server(server_b)
        assert forked.exit_code == 1  # SPEC §7: an alert
        assert forked.stderr.startswith("ALERT: fork (split view): the log's checkpoint of size 373 is not consistent "
                                        "with the one of size 353 this monitor checked before")
        alert = orjson.loads(forked_json.stdout)
        assert forked_json.exit_code == 1 and alert["ok"] is False and alert["exit"] == 1
        assert alert["error"].startswith("fork (split view)") and "\nALERT: fork (split view)" in forked_json.stderr
        assert (state / "conflicting-373.checkpoint").read_bytes().startswith(b"demo.tlog.example/log\n373\n")
        assert _state_size(state) == 353  # an alert never becomes the state

        again = _monitor(server_a.url, vkey, state)
        assert again.exit_code == 0 and "size 353, unchanged" in again.output
        as_json = _monitor(server_a.url, vkey, state, "--json")
        assert as_json.exit_code == 0 and "size 353, unchanged" in as_json.stderr
        assert orjson.loads(as_json.stdout) == {"ok": True, "origin": "demo.tlog.example/log", "size": 353,
                                                "root": _state_root(state), "grew": False}
    finally:
        assert "Traceback" not in stop_server(server_a)


# --- a malicious server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Source:
    """617 leaves, a checkpoint at the end of each batch (sizes 11, 112, 213, 314, 415, 516, 617)."""
    db = tmp_path_factory.mktemp("monitor") / "tlog.db"
    grown_demo(db)
    return Source.from_db(db)


@pytest.fixture
def watched(source, fake, tmp_path):
    """A monitor state that has checked the log up to 415 leaves."""
    fake.publish(source.leaves[:415])
    state = tmp_path / "state"
    result = _monitor(fake.url, source.vkey, state)
    assert result.exit_code == 0, result.output
    return state


def _forked(leaves: list[bytes]) -> list[bytes]:
    """Another history under the same key: leaf 100 commits to other details, the rest re-chained."""
    out = list(leaves)
    out[100] = edit(out[100], details=bytes(32))
    return rechain(out, 101)


def test_an_honest_log_passes_round_after_round(source, fake, watched):
    fake.publish(source.leaves[:516])
    result = _monitor(fake.url, source.vkey, watched)
    assert result.exit_code == 0, result.output
    assert "consistent with the checkpoint of size 415 checked before" in result.output
    assert ("leaves 415..515: leaf and tile hashes, hash chain, logged_at order, 50 artist chains (0 new), 1 new map root, "
            "the policy each use names, the notice rule, erasure counts, tree root: ok") in result.output
    assert "/v1/stats agrees with the recount (516 leaves" in result.output
    lines = [line.split() for line in result.output.splitlines() if line.startswith("    refusal")]
    assert sum(int(line[-2]) for line in lines) == sum(parse_leaf(leaf).type == "refusal" for leaf in source.leaves[:516])
    assert sum(int(line[-1][2:-1]) for line in lines) == sum(parse_leaf(leaf).type == "refusal" for leaf in source.leaves[415:516])

    fake.publish(source.leaves)
    fake.stats["size"] = 700  # the log grew between its checkpoint and its stats: not comparable
    result = _monitor(fake.url, source.vkey, watched)
    assert result.exit_code == 0 and "/v1/stats is at size 700, not 617: not compared" in result.output
    state = orjson.loads((watched / STATE_FILE).read_bytes())
    assert len(state["frontier"]) == bin(617).count("1") and len(state["artists"]) == 50
    assert state["policies"] == [[parse_leaf(source.leaves[1]).effective_at, 1, "default", DEFAULT_POLICY.document.decode()]]
    assert state["map_root"] == parse_leaf(source.leaves[616]).root.hex()
    assert not (watched / (STATE_FILE + ".tmp")).exists()
    assert "size 617, unchanged" in _monitor(fake.url, source.vkey, watched).output


def later_rollback(src, fake):
    fake.publish(src.leaves[:314])
    return "rollback: the log's checkpoint has size 314, smaller than the size 415 this monitor checked before"


def later_same_size_fork(src, fake):
    fake.publish(_forked(src.leaves[:415]))
    return "fork (split view): the log's checkpoint of size 415 has another root than the one this monitor checked before"


def later_inconsistent(src, fake):
    fake.publish(_forked(src.leaves))
    return "fork (split view): the log's checkpoint of size 617 is not consistent with the one of size 415"


def later_bad_proof(src, fake):
    fake.publish(src.leaves)
    fake.proof_lie = True
    return "fork (split view): the log's checkpoint of size 617 is not consistent with the one of size 415"


def later_broken_chain(src, fake):
    leaves = list(src.leaves)
    leaves[415] = edit(leaves[415], prev=bytes(32))  # checkable only against the saved `prev`
    fake.publish(leaves)
    return "index 415: prev does not match the hash of the leaf before it"


def later_logged_at_back(src, fake):
    leaves = list(src.leaves)
    leaves[415] = edit(leaves[415], logged_at=parse_leaf(leaves[0]).logged_at)
    fake.publish(rechain(leaves, 416))
    return "index 415: logged_at"


def _continuing(src) -> int:
    """A new leaf continuing a chain whose head the monitor saw in an earlier run."""
    return next(i for i in range(415, 617) if (parse_leaf(src.leaves[i]).aprev or 415) < 415)


def later_artist_gap(src, fake):
    # Needs the saved heads.
    i = _continuing(src)
    leaves = list(src.leaves)
    leaves[i] = edit(leaves[i], aseq=parse_leaf(leaves[i]).aseq + 1)
    fake.publish(rechain(leaves, i + 1))
    return f"index {i}: artist chain broken: aseq {parse_leaf(src.leaves[i]).aseq + 1} skips"


def later_artist_repeat(src, fake):
    i = _continuing(src)
    leaves = list(src.leaves)
    aseq = parse_leaf(leaves[i]).aseq
    leaves[i] = edit(leaves[i], aseq=aseq - 1, aprev=None if aseq == 2 else parse_leaf(leaves[i]).aprev)
    fake.publish(rechain(leaves, i + 1))
    return f"index {i}: artist chain broken: aseq {aseq - 1} repeats an earlier one"


def later_map_root(src, fake):
    # Needs the saved map: the new map leaf commits to every artist's history, most of it from earlier runs.
    leaves = list(src.leaves)
    leaves[515] = edit(leaves[515], root=bytes(32))
    fake.publish(rechain(leaves, 516))
    return "index 515: the map leaf's root is not the artist map of the leaves before it"


def later_checkpoint_mid_batch(src, fake):
    fake.publish(src.leaves[:500])
    return "index 499: the checkpoint of size 500 does not end at a map leaf: leaf 499 is a use leaf"


def later_policy_not_in_effect(src, fake):
    # Needs the saved policies: the one in effect was published in the first run.
    i = next(i for i in range(415, 617) if parse_leaf(src.leaves[i]).type == "use")
    leaves = list(src.leaves)
    leaves[i] = edit(leaves[i], policy="2027-01")
    fake.publish(rechain(leaves, i + 1))
    return f"index {i}: policy-in-effect rule broken: the use names policy '2027-01', but policy 'default' was in effect at its logged_at"


def later_loosening_without_notice(src, fake):
    # Needs the saved policies with their documents: the one it loosens was published in the first run.
    fake.publish(with_policy(src.leaves, "loose", LOOSE.document), documents={"loose": LOOSE.document})
    return "index 617: notice rule broken: policy 'loose' loosens 'default' — model_training_generative: refused → allowed — but"


REWORDED = make_policy("later", DEFAULT_POLICY.purposes.values(), "The same table, in other words.").document


def later_use_names_an_announced_policy_not_yet_in_effect(src, fake):
    # A policy announced for 2099 (no loosening: only its wording changes), and a use that names it at once.
    leaves = with_policy(src.leaves, "later", REWORDED, effective_at="2099-01-05T00:00:00.000Z")
    use = next(leaf for leaf in src.leaves[415:] if parse_leaf(leaf).type == "use")
    leaves = rechain([*leaves, edit(use, logged_at=parse_leaf(leaves[-1]).logged_at, policy="later")], len(leaves))
    fake.publish(leaves, documents={"later": REWORDED})
    return (f"index {len(leaves) - 1}: policy-in-effect rule broken: the use names policy 'later', but policy "
            f"'default' was in effect at its logged_at {parse_leaf(leaves[-1]).logged_at}")


def later_erasure_count(src, fake):
    tag, n = chain_of_a_tag(src)
    fake.publish(with_erasure(src.leaves, tag, n + 1))
    return (f"index 617: the erasure leaf says erased {n + 1}, but the chain leaves of its tag before it that no "
            f"earlier erasure leaf covered number {n}")


def test_an_erasure_is_reported_and_the_next_one_counts_from_it(source, fake, watched):
    """What earlier erasures covered is kept in the state: a second erasure of the tag with nothing new
    before it is an alert in a later run."""
    tag, n = chain_of_a_tag(source)
    erased = with_erasure(source.leaves, tag, n)
    fake.publish(erased)
    result = _monitor(fake.url, source.vkey, watched)
    assert result.exit_code == 0, result.output
    assert f"{n} entries of artist tag {tag.hex()[:16]}… erased on request" in result.output
    fake.publish(with_erasure(erased, tag, 1))
    result = _monitor(fake.url, source.vkey, watched)
    assert result.exit_code == 1, result.output  # SPEC §7: an alert
    assert ("index 619: the erasure leaf says erased 1, but the chain leaves of its tag before it that no earlier "
            "erasure leaf covered number 0") in result.stderr


def later_stats_lie(src, fake):
    fake.publish(src.leaves)
    fake.stats["totals"][0]["leaves"] += 1
    return "stats: /v1/stats claims"


def later_impostor(src, fake):
    impostor = Signer.from_key(generate_key(src.signer.name)[0])
    fake.publish(src.leaves, src.checkpoint(src.leaves, signer=impostor))
    return "the log's checkpoint does not verify"


def later_tile_lie(src, fake):
    fake.publish(src.leaves)
    fake.corrupt("tile/0/002.p/105", 0, bytes(32))
    return "index 512: the leaf's hash differs from the one in the level-0 hash tile"


@pytest.mark.parametrize("lie", [later_rollback, later_same_size_fork, later_inconsistent, later_bad_proof,
                                 later_broken_chain, later_logged_at_back, later_artist_gap, later_artist_repeat,
                                 later_map_root, later_checkpoint_mid_batch, later_policy_not_in_effect,
                                 later_loosening_without_notice, later_use_names_an_announced_policy_not_yet_in_effect,
                                 later_stats_lie, later_impostor, later_tile_lie, later_erasure_count],
                         ids=lambda f: f.__name__)
def test_a_lie_after_an_honest_run_is_an_alert(source, fake, watched, lie):
    before = (watched / STATE_FILE).read_bytes()
    message = lie(source, fake)
    result = _monitor(fake.url, source.vkey, watched)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("ALERT: ") and message in result.stderr, result.stderr
    assert (watched / STATE_FILE).read_bytes() == before


def test_follow_watches_until_an_alert(source, fake, tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF", 0.01)
    state = tmp_path / "state"
    lines: list[str] = []
    ended: list[BaseException] = []

    def follow() -> None:
        try:
            run_monitor(fake.url, source.vkey, state, follow=True, interval=0.05, echo=lines.append)
        except BaseException as exc:
            ended.append(exc)

    def wait_for(size: int) -> None:
        deadline = time.monotonic() + 10
        while _state_size(state) != size:
            assert time.monotonic() < deadline and not ended, (lines, ended)
            time.sleep(0.02)

    fake.publish(source.leaves[:314])
    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    wait_for(314)
    fake.fail_once.add("checkpoint")  # a hiccup is retried, not an alert
    fake.publish(source.leaves[:516])
    wait_for(516)
    fake.publish(_forked(source.leaves[:516]))
    watcher.join(10)
    assert len(ended) == 1 and isinstance(ended[0], VerificationError) and "fork" in ended[0].message
    assert not any("unchanged" in line for line in lines)  # quiet while nothing happens
    assert sum("signature ok" in line for line in lines) == 2


def test_one_monitor_per_state_and_one_log_per_state(source, fake, watched):
    other = generate_key(source.signer.name)[1]
    with pytest.raises(ValidationError, match="follows the log with key"):
        run_monitor(fake.url, other, watched)
    fd = os.open(watched / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StorageError, match="another monitor is using"):
            run_monitor(fake.url, source.vkey, watched)
    finally:
        os.close(fd)
    saved = (watched / STATE_FILE).read_bytes()
    (watched / STATE_FILE).write_bytes(saved.replace(b'"frontier":["', b'"frontier":["00'))
    with pytest.raises(StorageError, match="is damaged: its tree does not match its checkpoint"):
        run_monitor(fake.url, source.vkey, watched)
    state = orjson.loads(saved)
    (watched / STATE_FILE).write_bytes(orjson.dumps({**state, "map_root": "00" * 32}))
    with pytest.raises(StorageError, match="is damaged: its artist heads do not give its map root"):
        run_monitor(fake.url, source.vkey, watched)
    (watched / STATE_FILE).write_bytes(orjson.dumps({**state, "v": 1}))
    with pytest.raises(StorageError, match=r"was written by another version of tlog monitor \(state version 1\); move it away"):
        run_monitor(fake.url, source.vkey, watched)


def test_a_witness_policy_requires_its_quorum_on_every_checkpoint(source, fake, tmp_path):
    witnesses = [Signer.from_key(generate_key(f"w{i}.example/witness", ALG_COSIGNATURE_V1)[0]) for i in (1, 2, 3)]
    policy = tmp_path / "witnesses.policy"
    policy.write_text(f"log {source.vkey}\n" + "".join(f"witness w{i} {w.verifier_key}\n" for i, w in enumerate(witnesses, 1))
                      + "group two 2 w1 w2 w3\nquorum two\n")
    state = tmp_path / "state"
    fake.publish(source.leaves[:516], source.checkpoint(source.leaves[:516], cosigners=witnesses[:2]))
    result = _monitor(fake.url, source.vkey, state, "--witness-policy", str(policy))
    assert result.exit_code == 0, result.output
    assert "signature ok, cosigned by w1, w2 (quorum 'two' met)" in result.output

    fake.publish(source.leaves, source.checkpoint(source.leaves, cosigners=witnesses[2:]))
    result = _monitor(fake.url, source.vkey, state, "--witness-policy", str(policy))
    assert result.exit_code == 1
    assert result.stderr == ("ALERT: quorum: the checkpoint is cosigned by w3 of the witness policy, short of "
                             "its quorum 'two'\n")
    assert _state_size(state) == 516

    policy.write_text(f"log {generate_key(source.signer.name)[1]}\nquorum none\n")
    result = _monitor(fake.url, source.vkey, state, "--witness-policy", str(policy))
    assert result.exit_code == 2 and "lists logs, but not the key" in result.stderr
