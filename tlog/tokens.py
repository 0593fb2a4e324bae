"""Bearer tokens (SPEC §1): random, shown once, stored only as SHA-256, revocable.

Pure: the store keeps the digests; this module makes tokens and says what a role may do."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from .errors import Forbidden, ValidationError
from .records import is_platform_id

ROLES = ("service", "artist", "auditor", "metrics")  # metrics: reads /metrics only (when it is limited)
# What a service token may do besides logging uses (SPEC §1): `catalog` binds content to artists, `issuer`
# mints short-lived artist tokens for the platform's own sign-in (POST /v1/tokens).
RIGHTS = ("catalog", "issuer")
PREFIX = "tlog_"
FEED_KEY_PREFIX = "tlogfeed_"  # feed keys (SPEC §6) are made the same way, and told apart at a glance
MAX_ARTISTS = 1000  # artist ids one token may cover (a label's roster)
MAX_ISSUED_TTL_S = 86_400  # the longest life of a token minted by an issuer (SPEC §6)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as. `subject` is the service name, or the artist ids an artist token covers
    (space-separated: a label or manager holds one token for several artists, SPEC §1); None for
    auditors. `expires_ms`: when the token stops working, if it was made to expire."""

    role: str
    subject: str | None
    token_id: int
    rights: frozenset[str] = frozenset()
    expires_ms: int | None = None

    @property
    def artist_ids(self) -> tuple[str, ...]:
        return artist_ids_of(self.role, self.subject)

    def is_artist(self, artist_id: str) -> bool:
        """Whether this is an artist token covering `artist_id`."""
        return artist_id in self.artist_ids

    def expired(self, now_ms: int) -> bool:
        return self.expires_ms is not None and now_ms >= self.expires_ms

    @property
    def service(self) -> str:
        """The service a service token acts for (every service token names one)."""
        if self.role != "service" or self.subject is None:
            raise Forbidden("this needs a service token")
        return self.subject


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
    elif role == "artist":
        artist_subject((subject or "").split(" "))
    elif not is_platform_id(subject) or len(subject) > 128:  # type: ignore[arg-type]
        raise ValidationError("a service token needs a service name of printable characters without spaces")


def artist_ids_of(role: str, subject: str | None) -> tuple[str, ...]:
    """The artist ids a token of `role` and `subject` covers (none unless it is an artist token)."""
    return tuple(subject.split(" ")) if role == "artist" and subject else ()


def artist_subject(artist_ids: Sequence[str]) -> str:
    """The subject of an artist token covering `artist_ids` (1 to MAX_ARTISTS platform ids, repeats
    dropped): the ids joined by spaces, which no id contains."""
    ids = list(dict.fromkeys(artist_ids))
    if not 1 <= len(ids) <= MAX_ARTISTS:
        raise ValidationError(f"an artist token covers 1 to {MAX_ARTISTS} artist ids, not {len(ids)}")
    bad = [a for a in ids if not is_platform_id(a)]
    if bad:
        raise ValidationError(f"{bad[0][:60]!r} is not an artist id (1-256 printable characters without spaces)",
                              [{"field": "artist_ids", "message": f"{a[:60]!r}: not an artist id"} for a in bad])
    return " ".join(ids)


def check_rights(role: str, rights: Collection[str]) -> frozenset[str]:
    unknown = sorted(set(rights) - set(RIGHTS))
    if unknown:
        raise ValidationError(f"unknown right {unknown[0]!r}; rights are {', '.join(RIGHTS)}")
    if rights and role != "service":
        raise ValidationError(f"only a service token holds rights ({', '.join(sorted(rights))}), not an {role} token")
    return frozenset(rights)


_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
MAX_EXPIRY_S = 10 * 366 * 86_400


def parse_duration(text: str, *, field: str = "--expires") -> int:
    """Seconds in a duration such as 30d, 12h, 90m, 2w or 45s (one number, one unit), at most ten years."""
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise ValidationError(f"{field} {text!r} is not a duration: a number and a unit, e.g. 30d, 12h, 90m, 2w, 45s")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds > MAX_EXPIRY_S:
        raise ValidationError(f"{field} {text!r} is more than ten years; a token that long should not expire at all")
    return seconds
