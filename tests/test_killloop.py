"""The kill loop, short: the real server SIGKILLed under load from real clients, five times; and the
client's spool riding out two outages. After every restart every map root is checked (the stored map
leaves against the map replayed from the public leaves, and the server's map proofs). scripts/reliability
runs the long versions (fifty kills and more)."""

from __future__ import annotations

import logging

from .killloop import kill_loop, spool_outage


async def test_sigkill_under_load_loses_nothing(tmp_path):
    rep = await kill_loop(tmp_path, kills=5, clients=3, seed=7)
    assert rep.kills == 5 and rep.acknowledged > 0
    assert rep.duplicate_answers >= 0 and rep.checkpoints > 1
    assert rep.map_checks == 1 + 5 + 1 and rep.map_errors == 0, rep.notes  # the start, each restart, the end
    assert rep.ok(), rep


async def test_the_spool_rides_out_outages(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="tlog.client")  # "cannot deliver yet, retrying" is the point
    rep = await spool_outage(tmp_path, records=150, outages=2, outage=0.5, seed=3)
    assert rep.kills == 2 and rep.acknowledged == rep.sent >= 150
    assert rep.map_checks == 1 + 2 + 1 and rep.map_errors == 0, rep.notes
    assert rep.ok(), rep
