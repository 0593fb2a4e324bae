"""ECVRF-EDWARDS25519-SHA512-TAI: the shared vectors byte for byte, round trips and tampering, key and
Gamma validation, and the libsodium-based point steps checked against a small pure-Python edwards25519
written here (slow, affine, used only as a reference). Every refusal must be a ProofError, never another
exception."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import FrozenInstanceError
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumFailure
from nacl.signing import SigningKey

from tlog import vrf
from tlog.errors import ProofError

VECTOR_FILE = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "ecvrf-edwards25519-sha512-tai.json"

# The reference examples run a pure-Python scalar multiplication each: slow on a shared machine.
reference_settings = settings(deadline=None, max_examples=60)
secret_keys = st.binary(min_size=vrf.SECRET_SIZE, max_size=vrf.SECRET_SIZE)
alphas = st.binary(max_size=64)


# --- a pure-Python edwards25519, the independent reference ----------------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1)
Point = tuple[int, int]


def ref_add(a: Point, b: Point) -> Point:
    """The complete affine addition law for -x^2 + y^2 = 1 + d x^2 y^2."""
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return (x1 * y2 + y1 * x2) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P


def ref_mul(k: int, point: Point) -> Point:
    acc = IDENTITY
    while k:
        if k & 1:
            acc = ref_add(acc, point)
        point = ref_add(point, point)
        k >>= 1
    return acc


def ref_decode(encoded: bytes) -> Point | None:
    """RFC 8032 §5.1.3 decoding, taking the square root of u/v the Ed25519 paper's way (a different route
    from the RFC's single exponentiation)."""
    n = int.from_bytes(encoded, "little")
    sign, y = n >> 255, n & ((1 << 255) - 1)
    if y >= P:
        return None
    xx = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * SQRT_M1 % P
    if (x * x - xx) % P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x, y


def ref_encode(point: Point) -> bytes:
    return (point[1] | (point[0] & 1) << 255).to_bytes(32, "little")


def ref_encode_to_curve(pk: bytes, alpha: bytes) -> bytes:
    """RFC 9381 §5.4.1.1 written out literally."""
    for ctr in range(256):
        digest = hashlib.sha512(b"\x03\x01" + pk + alpha + bytes([ctr]) + b"\x00").digest()
        candidate = ref_decode(digest[:32])
        if candidate is not None and ref_mul(8, candidate) != IDENTITY:
            return ref_encode(ref_mul(8, candidate))
    raise AssertionError("no point in 256 tries")


BASE = ref_decode((4 * pow(5, -1, P) % P).to_bytes(32, "little"))
assert BASE is not None


@cache
def torsion() -> tuple[bytes, ...]:
    """The eight points of order dividing 8, as L times a point with an order-8 component: computed here,
    not copied from a table."""
    for i in itertools.count():
        point = ref_decode(hashlib.sha512(b"torsion %d" % i).digest()[:32])
        if point is None:
            continue
        t = ref_mul(L, point)
        if ref_mul(4, t) != IDENTITY:
            return tuple(ref_encode(ref_mul(j, t)) for j in range(8))
    raise AssertionError("unreachable")


def off_curve_encoding() -> bytes:
    """A canonical y with no x: the smallest one."""
    y = next(y for y in itertools.count(2) if ref_decode(y.to_bytes(32, "little")) is None)
    return y.to_bytes(32, "little")


def edge_encodings() -> list[bytes]:
    """Encodings where decoders tend to differ: y near 0, near p, at or above p, with either sign bit (this
    includes the sign bit on x = 0, at y = 1 and y = p - 1)."""
    ys = [*range(19), *range(P - 19, 2**255)]
    return [(y | sign << 255).to_bytes(32, "little") for y in ys for sign in (0, 1)]


def libsodium_times_cofactor(encoded: bytes) -> bytes | None:
    """vrf's strict decoding and cofactor clearing, with a refusal as None."""
    if not vrf._is_canonical(encoded):
        return None
    try:
        return vrf._times_cofactor(encoded)
    except SodiumFailure:
        return None


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def sample_proof() -> tuple[bytes, bytes, bytes]:
    sk = bytes(range(32))
    alpha = b"artist:sc:user:42"
    return vrf.public_key(sk), alpha, vrf.prove(sk, alpha)


# --- the shared vectors ------------------------------------------------------------------------------------


