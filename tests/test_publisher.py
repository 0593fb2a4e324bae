"""The log's side of witnessing (tlog/server/publisher.py): the publisher gets cosignatures from real
(in-process) witnesses before publishing a checkpoint. The quorum files: tests/test_quorum.py."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tlog.checkpoint import open_checkpoint
from tlog.errors import Unavailable
from tlog.log import LocalLog
from tlog.note import ALG_COSIGNATURE_V1, Signature, Signer, Verifier, generate_key, parse_note
from tlog.server.publisher import Publisher, verify_cosignatures
from tlog.server.ratelimit import RateLimit
from tlog.server.reads import ReadPool
from tlog.server.state import LRU, State
from tlog.witness.quorum import QuorumWitness, parse_witness_quorum
from tlog.witness.server import log_keys, make_witness_app
from tlog.witness.store import init_witness

from .conftest import append, records


def quorum_text(*lines: str) -> bytes:
    return "\n".join(lines).encode() + b"\n"


def test_cosignatures_of_unknown_witnesses_are_ignored() -> None:
    """A 200 answer may carry other keys' lines (the spec's example answer has three); only the
    witness's own count, and only if they verify."""
    skey, vkey = generate_key("witness.example/w1", ALG_COSIGNATURE_V1)
    text = b"example.com/log\n1\n" + b"A" * 43 + b"=\n"
    ours = Signer.from_key(skey).signature(text).line()
    spec_example = (
        "\u2014 witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n"
    ).encode()
    w = QuorumWitness("w1", Verifier.from_key(vkey), "http://w1")
    assert [s.name for s in verify_cosignatures(w, text, spec_example + ours)] == ["witness.example/w1"]
    with pytest.raises(Exception, match="no valid cosignature"):
        verify_cosignatures(w, text, spec_example)


# --- the publisher against real witnesses ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def unused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def start_witness(aiohttp_server: Any, tmp_path: Path, name: str, log: LocalLog) -> tuple[str, Any, Any]:
    w = init_witness(tmp_path / f"{name}.db", f"witness.example/{name}")
    server = await aiohttp_server(make_witness_app(w, log_keys([log.verifier.key])))
    return w.vkey, w, str(server.make_url("/"))


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


async def test_publishes_once_the_quorum_cosigned(aiohttp_server: Any, tmp_path: Path, log: LocalLog,
                                                  session: Any) -> None:
    a_key, a, a_url = await start_witness(aiohttp_server, tmp_path, "a", log)
    b_key, b, b_url = await start_witness(aiohttp_server, tmp_path, "b", log)
    quorum = parse_witness_quorum(quorum_text(f"witness a {a_key} {a_url}", f"witness b {b_key} {b_url}",
                                              "group g all a b", "quorum g"))
    pub = Publisher(log.store, quorum)
    assert await pub.step(session)
    published = log.store.published_checkpoint()
    assert published.startswith(log.store.latest_checkpoint())
    cp, note = open_checkpoint(published, [log.verifier, Verifier.from_key(a_key), Verifier.from_key(b_key)])
    assert sorted(s.name for s in note.verified) == ["test.tlog.example/log", "witness.example/a", "witness.example/b"]
    assert not await pub.step(session)  # nothing new

    seq = log.sequencer()
    for n in (3, 1, 20):  # each batch a checkpoint; the witnesses get proofs from what they saw
        append(seq, records(n, seed=n))
        assert await pub.step(session)
    size = log.store.size()
    assert a.store.log_state("test.tlog.example/log").size == b.store.log_state("test.tlog.example/log").size == size
    assert open_checkpoint(log.store.published_checkpoint(), [log.verifier])[0].size == size


