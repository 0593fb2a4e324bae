"""Bearer tokens (SPEC §1): random, shown once, stored only as SHA-256, revocable.

Pure: the store keeps the digests; this module makes tokens and says what a role may do."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from .errors import ValidationError
from .records import is_platform_id

ROLES = ("service", "artist", "auditor", "metrics")  # metrics: reads /metrics only (when it is limited)
# Optional rights of a service token (SPEC §1): "catalog" binds content to its artists (SPEC §2.1).
RIGHTS = frozenset({"catalog"})
PREFIX = "tlog_"
FEED_KEY_PREFIX = "tlogfeed_"  # feed keys (SPEC §6) are made the same way, and told apart at a glance


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as. `subject` is the service name or the artist id; None for auditors."""

    role: str
    subject: str | None
    token_id: int
    rights: frozenset[str] = frozenset()

    def is_artist(self, artist_id: str) -> bool:
        return self.role == "artist" and self.subject == artist_id


TOKEN_CACHE_SECONDS = 5.0
TOKEN_CACHE_ENTRIES = 10_000


@dataclass
class TokenCache:
    """Valid tokens by digest, so a request needs no database read to authenticate. A revocation (any
    process: `tlog token revoke`) changes the store's `tokens_version`, which empties the cache before
    the next request is served; entries also expire after TOKEN_CACHE_SECONDS, which bounds how long a
    revocation that could not signal (its stamp file unwritable) goes unnoticed. Only tokens that were
    found valid are kept: unknown ones cannot fill it."""

    version: object = None
    entries: dict[bytes, tuple[Principal, float]] = field(default_factory=dict)

    def get(self, want: bytes, version: object, now: float) -> Principal | None:
        if version != self.version:
            self.entries.clear()
            self.version = version
        hit = self.entries.get(want)
        return hit[0] if hit is not None and hit[1] > now else None

    def put(self, want: bytes, principal: Principal, now: float) -> None:
        if len(self.entries) >= TOKEN_CACHE_ENTRIES:
            self.entries.clear()
        self.entries[want] = (principal, now + TOKEN_CACHE_SECONDS)


def new_token(prefix: str = PREFIX) -> tuple[str, bytes]:
    """A fresh token (256 random bits, URL-safe, 43 characters after `prefix`) and the digest to store."""
    token = prefix + secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_subject(role: str, subject: str | None) -> None:
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}")
    if role in ("auditor", "metrics"):
        if subject is not None:
            raise ValidationError(f"{'an' if role == 'auditor' else 'a'} {role} token names no subject")
    elif not is_platform_id(subject) or (role == "service" and len(subject) > 128):  # type: ignore[arg-type]
        raise ValidationError(f"a {role} token needs a {'service name' if role == 'service' else 'artist id'} "
                              "of printable characters without spaces")


def check_rights(role: str, rights: frozenset[str]) -> None:
    unknown = rights - RIGHTS
    if unknown:
        raise ValidationError(f"unknown right {sorted(unknown)[0]!r}; rights are {', '.join(sorted(RIGHTS))}")
    if rights and role != "service":
        raise ValidationError(f"only service tokens may hold rights ({', '.join(sorted(rights))}); {role} tokens may not")
