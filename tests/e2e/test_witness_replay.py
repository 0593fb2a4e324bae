"""A checking witness (`tlog witness serve --replay URL`): it cosigns an honest log's checkpoints,
replaying only what each adds, and refuses with 422, naming the index, a checkpoint whose leaves break a
public rule (a wrong map root, an aseq that skips, a checkpoint not at a map leaf, a loosening policy
without the notice promised, …), against a log that
lies with its own key (tests/e2e/fakelog.py). End to end: a real `tlog serve --witness-policy` and a real
replaying witness, whose cosignature needs the leaves of a checkpoint not yet published."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlog import merkle, remote
from tlog.log import init_log, open_log
from tlog.note import Verifier
from tlog.witness import core
from tlog.witness.replay import Replayer
from tlog.witness.server import log_keys, make_witness_app
from tlog.witness.store import init_witness

from ..conftest import append, records
from .conftest import free_port, start_server, start_witness, stop_server
from .fakelog import with_policy
from .test_remote_verify import (  # the same grown demo log (fixtures demo_db, source) and the same lies
    LOOSE,
    demo_db,  # noqa: F401
    lie_artist_gap,
    lie_artist_repeat,
    lie_checkpoint_mid_batch,
    lie_erasure_count,
    lie_log_leaf,
    lie_loosening_without_notice,
    lie_map_root,
    lie_missing_bundle,
    lie_policy_document,
    lie_policy_not_in_effect,
    lie_prev,
    source,  # noqa: F401
)
from .test_witness_e2e import cosigned, new_witness, policy_file, wait_for


@pytest.fixture
async def witness(tmp_path, source, fake, aiohttp_client):
    """A replaying witness of the fake log, in this process (the log it replays runs in a thread)."""
    w = init_witness(tmp_path / "w.db", "witness.example/replay")
    origin = source.signer.name
    client = await aiohttp_client(make_witness_app(w, log_keys([source.vkey]), {origin: Replayer(origin, fake.url)}))
    yield client
    w.close()


async def add(client, checkpoint: bytes, old: int = 0, proof: list[bytes] | None = None) -> tuple[int, str]:
    r = await client.post("/add-checkpoint", data=core.format_request(old, proof or [], checkpoint))
    return r.status, await r.text()


async def test_an_honest_log_is_cosigned_replaying_only_what_each_checkpoint_adds(source, fake, witness):
    first = source.leaves[:314]  # ends at the map leaf 313
    status, body = await add(witness, fake.publish(first))
    assert status == 200 and body.startswith("— witness.example/replay "), body
    fetched = set(fake.hits)
    tree = merkle.MemoryHashes(map(merkle.leaf_hash, source.leaves))
    proof = merkle.consistency_proof(314, len(source.leaves), tree)
    status, body = await add(witness, fake.publish(source.leaves), old=314, proof=proof)
    assert status == 200, body
    # The second replay read the bundles from leaf 314 on, not the first ones again.
    assert fake.hits["tile/entries/000"] == 1 and "tile/entries/002.p/105" not in fetched


@pytest.mark.parametrize("lie", [lie_map_root, lie_artist_gap, lie_artist_repeat, lie_checkpoint_mid_batch,
                                 lie_policy_not_in_effect, lie_loosening_without_notice, lie_policy_document,
                                 lie_log_leaf, lie_prev, lie_missing_bundle, lie_erasure_count],
                         ids=lambda f: f.__name__)
async def test_a_checkpoint_whose_leaves_break_a_rule_is_refused_with_the_reason(source, fake, witness, lie):
    index, message = lie(source, fake)
    status, body = await add(witness, fake.files["checkpoint"])
    assert status == 422, body
    assert body.startswith(f"replaying the log's leaves: index {index}: ") and message in body, body


async def test_a_loosening_without_notice_after_a_cosigned_checkpoint_is_refused(source, fake, witness):
    """The policy it loosens was replayed for an earlier checkpoint: the witness kept it."""
    status, body = await add(witness, fake.publish(source.leaves))
    assert status == 200, body
    leaves = with_policy(source.leaves, "loose", LOOSE.document)
    signed = fake.publish(leaves, documents={"loose": LOOSE.document})
    proof = merkle.consistency_proof(617, 619, merkle.MemoryHashes(map(merkle.leaf_hash, leaves)))
    status, body = await add(witness, signed, old=617, proof=proof)
    assert status == 422 and "index 617: notice rule broken: policy 'loose' loosens 'default' — " in body, body
    assert fake.hits["v1/policies/default"] == 1  # its document was fetched once, for the first replay


async def test_after_a_refusal_the_witness_replays_from_the_start_again(source, fake, witness):
    lie_map_root(source, fake)
    assert (await add(witness, fake.files["checkpoint"]))[0] == 422
    status, body = await add(witness, fake.publish(source.leaves))
    assert status == 200, body


async def test_a_log_that_no_longer_serves_what_it_signed_is_refused(source, fake, witness):
    fake.publish(source.leaves)
    del fake.files["tile/entries/000"]
    status, body = await add(witness, fake.files["checkpoint"])
    assert status == 422 and "index 0: the log does not serve its tiles" in body, body


async def test_an_unreachable_log_is_a_503_so_the_log_retries(tmp_path, source, aiohttp_client, monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF", 0.01)
    w = init_witness(tmp_path / "w.db", "witness.example/replay")
    origin = source.signer.name
    nobody = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    client = await aiohttp_client(make_witness_app(w, log_keys([source.vkey]), {origin: Replayer(origin, nobody)}))
    try:
        status, body = await add(client, source.checkpoint(source.leaves))
        assert status == 503 and body.startswith("cannot read the log's leaves to replay them"), body
        assert w.store.log_state(origin) is None  # nothing cosigned, nothing recorded
    finally:
        w.close()


def test_a_replaying_witness_cosigns_a_real_log_before_it_publishes(tmp_path: Path) -> None:
    """The log serves the tiles of its latest signed checkpoint before any witness cosigned it, so the
    witness can replay them; /checkpoint moves only once it has."""
    db = tmp_path / "tlog.db"
    log = init_log(db, "replay.tlog.example/log")
    log_v = log.verifier
    log.close()
    wdb, wvkey = new_witness(tmp_path)
    port, wport = free_port(), free_port()
    server = start_server(db, "--witness-policy", str(policy_file(tmp_path, wvkey, f"http://127.0.0.1:{wport}")),
                          port=port)
    witness = start_witness(wdb, log_v.key, port=wport, extra=("--replay", f"http://127.0.0.1:{port}/"))
    try:
        wait_for("the first cosigned checkpoint", lambda: cosigned(server, log_v, Verifier.from_key(wvkey)))
        writer = open_log(db, secrets_needed=True)
        append(writer.sequencer(), records(40, artists=7))
        size = writer.store.size()
        writer.close()
        cp, names = wait_for("the replayed and cosigned checkpoint",
                             lambda: (c := cosigned(server, log_v, Verifier.from_key(wvkey))) and c[0].size == size and c)
        assert names == ["replay.tlog.example/log", "witness.example/w1"]
    finally:
        out = stop_server(server)
        wout = stop_server(witness)
    assert "Traceback" not in out + wout, out + wout
    assert f"replaying replay.tlog.example/log from http://127.0.0.1:{port}/ before cosigning" in wout
    assert f"cosigned replay.tlog.example/log at size {size}" in wout
