"""Leadership through PostgreSQL alone: one lease row, held by one front end at a time.

The row (table `leader`, id 1, made by store/postgres_schema.py) names its `holder` (a front end's id, new at each start), an `epoch` and
when the lease `expires_at`. Every front end that holds the log's keys runs an `Elector`: a thread with a
connection of its own that tries every `renew_s` to take the lease or renew it, with one statement
(`TAKE`). A `Term` is one holder's hold of the lease under one epoch; the sequencer of a term writes its
batches through `Fence(term)`, which each batch's transaction runs after its head check and before it
writes anything.

Invariants, and what keeps them:
- Only PostgreSQL's clock counts (`clock_timestamp()` in TAKE and in the fence), never a host's: a front
  end whose clock is off can neither keep a lease past its end nor take one early.
- At most one holder at a time: TAKE changes the row only if it is the caller's own or has expired; the
  row lock orders concurrent TAKEs, and each re-checks the condition on the row the one before it left.
- `epoch` grows by one whenever the holder changes, so a term (holder, epoch) is never held twice, and a
  holder id is never reused (`new_holder`). The elector reports a new term whenever TAKE returns an epoch
  other than its term's; the sequencer of the old term is dropped with it.
- A batch commits only inside its term: the fence reads the row `FOR SHARE` and refuses (StorageError
  NOT_LEADER) unless the row names the term and has not expired. The share lock makes any other front
  end's TAKE wait until the batch's transaction ends, so the next holder reads the log after the last
  batch of the term before it, and every later batch of that term is refused.
- A holder that stops without dying (SIGSTOP, a hung host) keeps its connections open, and a batch's
  transaction it left open would keep its locks (the store's head row, the lease row's share lock)
  forever. Between statements, the writer's `idle_in_transaction_session_timeout` (`writer_dsn`) makes
  PostgreSQL end such a session within IDLE_IN_BATCH_S. In the middle of one (a COPY, a pipeline: the
  server waits for the rest and no timeout applies), it holds the fence's share lock, so the next TAKE
  waits on it: after `renew_s` that TAKE gives up, and `end_stale_batches` ends the transactions that
  hold the share lock of an expired lease. Either way the lease passes, and the next sequencer can write.
- The elector believes in its term only until `lease_s` after it *sent* the TAKE that last renewed it
  (by its monotonic clock); PostgreSQL's lease ends no earlier. A front end cut off from PostgreSQL thus
  stops sequencing on its own, and the fence refuses whatever it still tries.

The failover bound: a holder that dies stops renewing; its lease ends at most `lease_s` later and another
elector's next TAKE, at most `renew_s` after that, takes it (tests/test_cluster_e2e.py measures the rest).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

import psycopg

from ..errors import StorageError
from ..store.postgres import link_options
from .links import reason, shut

LEASE_S = 2.5  # how long a TAKE holds the lease
RENEW_S = 0.5  # how often an elector tries to take or renew it
IDLE_IN_BATCH_S = 1.0  # a batch's transaction left idle this long (its writer stopped) is ended by PostgreSQL
WATCH_S = 0.05  # how often the watchdog looks at the term's deadline
NOT_LEADER = "not_leader"  # the StorageError code of a batch refused by the fence
log = logging.getLogger("tlog.cluster")

# `holder = %(holder)s` is NULL, so false, for a row never held: its first holder gets epoch 1.
TAKE = """
UPDATE leader
   SET epoch = CASE WHEN holder = %(holder)s THEN epoch ELSE epoch + 1 END,
       holder = %(holder)s,
       expires_at = clock_timestamp() + make_interval(secs => %(lease)s)
 WHERE id = 1 AND (holder = %(holder)s OR expires_at < clock_timestamp())
RETURNING epoch
"""

# The fence's FOR SHARE is the only share lock ever taken on `leader` (TAKE and RELEASE update it); while
# the lease is expired, whoever holds one is a batch of a term that is over.
END_STALE = """
SELECT pg_terminate_backend(l.pid)
  FROM pg_locks l JOIN leader ON leader.id = 1
 WHERE l.locktype = 'relation' AND l.relation = 'leader'::regclass AND l.mode = 'RowShareLock' AND l.granted
   AND l.pid <> pg_backend_pid() AND leader.expires_at < clock_timestamp()
