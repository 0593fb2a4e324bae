"""Every storage backend under the same tests: `backend` names one, `store_factory` opens it.

`store_factory()` connects to one new, empty store of the backend (created at the first call); each
further call is another connection to the same store, as a second writer or a read thread would have.
Batches are written through the real sequencer (`Harness`), which records each one it hands over, so a
test can compare what a store gives back with what it was given, or write a batch itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tlog.note import Signer, generate_key
from tlog.sequencer import Sequencer
from tlog.store.base import Backend, Batch
from tlog.store.sqlite import SqliteStore
from tlog.store.writer import InlineWriter
from tlog.vrf import VrfSecret, generate_secret

ORIGIN = "conformance.test/log"
START = float(int(time.time()))  # the log starts now: after every sample record's occurred_at
STEP = 5 * 3600.0  # seconds the clock moves at each reading, so a log spans days


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Backend]:
    path = tmp_path / "conformance.db"
    return lambda: SqliteStore(path, create=not path.exists())


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Backend]:
    """A new database on the session's PostgreSQL (tests/postgres.py; skipped with the reason without one)."""
    from tlog.store.postgres import PostgresStore

    dsn = request.getfixturevalue("pg_dsn")
    made: list[bool] = []

    def connect() -> Backend:
        store = PostgresStore(dsn, create=not made)
        made.append(True)
        return store

    return connect


# backend name → opener(request, a fresh folder) → connect(), each call a new connection to one new store.
OPENERS: dict[str, Callable[[pytest.FixtureRequest, Path], Callable[[], Backend]]] = {"sqlite": _sqlite,
                                                                                       "postgres": _postgres}


@pytest.fixture(params=sorted(OPENERS))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store_factory(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Backend]]:
    connect = OPENERS[backend](request, tmp_path)
    opened: list[Backend] = []

    def factory() -> Backend:
        store = connect()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


class _Nowhere:
    """A store that takes every batch and keeps none: the sequencer then builds on batches that only the
    test holds."""

    def write_batch(self, batch: Batch) -> None:
        pass


class Recorder(InlineWriter):
    """The sequencer's writer: writes each batch to its store (or nowhere) and keeps it in `sent`."""

    def __init__(self, store: object) -> None:
        super().__init__(store)  # type: ignore[arg-type]
        self.sent: list[Batch] = []

    def send(self, batch: Batch) -> None:
        self.sent.append(batch)
        super().send(batch)


@dataclass
class Harness:
    """A log being written to `store`: its keys, a clock that moves STEP at each reading, and
    `written`, every batch its sequencers wrote, in order."""

    store: Backend
    signer: Signer
    vrf: VrfSecret
    now: list[float] = field(default_factory=lambda: [START])
    written: list[Batch] = field(default_factory=list)

    def clock(self) -> float:
        self.now[0] += STEP
        return self.now[0]

    def sequencer(self, store: Backend | None = None, *, write: bool = True) -> Sequencer:
        """A sequencer on `store` (default: the harness's) whose batches are written and recorded, or, with
        write=False, only handed back (`held`)."""
        store = store or self.store
        recorder = Recorder(store if write else _Nowhere())
        if write:
            recorder.sent = self.written
        return Sequencer(store, origin=ORIGIN, signers=[self.signer], vrf=self.vrf, clock=self.clock, writer=recorder)


def held(seq: Sequencer) -> list[Batch]:
    """The batches a write=False sequencer built, none of them stored."""
    return seq.writer.sent  # type: ignore[attr-defined, no-any-return]


def start(store: Backend) -> Harness:
    """A new log in an empty store, as `tlog init` makes one: its identity, then the first batch."""
    skey, vkey = generate_key(ORIGIN)
    vrf = VrfSecret.from_secret(generate_secret())
    store.set_meta("origin", ORIGIN)
    store.set_meta("vkey", vkey)
    store.set_meta("vrf", vrf.pk.hex())
    harness = Harness(store, Signer.from_key(skey), vrf)
    harness.sequencer().start_log(vrf.pk)
    return harness


@pytest.fixture
def harness(store_factory: Callable[[], Backend]) -> Harness:
    return start(store_factory())

