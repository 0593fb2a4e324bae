"""The demo log (scripts/serve): its announced tightening switches in a few minutes, its loosening waits
for the notice the default policy promised, and the log verifies."""

from __future__ import annotations

import time

from tlog.demo import LOOSENING_ID, TIGHTENING_ID, TIGHTEN_AFTER_S, build_demo, demo_feed_key
from tlog.log import open_log
from tlog.policy import DAY_MS
from tlog.records import parse_logged_at
from tlog.tokens import digest
from tlog.verify import verify_log


def test_the_demo_announces_a_tightening_soon_and_a_loosening_after_the_notice(tmp_path):
    db = tmp_path / "demo.db"
    built = time.time()
    build_demo(str(db), 50, announcements=True)
    log = open_log(db, secrets_needed=True)
    try:
        pols = log.store.policies()
        assert [p.policy_id for p in pols] == ["default", TIGHTENING_ID, LOOSENING_ID]
        entries = {p.policy_id: log.store.entry(p.index) for p in pols}
        leaves = {k: e.details for k, e in entries.items()}
        tighten = parse_logged_at(leaves[TIGHTENING_ID]["effective_at"])
        assert 0 < tighten / 1000 - built <= TIGHTEN_AFTER_S + 5
        loosen = parse_logged_at(leaves[LOOSENING_ID]["effective_at"])
        assert loosen >= entries[LOOSENING_ID].logged_ms + 30 * DAY_MS and loosen % DAY_MS == 0
        assert log.sequencer().policy.id == "default"
        assert log.sequencer(clock=lambda: tighten / 1000).policy.id == TIGHTENING_ID  # the switch, by itself
        assert log.sequencer(clock=lambda: loosen / 1000).policy.id == LOOSENING_ID
        assert verify_log(log).size == log.store.size()  # the notice rule included
    finally:
        log.close()
    key = demo_feed_key(str(db), "sc:user:5")
    log = open_log(db)
    try:
        assert log.store.feed_key(digest(key))[1] == "sc:user:5"
    finally:
        log.close()
