"""A malicious log server for verifier and monitor tests: it serves a checkpoint, tiles and the read API
from data the test controls, and can sign whatever it likes with the log's own key, as an operator gone
bad (or one whose key leaked) could. Runs in a thread, so the code under test runs unchanged."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tlog import merkle
from tlog.checkpoint import Checkpoint
from tlog.leaf import Leaf, build_leaf, parse_leaf
from tlog.log import key_paths, open_log
from tlog.note import Signer, sign_note
from tlog.records import parse_logged_at
from tlog.rederive import iter_leaves
from tlog.stats import StatsQuery, Tally
from tlog.stats import answer as stats_answer
from tlog.tiles import TILE_WIDTH, encode_bundle, entry_bundles_for_size, hash_tiles_for_size, tile_coords, tile_path


@dataclass
class Source:
    """A real log's public leaves, its policy documents by id and its signer: the material a forger
    starts from."""

    leaves: list[bytes]
    signer: Signer
    documents: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_db(cls, db: Path) -> Source:
        log = open_log(db, readonly=True)
        try:
            leaves = [leaf for _, leaf, _ in iter_leaves(log.store, 0, log.store.size())]
            documents = {rec.policy_id: rec.document for rec in log.store.policies()}
        finally:
            log.close()
        return cls(leaves, Signer.from_key(key_paths(db)[0].read_text().strip()), documents)

    @property
    def vkey(self) -> str:
        return self.signer.verifier_key

    def checkpoint(self, leaves: list[bytes], *, root: bytes | None = None, signer: Signer | None = None,
                   cosigners: Sequence[Signer] = ()) -> bytes:
        """A checkpoint over `leaves`, signed by the log's key (or `signer`), over their root (or `root`),
        cosigned by `cosigners` (witness keys)."""
        if root is None:
            root = merkle.tree_root(len(leaves), merkle.MemoryHashes(map(merkle.leaf_hash, leaves)))
        cp = Checkpoint(self.signer.name, len(leaves), root)
        return sign_note(cp.body(), [signer or self.signer, *cosigners])


def edit(leaf: bytes, **changes: Any) -> bytes:
    """The leaf with some fields changed, re-encoded canonically (a well-formed lie)."""
    parsed = parse_leaf(leaf)
    for name, value in changes.items():
        setattr(parsed, name, value)
    return build_leaf(parsed)


def with_policy(leaves: list[bytes], policy_id: str, document: bytes, effective_at: str | None = None) -> list[bytes]:
    """`leaves` (ending at a map leaf) and a batch publishing a policy, as a sequencer writes one whatever
    it checked: the policy leaf committing to `document`, effective at once unless `effective_at`, then
    the map leaf (a policy leaf is in no artist chain, so the map is unchanged)."""
    last = parse_leaf(leaves[-1])
    assert last.type == "map", "a batch starts after a checkpoint, which ends at a map leaf"
    out = [*leaves, build_leaf(Leaf("policy", merkle.leaf_hash(leaves[-1]), last.logged_at,
                                    details=hashlib.sha256(document).digest(), policy=policy_id,
                                    effective_at=effective_at or last.logged_at))]
    out.append(build_leaf(Leaf("map", merkle.leaf_hash(out[-1]), last.logged_at, root=last.root)))
    return out


def with_erasure(leaves: list[bytes], tag: bytes, erased: int) -> list[bytes]:
    """`leaves` (ending at a map leaf) and a batch erasing `erased` entries of `tag`, as a sequencer writes
    one whatever it counted: the erasure leaf, then the map leaf (unchanged: the leaf is in no chain)."""
    last = parse_leaf(leaves[-1])
    assert last.type == "map", "a batch starts after a checkpoint, which ends at a map leaf"
    out = [*leaves, build_leaf(Leaf("erasure", merkle.leaf_hash(leaves[-1]), last.logged_at, artist=tag, erased=erased))]
    out.append(build_leaf(Leaf("map", merkle.leaf_hash(out[-1]), last.logged_at, root=last.root)))
    return out


def rechain(leaves: list[bytes], start: int) -> list[bytes]:
    """Leaves with `prev` recomputed from `start` on, so an edited history is a well-chained one."""
    out = leaves[:start]
    for leaf in leaves[start:]:
        out.append(edit(leaf, prev=merkle.leaf_hash(out[-1]) if out else bytes(32)))
    return out


@dataclass
class FakeLog:
    """What the fake server serves: `files` by path ("checkpoint", "tile/…", "v1/policies/{id}"),
    consistency proofs from the published tree (`proof_lie` flips one hash), /v1/stats (`stats`, recounted at each publish),
    and 503 once for each path in `fail_once`."""

    source: Source
    url: str = ""  # where `serving` serves it
    files: dict[str, bytes] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    fail_once: set[str] = field(default_factory=set)
    proof_lie: bool = False
    hits: Counter[str] = field(default_factory=Counter)
    _tree: merkle.MemoryHashes = field(default_factory=merkle.MemoryHashes)

    def publish(self, leaves: list[bytes], checkpoint: bytes | None = None, documents: dict[str, bytes] | None = None) -> bytes:
        """Serve `leaves` as the whole log: bundles, hash tiles, stats, the document of each policy leaf
        (the source's, or from `documents`), and `checkpoint` (default: an honest one over them, signed
        with the log's key)."""
        tree = merkle.MemoryHashes(merkle.leaf_hash(leaf) for leaf in leaves)
        files = {}
        for t in entry_bundles_for_size(len(leaves)):
            files[tile_path(t)] = encode_bundle(leaves[t.index * TILE_WIDTH : t.index * TILE_WIDTH + t.width])
        for t in hash_tiles_for_size(len(leaves)):
            level, first, count = tile_coords(t)
            files[tile_path(t)] = b"".join(tree.read_nodes([(level, first + i) for i in range(count)]))
        files["checkpoint"] = checkpoint or self.source.checkpoint(leaves)
        known = {**self.source.documents, **(documents or {})}
        for o in map(orjson.loads, leaves):  # not parse_leaf: some lies are leaves it refuses
            if o["type"] == "policy" and o["policy"] in known:
                files[f"v1/policies/{o['policy']}"] = known[o["policy"]]
        # As the real /v1/stats: leaves and uses (the invocations of use and refusal leaves, SPEC §2.2) by
        # type × purpose × phase × decision, in total and by day of logged_at.
        tally = Tally()
        for o in map(orjson.loads, leaves):
            tally.add(parse_logged_at(o["logged_at"]), o["type"], o.get("purpose"), o.get("phase"), o.get("decision"),
                      o.get("invocations", 0))
        self.stats = stats_answer(tally.rows(), len(leaves), StatsQuery())
        self.files, self._tree = files, tree
        return files["checkpoint"]

    def corrupt(self, path: str, offset: int, replacement: bytes) -> None:
        body = self.files[path]
        self.files[path] = body[:offset] + replacement + body[offset + len(replacement) :]

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        self.hits[path] += 1
        if path in self.fail_once:
            self.fail_once.discard(path)
            return web.Response(status=503, text="try later")
        if path == "v1/proof/consistency":
            old, new = int(request.query["old"]), int(request.query["new"])
            proof = merkle.consistency_proof(old, new, self._tree)
            if self.proof_lie:
                proof[0] = bytes(32)
            return web.json_response({"old": old, "new": new, "proof": [base64.b64encode(h).decode() for h in proof]},
                                     dumps=lambda o: orjson.dumps(o).decode())
        if path == "v1/stats":
            return web.json_response(self.stats, dumps=lambda o: orjson.dumps(o).decode())
        body = self.files.get(path)
        if body is None:
            return web.json_response({"error": {"code": "not_found", "message": f"no {path}", "details": []}}, status=404)
        return web.Response(body=body)


@contextmanager
def serving(fake: FakeLog) -> Iterator[str]:
    """Serves `fake` on a free loopback port from a thread; yields its base URL (also in fake.url)."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/{path:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield fake.url
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()
