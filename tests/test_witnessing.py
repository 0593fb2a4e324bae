"""The log's side of witnessing: c2sp.org/tlog-policy files, quorums, and the publisher that gets
cosignatures from real (in-process) witnesses before publishing a checkpoint."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tlog.checkpoint import open_checkpoint
from tlog.errors import Unavailable, ValidationError
from tlog.log import LocalLog
from tlog.note import ALG_COSIGNATURE_V1, Signature, Signer, Verifier, generate_key, parse_note
from tlog.server.public import LRU
from tlog.server.auth import RateLimit
from tlog.server.state import State
from tlog.witness.server import log_keys, make_witness_app
from tlog.witness.store import init_witness
from tlog.witnessing import Publisher, PolicyWitness, parse_witness_policy, verify_cosignatures

from .conftest import append, records

WKEYS = [generate_key(f"witness.example/{n}", ALG_COSIGNATURE_V1) for n in ("x1", "x2", "x3", "y1", "y2", "y3")]
LOG_VKEY = generate_key("example.com/log")[1]


def policy_text(*lines: str) -> bytes:
    return "\n".join(lines).encode() + b"\n"


# --- policy files -------------------------------------------------------------------------------------


def test_the_spec_example_policy() -> None:
    """c2sp.org/tlog-policy's two-level example, with keys filled in."""
    p = parse_witness_policy(policy_text(
        f"log {LOG_VKEY}",
        "",
        *(f"witness X{i} {WKEYS[i - 1][1]}" for i in (1, 2, 3)),
        "group X-witnesses 2 X1 X2 X3",
        "",
        *(f"witness Y{i} {WKEYS[i + 2][1]}" for i in (1, 2, 3)),
        "group Y-witnesses any Y1 Y2 Y3",
        "",
        "group X-and-Y all X-witnesses Y-witnesses",
        "quorum X-and-Y",
    ))
    assert [v.key for v in p.logs] == [LOG_VKEY] and p.quorum == "X-and-Y"
    assert p.satisfied({"X1", "X3", "Y2"})
    assert not p.satisfied({"X1", "Y1", "Y2", "Y3"})  # only one X
    assert not p.satisfied({"X1", "X2"})  # no Y
    assert not p.satisfied({"X-witnesses", "Y-witnesses"})  # group names are not cosigners


def test_syntax_details() -> None:
    p = parse_witness_policy(
        f"  # a comment\n\t\nwitness\tw1  {WKEYS[0][1]}\thttps://w1.example/ \n  quorum w1  ".encode()
    )
    assert p.witnesses["w1"].url == "https://w1.example/" and p.satisfied({"w1"}) and not p.satisfied(set())
    assert parse_witness_policy(b"quorum none\n").satisfied(set())
    assert parse_witness_policy(policy_text(f"witness a {WKEYS[0][1]}", f"witness b {WKEYS[1][1]}",
                                            "group g all a b", "quorum g")).groups["g"].threshold == 2


