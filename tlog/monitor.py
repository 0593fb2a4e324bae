"""`tlog monitor`: follow a log from its public API and alert on anything a log must never do.

Each round fetches /checkpoint and checks its signature, then compares it with the last checkpoint this
monitor checked in full (kept in the state directory): a smaller size is a rollback, the same size with
another root a fork. For a larger one it checks the log's consistency proof from the old checkpoint, then
continues the saved ChainChecker over the new leaves (leaf and tile hashes, and the public-leaf rules of
tlog/replay.py: hash chain, `logged_at` order, every artist chain, every map root, the policy each use
names, each policy leaf's document from /v1/policies/{id} and the notice rule, the new checkpoint
ending at a map leaf, the new root), recounts leaves by type/purpose/decision and compares the counts
with /v1/stats. Only a round that passes becomes the new state, so after an alert
every later run checks the same step again and alerts again, and the state never holds anything
unverified.

The state is one JSON file, replaced atomically (write, fsync, rename, fsync the directory), so a crash
or Ctrl-C at any moment leaves either the old state or the new one. It keeps what the rules need to go
on: the tree's frontier, the last leaf's hash and time, every artist's (aseq, head), every policy leaf
with its document (the notice rule compares each new policy with earlier ones), how far erasure leaves
have covered each erased tag's chain (each new one's count is checked against it), and the root of the
last map leaf. The artist map itself is not kept: a checked checkpoint ends at a map leaf, so the map
is exactly the saved artist heads, rebuilt at load and checked against the saved root."""

from __future__ import annotations

import asyncio
import base64
import binascii
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import merkle
from .artistmap import ArtistMap, MapValue
from .checkpoint import Checkpoint
from .errors import NoteError, NotFound, ProofError, StorageError, Unavailable, ValidationError, VerificationError
from .files import private_dir, write_private
from .leaf import Leaf
from .note import Verifier
from .policy import parse_policy
from .remote import TileClient
from .replay import ChainChecker, Sequential
from .verify import Progress, check_remote_leaves, verified_checkpoint
from .witness.quorum import WitnessQuorum, load_witness_quorum

STATE_FILE = "state.json"
STATE_VERSION = 3  # 1: before map leaves and policies in effect; 2: before policy documents; refused, to start over
DEFAULT_INTERVAL = 10.0

Group = tuple[str, "str | None", "str | None"]  # (type, purpose, decision), as /v1/stats totals key them


@dataclass
class MonitorState:
    """What the monitor knows about the log: the last checkpoint it checked in full, the chain rules'
    state after that checkpoint's last leaf, and leaf counts by group."""

    signed: bytes
    checkpoint: Checkpoint
    checker: ChainChecker
    counts: dict[Group, int] = field(default_factory=dict)


def load_state(state_dir: Path, verifier: Verifier) -> MonitorState | None:
    """The saved state, or None on a first run. Refuses a state kept for another log's key, or one whose
    saved tree does not match its own signed checkpoint (a damaged file)."""
    path = state_dir / STATE_FILE
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        raise StorageError(f"{path} is not JSON ({exc}); move it away to start over") from None
    if raw.get("vkey") != verifier.key:
        raise ValidationError(f"{state_dir} follows the log with key {raw.get('vkey')}; use another --state for another log")
    if raw.get("v") != STATE_VERSION:
        raise StorageError(f"{path} was written by another version of tlog monitor (state version {raw.get('v')}); "
                           "move it away to start over")
    try:
        checker = ChainChecker(verifier.name)
        cp = verified_checkpoint(raw["checkpoint"].encode(), verifier, verifier.name, "the saved checkpoint")
        checker.frontier = merkle.Frontier(cp.size, [bytes.fromhex(h) for h in raw["frontier"]])
        checker.prev = bytes.fromhex(raw["prev"])
        checker.logged_at = raw["logged_at"]
        checker.last_type = "map"  # only a checkpoint that ends at a map leaf is ever saved
        checker.artists = {bytes.fromhex(t): (aseq, index) for t, (aseq, index) in raw["artists"].items()}
        amap = ArtistMap.build((t, MapValue(aseq, head)) for t, (aseq, head) in checker.artists.items())
        checker.sequential = Sequential(amap, [(e, i, parse_policy(doc.encode(), p)) for e, i, p, doc in raw["policies"]],
                                        {bytes.fromhex(t): aseq for t, aseq in raw.get("erased", {}).items()})
        map_root = bytes.fromhex(raw["map_root"])
        counts: dict[Group, int] = {(t, p, d): n for t, p, d, n in raw["counts"]}
    except (KeyError, TypeError, ValueError, VerificationError, ValidationError) as exc:
        raise StorageError(f"{path} is damaged ({exc}); move it away to start over") from None
    if checker.frontier.root() != cp.root or len(checker.prev) != merkle.HASH_SIZE:
        raise StorageError(f"{path} is damaged: its tree does not match its checkpoint; move it away to start over")
    if amap.root() != map_root:
        raise StorageError(f"{path} is damaged: its artist heads do not give its map root; move it away to start over")
    return MonitorState(raw["checkpoint"].encode(), cp, checker, counts)


