"""Waiting before asking again: the one backoff schedule and the one reading of Retry-After, for every
part of tlog that retries over HTTP: the remote-log reader (remote.py: `verify --url`, `monitor`, `audit`,
`export --url`, the replaying witness), the service client (client/), the webhook notifier (webhooks.py)
and the witness publisher (server/publisher.py).

Invariants (tests/test_backoff.py checks them with hypothesis):
- Bounded: every delay lies in [0, cap], a server's Retry-After included (capped, so a confused server
  cannot park a client for hours).
- Growing: the undisturbed step base·2ⁿ doubles with each attempt until it reaches the cap; `jitter` takes
  a random part of it off, at most jitter·step, so a delay is never below (1 − jitter)·step.
- Honouring the server: a Retry-After is a floor (up to the cap), never shortened by the jitter.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay n is d = min(cap, base·2ⁿ) less a random part of it, uniform in [0, jitter·d]. The default,
    "full jitter" (uniform in [0, d]): clients that failed together do not come back together, which
    matters most when a restarted server meets every spooled client at once. A lone sender that must
    not hammer a receiver that is down (the webhook notifier, a reader of a struggling log) takes jitter
    0.5: every wait is at least half of d; the witness publisher, which waits per witness by the clock
    rather than by sleeping, takes none. A server's Retry-After is a floor, itself capped."""

    base: float = 0.05
    cap: float = 5.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    jitter: float = 1.0

    def step(self) -> float:
        """The undisturbed delay of the next attempt: min(cap, base·2ⁿ)."""
        # The exponent stops growing once it is past the cap (and before 2ⁿ overflows a float).
        return min(self.cap, self.base * 2 ** min(self.attempt, 32))

    def next_delay(self, retry_after: float | None = None) -> float:
        step = self.step()
        delay = step - self.rng.uniform(0, self.jitter * step)
        self.attempt += 1
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(header: str | None) -> float | None:
    """The seconds a Retry-After header asks for, or None: absent, an HTTP-date (rare enough that our own
    backoff will do) or not a number. Negative values mean "now"."""
    try:
        seconds = float(header) if header is not None else None
    except ValueError:
        return None
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
