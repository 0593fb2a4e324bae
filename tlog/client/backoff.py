"""Exponential backoff with full jitter, for retrying a request the server could not answer."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay n is uniform in [0, min(cap, base·2ⁿ)] ("full jitter"): clients that failed together do not
    come back together, which matters most when a restarted server meets every spooled client at once.
    A server's Retry-After is a floor, itself capped so a confused server cannot park us for hours."""

    base: float = 0.05
    cap: float = 5.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self, retry_after: float | None = None) -> float:
        # The exponent stops growing once it is past the cap (and before 2ⁿ overflows a float).
        delay = self.rng.uniform(0, min(self.cap, self.base * 2 ** min(self.attempt, 32)))
        self.attempt += 1
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay

    def reset(self) -> None:
        self.attempt = 0
