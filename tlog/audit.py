"""An artist's audit bundle, checked offline against a verifier key the artist names.

A bundle (GET /v1/artists/{id}/audit) holds a signed checkpoint and every entry about the artist: the
public leaf, its private details and an inclusion proof. `verify_bundle` checks that the checkpoint is
signed by the named key, that every leaf is in the tree it commits to, that every leaf commits to the
details shown (so the server cannot show the artist one story and the public another), and that the
artist's chain runs from aseq 1 to the head with no gap. Pure: the caller reads the file or URL.

What it cannot prove yet: that the head shown is the artist's latest leaf. The per-batch artist map of
SPEC §2.3 (reserved) will let the bundle prove that too."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from . import merkle
from .canonical import canonical
from .checkpoint import open_checkpoint
from .errors import ProofError, ValidationError, VerificationError
from .note import Verifier
from .records import details_hash, parse_leaf

_BUNDLE_FIELDS = {"version", "origin", "artist_id", "tag", "checkpoint", "entries", "head"}
_ENTRY_FIELDS = {"index", "leaf", "details", "proof"}


@dataclass
class AuditReport:
    artist_id: str
    size: int
    entries: int
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (type, purpose, decision) → leaves

    def summary(self) -> str:
        lines = [f"ok: {self.entries} entries of {self.artist_id} verified against a checkpoint of size {self.size}; "
                 f"chain contiguous from aseq 1 to {self.entries}"]
        for (kind, purpose, decision), n in sorted(self.counts.items()):
            lines.append(f"  {n:>6}  {kind:<10} {purpose or '-':<30} {decision or '-'}")
        return "\n".join(lines)


def _bad(index: int | None, message: str) -> VerificationError:
    return VerificationError(f"index {index}: {message}" if index is not None else message, index=index)


def _b64(value: Any, what: str, index: int | None) -> bytes:
    """Canonical padded base64 only: b64decode ignores the unused low bits of the last character, so
    without the re-encoding check one hash would have several spellings and a flipped bit could pass."""
    try:
        raw = base64.b64decode(value, validate=True) if type(value) is str else None
    except (binascii.Error, ValueError):
        raw = None
    if raw is None or base64.b64encode(raw).decode() != value:
        raise _bad(index, f"{what} is not canonical base64")
    return raw


def verify_bundle(bundle: Any, verifier: Verifier) -> AuditReport:
    """Checks a bundle as parsed from its JSON. ValidationError if it is not a bundle, VerificationError
    naming the first bad index if it does not hold; nothing else, whatever the input."""
    try:
        canonical(bundle)  # only what strict JSON can hold: no floats, lone surrogates, huge integers
    except ValidationError as exc:
        raise ValidationError(f"not a tlog audit bundle: {exc.message}") from None
    if not isinstance(bundle, dict) or set(bundle) != _BUNDLE_FIELDS or bundle.get("version") != 1:
        raise ValidationError("not a tlog audit bundle (version 1)")
    if type(bundle["checkpoint"]) is not str:
        raise ValidationError("the bundle's checkpoint is not a string")
    artist_id = bundle["artist_id"]
    try:
        cp, _ = open_checkpoint(bundle["checkpoint"].encode(), [verifier])
    except ProofError as exc:
        raise VerificationError(f"the bundle's checkpoint does not verify with the named key: {exc.message}") from None
    if cp.origin != bundle["origin"]:
        raise VerificationError(f"the bundle names origin {bundle['origin']!r} but its checkpoint is for {cp.origin!r}")
    entries = bundle["entries"]
    if not isinstance(entries, list):
        raise ValidationError("the bundle's entries are not a list")
    report = AuditReport(str(artist_id), cp.size, len(entries))
    prev_index: int | None = None
    for aseq, e in enumerate(entries, 1):
        prev_index = _check_entry(e, aseq, prev_index, bundle, cp, report)
    head = bundle["head"]
    if head != {"aseq": len(entries), "index": prev_index}:
        raise _bad(prev_index, f"the bundle's head {head} does not match its last entry")
    return report


def _check_entry(e: Any, aseq: int, prev_index: int | None, bundle: dict[str, Any], cp: Any, report: AuditReport) -> int:
    if not isinstance(e, dict) or set(e) != _ENTRY_FIELDS or type(e["index"]) is not int:
        raise _bad(None, f"entry {aseq} is malformed")
    index = e["index"]
    if not 0 <= index < cp.size:
        raise _bad(index, f"is not under the checkpoint (size {cp.size})")
    leaf_bytes = _b64(e["leaf"], "leaf", index)
    try:
        leaf = parse_leaf(leaf_bytes)
    except ValidationError as exc:
        raise _bad(index, f"leaf is not canonical: {exc.message}") from None
    if not isinstance(e["proof"], list):
        raise _bad(index, "proof is not a list")
    try:
        merkle.verify_inclusion(merkle.leaf_hash(leaf_bytes), index, cp.size, [_b64(h, "proof hash", index) for h in e["proof"]], cp.root)
    except ProofError as exc:
        raise _bad(index, f"inclusion proof fails: {exc.message}") from None
    d = e["details"]
    if not isinstance(d, dict) or leaf.details != details_hash(d):
        raise _bad(index, "the details shown do not match the leaf's commitment")
    if leaf.artist is None or leaf.artist.hex() != bundle["tag"] or d.get("artist_id") != bundle["artist_id"]:
        raise _bad(index, "the entry is not about this artist")
    if d.get("index") != index:
        raise _bad(index, f"the details say index {d.get('index')}")
    # The public leaf must say what the private details say: the counts the public sees are these.
    shown = ("logged_at", "by") if leaf.type == "preference" else ("logged_at", "purpose", "phase", "decision", "policy")
    for name in shown:
        if getattr(leaf, name) != d.get(name):
            raise _bad(index, f"the public leaf says {name} {getattr(leaf, name)!r}, the details {d.get(name)!r}")
    if leaf.aseq != aseq or leaf.aprev != prev_index:
        raise _bad(index, f"artist chain broken: aseq {leaf.aseq}, aprev {leaf.aprev}; expected {aseq}, {prev_index}")
    key = (leaf.type, leaf.purpose or "", leaf.decision or "")
    report.counts[key] = report.counts.get(key, 0) + 1
    return index