def save_state(state_dir: Path, verifier: Verifier, state: MonitorState) -> None:
    c = state.checker
    rules = c.sequential
    assert isinstance(rules, Sequential) and not rules.changed, "saved only at a checkpoint, which ends at a map leaf"
    assert c.frontier is not None, "the monitor's checker keeps the tree"
    data = orjson.dumps({
        "v": STATE_VERSION,
        "vkey": verifier.key,
        "checkpoint": state.signed.decode(),
        "frontier": [h.hex() for h in c.frontier.hashes],
        "prev": c.prev.hex(),
        "logged_at": c.logged_at,
        "artists": {t.hex(): [aseq, index] for t, (aseq, index) in c.artists.items()},
        "policies": [[e, i, p.id, p.document.decode()] for e, i, p in rules.schedule],
        "erased": {t.hex(): aseq for t, aseq in rules.erased.items()},
        "map_root": rules.map.root().hex(),
        "counts": [[*group, n] for group, n in sorted(state.counts.items(), key=_group_order)],
    })
    write_private(state_dir / STATE_FILE, data)


def _group_order(item: tuple[Group, int]) -> tuple[str, str, str]:
    t, p, d = item[0]
    return t, p or "", d or ""


def _group(leaf: Leaf) -> Group:
    return leaf.type, leaf.purpose, leaf.decision


# --- one round ------------------------------------------------------------------------------------


async def check_round(client: TileClient, verifier: Verifier, state_dir: Path, echo: Callable[[str], None],
                      progress: Progress | None = None, quorum: WitnessQuorum | None = None) -> tuple[Checkpoint, bool]:
    """Checks the log's current checkpoint (and, with a witness policy, its quorum of cosignatures)
    against the saved state and saves the new state if all holds. Returns the checkpoint and whether the
    log grew; VerificationError (an alert) if it does not hold. The round's report is echoed once the
    state is saved: a reader that stops reading (`| head`, a closed pipe) cannot cost the state."""
    lines: list[str] = []
    try:
        return await _round(client, verifier, state_dir, lines.append, progress, quorum)
    finally:
        for line in lines:
            echo(line)


