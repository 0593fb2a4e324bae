"""The log's side of witnessing: the publisher gets each new log-signed checkpoint cosigned by the witness
quorum (witness/quorum.py) and only then publishes it. It runs inside `tlog serve --witness-policy FILE`.

The publisher sends each new log-signed checkpoint to every witness with a consistency proof from the
size that witness last cosigned (learnt from its answers: a 409 names it, and the checkpoint is resent
once from there), checks each cosignature with the witness's key, and once the quorum holds stores the
checkpoint with the cosignature lines appended as the published one. A witness that is down only delays
publication (it is retried with backoff); appending goes on regardless, and nothing is ever published
that the quorum has not cosigned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from .. import merkle
from ..background import CleanupContext, task_context
from ..backoff import Backoff
from ..checkpoint import Checkpoint
from ..errors import NoteError, TlogError
from ..note import Signature, open_note, parse_note
from ..store import open_store
from ..store.base import CheckpointedLog
from ..witness.core import format_request, parse_size
from ..witness.quorum import QuorumWitness, WitnessQuorum

if TYPE_CHECKING:
    from ..store.postgres import Fence

log = logging.getLogger("tlog.witnessing")  # the name operators' logging configurations know

MAX_ANSWER = 64 << 10

class Refused(Exception):
    """A witness did not cosign; the message says why, for the operator's log."""


async def add_checkpoint(
    session: aiohttp.ClientSession, witness: QuorumWitness, signed: bytes, old: int, proof: Sequence[bytes]
) -> tuple[int, bytes]:
    """One c2sp.org/tlog-witness add-checkpoint call: (status, body)."""
    assert witness.url is not None
    url = witness.url.rstrip("/") + "/add-checkpoint"
    async with session.post(url, data=format_request(old, proof, signed)) as resp:
        return resp.status, await resp.content.read(MAX_ANSWER)


def verify_cosignatures(witness: QuorumWitness, text: bytes, answer: bytes) -> list[Signature]:
    """The witness's valid cosignature lines from a 200 answer over the checkpoint text. Lines by other
    keys are ignored; none by this witness, or a bad one, is a refusal."""
    try:
        return open_note(text + b"\n" + answer, [witness.verifier]).verified
    except NoteError as exc:
        raise Refused(f"its answer holds no valid cosignature: {exc.message}") from None


@dataclass
class _Contact:
    """What the publisher knows of one witness: the size it last cosigned, and when to try again. The
    publisher asks the witnesses together each round, so a witness that failed is not slept on but skipped
    until `retry_at`: 1, 2, 4… seconds after each failure in a row, at most RETRY_CAP."""

    known: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=Publisher.RETRY_CAP, jitter=0.0))
    retry_at: float = 0.0


class Publisher:
    """Publishes the log's latest checkpoint once the quorum has cosigned it. `store` should be a
    connection of its own: the publisher writes the `published` table and reads proofs from it."""

    RETRY_CAP = 30.0  # seconds at most between two tries of a witness that keeps failing

    def __init__(self, store: CheckpointedLog, quorum: WitnessQuorum, *, interval: float = 0.2,
                 timeout: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.quorum = quorum
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self._contacts = {name: _Contact() for name in quorum.witnesses}
        self._target = b""
        self._cosignatures: dict[str, list[Signature]] = {}

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            while True:
                try:
                    await self.step(session)
                except TlogError as exc:
                    log.error("witnessing: %s", exc.message)
                await asyncio.sleep(self.interval)

    async def step(self, session: aiohttp.ClientSession) -> bool:
        """One round: ask the witnesses still missing for the latest checkpoint; publish it if the quorum
        now holds. Returns whether it published."""
        signed = self.store.latest_checkpoint()
        published = self.store.published_checkpoint()
        if signed is None or (published is not None and published.startswith(signed)):
            return False
        if signed != self._target:  # cosignatures are for one checkpoint text only
            self._target, self._cosignatures = signed, {}
        text = parse_note(signed)[0]
        cp = Checkpoint.parse(text)
        now = self.clock()
        due = [w for w in self.quorum.witnesses.values()
               if w.url and w.name not in self._cosignatures and self._contacts[w.name].retry_at <= now]
        answers = await asyncio.gather(*(self._ask(session, w, cp, signed, text) for w in due))
        self._cosignatures.update((w.name, sigs) for w, sigs in zip(due, answers) if sigs)
        if not self.quorum.satisfied(self._cosignatures):
            return False
        note = signed + b"".join(s.line() for sigs in self._cosignatures.values() for s in sigs)
        self.store.set_published(cp.size, note, int(time.time() * 1000))
        log.info("published size %d, cosigned by %s", cp.size, ", ".join(sorted(self._cosignatures)))
        return True

    async def _ask(self, session: aiohttp.ClientSession, w: QuorumWitness, cp: Checkpoint, signed: bytes,
                   text: bytes) -> list[Signature]:
        contact = self._contacts[w.name]
        try:
            sigs = await self._exchange(session, w, contact, cp, signed, text)
        except (Refused, TlogError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            delay = contact.backoff.next_delay()
            contact.retry_at = self.clock() + delay
            reason = str(exc) or type(exc).__name__
            log.warning("witness %s did not cosign size %d: %s (retrying in %.0fs)", w.name, cp.size, reason, delay)
            return []
        contact.known, contact.retry_at = cp.size, 0.0
        contact.backoff.reset()
        return sigs

    async def _exchange(self, session: aiohttp.ClientSession, w: QuorumWitness, contact: _Contact,
                        cp: Checkpoint, signed: bytes, text: bytes) -> list[Signature]:
        for _ in range(2):  # a 409 names the witness's size: resend once from there
            old = contact.known
            if old > cp.size:
                raise Refused(f"it has cosigned size {old}, beyond this log's {cp.size}: a rollback or a fork")
            proof = merkle.consistency_proof(old, cp.size, self.store)
            status, body = await add_checkpoint(session, w, signed, old, proof)
            if status == 200:
                return verify_cosignatures(w, text, body)
            if status != 409:
                reason = body.decode("utf-8", "replace").strip().splitlines()
                raise Refused(f"it answered {status}: {reason[0] if reason else 'no reason given'}")
            size = parse_size(body)
            if size == old:
                raise Refused(f"it cosigned another tree at size {size}: this log's history differs from what "
                              f"it showed before (a fork or split view)")
            contact.known = size
        raise Refused("its size changed again while resending")


def publisher_context(db: Path | str, quorum: WitnessQuorum, *,
                      fence: Fence | None = None) -> CleanupContext:
    """An aiohttp cleanup context running a Publisher on its own connection to the log at db (`fence`: of
    the sequencer's term, on a PostgreSQL log: store/postgres.py)."""

    async def setup() -> Publisher:
        return Publisher(open_store(db, fence=fence), quorum)

    return task_context("tlog-witnessing", setup, Publisher.run, lambda publisher: publisher.store.close())
