"""Signed notes (c2sp.org/signed-note) with keys in the golang.org/x/mod/sumdb/note form.

A note is UTF-8 text ending in a newline, a blank line, then one line per signature:
``— <key name> <base64(4-byte key hash ‖ signature)>``. Two signature types are supported:

- Ed25519 (type 0x01): the log's own checkpoint signatures, exactly as sumdb/note makes them.
- cosignature/v1 (type 0x04, c2sp.org/tlog-cosignature): a witness's timestamped Ed25519 signature over
  ``cosignature/v1\\ntime <t>\\n`` followed by the checkpoint body.

Parsing is as strict as note.go (and stricter about base64: only the canonical encoding is accepted, so a
note has exactly one byte form for its signatures). Signatures from unknown keys are kept aside, never
trusted; a known key's bad signature rejects the whole note. Nothing here reads files, sockets or the
clock, except that a CosignatureSigner takes the time from an injectable clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import NoteError

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
_ALGS = {ALG_ED25519: "Ed25519", ALG_COSIGNATURE_V1: "cosignature/v1"}

# note.go stops at 100 signatures; c2sp.org/signed-note requires accepting at least 16.
MAX_SIGNATURES = 100
# cosignature/v1 timestamps are u64 on the wire but MUST NOT exceed 2^63 - 1.
MAX_TIMESTAMP = 2**63 - 1

_SIG_PREFIX = "\u2014 "  # em dash, space
_COSIGNATURE_HEADER = b"cosignature/v1\n"
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")

# Go's unicode.IsSpace: ASCII and Latin-1 spaces plus the Unicode White_Space property. Spelled out rather
# than str.isspace() because the two disagree on a few code points, and key names must be judged alike.
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def is_valid_name(name: str) -> bool:
    """A key name: non-empty, no Unicode space, no '+' (which separates the parts of a key string), and no
    control characters (a note may not contain them, so such a name could never sign one)."""
    return bool(name) and not any(c in _SPACES or c == "+" or c < " " for c in name)


def key_hash(name: str, alg: int, public: bytes) -> int:
    """The 32-bit key ID: the first 4 bytes, big-endian, of SHA-256(name ‖ "\\n" ‖ alg ‖ public key)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def b64decode_strict(s: str, what: str) -> bytes:
    """Standard padded base64, canonical form only: re-encoding must give back the same string, so no
    stray bits, missing padding or foreign characters can give one value two spellings."""
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != s:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def cosignature_message(timestamp: int, body: bytes) -> bytes:
    """What a cosignature/v1 signature signs: a header line, a time line, then the checkpoint body."""
    return _COSIGNATURE_HEADER + b"time %d\n" % timestamp + body


def _parse_key(s: str, what: str) -> tuple[str, int, int, bytes]:
    """Split ``<name>+<hex8>+<base64(alg ‖ 32 bytes)>`` into (name, key hash, alg, 32 key bytes). The key
    hash is checked by the caller, which for a signer key must first derive the public key."""
    name, _, rest = s.partition("+")
    hash16, _, key64 = rest.partition("+")
    if not is_valid_name(name):
        raise NoteError(f"{what} has an invalid key name {name!r} (empty, or containing a space or '+')")
    if not _HEX8.fullmatch(hash16):
        raise NoteError(f"{what} for {name!r} does not have an 8-digit hex key hash")
    raw = b64decode_strict(key64, f"the key material of {what} for {name!r}")
    if len(raw) != 33:
        raise NoteError(f"{what} for {name!r} must hold a type byte and a 32-byte key, not {len(raw)} bytes")
    if raw[0] not in _ALGS:
        raise NoteError(f"{what} for {name!r} has unsupported signature type 0x{raw[0]:02x}")
    return name, int(hash16, 16), raw[0], raw[1:]


