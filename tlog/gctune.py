"""The cyclic garbage collector, tuned for processes that handle records by the thousand.

CPython runs a young-generation collection every 700 net allocations of containers (dicts, lists,
objects), and every tenth one also scans the middle generation. A 1000-record request keeps some ten
thousand containers alive until its batch is durable, so at that threshold the collector ran hundreds
of times a second, rescanning the batches in flight each time. With 200k records in 1000-record
requests from 4 clients, as `scripts/bench-server` sends them (timed with `gc.callbacks`), the server's
main process spent 2.0 of 8.5 CPU seconds in the collector, the batch writer 0.7 of 7.3. Tuned, the
same load took 8.4 and 7.7 s instead of 10.3 and 10.5 (alternating runs); against freezing alone,
7.7-8.5 s instead of 9.0-9.3 s.

At 50,000 a collection still runs whenever that many containers have accumulated, so cyclic garbage
stays bounded (a few megabytes); what start-up built (modules, keys, caches) is frozen out of every scan.
Elsewhere it did not pay: `tlog verify` over 300k leaves took 4.3 s tuned instead of 3.8 (twice each),
and `tlog append`, which freezes its validated input, showed no difference over six alternating runs.
"""

from __future__ import annotations

import gc

# Above what a few 1000-record batches in flight keep alive at once (about 10,000 containers each).
YOUNG_THRESHOLD = 50_000


def tune_for_batches() -> None:
    """Called once a server process has started up: the server itself, its intake worker and its batch
    writer (which `tlog append` uses too)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