async def test_a_down_witness_delays_publication_and_never_blocks_appends(
        aiohttp_server: Any, tmp_path: Path, log: LocalLog, session: Any, caplog: Any) -> None:
    a_key, _, a_url = await start_witness(aiohttp_server, tmp_path, "a", log)
    b = init_witness(tmp_path / "b.db", "witness.example/b")  # made, not yet serving
    down = unused_url()
    quorum = parse_witness_quorum(quorum_text(f"witness a {a_key} {a_url}", f"witness b {b.vkey} {down}",
                                              "group g all a b", "quorum g"))
    clock = Clock()
    pub = Publisher(log.store, quorum, clock=clock)
    with caplog.at_level(logging.WARNING, "tlog.witnessing"):
        assert not await pub.step(session)
    assert log.store.published_checkpoint() is None
    assert "witness b did not cosign" in caplog.text
    append(log.sequencer(), records(5))  # the log goes on
    assert not await pub.step(session)  # b is backing off; a cosigns the new checkpoint
    assert log.store.published_checkpoint() is None

    # b comes up at that address and, once its backoff is over, the checkpoint is published.
    port = int(down.rsplit(":", 1)[1])
    await aiohttp_server(make_witness_app(b, log_keys([log.verifier.key])), port=port)
    clock.now += 60
    assert await pub.step(session)
    assert open_checkpoint(log.store.published_checkpoint(), [log.verifier])[0].size == log.store.size()


async def test_a_witness_that_saw_more_is_resent_from_its_size(aiohttp_server: Any, tmp_path: Path,
                                                               log: LocalLog, session: Any) -> None:
    """A restarted publisher knows nothing; the witness's 409 names its size and the log resends."""
    a_key, a, a_url = await start_witness(aiohttp_server, tmp_path, "a", log)
    quorum = parse_witness_quorum(quorum_text(f"witness a {a_key} {a_url}", "quorum a"))
    assert await Publisher(log.store, quorum).step(session)
    append(log.sequencer(), records(7))
    assert await Publisher(log.store, quorum).step(session)
    assert a.store.log_state("test.tlog.example/log").size == log.store.size()


async def test_a_split_view_is_never_published(aiohttp_server: Any, tmp_path: Path, log: LocalLog,
                                               session: Any, caplog: Any) -> None:
    """The witness first saw another history under the same key (a fork): this log cannot get its
    cosignature, so it publishes nothing, and says why."""
    import shutil
    from tlog.log import open_log

    fork_dir = tmp_path / "fork"
    fork_dir.mkdir()
    log.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for p in tmp_path.glob("tlog.*"):
        shutil.copy(p, fork_dir / p.name)
    fork = open_log(fork_dir / "tlog.db", secrets_needed=True)
    append(fork.sequencer(), records(4, seed=99))  # the fork's history
    append(log.sequencer(), records(4, seed=1))  # ours, same size, other leaves
    a_key, a, a_url = await start_witness(aiohttp_server, tmp_path, "a", log)
    quorum = parse_witness_quorum(quorum_text(f"witness a {a_key} {a_url}", "quorum a"))
    assert await Publisher(fork.store, quorum).step(session)  # the witness sees the fork first
    with caplog.at_level(logging.WARNING, "tlog.witnessing"):
        assert not await Publisher(log.store, quorum).step(session)
    assert log.store.published_checkpoint() is None
    assert "another tree at size" in caplog.text and "split view" in caplog.text
    assert [r.status for r in a.store.refusals()] == [409]
    append(log.sequencer(), records(2, seed=2))  # growing does not help: the proof cannot verify
    with caplog.at_level(logging.WARNING, "tlog.witnessing"):
        assert not await Publisher(log.store, quorum).step(session)
    assert "answered 422" in caplog.text and log.store.published_checkpoint() is None
    fork.close()


def test_a_witnessed_server_serves_nothing_before_the_quorum(log: LocalLog) -> None:
    state = State(log=log, tile_cache=LRU(4), rate_limit=RateLimit(), reads=ReadPool(log.store.sharing_nodes), witnessed=True)
    assert state.published_size() == 0
    with pytest.raises(Unavailable, match="quorum"):
        state.published_note()
    note = log.store.latest_checkpoint() + Signature("witness.example/a", 1, bytes(72)).line()
    log.store.set_published(3, note)  # init's checkpoint: the log, policy and map leaves
    assert state.published_note() == note and state.published_size() == 3
    assert parse_note(note)[1][-1].name == "witness.example/a"
