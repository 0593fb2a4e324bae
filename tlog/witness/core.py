"""The add-checkpoint exchange of c2sp.org/tlog-witness, as pure functions.

A request body is an `old <size>` line, up to 63 base64 consistency-proof lines, a blank line, then a signed
checkpoint. A witness answers, checking in this order (the spec's):

1. 404 if it knows no log of the checkpoint's origin; 403 if no trusted key of that log signed it;
2. 400 if the old size is larger than the checkpoint's (or the request is malformed at all);
3. 409 if the old size is not the size it last cosigned for the origin (0 if none), with that size as a
   `text/x.tlog.size` body, so the log can resend a proof from there;
4. 422 if the consistency proof from the old size does not verify (at equal sizes, the proof must be empty
   and the roots equal; a different root at the same size is a 409: a fork, seen at the tip).

Only then does it record the new checkpoint and return its cosignature lines. Nothing here touches the
store: the caller runs `check` against the state it read and commits by compare-and-swap, so two racing
requests cannot roll the witness back (see store.WitnessStore.advance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .. import merkle
from ..checkpoint import MAX_PROOF_HASHES, Checkpoint, parse_decimal, parse_hash, open_checkpoint
from ..errors import Conflict, Forbidden, NoteError, NotFound, ProofError, ValidationError
from ..note import CosignatureSigner, Verifier, b64encode, parse_note

SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD_PREFIX = "old "


@dataclass
class SizeConflict(Conflict):
    """409: the witness's latest cosigned size is not what the request assumed, or at that size the
    witness cosigned another root. `size` (the latest cosigned size) is the answer's whole body."""

    size: int = 0


@dataclass
class ForkConflict(SizeConflict):
    """409 at the tip: the witness cosigned another root at the very size of the checkpoint."""


@dataclass(frozen=True)
class LogState:
    """What a witness remembers of one log: the size and root of the latest checkpoint it cosigned."""

    size: int
    root: bytes


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint request. `note` is the signed checkpoint, byte for byte."""

    old: int
    proof: tuple[bytes, ...]
    note: bytes
    checkpoint: Checkpoint


def format_request(old: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The request body a log sends: old size, proof lines, blank line, the signed checkpoint."""
    lines = [f"{_OLD_PREFIX}{old}", *(b64encode(h) for h in proof)]
    return "".join(line + "\n" for line in lines).encode() + b"\n" + note


def parse_request(body: bytes) -> AddCheckpoint:
    """Parse a request body strictly; any malformation is a 400 (ValidationError) naming it."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise ValidationError("request must be an old size line, proof lines, a blank line and a checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise ValidationError("the old size and proof lines must be ASCII") from None
    if not lines[0].startswith(_OLD_PREFIX):
        raise ValidationError("request must start with an 'old <size>' line")
    if len(lines) - 1 > MAX_PROOF_HASHES:
        raise ValidationError(f"a consistency proof has at most {MAX_PROOF_HASHES} lines, not {len(lines) - 1}")
    try:
        old = parse_decimal(lines[0][len(_OLD_PREFIX) :], "old size")
        proof = tuple(parse_hash(line, f"consistency proof line {i}") for i, line in enumerate(lines[1:], 1))
        checkpoint = Checkpoint.parse(parse_note(note)[0])
    except NoteError as exc:
        raise ValidationError(exc.message) from None
    return AddCheckpoint(old, proof, note, checkpoint)


def authenticate(req: AddCheckpoint, logs: Mapping[str, Sequence[Verifier]]) -> None:
    """Checks 404 then 403: the origin must be a known log's and one of its keys must have signed.
    Signatures by unknown keys (other witnesses' cosignatures, say) are ignored."""
    origin = req.checkpoint.origin
    verifiers = logs.get(origin)
    if not verifiers:
        raise NotFound(f"this witness does not know the log {origin!r}")
    try:
        open_checkpoint(req.note, verifiers)
    except NoteError as exc:
        raise Forbidden(f"the checkpoint is not signed by a key this witness trusts for {origin!r}: {exc.message}") from None


def check(req: AddCheckpoint, latest: LogState | None) -> None:
    """Checks 400, 409 and 422 against `latest`, the state of the log the witness read (None: never
    cosigned). Passing means the checkpoint may replace `latest`, if `latest` is still current."""
    cp, old = req.checkpoint, req.old
    if old > cp.size:
        raise ValidationError(f"old size {old} is larger than the checkpoint's size {cp.size}")
    known = latest.size if latest is not None else 0
    if old != known:
        raise SizeConflict(f"this witness last cosigned size {known} of {cp.origin!r}, not {old}", size=known)
    if cp.size == 0 and cp.root != merkle.EMPTY_ROOT:
        raise ProofError("a checkpoint of size 0 must have the empty tree's root")
    if old == 0 or old == cp.size:
        if req.proof:
            raise ProofError(f"the consistency proof from size {old} to {cp.size} must be empty")
        if latest is not None and old == cp.size and cp.root != latest.root:
            raise ForkConflict(
                f"this witness cosigned a different root at size {old} of {cp.origin!r}: the log has forked",
                size=known,
            )
        return
    assert latest is not None  # old == known > 0
    try:
        merkle.verify_consistency(old, cp.size, latest.root, cp.root, req.proof)
    except ProofError as exc:
        raise ProofError(
            f"the checkpoint at size {cp.size} is not consistent with the one this witness cosigned at size "
            f"{old}: {exc.message}"
        ) from None


def cosign(signer: CosignatureSigner, req: AddCheckpoint) -> bytes:
    """The answer to an accepted request: one cosignature/v1 line over the checkpoint body."""
    return signer.signature(req.checkpoint.body()).line()


def parse_size(body: bytes) -> int:
    """The body of a 409 answer: a decimal size and a newline."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ValidationError("a text/x.tlog.size body must be ASCII") from None
    if not text.endswith("\n"):
        raise ValidationError("a text/x.tlog.size body must end with a newline")
    try:
        return parse_decimal(text[:-1], "witness size")
    except NoteError as exc:
        raise ValidationError(exc.message) from None
