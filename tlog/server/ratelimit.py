"""Rate limits: token buckets by client address, and by token where the operator opts in.

Limits apply by default only to unauthenticated and failed-authentication traffic, keyed by client
address, so a busy service is never throttled by surprise (SPEC §1). auth.py applies them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Bucket:
    """A token bucket per client address: `rate` requests/s sustained, `burst` at once. rate <= 0 is off."""

    rate: float
    burst: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) > 100_000:  # bounded memory under a flood of addresses
            self._buckets.clear()
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True

    def retry_after(self, key: str) -> str:
        """Whole seconds until `key` may send again, after `allow` refused it (for Retry-After)."""
        tokens, _ = self._buckets.get(key, (0.0, 0.0))
        return str(max(1, math.ceil((1 - tokens) / self.rate)))


@dataclass
class RateLimit:
    """Two budgets per address: requests without a token (generous: a remote verifier fetches two tiles
    per 256 leaves, and tiles are cheap, cacheable reads), and failed authentications (tight: guessing
    tokens is the abuse worth stopping). A valid token is limited only if the operator opts in
    (`token_rate` > 0, SPEC §1): then each token has its own budget, whatever address it comes from."""

    rate: float = 1000.0
    burst: float = 2000.0
    failed_rate: float = 5.0
    failed_burst: float = 20.0
    token_rate: float = 0.0
    token_burst: float = 100.0

    def __post_init__(self) -> None:
        self.public = Bucket(self.rate, self.burst)
        self.failed = Bucket(self.failed_rate, self.failed_burst)
        self.per_token = Bucket(self.token_rate, self.token_burst)
