"""The errors the client adds to tlog.errors.

The client maps each HTTP answer to a type at its edge (`client.response_error`), as the server maps
types to statuses at its own; no type carries a status. For the statuses tlog.errors already names, it
raises those types (400 ValidationError, 401 Unauthorized, 403 Forbidden, 404 NotFound, 409 Conflict),
keeping the server's code and details.
Everything here is a TlogError too, so `except TlogError` catches every failure of a call;
`TransientError` is the one family worth retrying. (`UseRefused`, which carries the refused use's
receipt, lives beside `UseReceipt` in client.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ProofError, StorageError, TlogError, Unavailable, ValidationError


@dataclass
class TransientError(Unavailable):
    """The log could not answer now (503, another 5xx, a refused or dropped connection, a timeout). The
    same request may be sent again: a use's event_id makes that safe. `retry_after` is the server's
    Retry-After in seconds, when it sent one."""

    code: str = "unavailable"


@dataclass
class RateLimited(TransientError):
    """429: the log asks this client to slow down, for `retry_after` seconds when it said."""

    code: str = "rate_limited"


@dataclass
class NotYetPublished(TransientError):
    """425: the leaf is logged, but no published (witness-cosigned) checkpoint covers it yet, so no
    receipt can be shown; asked again after the server's Retry-After."""

    code: str = "too_early"


@dataclass
class TooLarge(ValidationError):
    """The request was over the server's body or batch limit (413)."""

    code: str = "too_large"


@dataclass
class ProtocolError(TlogError):
    """The server answered something that is not the API's contract (wrong shape, wrong records)."""

    code: str = "bad_response"


@dataclass
class ReceiptError(ProofError):
    """A receipt does not prove what the server said: bad signature, wrong key, a proof that does not
    lead to the checkpoint, or a leaf other than the one reported. Never trust such an answer."""

    code: str = "bad_receipt"


@dataclass
class SpoolError(StorageError):
    """The local spool could not be opened, read or written: records may not be accepted."""

    code: str = "spool"


def is_transient(exc: BaseException) -> bool:
    """Worth sending the same request again later (ProtocolError included: a proxy or a restarting
    server can garble one answer, and resending a use is idempotent)."""
    return isinstance(exc, (TransientError, ProtocolError))


def describe(message: str, details: list[dict[str, Any]], limit: int = 5) -> str:
    """The server's message with the fields it names, one line, for a person reading a log or a trace."""
    named = [f"{d.get('field') or '(body)'}: {d.get('message')}" for d in details[:limit] if isinstance(d, dict)]
    if len(details) > limit:
        named.append(f"and {len(details) - limit} more")
    return f"{message} ({'; '.join(named)})" if named else message
