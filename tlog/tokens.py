"""Bearer tokens (SPEC §1): random, shown once, stored only as SHA-256, revocable.

Pure: the store keeps the digests; this module makes tokens and says what a role may do."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from .errors import ValidationError
from .records import is_platform_id

ROLES = ("service", "artist", "auditor")
PREFIX = "tlog_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as. `subject` is the service name or the artist id; None for auditors."""

    role: str
    subject: str | None
    token_id: int

    def is_artist(self, artist_id: str) -> bool:
        return self.role == "artist" and self.subject == artist_id


def new_token() -> tuple[str, bytes]:
    """A fresh token (256 random bits, URL-safe, 48 characters) and the digest to store."""
    token = PREFIX + secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_subject(role: str, subject: str | None) -> None:
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}")
    if role == "auditor":
        if subject is not None:
            raise ValidationError("an auditor token names no subject")
    elif not is_platform_id(subject) or (role == "service" and len(subject) > 128):  # type: ignore[arg-type]
        raise ValidationError(f"a {role} token needs a {'service name' if role == 'service' else 'artist id'} "
                              "of printable characters without spaces")
