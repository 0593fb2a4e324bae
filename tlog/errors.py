"""Errors as types. The edges (CLI, HTTP) map them to exit codes, statuses and messages; nothing else
formats them, so every user sees the same wording."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TlogError(Exception):
    """Base of every error a user may see. `code` is stable and machine-readable; `message` is one line
    written for a person; `details` lists per-field problems ({"field": ..., "message": ...})."""

    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    code: str = "error"
    status: int = 400

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class ValidationError(TlogError):
    """Input that does not match the SPEC: a record, a query parameter, a file, a path."""

    code: str = "invalid_input"
    status: int = 400


@dataclass
class NotFound(TlogError):
    code: str = "not_found"
    status: int = 404


@dataclass
class Conflict(TlogError):
    code: str = "conflict"
    status: int = 409


@dataclass
class Unauthorized(TlogError):
    code: str = "unauthorized"
    status: int = 401


@dataclass
class Forbidden(TlogError):
    code: str = "forbidden"
    status: int = 403


@dataclass
class Unavailable(TlogError):
    code: str = "unavailable"
    status: int = 503


@dataclass
class ProofError(TlogError):
    """A Merkle proof, receipt or signed note does not check out."""

    code: str = "bad_proof"
    status: int = 422


@dataclass
class NoteError(ProofError):
    """A signed note (or checkpoint) is malformed or its signatures do not verify."""

    code: str = "bad_note"


@dataclass
class StorageError(TlogError):
    """The store refused or failed an operation (full disk, locked, read-only, not a tlog database)."""

    code: str = "storage"
    status: int = 503


@dataclass
class VerificationError(TlogError):
    """`tlog verify` found the log does not hold. `index` is the first bad leaf index, when there is one."""

    index: int | None = None
    code: str = "verification_failed"
    status: int = 500