def vector_cases(kind: str) -> list:
    """Loaded at collection so that each case is its own test; one skipped case when the file is absent."""
    if not VECTOR_FILE.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"test vectors not found at {VECTOR_FILE}"))]
    cases = json.loads(VECTOR_FILE.read_text())[kind]
    return [pytest.param(case, id=case.get("why", f"valid-{i}")) for i, case in enumerate(cases)]


@pytest.mark.parametrize("case", vector_cases("valid"))
def test_valid_vector_byte_for_byte(case: dict[str, str]) -> None:
    sk, pk, alpha, pi, beta = (bytes.fromhex(case[k]) for k in ("sk", "pk", "alpha", "pi", "beta"))
    assert vrf.public_key(sk) == pk
    assert vrf.prove(sk, alpha) == pi
    assert vrf.VrfSecret.from_secret(sk).prove(alpha) == pi
    assert vrf.proof_to_hash(pi) == beta
    assert vrf.verify(pk, alpha, pi) == beta
    assert len(pi) == vrf.PROOF_SIZE and len(beta) == vrf.OUTPUT_SIZE


@pytest.mark.parametrize("case", vector_cases("invalid"))
def test_invalid_vector_refused(case: dict[str, str]) -> None:
    pk, alpha, pi = (bytes.fromhex(case[k]) for k in ("pk", "alpha", "pi"))
    with pytest.raises(ProofError):
        vrf.verify(pk, alpha, pi)


# --- round trips and tampering ------------------------------------------------------------------------------


@given(sk=secret_keys, alpha=alphas)
def test_verify_returns_the_proofs_hash(sk: bytes, alpha: bytes) -> None:
    pi = vrf.prove(sk, alpha)
    beta = vrf.verify(vrf.public_key(sk), alpha, pi)
    assert beta == vrf.proof_to_hash(pi) and len(beta) == vrf.OUTPUT_SIZE


@given(sk=secret_keys, alpha=alphas)
def test_evaluate_is_proof_and_its_hash(sk: bytes, alpha: bytes) -> None:
    secret = vrf.VrfSecret.from_secret(sk)
    beta, pi = secret.evaluate(alpha)
    assert pi == vrf.prove(sk, alpha)
    assert beta == vrf.proof_to_hash(pi)


@given(sk=secret_keys, alpha=alphas, bit=st.integers(0, vrf.PROOF_SIZE * 8 - 1))
def test_any_flipped_bit_is_refused(sk: bytes, alpha: bytes, bit: int) -> None:
    pi = flip_bit(vrf.prove(sk, alpha), bit)
    with pytest.raises(ProofError):
        vrf.verify(vrf.public_key(sk), alpha, pi)


@given(sk=secret_keys, alpha=alphas, other=alphas)
def test_another_input_is_refused(sk: bytes, alpha: bytes, other: bytes) -> None:
    if other == alpha:
        other += b"\x00"
    with pytest.raises(ProofError, match="does not match"):
        vrf.verify(vrf.public_key(sk), other, vrf.prove(sk, alpha))


@given(sk=secret_keys, other=secret_keys, alpha=alphas)
def test_another_key_is_refused(sk: bytes, other: bytes, alpha: bytes) -> None:
    if other == sk:
        other = flip_bit(other, 0)
    with pytest.raises(ProofError, match="does not match"):
        vrf.verify(vrf.public_key(other), alpha, vrf.prove(sk, alpha))


@given(
    pk=st.one_of(st.binary(min_size=32, max_size=32), secret_keys.map(vrf.public_key)),
    alpha=alphas,
    pi=st.binary(min_size=80, max_size=80),
)
def test_garbage_is_a_proof_error(pk: bytes, alpha: bytes, pi: bytes) -> None:
    with pytest.raises(ProofError):
        vrf.verify(pk, alpha, pi)


def test_outputs_differ_by_input_and_key() -> None:
    sk, other = bytes(32), bytes([1]) + bytes(31)
    betas = {vrf.proof_to_hash(vrf.prove(s, a)) for s in (sk, other) for a in (b"artist:1", b"artist:2")}
    assert len(betas) == 4