@dataclass(frozen=True)
class Verifier:
    """One trusted public key. `key` is its verifier key string ``<name>+<hex8>+<base64>``."""

    name: str
    key_hash: int
    key: str
    alg: int
    public: Ed25519PublicKey = field(repr=False, compare=False)

    @classmethod
    def from_key(cls, s: str) -> Verifier:
        """Parse a verifier key, Ed25519 (0x01) or cosignature/v1 (0x04)."""
        name, hash_, alg, public = _parse_key(s.strip(), "verifier key")
        if key_hash(name, alg, public) != hash_:
            raise NoteError(f"verifier key for {name!r}: the key hash does not match the key")
        pub = Ed25519PublicKey.from_public_bytes(public)
        return cls(name=name, key_hash=hash_, key=s.strip(), alg=alg, public=pub)

    @property
    def is_cosigner(self) -> bool:
        return self.alg == ALG_COSIGNATURE_V1

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Whether sig (without the 4-byte key hash) signs msg, the note text. For a cosigner, sig is the
        8-byte timestamp followed by the Ed25519 signature, as c2sp.org/tlog-cosignature lays it out."""
        if self.is_cosigner:
            if len(sig) != 72:
                return False
            timestamp = int.from_bytes(sig[:8], "big")
            if timestamp > MAX_TIMESTAMP:
                return False
            msg, sig = cosignature_message(timestamp, msg), sig[8:]
        try:
            self.public.verify(sig, msg)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """One private key. Ed25519 keys sign the note text as is."""

    name: str
    key_hash: int
    private: Ed25519PrivateKey = field(repr=False, compare=False)

    alg: ClassVar[int] = ALG_ED25519

    @classmethod
    def from_key(cls, s: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex8>+<base64(alg ‖ seed)>``. Called on Signer it accepts both types
        and returns a CosignatureSigner for a 0x04 key; called on a subclass it accepts only that type."""
        s = s.strip()
        if not s.startswith(_PRIVATE_PREFIX):
            raise NoteError("signer key must start with PRIVATE+KEY+")
        name, hash_, alg, seed = _parse_key(s[len(_PRIVATE_PREFIX) :], "signer key")
        kind = _SIGNER_TYPES[alg]
        if not issubclass(kind, cls):
            raise NoteError(f"signer key for {name!r} is a {_ALGS[alg]} key, not a {_ALGS[cls.alg]} key")
        private = Ed25519PrivateKey.from_private_bytes(seed)
        # The hash names the public key, which only exists once derived from the seed.
        if key_hash(name, alg, _raw_public(private.public_key())) != hash_:
            raise NoteError(f"signer key for {name!r}: the key hash does not match the key")
        return kind(name=name, key_hash=hash_, private=private)

    @property
    def verifier_key(self) -> str:
        public = bytes([self.alg]) + _raw_public(self.private.public_key())
        return f"{self.name}+{self.key_hash:08x}+{b64encode(public)}"

    def sign(self, msg: bytes) -> bytes:
        """The signature bytes (without the key hash) over the note text msg."""
        return self.private.sign(msg)

    def signature(self, text: bytes) -> Signature:
        """A signature line's content for note text, ready to format or to add to a note."""
        return Signature(self.name, self.key_hash, self.sign(text))


@dataclass(frozen=True)
class CosignatureSigner(Signer):
    """A witness key (c2sp.org/tlog-cosignature, Ed25519, type 0x04). Its signatures carry the time they
    were made, read from `clock` (seconds since the epoch) so callers and tests can fix it."""

    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    alg: ClassVar[int] = ALG_COSIGNATURE_V1

    def sign(self, msg: bytes) -> bytes:
        return self.sign_at(msg, int(self.clock()))

    def sign_at(self, msg: bytes, timestamp: int) -> bytes:
        """timestamp ‖ Ed25519(cosignature message) for checkpoint body msg."""
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise NoteError(f"cosignature timestamp {timestamp} is out of range")
        return struct.pack(">Q", timestamp) + self.private.sign(cosignature_message(timestamp, msg))


_SIGNER_TYPES: dict[int, type[Signer]] = {ALG_ED25519: Signer, ALG_COSIGNATURE_V1: CosignatureSigner}


