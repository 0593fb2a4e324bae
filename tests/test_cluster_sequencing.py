"""Sequencers of one PostgreSQL log taking turns (tlog/cluster/lease.py with store/postgres.py), in one
process: the next term's sequencer goes on from the stored head, its `logged_at` never going back even
with a clock an hour behind, and the deposed one cannot write another batch."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
import pytest

from tlog.cluster.lease import NOT_LEADER, Fence, Term, take, writer_dsn
from tlog.errors import StorageError
from tlog.log import init_log, open_log
from tlog.policy import DEFAULT_POLICY
from tlog.records import validate_use
from tlog.sequencer import Submission

from .killloop import use


def uses(c: int, n: int) -> list[Submission]:
    now = datetime.now(timezone.utc)
    return [Submission("svc", [validate_use(use(c, n + k), now=now, purposes=DEFAULT_POLICY.purposes) for k in range(3)])]


def test_a_new_sequencer_with_a_slow_clock_never_logs_earlier_and_the_old_one_cannot_write(pg_dsn: str, tmp_path: Path) -> None:
    import psycopg

    keys = tmp_path / "keys"
    init_log(pg_dsn, "clock.example/log", keys=keys).close()
    lease = psycopg.connect(pg_dsn, autocommit=True)
    first = Term("a", take(lease, "a", 0.5))  # type: ignore[arg-type]
    old = open_log(writer_dsn(pg_dsn), secrets_needed=True, keys=keys, fence=Fence(first))
    seq_old = old.sequencer()
    [done] = seq_old.append_uses(uses(1, 0))
    assert not isinstance(done, Exception)
    last_ms = old.store.entry(old.store.size() - 1).logged_ms  # type: ignore[union-attr]
    time.sleep(0.6)
    second = Term("b", take(lease, "b", 30))  # type: ignore[arg-type]
    new = open_log(writer_dsn(pg_dsn), secrets_needed=True, keys=keys, fence=Fence(second))
    seq_new = new.sequencer(clock=lambda: time.time() - 3600)  # this host's clock is an hour behind
    start = seq_new.size
    [done] = seq_new.append_uses(uses(2, 0))
    assert not isinstance(done, Exception)
    logged = [e.logged_ms for e in new.store.entries(start, new.store.size())]
    assert logged and min(logged) >= last_ms  # max(clock, last logged_at): never back in time
    with pytest.raises(StorageError) as refused:
        seq_old.append_uses(uses(1, 10))
    assert refused.value.code == NOT_LEADER
    assert new.store.size() == seq_new.size  # nothing of the old one's batch was written
    for log in (old, new):
        log.close()
    lease.close()