async def _round(client: TileClient, verifier: Verifier, state_dir: Path, echo: Callable[[str], None],
                 progress: Progress | None, quorum: WitnessQuorum | None) -> tuple[Checkpoint, bool]:
    origin = verifier.name
    state = load_state(state_dir, verifier)
    signed = await client.checkpoint()
    cp = verified_checkpoint(signed, verifier, origin, "the log's checkpoint")
    witnessed = _check_quorum(signed, verifier, quorum) if quorum is not None else ""
    if state is None:
        state = MonitorState(b"", Checkpoint(origin, 0, merkle.EMPTY_ROOT), ChainChecker(origin))
        echo(f"{origin}: first run, checking from leaf 0")
    old = state.checkpoint
    if cp.size < old.size:
        raise VerificationError(f"rollback: the log's checkpoint has size {cp.size}, smaller than the size {old.size} "
                                f"this monitor checked before{_keep_evidence(state_dir, signed, cp.size)}")
    if cp.size == old.size:
        if cp.root != old.root:
            raise _fork(cp.size - 1, f"the log's checkpoint of size {cp.size} has another root than the one this "
                                     f"monitor checked before{_keep_evidence(state_dir, signed, cp.size)}")
        return cp, False
    echo(f"{origin}: checkpoint of size {cp.size}, root {base64.b64encode(cp.root).decode()}: signature ok{witnessed}")
    if old.size:
        proof = await _consistency_proof(client, old.size, cp.size)
        try:
            merkle.verify_consistency(old.size, cp.size, old.root, cp.root, proof)
        except ProofError as exc:
            raise _fork(old.size - 1, f"the log's checkpoint of size {cp.size} is not consistent with the one of "
                                      f"size {old.size} this monitor checked before ({exc.message})"
                                      f"{_keep_evidence(state_dir, signed, cp.size)}") from None
        echo(f"  consistent with the checkpoint of size {old.size} checked before ({len(proof)}-hash proof)")
    counts = dict(state.counts)
    new = dict.fromkeys(counts, 0)
    artists_before = len(state.checker.artists)

    erasures: list[str] = []

    def count(leaf: Leaf) -> None:
        g = _group(leaf)
        counts[g] = counts.get(g, 0) + 1
        new[g] = new.get(g, 0) + 1
        if leaf.type == "erasure":  # its count was checked against the tag's chain: erased, not tampered with
            erasures.append(f"  erasure at {leaf.logged_at}: {leaf.erased} entries of artist tag {leaf.artist.hex()[:16]}… "  # type: ignore[union-attr]
                            "erased on request (their public leaves stay and verified)")

    await check_remote_leaves(client, state.checker, cp.size, roots={cp.size: (cp.root, "the signed checkpoint")},
                              progress=progress, on_leaf=count)
    artists = len(state.checker.artists)
    maps = new.get(("map", None, None), 0)
    echo(f"  leaves {old.size}..{cp.size - 1}: leaf and tile hashes, hash chain, logged_at order, "
         f"{artists} artist chains ({artists - artists_before} new), {maps} new map root{'s' * (maps != 1)}, "
         f"the policy each use names, the notice rule, erasure counts, tree root: ok")
    for line in erasures:
        echo(line)
    for (t, p, d), n in sorted(counts.items(), key=_group_order):
        echo(f"    {t:<11}{p or '-':<32}{d or '-':<18}{n:>10}  (+{new.get((t, p, d), 0)})")
    echo(f"  {await _compare_stats(client, cp.size, counts)}")
    save_state(state_dir, verifier, MonitorState(signed, cp, state.checker, counts))
    return cp, True


def _check_quorum(signed: bytes, verifier: Verifier, quorum: WitnessQuorum) -> str:
    """Which of the quorum file's witnesses cosigned `signed` (WitnessQuorum.require), for the round's line."""
    try:
        cosigners = quorum.require(signed, verifier, whose="the witness policy")
    except VerificationError as exc:
        raise VerificationError(f"quorum: {exc.message}") from None
    return f", cosigned by {', '.join(cosigners) or 'no witness'} (quorum {quorum.quorum!r} met)"


def _fork(index: int, message: str) -> VerificationError:
    return VerificationError(f"fork (split view): {message}", index=max(index, 0))


def _keep_evidence(state_dir: Path, signed: bytes, size: int) -> str:
    """Saves the conflicting checkpoint beside the state: the two signed checkpoints are the proof of the
    log's misbehaviour, to show to anyone. Returns the sentence that says where it is."""
    path = state_dir / f"conflicting-{size}.checkpoint"
    write_private(path, signed)
    return f"; the conflicting signed checkpoint is saved in {path}"


