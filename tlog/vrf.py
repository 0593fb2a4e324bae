"""ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381, suite_string 0x03): a verifiable random function.

A VRF is a keyed hash whose owner can prove each output is right: anyone with the public key checks the
proof, nobody without the secret can predict an output, and the owner cannot pick among outputs because
each (key, input) has exactly one. tlog uses it for artist tags: the tag for an artist is the first 32
bytes of beta for alpha = UTF-8 ``"artist:" + artist_id``, so a tag reveals nothing about the artist to
someone without the secret, yet every tag published can be proved to belong to its artist.

Prove, verify and proof_to_hash follow RFC 9381 §5 to the byte: encode_to_curve is try-and-increment
(§5.4.1.1), the nonce is RFC 8032 style (§5.4.2.2), the challenge is 16 bytes (§5.4.3), points are
encoded as in RFC 8032 and the cofactor is 8.

All point arithmetic runs in libsodium through PyNaCl: Python integers would be tens of times slower
for scalar multiplication, and even a single square root mod p (to decode a point) costs more in Python
than three libsodium point additions. libsodium's scalar multiplications refuse points outside the
prime-order subgroup, and a try-and-increment candidate is usually outside it until multiplied by the
cofactor; crypto_core_ed25519_add is the call that takes a point of any order, so the cofactor is
cleared by three doublings with it. That call decodes leniently (it reduces y >= p and ignores a sign bit
on x = 0), so the encoding rules of RFC 8032 it skips are checked first, on the integer.

Verification is stricter than a literal reading of the RFC, so that every tlog verifier agrees on which
proofs are valid: the public key and Gamma must be in the prime-order subgroup. The RFC only refuses
small-order keys, and accepts a Gamma carrying a small-order component, which leaves beta unchanged but
lets the key's owner make several valid proofs of one output. As RFC 8032 decoding and RFC 9381 require,
though not every implementation does, it also refuses a non-canonical encoding of either point (y >= p,
or a sign bit on x = 0) and an s that is not reduced modulo the group order.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumFailure

from tlog.errors import ProofError

SECRET_SIZE = 32
PUBLIC_SIZE = 32
PROOF_SIZE = 80
OUTPUT_SIZE = 64

_SUITE = b"\x03"
_CHALLENGE_SIZE = 16
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_Y_MASK = (1 << 255) - 1
_IDENTITY = (1).to_bytes(32, "little")


def generate_secret() -> bytes:
    """A new VRF secret: 32 bytes from the OS, the same shape as an Ed25519 seed."""
    return os.urandom(SECRET_SIZE)


def public_key(sk: bytes) -> bytes:
    """The public key of a secret: the RFC 8032 key, so a VRF secret and an Ed25519 seed of the same bytes
    share it."""
    x, _ = _expand_secret(sk)
    return _mul_base(x)


def prove(sk: bytes, alpha: bytes) -> bytes:
    """The 80-byte proof pi = Gamma || c || s that beta is the output for alpha under sk (RFC 9381 §5.1).

    Derives the public key on every call; VrfSecret keeps it, for callers that prove many times."""
    return _prove(sk, public_key(sk), alpha)


def proof_to_hash(pi: bytes) -> bytes:
    """The 64-byte output beta that pi commits to (RFC 9381 §5.2).

    This does not verify pi against a key and input: use verify for that. It still refuses a malformed pi,
    with the same checks as verify, so that no caller computes a beta that verify would never return."""
    gamma, _, _ = _decode_proof(pi)
    return _beta(gamma)


def verify(pk: bytes, alpha: bytes, pi: bytes) -> bytes:
    """beta, if pi proves it is the output for alpha under pk; otherwise raises ProofError (RFC 9381 §5.3,
    with the key validated and the stricter checks on pi described in the module docstring)."""
    validate_key(pk)
    gamma, c, s = _decode_proof(pi)
    h = _encode_to_curve(pk, alpha)
    u = sodium.crypto_core_ed25519_sub(_mul_base(s), _mul(c, pk))
    v = sodium.crypto_core_ed25519_sub(_mul(s, h), _mul(c, gamma))
    if _challenge(pk, h, gamma, u, v) != c:
        raise ProofError("the VRF proof does not match the public key and input")
    return _beta(gamma)


def validate_key(pk: bytes) -> None:
    """Raise ProofError unless pk is a canonically encoded point of the prime-order subgroup other than the
    identity (RFC 9381 §5.4.5, made stricter: no small-order component at all, which no honest key has)."""
    if len(pk) != PUBLIC_SIZE:
        raise ProofError(f"the VRF public key is {len(pk)} bytes, not {PUBLIC_SIZE}")
    _require_group_element(pk, "public key")


@dataclass(frozen=True)
class VrfSecret:
    """A VRF secret with its public key, derived once: each proof needs the key, and deriving it is a
    scalar multiplication. Build it with from_secret so that the two match."""

    sk: bytes = field(repr=False)  # kept out of repr so that a logged object does not leak the secret
    pk: bytes

    @classmethod
    def from_secret(cls, sk: bytes) -> VrfSecret:
        return cls(sk, public_key(sk))

    def prove(self, alpha: bytes) -> bytes:
        """The same proof as prove(self.sk, alpha), without deriving the public key again."""
        return _prove(self.sk, self.pk, alpha)

    def evaluate(self, alpha: bytes) -> tuple[bytes, bytes]:
        """(beta, proof): proof_to_hash(proof) without re-checking the Gamma this secret just made, which
        saves a subgroup check per new artist on the sequencer's path."""
        proof = self.prove(alpha)
        return _beta(proof[:32]), proof


