"""A checking witness: `tlog witness serve … --replay URL` cosigns a tlog log's checkpoint only after
replaying the public leaves it adds.

A plain c2sp.org/tlog-witness witness checks that a log stays append-only. A replaying witness also
checks what the log's leaves say (tlog/replay.py, the rules anyone can check from public leaves): the
hash chain, every artist's `aseq`/`aprev` chain, every map leaf's root against the artist map of the
leaves before it, that the checkpoint ends at a map leaf, that each use names the policy in effect, and
that each new policy leaf's document (from `GET /v1/policies/{id}`) is the one it commits to and keeps
the notice rule (SPEC §4).
So an artist who requires a quorum of replaying witnesses (`tlog audit --witness-policy`) rests
"complete" on them, not on the operator.

How: the witness keeps one `ChainChecker` per log, in memory, at the size it last replayed. For a new
checkpoint it fetches the leaves after that size from the log's tiles and the documents of the policies
they announce (a tlog server serves both up to its latest signed checkpoint, before witnesses cosign
it), checks each leaf against the hash tiles and the rules, and the tree they make against the
checkpoint's root. After a restart it replays from index 0 once. A log whose leaves fail is refused
with 422 and the reason; its checker starts again from 0 at the next request (it is not trusted to have
been left in a sound state).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Mapping

from ..checkpoint import Checkpoint
from ..errors import ProofError, TlogError, Unavailable, VerificationError
from ..remote import TileClient
from ..replay import ChainChecker
from ..verify import check_remote_leaves


@dataclass
class ReplayError(ProofError):
    """422: the leaves the checkpoint adds break a rule of the public log (the message says which, and
    at which index)."""

    code: str = "replay_failed"


class Replayer:
    """Replays one log's leaves up to each checkpoint before the witness cosigns it."""

    def __init__(self, origin: str, url: str) -> None:
        self.origin = origin
        self.url = url
        self._checker: ChainChecker | None = None
        self._lock = asyncio.Lock()  # one replay at a time: each extends the same checker

    async def check(self, cp: Checkpoint) -> None:
        """ReplayError if the leaves up to `cp` break a public rule or do not make its tree; Unavailable
        if the log's tiles cannot be read now (the witness then answers 503 and the log retries)."""
        async with self._lock:
            checker = self._checker
            if checker is None or checker.size > cp.size:
                checker = ChainChecker(self.origin)
            self._checker = None  # set again only once this replay has held
            try:
                async with TileClient(self.url) as client:
                    await check_remote_leaves(client, checker, cp.size, roots={cp.size: (cp.root, "the checkpoint")})
            except VerificationError as exc:
                raise ReplayError(f"replaying the log's leaves: {exc.message}") from None
            except Unavailable as exc:
                raise Unavailable(f"cannot read the log's leaves to replay them: {exc.message}") from None
            except TlogError as exc:  # a tile missing or malformed: the log does not serve what it signed
                raise ReplayError(f"replaying the log's leaves: {exc.message}") from None
            self._checker = checker


def replayers(urls: Mapping[str, str]) -> dict[str, Replayer]:
    """A replayer per log origin, from {origin: URL of the log}."""
    return {origin: Replayer(origin, url) for origin, url in urls.items()}
