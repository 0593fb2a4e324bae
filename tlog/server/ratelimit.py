"""Rate limits: token buckets by client address, and by token where the operator opts in.

Limits apply by default only to unauthenticated and failed-authentication traffic, keyed by client
address, so a busy service is never throttled by surprise (SPEC §1). auth.py applies them.

The client address is the connection's peer. Behind a load balancer every request comes from the
balancer, so an operator names the header in which the balancer passes the client's address
(`tlog serve --trusted-proxy-header X-Forwarded-For`); it is never believed unless named, since a client
reaching the server directly could write any address there. Only the header's last entry counts: a
balancer appends the address it saw to whatever the client sent, and the entries before it are the
client's own words."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

ADDRESS_CHARS = 64  # of a forwarded address: an IPv6 address with a port fits; a longer one is cut


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
    proxy_header: str | None = None  # the header a trusted load balancer puts the client's address in

    def client(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The address a request is counted under (see the module docstring)."""
        if self.proxy_header:
            forwarded = headers.get(self.proxy_header, "").rsplit(",", 1)[-1].strip()
            if forwarded:
                return forwarded[:ADDRESS_CHARS]
        return peer or "?"

    def __post_init__(self) -> None:
        self.public = Bucket(self.rate, self.burst)
        self.failed = Bucket(self.failed_rate, self.failed_burst)
        self.per_token = Bucket(self.token_rate, self.token_burst)