def generate_key(name: str, alg: int = ALG_ED25519) -> tuple[str, str]:
    """A new key pair for name: (signer key ``PRIVATE+KEY+…``, verifier key). alg 0x04 makes a witness
    cosignature key."""
    if not is_valid_name(name):
        raise NoteError(f"invalid key name {name!r}: it must be non-empty, with no spaces or '+'")
    if alg not in _ALGS:
        raise NoteError(f"unsupported signature type 0x{alg:02x}")
    private = Ed25519PrivateKey.generate()
    public = _raw_public(private.public_key())
    prefix = f"{name}+{key_hash(name, alg, public):08x}+"
    return (
        _PRIVATE_PREFIX + prefix + b64encode(bytes([alg]) + private.private_bytes_raw()),
        prefix + b64encode(bytes([alg]) + public),
    )


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, key hash, and the signature bytes after the hash. `timestamp` is set
    on cosignatures that a cosigner Verifier has verified."""

    name: str
    key_hash: int
    sig: bytes
    timestamp: int | None = None

    def line(self) -> bytes:
        """The signature line as it appears in a note, newline included."""
        encoded = b64encode(self.key_hash.to_bytes(4, "big") + self.sig)
        return f"{_SIG_PREFIX}{self.name} {encoded}\n".encode()


@dataclass
class Note:
    """An opened note: its text (ending in a newline), the signatures verified by a known key, and the
    signatures of keys not given (kept so a note can be re-signed without losing them)."""

    text: bytes
    verified: list[Signature]
    others: list[Signature]


def sign_note(text: bytes, signers: Sequence[Signer], existing: Sequence[Signature] = ()) -> bytes:
    """The signed note: text, a blank line, the existing signatures, then one new signature per signer.
    As in note.go, an existing signature by the same key as a new signer is replaced, not repeated."""
    if not text.endswith(b"\n"):
        raise NoteError("note text must end with a newline")
    _check_text(text)
    if not signers:
        raise NoteError("a note needs at least one signer")
    for s in signers:
        if not is_valid_name(s.name):
            raise NoteError(f"invalid signer name {s.name!r}")
    new = {(s.name, s.key_hash) for s in signers}
    kept = [s for s in existing if (s.name, s.key_hash) not in new]
    sigs = kept + [s.signature(text) for s in signers]
    if len(sigs) > MAX_SIGNATURES:
        raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    return text + b"\n" + b"".join(s.line() for s in sigs)


def _check_text(msg: bytes) -> None:
    """Valid UTF-8 with no control characters other than newline, as signed-note requires."""
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NoteError(f"note is not valid UTF-8 (byte {e.start})") from None
    bad = next((i for i, c in enumerate(decoded) if c < " " and c != "\n"), None)
    if bad is not None:
        raise NoteError(f"note contains control character {decoded[bad]!r}; only newlines are allowed")


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError("signed note is malformed: a signature line must start with an em dash and a space")
    name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not is_valid_name(name):
        raise NoteError(f"signed note has a signature with an invalid key name {name!r}")
    raw = b64decode_strict(encoded, f"the signature by {name!r}")
    if len(raw) < 5:
        raise NoteError(f"the signature by {name!r} is too short")
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def parse_note(msg: bytes) -> tuple[bytes, list[Signature]]:
    """Split a signed note into its text and signatures, checking the syntax only. The text must not be
    trusted from this: use open_note."""
    _check_text(msg)
    # The text ends at the last blank line, so the signature block itself can hold no empty line.
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise NoteError("signed note is malformed: no blank line between the text and the signatures")
    text, block = msg[: split + 1], msg[split + 2 :].decode()
    if not block.endswith("\n"):
        raise NoteError("signed note is malformed: it must end with a signature line and a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"signed note has {len(lines)} signatures, more than the {MAX_SIGNATURES} allowed")
    return text, [_parse_signature_line(line) for line in lines]


def _index_verifiers(verifiers: Sequence[Verifier]) -> dict[tuple[str, int], Verifier]:
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_hash), v)
        if (other.alg, _raw_public(other.public)) != (v.alg, _raw_public(v.public)):
            # Two keys that collide on name and hash: a signature could not say which one made it.
            raise NoteError(f"two verifier keys share the name {v.name!r} and key hash {v.key_hash:08x}")
    return known


def open_note(msg: bytes, verifiers: Sequence[Verifier]) -> Note:
    """Parse msg and verify its signatures against the known verifiers. Signatures by other keys (even one
    sharing a known key's name or hash, but not both) go to `others`, unverified; a known key's signature
    that fails is an error, as is a note that no known key has signed."""
    text, sigs = parse_note(msg)
    known = _index_verifiers(verifiers)
    verified: list[Signature] = []
    others: list[Signature] = []
    seen: set[Signature] = set()
    for s in sigs:
        if s in seen:  # a repeated identical line adds nothing
            continue
        seen.add(s)
        v = known.get((s.name, s.key_hash))
        if v is None:
            others.append(s)
        elif not v.verify(text, s.sig):
            raise NoteError(f"invalid signature by key {s.name}+{s.key_hash:08x}")
        elif v.is_cosigner:
            verified.append(Signature(s.name, s.key_hash, s.sig, int.from_bytes(s.sig[:8], "big")))
        else:
            verified.append(s)
    if not verified:
        names = ", ".join(sorted({f"{v.name}+{v.key_hash:08x}" for v in verifiers})) or "none given"
        raise NoteError(f"note is not signed by any trusted key (trusted: {names})")
    return Note(text=text, verified=verified, others=others)
