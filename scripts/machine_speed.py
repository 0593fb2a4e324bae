"""How fast this machine is right now: a fixed single-core workload (JSON, SHA-256, dict work), timed.

This development machine is a VM whose speed drifts by tens of percent from minute to minute. The
benchmarks print this figure before and after their runs, so that a figure can be read against the
machine's state when it was taken."""

from __future__ import annotations

import hashlib
import time

import orjson

_RECORD = {"event_id": "recsys-7-000000001", "content_id": "sc:track:38001", "artist_id": "sc:user:39",
           "purpose": "recommendation", "system": {"id": "recs-ranker", "version": "2026.07.3"}, "invocations": 1}


def reference_seconds(rounds: int = 200_000) -> float:
    """Seconds for `rounds` of decode + sorted encode + SHA-256 of a small record: the best of three."""
    data = orjson.dumps(_RECORD)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(rounds):
            hashlib.sha256(orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS)).digest()
        best = min(best, time.perf_counter() - t)
    return best


def describe() -> str:
    return f"machine speed reference: {reference_seconds():.3f} s (a fixed workload; lower is faster)"