async def _consistency_proof(client: TileClient, old: int, new: int) -> list[bytes]:
    try:
        body = await client.json("v1/proof/consistency", old=old, new=new)
        return [base64.b64decode(h, validate=True) for h in body["proof"]]
    except (NotFound, ValidationError) as exc:
        raise VerificationError(f"consistency: the log gives no consistency proof from {old} to {new}: {exc.message}") from None
    except (KeyError, TypeError, binascii.Error) as exc:
        raise VerificationError(f"consistency: the log's consistency proof from {old} to {new} is malformed ({exc})") from None


async def _compare_stats(client: TileClient, size: int, counts: dict[Group, int]) -> str:
    """Compares /v1/stats with the recount; they are the log's published figures, so any difference is
    an alert. Stats of another size (the log grew meanwhile) are not comparable and are only noted."""
    try:
        stats = await client.json("v1/stats")
        if stats["size"] != size:
            return f"/v1/stats is at size {stats['size']}, not {size}: not compared this round"
        claimed: dict[Group, int] = {}
        for t in stats["totals"]:
            g = (t["type"], t["purpose"], t["decision"])
            claimed[g] = claimed.get(g, 0) + t["leaves"]
    except (NotFound, ValidationError) as exc:
        raise VerificationError(f"stats: the log's /v1/stats cannot be read: {exc.message}") from None
    except (KeyError, TypeError) as exc:
        raise VerificationError(f"stats: the log's /v1/stats is malformed ({exc!r})") from None
    for g in sorted(claimed.keys() | counts.keys(), key=lambda g: _group_order((g, 0))):
        if claimed.get(g, 0) != counts.get(g, 0):
            raise VerificationError(f"stats: /v1/stats claims {claimed.get(g, 0)} leaves of {'/'.join(x or '-' for x in g)}, "
                                    f"the leaves hold {counts.get(g, 0)}")
    return f"/v1/stats agrees with the recount ({size} leaves in {len(counts)} groups)"


# --- running --------------------------------------------------------------------------------------


def run_monitor(url: str, vkey: str, state_dir: Path, *, follow: bool = False, interval: float = DEFAULT_INTERVAL,
                quorum_file: Path | None = None, echo: Callable[[str], None] = print,
                progress: Progress | None = None, on_round: Callable[[Checkpoint, bool], None] | None = None) -> None:
    """One round, or with `follow` a round every `interval` seconds until interrupted. In follow mode an
    unreachable log is a warning (checked again next round); an alert always ends the run. With a
    c2sp.org/tlog-policy file, every checkpoint must carry its quorum's cosignatures. `on_round` is told
    each checked checkpoint and whether the log grew (`tlog monitor --json`)."""
    try:
        verifier = Verifier.from_key(vkey)
    except NoteError as exc:
        raise ValidationError(f"--vkey is not a verifier key: {exc.message}") from None
    quorum = load_witness_quorum(quorum_file, verifier) if quorum_file is not None else None
    private_dir(state_dir)
    with _locked(state_dir):
        asyncio.run(_run(url, verifier, state_dir, follow, interval, echo, progress, quorum, on_round))


async def _run(url: str, verifier: Verifier, state_dir: Path, follow: bool, interval: float,
               echo: Callable[[str], None], progress: Progress | None, quorum: WitnessQuorum | None,
               on_round: Callable[[Checkpoint, bool], None] | None) -> None:
    async with TileClient(url) as client:
        while True:
            try:
                cp, grew = await check_round(client, verifier, state_dir, echo, progress, quorum)
                if not grew and not follow:  # in follow mode a round that finds nothing new says nothing
                    echo(f"{cp.origin}: size {cp.size}, unchanged (signature ok)")
                if on_round is not None:
                    on_round(cp, grew)
            except Unavailable as exc:
                if not follow:
                    raise
                echo(f"warning: {exc.message}; trying again in {interval:g}s")
            if not follow:
                return
            await asyncio.sleep(interval)


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One monitor per state directory: two would race to replace the state."""
    fd = os.open(state_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(f"another monitor is using {state_dir}") from None
        yield
    finally:
        os.close(fd)
