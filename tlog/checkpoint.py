"""Checkpoints (c2sp.org/tlog-checkpoint) and receipts (c2sp.org/tlog-proof@v1).

A checkpoint body is ``origin\\nsize\\nbase64(root)\\n`` and is signed as a note whose key name is the
origin. A receipt is a self-contained, offline-verifiable proof that a leaf is in the log::

    c2sp.org/tlog-proof@v1
    extra <base64 leaf bytes>      (optional)
    index <n>
    <base64 hash>                  (zero or more: the inclusion proof, leaf's sibling first)
                                   (blank line)
    <the signed checkpoint, verbatim>

Both parsers accept exactly one byte form for each value, so format(parse(x)) == x for every x they accept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import merkle
from .errors import NoteError, ProofError
from .note import Note, Verifier, b64decode_strict, b64encode, open_note, parse_note

RECEIPT_HEADER = b"c2sp.org/tlog-proof@v1"
# Sizes and indexes are int64 in every other implementation (sumdb/tlog, Tessera); stay inside that.
MAX_SIZE = 2**63 - 1
# An inclusion proof in a tree of fewer than 2^63 leaves has at most 63 hashes.
MAX_PROOF_HASHES = 63
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def parse_decimal(s: str, what: str) -> int:
    """ASCII decimal with no sign, spaces or leading zeros (int() would take all three, and other digits)."""
    if not _DECIMAL.fullmatch(s) or len(s) > 19 or int(s) > MAX_SIZE:
        raise NoteError(f"{what} {s!r} is not a decimal number without leading zeros below 2^63")
    return int(s)


def _is_line(s: str) -> bool:
    return bool(s) and not any(c < " " for c in s)


def parse_hash(s: str, what: str) -> bytes:
    """One strict base64 SHA-256 hash (the format's hash lines: roots, proofs)."""
    raw = b64decode_strict(s, what)
    if len(raw) != merkle.HASH_SIZE:
        raise NoteError(f"{what} must be {merkle.HASH_SIZE} bytes, not {len(raw)}")
    return raw


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin (the log's name), size (number of leaves) and root hash. tlog emits no extension
    lines; those of other logs are kept, opaque, so that a parsed checkpoint formats back to its bytes."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Checked here so that body() can only ever produce a checkpoint that parse() accepts.
        if not _is_line(self.origin):
            raise NoteError("checkpoint origin must be one non-empty line without control characters")
        if not 0 <= self.size <= MAX_SIZE:
            raise NoteError(f"checkpoint size {self.size} is out of range")
        if len(self.root) != merkle.HASH_SIZE:
            raise NoteError(f"checkpoint root must be {merkle.HASH_SIZE} bytes, not {len(self.root)}")
        if not all(_is_line(line) for line in self.extensions):
            raise NoteError("checkpoint extension lines must be non-empty, without control characters")

    def body(self) -> bytes:
        """The note text to sign."""
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines).encode()

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint body (the note text, without signatures)."""
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("checkpoint is not valid UTF-8") from None
        if not decoded.endswith("\n"):
            raise NoteError("checkpoint must end with a newline")
        lines = decoded[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("checkpoint must have an origin, a size and a root hash line")
        origin, size, root, *extensions = lines
        return cls(
            origin=origin,
            size=parse_decimal(size, "checkpoint size"),
            root=parse_hash(root, "checkpoint root hash"),
            extensions=tuple(extensions),
        )


def open_checkpoint(signed: bytes, verifiers: Sequence[Verifier]) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint. Besides a valid signature, the log's own key (not a witness's) must be
    named after the origin: a key trusted for one log must not vouch for another log's checkpoints."""
    note = open_note(signed, verifiers)
    checkpoint = Checkpoint.parse(note.text)
    if not any(s.name == checkpoint.origin and s.timestamp is None for s in note.verified):
        signers = ", ".join(sorted({s.name for s in note.verified}))
        raise NoteError(f"checkpoint for origin {checkpoint.origin!r} is signed only by {signers}")
    return checkpoint, note


@dataclass
class Receipt:
    """A c2sp.org/tlog-proof@v1 proof. `extra` carries the leaf bytes so the receipt stands alone;
    `checkpoint` is the signed checkpoint note, byte for byte."""

    extra: bytes | None
    index: int
    proof: list[bytes]
    checkpoint: bytes

    def __post_init__(self) -> None:
        # Checked here so that format() can only ever produce a receipt that parse() accepts.
        if not 0 <= self.index <= MAX_SIZE:
            raise NoteError(f"receipt index {self.index} is out of range")
        if len(self.proof) > MAX_PROOF_HASHES or any(len(h) != merkle.HASH_SIZE for h in self.proof):
            raise NoteError(f"receipt proof must be at most {MAX_PROOF_HASHES} hashes of 32 bytes")

    def format(self) -> bytes:
        lines = [RECEIPT_HEADER]
        if self.extra is not None:
            lines.append(b"extra " + b64encode(self.extra).encode())
        lines.append(b"index %d" % self.index)
        lines.extend(b64encode(h).encode() for h in self.proof)
        return b"".join(line + b"\n" for line in lines) + b"\n" + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> Receipt:
        """Parse a receipt strictly. The embedded checkpoint is checked for syntax only; verify_receipt
        checks its signatures."""
        head, sep, checkpoint = data.partition(b"\n\n")
        if not sep:
            raise NoteError("receipt is malformed: no blank line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise NoteError("receipt is malformed: its header is not ASCII") from None
        if lines[0] != RECEIPT_HEADER.decode():
            raise NoteError(f"receipt must start with the line {RECEIPT_HEADER.decode()}")
        lines = lines[1:]
        extra = None
        if lines and lines[0].startswith("extra "):
            extra = b64decode_strict(lines.pop(0)[len("extra ") :], "receipt extra data")
        if not lines or not lines[0].startswith("index "):
            raise NoteError("receipt is malformed: the index line is missing")
        index = parse_decimal(lines.pop(0)[len("index ") :], "receipt index")
        if len(lines) > MAX_PROOF_HASHES:
            raise NoteError(f"receipt has {len(lines)} proof hashes, more than {MAX_PROOF_HASHES}")
        proof = [parse_hash(line, "receipt proof hash") for line in lines]
        Checkpoint.parse(parse_note(checkpoint)[0])
        return cls(extra=extra, index=index, proof=proof, checkpoint=checkpoint)


def verify_receipt(receipt: Receipt, leaf: bytes | None, verifiers: Sequence[Verifier]) -> Checkpoint:
    """Check that leaf (or, if None, the receipt's extra data) is at receipt.index in the tree of the
    receipt's checkpoint, and that a trusted key signed that checkpoint. Returns the checkpoint."""
    checkpoint, _ = open_checkpoint(receipt.checkpoint, verifiers)
    if leaf is None:
        if receipt.extra is None:
            raise ProofError("receipt carries no leaf (no extra line) and none was given to check")
        leaf = receipt.extra
    elif receipt.extra is not None and receipt.extra != leaf:
        raise ProofError("receipt's extra data is not the leaf being checked")
    if receipt.index >= checkpoint.size:
        raise ProofError(f"receipt index {receipt.index} is outside its checkpoint of size {checkpoint.size}")
    leaf_hash = merkle.leaf_hash(leaf)
    merkle.verify_inclusion(leaf_hash, receipt.index, checkpoint.size, receipt.proof, checkpoint.root)
    return checkpoint