def test_zero_c_and_s_are_refused_as_a_mismatch() -> None:
    """libsodium refuses to multiply by zero; a proof with c = 0 or s = 0 must still be an ordinary
    mismatch, not a library error."""
    pk, alpha, pi = sample_proof()
    for c, s in ((bytes(16), pi[48:]), (pi[32:48], bytes(32)), (bytes(16), bytes(32))):
        with pytest.raises(ProofError, match="does not match"):
            vrf.verify(pk, alpha, pi[:32] + c + s)


def test_unreduced_s_is_refused() -> None:
    pk, alpha, pi = sample_proof()
    s = int.from_bytes(pi[48:], "little") + L
    tampered = pi[:48] + s.to_bytes(32, "little")
    for check in (lambda: vrf.verify(pk, alpha, tampered), lambda: vrf.proof_to_hash(tampered)):
        with pytest.raises(ProofError, match="not reduced"):
            check()


@pytest.mark.parametrize("size", [0, 79, 81])
def test_wrong_proof_size_is_refused(size: int) -> None:
    pk, alpha, pi = sample_proof()
    bad = (pi * 2)[:size]
    with pytest.raises(ProofError, match=f"{size} bytes"):
        vrf.verify(pk, alpha, bad)
    with pytest.raises(ProofError, match=f"{size} bytes"):
        vrf.proof_to_hash(bad)


# --- Gamma ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("j", range(1, 8))
def test_gamma_with_a_small_order_component_is_refused(j: int) -> None:
    """A literal RFC 9381 verifier hashes 8*Gamma, blind to this component; tlog refuses it outright."""
    pk, alpha, pi = sample_proof()
    gamma = sodium.crypto_core_ed25519_add(pi[:32], torsion()[j])
    tampered = gamma + pi[32:]
    with pytest.raises(ProofError, match="Gamma is not in the prime-order subgroup"):
        vrf.verify(pk, alpha, tampered)
    with pytest.raises(ProofError, match="Gamma is not in the prime-order subgroup"):
        vrf.proof_to_hash(tampered)


@pytest.mark.parametrize("j", range(8))
def test_small_order_gamma_is_refused(j: int) -> None:
    pk, alpha, pi = sample_proof()
    with pytest.raises(ProofError, match="Gamma is a point of small order"):
        vrf.verify(pk, alpha, torsion()[j] + pi[32:])


def test_gamma_off_the_curve_is_refused() -> None:
    pk, alpha, pi = sample_proof()
    with pytest.raises(ProofError, match="Gamma is not the encoding of a point on the curve"):
        vrf.proof_to_hash(off_curve_encoding() + pi[32:])


def test_non_canonical_gamma_is_refused() -> None:
    pk, alpha, pi = sample_proof()
    for encoded in edge_encodings():
        if not vrf._is_canonical(encoded):
            with pytest.raises(ProofError, match="Gamma is not canonically encoded"):
                vrf.verify(pk, alpha, encoded + pi[32:])


# --- validate_key -----------------------------------------------------------------------------------------------


@given(sk=secret_keys)
def test_validate_key_accepts_real_keys(sk: bytes) -> None:
    vrf.validate_key(vrf.public_key(sk))


@pytest.mark.parametrize("j", range(8))
def test_validate_key_refuses_small_order_points(j: int) -> None:
    """j = 0 is the identity."""
    with pytest.raises(ProofError, match="public key is a point of small order"):
        vrf.validate_key(torsion()[j])


@pytest.mark.parametrize("j", range(1, 8))
def test_validate_key_refuses_a_small_order_component(j: int) -> None:
    """Stricter than RFC 9381, which only refuses keys of small order: no honest key has such a component,
    and libsodium could not multiply by it anyway."""
    pk = sodium.crypto_core_ed25519_add(vrf.public_key(bytes(32)), torsion()[j])
    with pytest.raises(ProofError, match="public key is not in the prime-order subgroup"):
        vrf.validate_key(pk)


def test_validate_key_refuses_non_canonical_encodings() -> None:
    refused = [e for e in edge_encodings() if not vrf._is_canonical(e)]
    assert len(refused) == 2 * 19 + 2  # y = p .. 2**255 - 1 with either sign bit, and x = 0 with the sign bit
    for encoded in refused:
        with pytest.raises(ProofError, match="public key is not canonically encoded"):
            vrf.validate_key(encoded)


def test_validate_key_refuses_a_point_off_the_curve() -> None:
    with pytest.raises(ProofError, match="public key is not the encoding of a point on the curve"):
        vrf.validate_key(off_curve_encoding())


