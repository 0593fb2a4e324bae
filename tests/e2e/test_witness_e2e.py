"""Witnessing and key rotation with real processes: `tlog witness serve`, `tlog serve --witness-policy`,
`tlog key rotate|retire` against a running server, and a split view caught by the witness."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import orjson
from click.testing import CliRunner

from tlog.checkpoint import Checkpoint, open_checkpoint
from tlog.cli import main
from tlog.log import init_log, open_log
from tlog.note import Verifier, parse_note
from tlog.witness.store import WitnessStore

from ..conftest import append, records
from ..mapcheck import check_served_map_proof, map_values
from .conftest import Server, free_port, start_server, start_witness, stop_server

ORIGIN = "e2e.tlog.example/log"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def cli(*args: str) -> str:
    """A tlog command as an operator runs it, beside the servers (in this process, to save start-up
    time: the servers are other processes all the same); returns stdout."""
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def new_witness(tmp_path: Path, name: str = "w1") -> tuple[Path, str]:
    db = tmp_path / f"{name}.db"
    return db, cli("witness", "init", "--db", str(db), "--name", f"witness.example/{name}").split()[-1]


def refusals(wdb: Path) -> list[Any]:
    store = WitnessStore(wdb)
    try:
        return store.refusals()
    finally:
        store.close()


def policy_file(tmp_path: Path, wvkey: str, url: str) -> Path:
    p = tmp_path / "witnesses.policy"
    p.write_text(f"# who must cosign before /checkpoint moves\nwitness w1 {wvkey} {url}\nquorum w1\n")
    return p


def cosigned(server: Server, *verifiers: Verifier) -> tuple[Checkpoint, list[str]] | None:
    """The published checkpoint and who verifiably signed it, or None while nothing is published."""
    status, _, body = server.get("/checkpoint")
    if status != 200:
        return None
    cp, note = open_checkpoint(body, list(verifiers))
    return cp, sorted(s.name for s in note.verified)


def test_checkpoints_are_published_only_once_cosigned(tmp_path: Path) -> None:
    db = tmp_path / "tlog.db"
    log = init_log(db, ORIGIN)
    log_v = log.verifier
    log.close()
    wdb, wvkey = new_witness(tmp_path)
    port = free_port()
    server = start_server(db, "--witness-policy", str(policy_file(tmp_path, wvkey, f"http://127.0.0.1:{port}")))
    witness = None
    try:
        # The witness is down: the log serves, but publishes nothing it has not had cosigned.
        assert server.get("/checkpoint")[0] == 503
        assert server.get("/healthz")[0] == server.get("/metrics")[0] == 200
        witness = start_witness(wdb, log_v.key, port=port)
        cp, names = wait_for("the first cosigned checkpoint", lambda: cosigned(server, log_v, Verifier.from_key(wvkey)))
        assert names == [ORIGIN, "witness.example/w1"] and cp.size == 3  # init's log, policy and map leaves
        writer = open_log(db, secrets_needed=True)  # like `tlog append`, beside the server
        append(writer.sequencer(), records(30))
        size = writer.store.size()
        writer.close()
        cp, names = wait_for("the next cosigned checkpoint",
                             lambda: (c := cosigned(server, log_v, Verifier.from_key(wvkey))) and c[0].size == size and c)
        assert names == [ORIGIN, "witness.example/w1"]
        assert orjson.loads(server.get("/v1/log")[2])["size"] == size
    finally:
        out = stop_server(server)
        wout = stop_server(witness) if witness else ""
    assert "Traceback" not in out + wout, out + wout
    assert f"cosigned {ORIGIN} at size {size}" in wout
    assert "witness w1 did not cosign size 3" in out  # it said why it waited


def test_the_map_of_a_published_size_behind_the_latest_is_right_after_a_restart(tmp_path: Path) -> None:
    """With a witness policy, /checkpoint lags the latest checkpoint while the witness is away. A server
    restarted then holds only the latest size's artist map in memory: the map it serves for the published
    size is rebuilt from the store (maps.py), and its proofs must verify against the map leaf ending the
    published checkpoint, artists appended since included (as absent or at their older head)."""
    db = tmp_path / "tlog.db"
    log = init_log(db, ORIGIN)
    log_v = log.verifier
    log.close()
    wdb, wvkey = new_witness(tmp_path)
    witness = start_witness(wdb, log_v.key)
    policy = str(policy_file(tmp_path, wvkey, witness.url))
    writer = open_log(db, secrets_needed=True)
    append(writer.sequencer(), records(30, seed=1, artists=6))
    server = start_server(db, "--witness-policy", policy)
    try:
        published = writer.store.size()
        wait_for("the witness to cosign", lambda: (c := cosigned(server, log_v)) and c[0].size == published)
        stop_server(witness)
        witness = None
        append(writer.sequencer(), records(30, seed=2, artists=9))  # 3 new artists, 6 moved on
        latest = writer.store.size()
        want, now = map_values(writer.store, published), map_values(writer.store, latest)
        stop_server(server)
        server = start_server(db, "--witness-policy", policy)
        cp, _ = cosigned(server, log_v)
        assert cp.size == published < latest
        assert len(want) == 6 and len(now) == 9 and all(want[t] != now[t] for t in want)

        def get(path: str) -> tuple[int, bytes]:
            status, _, body = server.get(path)
            return status, body

        for tag in now:
            assert check_served_map_proof(get, tag, cp) == want.get(tag), tag
        status, _, body = server.get(f"/v1/map/proof?tag={next(iter(now))}&size={latest}")
        assert status == 200 and orjson.loads(body)["root"] == writer.store.entry(latest - 1).details["root"]
    finally:
        writer.close()
        out = stop_server(server)
        if witness:
            stop_server(witness)
    assert "Traceback" not in out, out


def test_a_split_view_is_caught_by_the_witness(tmp_path: Path) -> None:
    """Two copies of one log (same key) diverge. The witness cosigns the first history it sees and
    refuses the other, saying why; the second copy never publishes a checkpoint."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    log = init_log(tmp_path / "a" / "tlog.db", ORIGIN)
    log_v = log.verifier
    log.close()
    for p in (tmp_path / "a").iterdir():
        shutil.copy(p, tmp_path / "b" / p.name)
    for name, n, seed in (("a", 10, 1), ("b", 25, 2)):
        copy = open_log(tmp_path / name / "tlog.db", secrets_needed=True)
        append(copy.sequencer(), records(n, seed=seed))
        copy.close()
    wdb, wvkey = new_witness(tmp_path)
    witness = start_witness(wdb, log_v.key)
    policy = str(policy_file(tmp_path, wvkey, witness.url))
    a = start_server(tmp_path / "a" / "tlog.db", "--witness-policy", policy)
    b = None
    try:
        wait_for("history A cosigned", lambda: cosigned(a, log_v))
        b = start_server(tmp_path / "b" / "tlog.db", "--witness-policy", policy)
        wait_for("the witness to refuse history B", lambda: refusals(wdb))
        assert b.get("/checkpoint")[0] == 503
    finally:
        outs = [stop_server(s) for s in (a, b, witness) if s]
    aout, bout, wout = outs
    assert "Traceback" not in "".join(outs)
    # A: init's 3 leaves, 10 records and a map leaf (14); B: 3, 25 and a map leaf (29).
    assert "refused e2e.tlog.example/log (422): the checkpoint at size 29 is not consistent with the one this " \
           "witness cosigned at size 14" in wout
    assert "witness w1 did not cosign size 29: it answered 422" in bout
    status = cli("witness", "status", "--db", str(wdb))
    assert f"log {ORIGIN} size 14" in status and "refused e2e.tlog.example/log (422)" in status


