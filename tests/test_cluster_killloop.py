"""The cluster kill loop, short: three front ends of one PostgreSQL log under load from the real client,
the sequencing one SIGKILLed three times and restarted; nothing acknowledged lost or written twice,
every served checkpoint consistent, `tlog verify` clean. scripts/reliability runs the long version
(thirty kills and more) and reports the failover times."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlog.pglocal import LocalPostgres

from .clusterloop import cluster_kill_loop


@pytest.mark.timeout(300)
async def test_sigkill_of_the_sequencer_under_load_loses_nothing(tmp_path: Path, pg_server: LocalPostgres) -> None:
    rep = await cluster_kill_loop(tmp_path, pg_server, kills=3, fronts=3, clients=3, seed=5)
    assert rep.kills == 3 and len(rep.failovers) == 3 and rep.acknowledged > 0
    assert rep.checkpoints > 1 and rep.verified, rep.notes
    assert max(rep.failovers) < 10, rep.summary()  # the target, p99 < 5 s, is the long loop's (scripts/reliability)
    assert rep.ok(), rep