@pytest.mark.parametrize("size", [0, 31, 33])
def test_validate_key_refuses_wrong_sizes(size: int) -> None:
    with pytest.raises(ProofError, match=f"{size} bytes"):
        vrf.validate_key(bytes([9]) * size)


def test_verify_validates_the_key() -> None:
    _, alpha, pi = sample_proof()
    with pytest.raises(ProofError, match="public key is a point of small order"):
        vrf.verify(torsion()[0], alpha, pi)


# --- keys and VrfSecret -------------------------------------------------------------------------------------------


@given(sk=secret_keys)
def test_public_key_is_the_ed25519_key(sk: bytes) -> None:
    assert vrf.public_key(sk) == bytes(SigningKey(sk).verify_key)


def test_generate_secret() -> None:
    a, b = vrf.generate_secret(), vrf.generate_secret()
    assert len(a) == len(b) == vrf.SECRET_SIZE and a != b


@pytest.mark.parametrize("size", [0, 31, 33])
def test_secret_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match=f"{size}"):
        vrf.prove(bytes(size), b"")


def test_vrf_secret() -> None:
    sk = vrf.generate_secret()
    secret = vrf.VrfSecret.from_secret(sk)
    assert secret.pk == vrf.public_key(sk) and len(secret.pk) == vrf.PUBLIC_SIZE
    assert secret.prove(b"artist:7") == vrf.prove(sk, b"artist:7")
    assert sk.hex() not in repr(secret) and str(list(sk)) not in repr(secret)
    with pytest.raises(FrozenInstanceError):
        secret.pk = bytes(32)  # type: ignore[misc]


# --- the point steps, against the reference -----------------------------------------------------------------------


def test_reference_is_sound() -> None:
    """The reference itself: B encodes as RFC 8032 says, has order L, and libsodium agrees on 2B."""
    assert ref_encode(BASE).hex() == "58" + "66" * 31
    assert ref_mul(L, BASE) == IDENTITY
    assert ref_encode(ref_mul(2, BASE)) == sodium.crypto_scalarmult_ed25519_base_noclamp((2).to_bytes(32, "little"))
    assert len(set(torsion())) == 8 and torsion()[0] == ref_encode(IDENTITY)


@reference_settings
@given(data=st.binary(min_size=32, max_size=32))
def test_cofactor_clearing_matches_the_reference_on_any_string(data: bytes) -> None:
    """A try-and-increment candidate is an arbitrary string: strict RFC 8032 decoding and 8*P must agree
    with the reference whether or not it decodes, and whatever the order of the point."""
    point = ref_decode(data)
    expected = None if point is None else ref_encode(ref_mul(8, point))
    assert libsodium_times_cofactor(data) == expected


def test_cofactor_clearing_matches_the_reference_on_edge_encodings() -> None:
    for encoded in [*edge_encodings(), *torsion()]:
        point = ref_decode(encoded)
        expected = None if point is None else ref_encode(ref_mul(8, point))
        assert libsodium_times_cofactor(encoded) == expected, encoded.hex()


@given(k=st.integers(1, L - 1))
def test_cofactor_clearing_matches_libsodium_scalar_multiplication(k: int) -> None:
    point = vrf._mul_base(k)
    assert vrf._times_cofactor(point) == sodium.crypto_scalarmult_ed25519_noclamp((8).to_bytes(32, "little"), point)


@reference_settings
@given(k=st.integers(0, 2**256 - 1), j=st.integers(1, 2**64))
def test_scalar_multiplication_matches_the_reference(k: int, j: int) -> None:
    """Scalars of any size, including 0, multiples of L and ones with bit 255 set (which libsodium would
    silently drop)."""
    point = ref_mul(j, BASE)
    for scalar in (k, k * L, k | 1 << 255):
        expected = ref_encode(ref_mul(scalar, point))
        assert vrf._mul(scalar, ref_encode(point)) == expected
        assert vrf._mul_base(scalar * j) == expected


@reference_settings
@given(sk=secret_keys, alpha=alphas)
def test_encode_to_curve_matches_the_reference(sk: bytes, alpha: bytes) -> None:
    pk = vrf.public_key(sk)
    assert vrf._encode_to_curve(pk, alpha) == ref_encode_to_curve(pk, alpha)
