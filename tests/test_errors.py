"""tlog/errors.py: `by_type` reads a table by an error's nearest class."""

from __future__ import annotations

from tlog.errors import Alert, NoteError, ProofError, TlogError, VerificationError, by_type


def test_by_type_takes_the_nearest_listed_class() -> None:
    table = {TlogError: "any", ProofError: "proof", Alert: "alert"}
    assert by_type(table, NoteError("x")) == "proof"  # NoteError → ProofError, before TlogError
    assert by_type(table, Alert("x")) == "alert"  # its own entry, before VerificationError's base's
    assert by_type(table, VerificationError("x")) == "any"
    assert by_type(table, ValueError("x")) is None
    assert by_type({}, TlogError("x")) is None