def _prove(sk: bytes, pk: bytes, alpha: bytes) -> bytes:
    """RFC 9381 §5.1, with the public key given, since VrfSecret already has it."""
    x, nonce_key = _expand_secret(sk)
    h = _encode_to_curve(pk, alpha)
    gamma = _mul(x, h)
    k = _nonce(nonce_key, h)
    c = _challenge(pk, h, gamma, _mul_base(k), _mul(k, h))
    s = (k + c * x) % _L
    return gamma + c.to_bytes(_CHALLENGE_SIZE, "little") + s.to_bytes(32, "little")


def _expand_secret(sk: bytes) -> tuple[int, bytes]:
    """The secret scalar x (the first half of SHA-512(sk), clamped as in RFC 8032) and the second half,
    which keys the nonce. x is often above L; _mul reduces it."""
    if len(sk) != SECRET_SIZE:
        raise ValueError(f"a VRF secret is {SECRET_SIZE} bytes, not {len(sk)}")
    digest = hashlib.sha512(sk).digest()
    x = int.from_bytes(digest[:32], "little")
    return (x & ~7 & _Y_MASK) | (1 << 254), digest[32:]


def _encode_to_curve(pk: bytes, alpha: bytes) -> bytes:
    """H = ECVRF_encode_to_curve_try_and_increment (RFC 9381 §5.4.1.1): hash with a counter until the first
    32 bytes decode to a point whose cofactor multiple is not the identity. Half the candidates decode."""
    prefix = _SUITE + b"\x01" + pk + alpha
    for ctr in range(256):
        candidate = hashlib.sha512(prefix + bytes((ctr, 0))).digest()[:32]
        if not _is_canonical(candidate):
            continue
        try:
            h = _times_cofactor(candidate)
        except SodiumFailure:  # no x for this y: not a curve point
            continue
        if h != _IDENTITY:
            return h
    # The counter is one byte in the RFC; 256 misses in a row has probability 2**-256.
    raise ProofError("no curve point found for the VRF input")


def _nonce(nonce_key: bytes, h: bytes) -> int:
    """k (RFC 9381 §5.4.2.2): deterministic, as in RFC 8032, so proving needs no randomness."""
    return int.from_bytes(hashlib.sha512(nonce_key + h).digest(), "little") % _L


