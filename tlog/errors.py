"""Errors as types. The edges (CLI, HTTP) map them to exit codes, statuses and messages; nothing else
formats them, so every user sees the same wording.

No type here knows HTTP: the server's statuses are the table `server/errors.STATUSES`, the witness's
`witness/server.STATUSES` (as Tessera's ErrPushback becomes a 503 at its edge, not in its type), each read
with `by_type`, so a subclass answers as its nearest listed base. The `tlog` command's exit status for
each (SPEC §7) is the class's `exit_code`, applied in `cli.TlogGroup` alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

# SPEC §7: 0 all held; 1 a failed verification or a monitor alert; 2 bad input, a refused operation or a
# declined prompt (click's usage errors too); 3 the log could not be reached or read.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3
T = TypeVar("T")


@dataclass
class TlogError(Exception):
    """Base of every error a user may see. `code` is stable and machine-readable; `message` is one line
    written for a person; `details` lists per-field problems ({"field": ..., "message": ...})."""

    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    code: str = "error"
    exit_code: ClassVar[int] = EXIT_BAD_INPUT  # the CLI's exit status for it (SPEC §7)
    label: ClassVar[str] = "error"  # how the CLI's one line begins

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class ValidationError(TlogError):
    """Input that does not match the SPEC: a record, a query parameter, a file, a path."""

    code: str = "invalid_input"


@dataclass
class TooLarge(TlogError):
    """Input beyond a configured size (a preferences document, a request body)."""

    code: str = "too_large"


@dataclass
class NotFound(TlogError):
    code: str = "not_found"


@dataclass
class Conflict(TlogError):
    code: str = "conflict"


@dataclass
class Unauthorized(TlogError):
    code: str = "unauthorized"
    exit_code: ClassVar[int] = EXIT_UNREACHABLE


@dataclass
class Forbidden(TlogError):
    """A credential asking for what its role may not do; in the CLI, a refused operation (exit 2)."""

    code: str = "forbidden"


@dataclass
class Unreachable(TlogError):
    """A remote log could not be reached, or would not answer this credential (its 401 or 403)."""

    code: str = "unreachable"
    exit_code: ClassVar[int] = EXIT_UNREACHABLE


@dataclass
class Unavailable(TlogError):
    """The log cannot do it now (its writer stopped, its database is not answering): try again, after
    `retry_after` seconds when given (the HTTP answer's Retry-After)."""

    code: str = "unavailable"
    retry_after: float | None = None  # seconds (a client reads them from Retry-After, which may be a date)
    exit_code: ClassVar[int] = EXIT_UNREACHABLE


@dataclass
class TooEarly(TlogError):
    """The answer exists but may not be shown yet: a receipt for a leaf that no published (witness-
    cosigned) checkpoint covers yet (SPEC §6). Ask again after `retry_after` seconds."""

    code: str = "too_early"
    retry_after: int = 1


@dataclass
class ProofError(TlogError):
    """A Merkle proof, receipt or signed note does not check out."""

    code: str = "bad_proof"


@dataclass
class NoteError(ProofError):
    """A signed note (or checkpoint) is malformed or its signatures do not verify."""

    code: str = "bad_note"


@dataclass
class StorageError(TlogError):
    """The store refused or failed an operation (full disk, locked, read-only, not a tlog database)."""

    code: str = "storage"
    exit_code: ClassVar[int] = EXIT_UNREACHABLE


@dataclass
class Damaged(StorageError):
    """What a log stores does not hold together: a key file that is not the log's, a stored checkpoint
    that does not verify, a leaf that no longer reads back: its database or files were altered. Still a
    StorageError to the server (503); to the CLI a failed check (exit 1), as `tlog verify` reports it."""

    code: str = "damaged"
    exit_code: ClassVar[int] = EXIT_FAILED


@dataclass
class VerificationError(TlogError):
    """`tlog verify` found the log does not hold. `index` is the first bad leaf index, when there is one."""

    index: int | None = None
    code: str = "verification_failed"
    exit_code: ClassVar[int] = EXIT_FAILED


@dataclass
class Alert(VerificationError):
    """`tlog monitor` saw the log do what a log must never do (a fork, a rollback, a bad signature…)."""

    code: str = "alert"
    label: ClassVar[str] = "ALERT"


def by_type(table: Mapping[type, T], exc: BaseException) -> T | None:
    """What `table` says of `exc`: the entry of its nearest class (its own, then its bases in MRO order)."""
    return next((table[cls] for cls in type(exc).__mro__ if cls in table), None)


# Error details are bounded where they are collected and again where they are sent: a body of a million
# bad values must cost a count, not a million entries (nor megabytes of answer).
DETAILS_SHOWN = 20  # details an HTTP error lists by default (`tlog serve --max-error-details`)
DETAILS_KEPT = 100  # details an error keeps while it is built; more are only counted
# Characters of a detail's field or message: room for a list of valid codes (the default policy's twelve
# purposes, with "use one of", take 264), which a user needs whole to fix a typo.
DETAIL_CHARS = 300


def more_detail(n: int) -> dict[str, Any]:
    """The last detail of a cut list: how many problems are not listed."""
    return {"field": "", "message": f"{n} more problem{'s' if n != 1 else ''} not listed", "more": n}


def problem_count(details: list[dict[str, Any]]) -> int:
    """How many problems `details` stand for, counting those a `more_detail` summarises."""
    return sum(d["more"] if "more" in d else 1 for d in details)


def bounded_details(details: list[dict[str, Any]], limit: int = DETAILS_KEPT) -> list[dict[str, Any]]:
    """At most `limit` details, each string cut to DETAIL_CHARS, then one `more_detail` for the rest."""
    listed = [d for d in details if "more" not in d]
    rest = problem_count(details) - min(len(listed), limit)
    out = [{k: cut(v) if isinstance(v, str) else v for k, v in d.items()} for d in listed[:limit]]
    return out + [more_detail(rest)] if rest else out


def cut(text: str, chars: int = DETAIL_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"