@pytest.mark.parametrize("lines,error", [
    ((), "no quorum"),
    (("quorum none", "quorum none"), "exactly one quorum"),
    (("quorum w1",), "not a witness or group"),
    (("frobnicate x",), "unknown keyword"),
    ((f"witness w1 {WKEYS[0][1]}", "group g 0 w1", "quorum g"), "threshold"),
    ((f"witness w1 {WKEYS[0][1]}", "group g 2 w1", "quorum g"), "threshold"),
    ((f"witness w1 {WKEYS[0][1]}", "group g 01 w1", "quorum g"), "threshold"),
    ((f"witness w1 {WKEYS[0][1]}", "group g any w1 w1", "quorum g"), "twice"),
    ((f"witness w1 {WKEYS[0][1]}", "group g any w1 none", "quorum g"), "member 'none'"),
    (("group g any later", "quorum g"), "defined earlier"),
    ((f"witness w1 {WKEYS[0][1]}", "group g any", "quorum g"), "at least one member"),
    ((f"witness none {WKEYS[0][1]}",), "predefined"),
    ((f"witness w1 {WKEYS[0][1]}", f"witness w1 {WKEYS[1][1]}"), "already defined"),
    ((f"witness w1 {WKEYS[0][1]}", f"witness w2 {WKEYS[0][1]}"), "already listed"),
    ((f"witness w1 {LOG_VKEY}",), "not a cosignature/v1 key"),
    ((f"log {WKEYS[0][1]}",), "witness key"),
    ((f"log {LOG_VKEY}", f"log {LOG_VKEY}"), "already listed"),
    ((f"witness w1 {WKEYS[0][1]} ftp://x",), "http"),
    ((f"witness w1 {WKEYS[0][1]} https://x extra",), "takes 2 or 3 items"),
    (("witness w1 not-a-key",), "line 1"),
])
def test_bad_policies_name_the_problem(lines: tuple[str, ...], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        parse_witness_policy(policy_text(*lines))


def test_control_characters_are_refused_but_high_bytes_are_opaque() -> None:
    with pytest.raises(ValidationError, match="control character 0x0d"):
        parse_witness_policy(b"quorum none\r\n")
    p = parse_witness_policy(b"witness K " + WKEYS[0][1].encode() + b"\nwitness \xe2\x84\xaa " + WKEYS[1][1].encode()
                             + b"\ngroup g all K \xe2\x84\xaa\nquorum g\n")
    assert len(p.witnesses) == 2  # "K" and the Kelvin sign are different names


def test_a_policy_must_fit_the_log() -> None:
    ours = generate_key("example.com/log")[1]
    p = parse_witness_policy(policy_text(f"log {LOG_VKEY}", "quorum none"))
    with pytest.raises(ValidationError, match="none of this log's keys"):
        p.check_for_log([ours])
    p = parse_witness_policy(policy_text(f"witness w1 {WKEYS[0][1]}", "quorum w1"))
    with pytest.raises(ValidationError, match="no URL"):
        p.check_for_log([ours])


def test_cosignatures_of_unknown_witnesses_are_ignored() -> None:
    """A 200 answer may carry other keys' lines (the spec's example answer has three); only the
    witness's own count, and only if they verify."""
    skey, vkey = generate_key("witness.example/w1", ALG_COSIGNATURE_V1)
    text = b"example.com/log\n1\n" + b"A" * 43 + b"=\n"
    ours = Signer.from_key(skey).signature(text).line()
    spec_example = (
        "\u2014 witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n"
    ).encode()
    w = PolicyWitness("w1", Verifier.from_key(vkey), "http://w1")
    assert [s.name for s in verify_cosignatures(w, text, spec_example + ours)] == ["witness.example/w1"]
    with pytest.raises(Exception, match="no valid cosignature"):
        verify_cosignatures(w, text, spec_example)


def test_what_the_log_publishes_of_its_policy_and_whose_cosignatures_count() -> None:
    """`as_json` (GET /v1/log) names the witnesses, their keys, the groups and the quorum, not the URLs;
    `cosigners` (the public page) keeps the policy's witnesses whose cosignature verifies, with its time."""
    p = parse_witness_policy(policy_text(
        *(f"witness x{i} {WKEYS[i - 1][1]} http://x{i}.internal" for i in (1, 2, 3)),
        "group two 2 x1 x2 x3", "quorum two"))
    assert p.as_json() == {"quorum": "two", "witnesses": [{"name": f"x{i}", "key": WKEYS[i - 1][1]} for i in (1, 2, 3)],
                           "groups": [{"name": "two", "threshold": 2, "members": ["x1", "x2", "x3"]}]}
    text = b"example.com/log\n1\n" + b"A" * 43 + b"=\n"
    log_line = Signer.from_key(generate_key("example.com/log")[0]).signature(text).line()
    x1, x3 = (Signer.from_key(WKEYS[i][0]).signature(text) for i in (0, 2))
    spoiled = Signature(x1.name, x1.key_hash, x1.sig[:-1] + bytes([x1.sig[-1] ^ 1])).line()
    stranger = Signer.from_key(WKEYS[4][0]).signature(text).line()
    note = text + b"\n" + log_line + x3.line() + spoiled + stranger
    assert p.cosigners(note) == {"x3": int.from_bytes(x3.sig[:8], "big")}
    assert p.cosigners(text + b"\n" + log_line + x3.line() + x1.line()) == {"x1": int.from_bytes(x1.sig[:8], "big"),
                                                                          "x3": int.from_bytes(x3.sig[:8], "big")}


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
    policy = parse_witness_policy(policy_text(f"witness a {a_key} {a_url}", f"witness b {b_key} {b_url}",
                                              "group g all a b", "quorum g"))
    pub = Publisher(log.store, policy)
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
    policy = parse_witness_policy(policy_text(f"witness a {a_key} {a_url}", f"witness b {b.vkey} {down}",
                                              "group g all a b", "quorum g"))
    clock = Clock()
    pub = Publisher(log.store, policy, clock=clock)
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
    policy = parse_witness_policy(policy_text(f"witness a {a_key} {a_url}", "quorum a"))
    assert await Publisher(log.store, policy).step(session)
    append(log.sequencer(), records(7))
    assert await Publisher(log.store, policy).step(session)
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
    policy = parse_witness_policy(policy_text(f"witness a {a_key} {a_url}", "quorum a"))
    assert await Publisher(fork.store, policy).step(session)  # the witness sees the fork first
    with caplog.at_level(logging.WARNING, "tlog.witnessing"):
        assert not await Publisher(log.store, policy).step(session)
    assert log.store.published_checkpoint() is None
    assert "another tree at size" in caplog.text and "split view" in caplog.text
    assert [r.status for r in a.store.refusals()] == [409]
    append(log.sequencer(), records(2, seed=2))  # growing does not help: the proof cannot verify
    with caplog.at_level(logging.WARNING, "tlog.witnessing"):
        assert not await Publisher(log.store, policy).step(session)
    assert "answered 422" in caplog.text and log.store.published_checkpoint() is None
    fork.close()


def test_a_witnessed_server_serves_nothing_before_the_quorum(log: LocalLog) -> None:
    state = State(log=log, tile_cache=LRU(4), rate_limit=RateLimit(), witnessed=True)
    assert state.published_size() == 0
    with pytest.raises(Unavailable, match="quorum"):
        state.published_note()
    note = log.store.latest_checkpoint() + Signature("witness.example/a", 1, bytes(72)).line()
    log.store.set_published(3, note)  # init's checkpoint: the log, policy and map leaves
    assert state.published_note() == note and state.published_size() == 3
    assert parse_note(note)[1][-1].name == "witness.example/a"