def _challenge(*points: bytes) -> int:
    """c (RFC 9381 §5.4.3): the first 16 bytes of SHA-512 over the five points."""
    digest = hashlib.sha512(_SUITE + b"\x02" + b"".join(points) + b"\x00").digest()
    return int.from_bytes(digest[:_CHALLENGE_SIZE], "little")


def _beta(gamma: bytes) -> bytes:
    """beta (RFC 9381 §5.2): hashing 8*Gamma rather than Gamma is the RFC's way to make beta independent of
    any small-order component; Gamma here has none, but the formula is what fixes beta's value."""
    return hashlib.sha512(_SUITE + b"\x03" + _times_cofactor(gamma) + b"\x00").digest()


def _decode_proof(pi: bytes) -> tuple[bytes, int, int]:
    """(Gamma, c, s) from pi (RFC 9381 §5.4.4), refusing what the module docstring says tlog refuses."""
    if len(pi) != PROOF_SIZE:
        raise ProofError(f"the VRF proof is {len(pi)} bytes, not {PROOF_SIZE}")
    gamma = pi[:32]
    _require_group_element(gamma, "proof's Gamma")
    c = int.from_bytes(pi[32 : 32 + _CHALLENGE_SIZE], "little")
    s = int.from_bytes(pi[32 + _CHALLENGE_SIZE :], "little")
    if s >= _L:
        raise ProofError("the VRF proof's s is not reduced modulo the group order")
    return gamma, c, s


def _require_group_element(encoded: bytes, what: str) -> None:
    """Raise ProofError unless encoded is the canonical encoding of a prime-order-subgroup point other than
    the identity. libsodium's is_valid_point decides membership; the rest only finds the words for a
    refusal."""
    if not _is_canonical(encoded):
        raise ProofError(f"the VRF {what} is not canonically encoded")
    if sodium.crypto_core_ed25519_is_valid_point(encoded):
        return
    try:
        cleared = _times_cofactor(encoded)
    except SodiumFailure:
        raise ProofError(f"the VRF {what} is not the encoding of a point on the curve") from None
    if cleared == _IDENTITY:
        raise ProofError(f"the VRF {what} is a point of small order")
    raise ProofError(f"the VRF {what} is not in the prime-order subgroup")


def _is_canonical(encoded: bytes) -> bool:
    """Whether encoded obeys the two RFC 8032 (§5.1.3) decoding rules that libsodium's point addition does
    not enforce: y < p, and no sign bit when x = 0 (which happens exactly when y is 1 or p - 1). The third
    rule, that x exists at all, libsodium does enforce."""
    n = int.from_bytes(encoded, "little")
    y = n & _Y_MASK
    return y < _P and not (n >> 255 and y in (1, _P - 1))


def _times_cofactor(encoded: bytes) -> bytes:
    """8*P for any curve point P, whatever its order, by three doublings with crypto_core_ed25519_add: the
    libsodium call that accepts points outside the prime-order subgroup, and half the cost of a scalar
    multiplication by 8. Raises SodiumFailure if encoded is not a curve point; the caller has checked the
    encoding with _is_canonical. The result is canonically encoded."""
    twice = sodium.crypto_core_ed25519_add(encoded, encoded)
    four_times = sodium.crypto_core_ed25519_add(twice, twice)
    return sodium.crypto_core_ed25519_add(four_times, four_times)


def _mul(k: int, point: bytes) -> bytes:
    """k*point for a point in the prime-order subgroup. k is reduced modulo L first, because libsodium
    silently drops bit 255 of a scalar, and refuses a zero scalar rather than return the identity; a
    proof may carry c = 0 or s = 0, so that case is answered here."""
    k %= _L
    if k == 0:
        return _IDENTITY
    return sodium.crypto_scalarmult_ed25519_noclamp(k.to_bytes(32, "little"), point)


def _mul_base(k: int) -> bytes:
    """k*B, with the same treatment of k = 0 as _mul."""
    k %= _L
    if k == 0:
        return _IDENTITY
    return sodium.crypto_scalarmult_ed25519_base_noclamp(k.to_bytes(32, "little"))
