"""Exponential backoff with jitter, for retrying a request the other side could not answer."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay n is d = min(cap, base·2ⁿ) less a random part of it, uniform in [0, jitter·d]. The default,
    "full jitter" (uniform in [0, d]): clients that failed together do not come back together, which
    matters most when a restarted server meets every spooled client at once. A lone sender that must
    not hammer a receiver that is down (the webhook notifier) takes jitter 0.5: every wait is at least
    half of d. A server's Retry-After is a floor, itself capped so a confused server cannot park us for
    hours."""

    base: float = 0.05
    cap: float = 5.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    jitter: float = 1.0

    def next_delay(self, retry_after: float | None = None) -> float:
        # The exponent stops growing once it is past the cap (and before 2ⁿ overflows a float).
        step = min(self.cap, self.base * 2 ** min(self.attempt, 32))
        delay = step - self.rng.uniform(0, self.jitter * step)
        self.attempt += 1
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay

    def reset(self) -> None:
        self.attempt = 0