def test_key_rotation_without_a_new_log_or_downtime(tmp_path: Path) -> None:
    db = tmp_path / "tlog.db"
    init_log(db, ORIGIN).close()
    token = cli("token", "create", "--db", str(db), "--service", "recsys").split()[-1]
    server = start_server(db)
    try:
        api = ApiClient(server, token)
        (old,) = api.keys()
        new = cli("key", "rotate", "--db", str(db)).split()[-1]
        wait_for("/v1/log to list both keys", lambda: api.keys() == [old, new])
        index = api.log_use(1)
        both = [Verifier.from_key(old), Verifier.from_key(new)]
        signed = server.get("/checkpoint")[2]
        assert open_checkpoint(signed, both)[0].size == index + 2  # the use, then its batch's map leaf
        assert sorted(s.key_hash for s in parse_note(signed)[1]) == sorted(v.key_hash for v in both)

        cli("key", "retire", "--db", str(db), old)
        wait_for("/v1/log to list the new key only", lambda: api.keys() == [new])
        index = api.log_use(2)
        signed = server.get("/checkpoint")[2]
        assert [s.key_hash for s in parse_note(signed)[1]] == [both[1].key_hash]
        assert open_checkpoint(signed, [both[1]])[0].size == index + 2
        assert server.proc.poll() is None  # the same process served throughout
    finally:
        out = stop_server(server)
    assert "Traceback" not in out, out
    assert cli("verify", "--db", str(db), "--vkey", new, "-q")


class ApiClient:
    def __init__(self, server: Server, token: str) -> None:
        self.server, self.token = server, token

    def keys(self) -> list[str]:
        return orjson.loads(self.server.get("/v1/log")[2])["verifier_keys"]

    def log_use(self, n: int) -> int:
        import urllib.request

        rec = records(1, seed=500 + n)[0] | {"event_id": f"rotation-{n}"}
        req = urllib.request.Request(self.server.url + "/v1/uses", data=orjson.dumps(rec), method="POST",
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return orjson.loads(r.read())["results"][0]["index"]