"""

RELEASE = "UPDATE leader SET expires_at = '-infinity' WHERE id = 1 AND holder = %(holder)s AND epoch = %(epoch)s"

FENCE = """
SELECT 1 FROM leader WHERE id = 1 AND holder = %(holder)s AND epoch = %(epoch)s AND expires_at > clock_timestamp()
   FOR SHARE
"""


def new_holder(name: str = "") -> str:
    """A holder id never used before: the host, the process and random bits (a restarted front end is a
    new holder, so it can never pass for the term of its previous life)."""
    return f"{name or socket.gethostname()}/{os.getpid()}/{secrets.token_hex(6)}"


def writer_dsn(dsn: str, idle_s: float = IDLE_IN_BATCH_S) -> str:
    """`dsn` (a postgresql:// URL) for the sequencer's writer: PostgreSQL ends any of its transactions left
    idle for `idle_s` (see the module docstring), whatever `options` the URL already had."""
    url = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
    options = " ".join([*(v for k, v in query if k == "options"),
                        f"-c idle_in_transaction_session_timeout={int(idle_s * 1000)}"])
    query = [(k, v) for k, v in query if k != "options"] + [("options", options)]
    return urllib.parse.urlunsplit(url._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote)))


@dataclass(frozen=True, slots=True)
class Term:
    """One holder's hold of the lease under one epoch."""

    holder: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Fence:
    """The check every batch's transaction runs before it writes (PostgresStore's `fence`): the lease still
    belongs to `term`. Picklable, so a writer process can be handed it."""

    term: Term

    def __call__(self, cur: psycopg.Cursor[Any]) -> None:
        cur.execute(FENCE, {"holder": self.term.holder, "epoch": self.term.epoch})
        if cur.fetchone() is None:
            raise StorageError(f"this front end no longer holds the lease (epoch {self.term.epoch}): another one "
                               "sequences the log now; the batch was not written", code=NOT_LEADER)


def take(conn: psycopg.Connection[Any], holder: str, lease_s: float) -> int | None:
    """Takes or renews the lease for `holder` (autocommit `conn`): its epoch, or None if another holds it."""
    row = conn.execute(TAKE, {"holder": holder, "lease": lease_s}).fetchone()
    return None if row is None else int(row[0])


def end_stale_batches(conn: psycopg.Connection[Any]) -> int:
    """Ends (pg_terminate_backend) the transactions holding the fence's share lock on an *expired* lease:
    batches of a term that is over, whose writer stopped in the middle of a statement (a COPY, a pipeline),
    where PostgreSQL's idle timeout does not reach. Rolling back a batch is always safe: a batch is
    acknowledged only once committed. The front ends' role may end its own sessions (PostgreSQL lets a
    role end backends of a role it is a member of); returns how many were ended."""
    return len(conn.execute(END_STALE).fetchall())


def release(conn: psycopg.Connection[Any], term: Term) -> None:
    """Ends the lease now (a clean stop), so another front end takes over at its next try."""
    conn.execute(RELEASE, {"holder": term.holder, "epoch": term.epoch})


class Elector:
    """Takes and keeps the lease from a thread of its own. `on_change(term)` is called (from the elector's
    threads) with the new term when this front end starts holding the lease, or holds it under a new
    epoch, and with None as soon as it stops; `current()` is the term believed in now.

    A watchdog thread ends the term when its time is up even if the elector's thread is stuck in a TAKE
    that PostgreSQL never answers (a network that drops packets, a stopped server), and then shuts that
    TAKE's socket down so that the elector's thread gets an error and connects again."""

    def __init__(self, dsn: str, *, on_change: Callable[[Term | None], None] = lambda term: None,
                 lease_s: float = LEASE_S, renew_s: float = RENEW_S, holder: str | None = None) -> None:
        if not 0 < renew_s < lease_s:
            raise ValueError("the lease must last longer than the time between renewals")
        self.dsn = dsn
        self.holder = holder or new_holder()
        self.lease_s, self.renew_s = lease_s, renew_s
        self.on_change = on_change
        self._term: Term | None = None
        self._until = 0.0  # monotonic time until which the term is believed
        self._taking_since: float | None = None  # when the TAKE in progress was sent
        self._lock = threading.Lock()
        self._reporting = threading.RLock()  # held while a change is reported (on_change may call `lost`)
        self._stopping = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._threads = [threading.Thread(target=self._run, name="tlog-elector", daemon=True),
                         threading.Thread(target=self._watch, name="tlog-elector-watchdog", daemon=True)]
        self._failing = False  # the last TAKE could not reach PostgreSQL (said once, not at every try)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, *, release_lease: bool = True) -> None:
        """Stops trying; with `release_lease`, hands the lease back so that another front end takes it at
        its next try instead of after it expires."""
        self._stopping.set()
        for t in self._threads:
            if t.is_alive():
                t.join()
        term = self.current()
        if release_lease and term is not None and self._conn is not None:
            try:
                release(self._conn, term)
            except psycopg.Error as exc:
                log.warning("could not hand the lease back (it expires by itself): %s", reason(exc))
        self._set(None)
        self._close()

    def current(self) -> Term | None:
        with self._lock:
            return self._term if time.monotonic() < self._until else None

    def lost(self, term: Term) -> None:
        """The fence refused `term`: it is over, whatever the last renewal said."""
        self._set(None, unless=lambda believed, _: believed != term)

    # --- the threads -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            sent = time.monotonic()
            known, got = self._take(sent)
            if known and got is None:  # refused: another holds it (unknown: the watchdog ends the term in time)
                self._set(None)
            elif got is not None and time.monotonic() < sent + self.lease_s:  # a later answer renews nothing
                self._set(Term(self.holder, got), until=sent + self.lease_s)
            self._stopping.wait(max(0.0, self.renew_s - (time.monotonic() - sent)))

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_S):
            now = time.monotonic()
            with self._lock:
                term, until = self._term, self._until
                stuck = self._taking_since is not None and now - self._taking_since > self.lease_s
            if term is not None and now >= until:  # unless renewed meanwhile
                self._set(None, unless=lambda t, u: (t, u) != (term, until))
            if stuck:  # the elector's thread gets an error, and connects again
                shut(self._conn)

    def _take(self, sent: float) -> tuple[bool, int | None]:
        """(whether PostgreSQL answered, the epoch TAKE returned): (True, None) is a refusal."""
        with self._lock:
            self._taking_since = sent
        try:
            if self._conn is None:
                self._conn = psycopg.connect(
                    self.dsn, autocommit=True, **link_options(self.lease_s, application="tlog elector"),
                    # A TAKE that cannot finish within the lease is useless: give up and try again. One
                    # that waits on the row's lock longer than a renewal's interval finds out why.
                    options=f"-c statement_timeout={int(self.lease_s * 1000)} -c lock_timeout={int(self.renew_s * 1000)}")
            try:
                epoch = take(self._conn, self.holder, self.lease_s)
            except psycopg.errors.LockNotAvailable:
                ended = end_stale_batches(self._conn)
                if ended:
                    log.warning("ended %d transaction(s) of an expired term holding the lease row (a sequencer "
                                "stopped in the middle of a batch)", ended)
                return False, None
        except psycopg.Error as exc:
            if not self._failing:
                log.warning("cannot reach PostgreSQL to take or renew the lease: %s", reason(exc))
            self._failing = True
            self._close()
            return False, None
        finally:
            with self._lock:
                self._taking_since = None
        if self._failing:
            log.info("PostgreSQL answers the elector again")
        self._failing = False
        return True, epoch

    def _set(self, term: Term | None, *, until: float = 0.0,
             unless: Callable[[Term | None, float], bool] = lambda term, until: False) -> None:
        """Believes in `term` until `until` (unless `unless(term, until)` holds of the belief as it is by
        then) and reports a change. One report at a time, in the order of the changes, so the last one
        always says what is believed: two threads (the elector's, the watchdog) change it."""
        with self._reporting:
            with self._lock:
                if unless(self._term, self._until):
                    return
                before = self._term
                self._term, self._until = term, until
            if term == before:
                return
            if term is not None:
                log.info("this front end holds the lease now (epoch %d): it sequences the log", term.epoch)
            elif before is not None:
                log.warning("this front end lost the lease (epoch %d): it stops sequencing", before.epoch)
            self.on_change(term)

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None
