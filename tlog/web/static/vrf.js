// ECVRF-EDWARDS25519-SHA512-TAI verification (RFC 9381, suite 0x03) on BigInt edwards25519 arithmetic,
// with tlog's stricter checks (SPEC §2.2, tlog/vrf.py): the public key and Gamma must be canonically
// encoded points of the prime-order subgroup, and s must be reduced. Verification only: no secrets here,
// so constant time does not matter.
import { concat, VerifyError } from "./bytes.js";
import { sha512 } from "./sha256.js";

const P = 2n ** 255n - 19n;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const mod = (a) => { const r = a % P; return r < 0n ? r + P : r; };

function pow(b, e) {
  let r = 1n;
  b = mod(b);
  while (e > 0n) {
    if (e & 1n) r = (r * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return r;
}
const inv = (a) => pow(a, P - 2n);
const D = mod(-121665n * inv(121666n));
const D2 = mod(2n * D);
const SQRT_M1 = pow(2n, (P - 1n) / 4n);

// Points in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z (RFC 8032 §5.1.4).
const IDENTITY = [0n, 1n, 1n, 0n];
const BY = mod(4n * inv(5n));
const BASE = (() => {
  const x = recoverX(BY, 0);
  return [x, BY, 1n, mod(x * BY)];
})();

function add([X1, Y1, Z1, T1], [X2, Y2, Z2, T2]) {
  const A = mod((Y1 - X1) * (Y2 - X2)), B = mod((Y1 + X1) * (Y2 + X2));
  const C = mod(T1 * D2 * T2), Dd = mod(Z1 * 2n * Z2);
  const E = B - A, F = Dd - C, G = Dd + C, H = B + A;
  return [mod(E * F), mod(G * H), mod(F * G), mod(E * H)];
}

function double(p) { return add(p, p); }
function negate([X, Y, Z, T]) { return [mod(-X), Y, Z, mod(-T)]; }

function mul(k, p) {
  let r = IDENTITY, q = p;
  while (k > 0n) {
    if (k & 1n) r = add(r, q);
    q = double(q);
    k >>= 1n;
  }
  return r;
}

function isIdentity([X, Y, Z]) { return mod(X) === 0n && mod(Y - Z) === 0n; }

function recoverX(y, sign) {
  const u = mod(y * y - 1n), v = mod(D * y * y + 1n);
  let x = mod(u * pow(v, 3n) * pow(u * pow(v, 7n), (P - 5n) / 8n));
  const vx2 = mod(v * x * x);
  if (vx2 === u) { /* x is a root */ } else if (vx2 === mod(-u)) x = mod(x * SQRT_M1);
  else return null;
  if (x === 0n && sign) return null; // RFC 8032 §5.1.3: no sign bit on x = 0
  if ((x & 1n) !== BigInt(sign)) x = P - x;
  return x;
}

const le = (b) => { let n = 0n; for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]); return n; };
function toLE(n, len) { const out = new Uint8Array(len); for (let i = 0; i < len; i++) { out[i] = Number(n & 255n); n >>= 8n; } return out; }

// RFC 8032 decoding, strict: y < p, x exists, no sign bit on x = 0. null if not a point.
export function decodePoint(b) {
  if (b.length !== 32) return null;
  const n = le(b);
  const y = n & (2n ** 255n - 1n), sign = Number(n >> 255n);
  if (y >= P) return null;
  const x = recoverX(y, sign);
  return x === null ? null : [x, y, 1n, mod(x * y)];
}

export function encodePoint([X, Y, Z]) {
  const zi = inv(Z), x = mod(X * zi), y = mod(Y * zi);
  return toLE(y | ((x & 1n) << 255n), 32);
}

const times8 = (p) => double(double(double(p)));

// A point of the prime-order subgroup other than the identity, or a VerifyError saying why not.
function groupElement(b, what) {
  const pt = decodePoint(b);
  if (!pt) throw new VerifyError(`the VRF ${what} is not a canonically encoded curve point`);
  if (isIdentity(times8(pt))) throw new VerifyError(`the VRF ${what} is a point of small order`);
  if (!isIdentity(mul(L, pt))) throw new VerifyError(`the VRF ${what} is not in the prime-order subgroup`);
  return pt;
}

const SUITE = 0x03;

async function encodeToCurve(pk, alpha) {
  const prefix = concat(new Uint8Array([SUITE, 0x01]), pk, alpha);
  for (let ctr = 0; ctr < 256; ctr++) {
    const h = (await sha512(concat(prefix, new Uint8Array([ctr, 0])))).subarray(0, 32);
    const pt = decodePoint(h);
    if (!pt) continue;
    const cleared = times8(pt);
    if (!isIdentity(cleared)) return cleared;
  }
  throw new VerifyError("no curve point found for the VRF input");
}

async function challenge(...points) {
  const digest = await sha512(concat(new Uint8Array([SUITE, 0x02]), ...points.map(encodePoint), new Uint8Array([0])));
  return le(digest.subarray(0, 16));
}

export function validateKey(pk) {
  if (pk.length !== 32) throw new VerifyError(`the VRF public key is ${pk.length} bytes, not 32`);
  return groupElement(pk, "public key");
}

// beta (64 bytes) if pi proves it is the output for alpha under pk; VerifyError otherwise.
export async function verify(pk, alpha, pi) {
  const Y = validateKey(pk);
  if (pi.length !== 80) throw new VerifyError(`the VRF proof is ${pi.length} bytes, not 80`);
  const gamma = groupElement(pi.subarray(0, 32), "proof's Gamma");
  const c = le(pi.subarray(32, 48)), s = le(pi.subarray(48, 80));
  if (s >= L) throw new VerifyError("the VRF proof's s is not reduced modulo the group order");
  const H = await encodeToCurve(pk, alpha);
  const U = add(mul(s, BASE), negate(mul(c, Y)));
  const V = add(mul(s, H), negate(mul(c, gamma)));
  if ((await challenge(Y, H, gamma, U, V)) !== c) {
    throw new VerifyError("the VRF proof does not match the public key and input");
  }
  return sha512(concat(new Uint8Array([SUITE, 0x03]), encodePoint(times8(gamma)), new Uint8Array([0])));
}
