"""A front end of a PostgreSQL log (SPEC §8): the writer object (`Appender`) of every `tlog serve --db
postgresql://…`, whether or not it sequences.

Every front end takes writes. It checks a request as a lone server would (the policy's purposes, read
from the store), then hands it to the sequencer through the intake table (cluster/handoff.py) and
answers once the sequencer has answered, that is once the request's batch is committed. A front end
that holds the log's keys also runs for the lease (cluster/lease.py); while it holds it, it is the
sequencer (`Leading`): a Sequencer whose batches are fenced by its term, a GroupCommitter, and the loop
that takes requests from the intake table. Its own callers' requests then go straight to its committer,
without the round trip through the table.

Invariants, and what keeps them:
- One sequencer per term, and a term's sequencer is dropped before the next term's is made: term
  changes are applied one at a time, in order (`_switch`), each waiting for the one before it.
- Leading starts from the log as stored: its Sequencer reads the head after the lease was taken, so it
  builds on every batch of the term before it (the fence's share lock ordered those commits before the
  takeover). `logged_at` goes on from the stored last leaf's (builder: max(clock, last)), whatever
  this host's clock says.
- A batch the fence refused wrote nothing: the front end steps down at once (`Elector.lost`), and its
  caller's request, if it came straight to the committer, is handed to the intake table instead, for
  whoever sequences now (so is one the head check refused, STALE_STATE: it wrote nothing either). Rows
  it had taken from the table are left for the next sequencer.
- Tokens and feed keys are not log entries: any front end stores them directly (unfenced).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ..artistmap import ArtistMap
from ..cluster.handoff import Inbox, Outbox, serve
from ..cluster.lease import LEASE_S, NOT_LEADER, RENEW_S, Elector, Fence, Term, writer_dsn
from ..committer import BatchStats, GroupCommitter
from ..errors import StorageError, ValidationError
from ..intake import Intake
from ..log import LocalLog, open_log
from ..policy import Policy, PreferenceLimits, in_effect
from ..sequencer import BindingResult, PreferenceChange, Sequencer, Submission, UseResult, read_schedule
from ..store import open_store
from ..store.base import STALE_STATE, Batch
from .appender import Appended

POLICY_TTL_S = 1.0  # how long a front end uses the policy schedule it read before reading it again
log = logging.getLogger("tlog.cluster")


@dataclass
class ClusterStats:
    terms: int = 0  # terms this front end sequenced
    epoch: int = 0  # of the current term, or the last one
    refused: int = 0  # batches the fence refused (each ends a term)
    direct: int = 0  # requests sequenced here without the intake table
    handed: int = 0  # requests handed to the intake table


# What only the sequencer runs, during its term (the witness publisher, the notifier): given the term's
# fence, an aiohttp cleanup context (background.task_context), whose writes the fence guards.
LeaderJob = Callable[[Fence], Callable[[Any], AsyncGenerator[None, None]]]  # a CleanupContext, given no app


@dataclass(frozen=True)
class ClusterOptions:
    """`tlog serve` options of a front end of a PostgreSQL log."""

    keys: str | os.PathLike[str] | None = None  # the key folder: without it, never the sequencer
    lease_s: float = LEASE_S
    renew_s: float = RENEW_S
    wait_s: float = 10.0  # how long a request waits for the sequencer's answer (then 503)
    jobs: tuple[LeaderJob, ...] = ()


# --- answers, as they cross the intake table ---------------------------------------------------------


def encode_uses(results: list[UseResult], checkpoint: bytes) -> dict[str, Any]:
    leaf = len(results) == 1  # a lone record's receipt is made inline, from its leaf
    return {"checkpoint": checkpoint.decode(),
            "results": [[r.event_id, r.index, r.decision, r.leaf_hash.hex(), r.duplicate,
                         base64.b64encode(r.leaf).decode() if leaf and r.leaf is not None else None] for r in results]}


def decode_uses(answer: dict[str, Any], batch: bool) -> Appended:
    results = [UseResult(e, i, d, bytes.fromhex(h), dup, None if leaf is None else base64.b64decode(leaf))
               for e, i, d, h, dup, leaf in answer["results"]]
    return Appended(results, batch, answer["checkpoint"].encode())


def encode_preferences(c: PreferenceChange) -> dict[str, Any]:
    return {"index": c.index, "leaf_hash": c.leaf_hash.hex(), "preferences": c.preferences, "dropped": c.dropped}


def decode_preferences(a: dict[str, Any]) -> PreferenceChange:
    return PreferenceChange(a["index"], bytes.fromhex(a["leaf_hash"]), a["preferences"], a["dropped"])


def encode_bindings(changes: list[BindingResult]) -> list[list[Any]]:
    return [[c.artist_id, c.change, c.index, c.leaf_hash.hex()] for c in changes]


def decode_bindings(a: list[list[Any]]) -> list[BindingResult]:
    return [BindingResult(artist, change, index, bytes.fromhex(h)) for artist, change, index, h in a]


# --- the sequencer of one term ---------------------------------------------------------------------


class Leading:
    """This front end's term as the sequencer. `begin` makes it (reading the log's head), `end` drops it."""

    def __init__(self, term: Term, log: LocalLog, committer: GroupCommitter, inbox: Inbox,
                 on_refused: Callable[[Term], None], written: list[int]) -> None:
        self.term, self.log, self.committer, self.inbox = term, log, committer, inbox
        self.written = written  # [where the term started, where its last durable batch ended]
        self._refused = False
        self.on_refused = on_refused
        self._jobs: list[AsyncGenerator[None, None]] = []
        self.task = asyncio.create_task(serve(inbox, self.handle), name=f"tlog-leading-{term.epoch}")

    async def start_jobs(self, jobs: tuple[LeaderJob, ...]) -> None:
        """Starts what only the sequencer runs; a job that cannot start is said, and the term goes on."""
        for job in jobs:
            running = job(Fence(self.term))(None)
            try:
                await anext(running)
            except Exception as exc:
                log.error("could not start a job of the sequencer's for this term: %s", exc)
                continue
            self._jobs.append(running)

    @classmethod
    async def begin(cls, term: Term, reader: LocalLog, keys: str | os.PathLike[str] | None, limits: PreferenceLimits,
                    on_refused: Callable[[Term], None]) -> "Leading":
        """Opens the log for writing, fenced by `term`, and reads where it ends (in a thread: a few queries)."""
        dsn = str(reader.path)

        written = [0, 0]

        def committed(batch: Batch) -> None:
            # The reader keeps the batch's nodes, so a fresh leaf's receipt needs no read.
            reader.store.remember_nodes(batch.nodes)
            written[1] = batch.end

        def open_sequencer() -> tuple[LocalLog, Sequencer]:
            wlog = open_log(writer_dsn(dsn), secrets_needed=True, keys=keys, fence=Fence(term))
            try:
                seq = wlog.sequencer(writer=wlog.process_writer(), preference_limits=limits, on_commit=committed)
            except BaseException:
                wlog.close()
                raise
            written[:] = [seq.size, seq.size]
            return wlog, seq

        wlog, seq = await asyncio.get_running_loop().run_in_executor(None, open_sequencer)
        committer = GroupCommitter(seq)
        committer.start()
        return cls(term, wlog, committer, Inbox(dsn, term.epoch), on_refused, written)

    @property
    def sequencer(self) -> Sequencer:
        return self.committer.sequencer

    async def handle(self, item: dict[str, Any]) -> Any:
        """Does one request (a handoff item), once its batch is committed: its answer, JSON-able."""
        try:
            return await self._do(item)
        except StorageError as exc:
            if exc.code == NOT_LEADER and not self._refused:  # said once: every request of the batch gets it
                self._refused = True
                self.on_refused(self.term)
            raise

    async def _do(self, item: dict[str, Any]) -> Any:
        seq = self.sequencer
        kind = item.get("kind")
        if kind == "uses":
            results = await self.committer.append(Submission(item["service"], item["records"]))
            return encode_uses(results, seq.checkpoint or b"")
        if kind == "preferences":
            change = await self.committer.call(lambda: seq.set_preferences(
                item["artist_id"], item["document"], by=item["by"], service=item["service"], patch=item["patch"]))
            return encode_preferences(change)
        if kind == "content":
            changes = await self.committer.call(lambda: seq.set_content_artists(
                item["content_id"], item["artists"], service=item["service"]))
            return encode_bindings(changes)
        raise ValidationError(f"this sequencer does not know requests of kind {kind!r} (a front end of another version?)")

    async def end(self) -> None:
        for running in self._jobs:
            await running.aclose()  # cancels the job's task, closes its store
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.committer.close()
        await self.inbox.close()
        await asyncio.get_running_loop().run_in_executor(None, self.log.close)


# --- the front end -----------------------------------------------------------------------------------


@dataclass
class _Schedule:
    read_at: float = float("-inf")
    schedule: tuple[tuple[int, int, Policy], ...] = field(default_factory=tuple)


class ClusterAppender:
    """The Appender of a front end of the PostgreSQL log `reader` (opened from its URL)."""

    def __init__(self, reader: LocalLog, options: ClusterOptions = ClusterOptions(), *,
                 limits: PreferenceLimits = PreferenceLimits()) -> None:
        self.reader = reader
        self.dsn = str(reader.path)
        self.options = options
        self.limits = limits
        self.outbox = Outbox(self.dsn, wait_s=options.wait_s)
        self.elector = Elector(self.dsn, on_change=self._on_term, lease_s=options.lease_s,
                               renew_s=options.renew_s) if reader.signers else None
        self.cluster = ClusterStats()
        self._intake = Intake()
        self._leading: Leading | None = None
        self._switching: asyncio.Future[None] | None = None
        self._schedule = _Schedule()
        self._tokens: Any = None  # a store of its own for token writes, opened at the first
        self._token_lock = asyncio.Lock()
        self._closing = False

    # --- the Appender -------------------------------------------------------------------------------

    async def append_uses(self, service: str, body: bytes, *, max_records: int) -> Appended:
        policy = self._policy_now()
        checked = await self._intake.check_body(body, now=datetime.now(timezone.utc),
                                                purposes=policy.purposes if policy else {}, max_records=max_records)
        answer = await self._do({"kind": "uses", "service": service, "records": checked.records})
        return decode_uses(answer, checked.batch)

    async def set_preferences(self, artist_id: str, document: Any, *, by: str, service: str | None,
                              patch: bool) -> PreferenceChange:
        return decode_preferences(await self._do({"kind": "preferences", "artist_id": artist_id, "document": document,
                                                  "by": by, "service": service, "patch": patch}))

    async def set_content_artists(self, content_id: str, artists: list[str], *, service: str) -> list[BindingResult]:
        return decode_bindings(await self._do({"kind": "content", "content_id": content_id, "artists": artists,
                                               "service": service}))

    async def add_token(self, role: str, subject: str | None, digest: bytes, now_ms: int, *,
                        expires_ms: int | None) -> int:
        token_id: int = await self._token_write(lambda s: s.add_token(role, subject, digest, now_ms, expires_ms=expires_ms))
        return token_id

    async def add_feed_key(self, artist_id: str, digest: bytes, now_ms: int) -> int:
        key_id: int = await self._token_write(lambda s: s.add_feed_key(artist_id, digest, now_ms))
        return key_id

    async def revoke_feed_key(self, artist_id: str, key_id: int, now_ms: int) -> bool:
        revoked: bool = await self._token_write(lambda s: s.revoke_feed_key(artist_id, key_id, now_ms))
        return revoked

    async def reload_keys(self) -> None:
        leading = self._leading
        if leading is not None:
            await leading.committer.call(leading.log.reload_keys)

    def stats(self) -> BatchStats | None:
        leading = self._leading
        return leading.committer.stats if leading is not None else None

    def recent_maps(self) -> Mapping[int, ArtistMap]:
        leading = self._leading
        return leading.sequencer.maps if leading is not None else {}

    def metric_lines(self) -> list[str]:
        """Prometheus lines for /metrics: whether this front end sequences, its terms, the batches the
        fence refused, and how its writes went (straight to its committer, or through the intake table,
        and those that got no answer)."""
        c, o = self.cluster, self.outbox.stats
        return [
            "# HELP tlog_cluster_sequencing 1 while this front end holds the lease and sequences.",
            "# TYPE tlog_cluster_sequencing gauge", f"tlog_cluster_sequencing {int(self._leading is not None)}",
            "# HELP tlog_cluster_epoch The lease's epoch of this front end's current or last term.",
            "# TYPE tlog_cluster_epoch gauge", f"tlog_cluster_epoch {c.epoch}",
            "# HELP tlog_cluster_terms_total Terms this front end sequenced.",
            "# TYPE tlog_cluster_terms_total counter", f"tlog_cluster_terms_total {c.terms}",
            "# HELP tlog_cluster_fence_refusals_total Batches the fence refused (each ended a term).",
            "# TYPE tlog_cluster_fence_refusals_total counter", f"tlog_cluster_fence_refusals_total {c.refused}",
            "# HELP tlog_cluster_writes_total Writes by the way they reached the sequencer.",
            "# TYPE tlog_cluster_writes_total counter",
            f'tlog_cluster_writes_total{{way="direct"}} {c.direct}', f'tlog_cluster_writes_total{{way="handed"}} {c.handed}',
            "# HELP tlog_cluster_handoff_failed_total Handed writes answered 503, by why.",
            "# TYPE tlog_cluster_handoff_failed_total counter",
            f'tlog_cluster_handoff_failed_total{{why="no_sequencer"}} {o.withdrawn}',
            f'tlog_cluster_handoff_failed_total{{why="no_answer"}} {o.unanswered}',
            f'tlog_cluster_handoff_failed_total{{why="database"}} {o.failed}',
        ]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.outbox.start()
        if self.elector is not None:
            self.elector.start()

    async def close(self) -> None:
        """Stops sequencing (the batches in flight commit first: the lease still runs), then hands the
        lease back, so that another front end takes over at its next try."""
        self._closing = True
        await self._switch_to(None)
        if self.elector is not None:
            await self._loop.run_in_executor(None, self.elector.stop)
        await self.outbox.close()
        await self._loop.run_in_executor(None, self._intake.close)
        if self._tokens is not None:
            self._tokens.close()

    # --- doing a request -------------------------------------------------------------------------------

    async def _do(self, item: dict[str, Any]) -> Any:
        leading = self._leading
        if leading is not None:
            try:
                answer = await leading.handle(item)
                self.cluster.direct += 1
                return answer
            except StorageError as exc:
                if exc.code not in (NOT_LEADER, STALE_STATE):
                    raise
                # Refused by the fence or the head check, so nothing of it was written: whoever
                # sequences now does it (this front end again, if it still holds the lease).
        self.cluster.handed += 1
        return await self.outbox.ask(item)

    def _policy_now(self) -> Policy | None:
        """The policy in effect now, from the stored schedule read at most every POLICY_TTL_S (the
        sequencer decides each use under the policy in effect when it logs it, whatever this said)."""
        now = time.monotonic()
        if now - self._schedule.read_at > POLICY_TTL_S:
            self._schedule = _Schedule(now, read_schedule(self.reader.store))
        return in_effect(self._schedule.schedule, int(time.time() * 1000))

    async def _token_write(self, write: Callable[[Any], Any]) -> Any:
        async with self._token_lock:  # one connection, one statement at a time
            def run() -> Any:
                if self._tokens is None:
                    self._tokens = open_store(self.dsn)
                return write(self._tokens)
            return await self._loop.run_in_executor(None, run)

    # --- terms --------------------------------------------------------------------------------------

    def _on_term(self, term: Term | None) -> None:
        """From the elector's threads: applied on the event loop, in order."""
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._switch_to(term)))

    def _refused(self, term: Term) -> None:
        self.cluster.refused += 1
        log.warning("a batch was refused by the fence: this front end no longer holds the lease (epoch %d); "
                    "it steps down", term.epoch)
        if self.elector is not None:
            self.elector.lost(term)

    async def _switch_to(self, term: Term | None) -> None:
        before = self._switching
        done: asyncio.Future[None] = self._loop.create_future()
        self._switching = done
        try:
            if before is not None:
                await before
            await self._apply(term)
        finally:
            done.set_result(None)

    async def _apply(self, term: Term | None) -> None:
        leading = self._leading
        if leading is not None and leading.term != term:
            self._leading = None
            await leading.end()
            log.info("stopped sequencing (epoch %d): its batches were [%d, %d)", leading.term.epoch, *leading.written)
        if (term is None or self._closing or self._leading is not None or self.elector is None
                or self.elector.current() != term):
            return  # nothing to start, or that term is over already (a later change follows)
        try:
            self._leading = await Leading.begin(term, self.reader, self.options.keys, self.limits, self._refused)
        except Exception as exc:
            log.error("could not start sequencing (epoch %d): %s", term.epoch, exc)
            self.elector.lost(term)  # the elector takes it again at its next try, and this is tried again
            return
        await self._leading.start_jobs(self.options.jobs)
        self.cluster.terms += 1
        self.cluster.epoch = term.epoch
        log.info("sequencing the log from size %d (epoch %d)", self._leading.written[0], term.epoch)
