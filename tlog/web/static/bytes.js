// Bytes as Uint8Array: hex, base64, UTF-8, comparing and joining. No dependencies.

export class VerifyError extends Error {
  // A check that failed. `index` is the log index it concerns, when there is one.
  constructor(message, index = null) {
    super(index === null ? message : `entry ${index}: ${message}`);
    this.reason = message;
    this.index = index;
  }
}

const HEX = /^(?:[0-9a-f]{2})*$/;

export function fromHex(s) {
  if (typeof s !== "string" || !HEX.test(s)) throw new VerifyError(`not lowercase hex: ${String(s).slice(0, 40)}`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

export function toHex(b) {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

// Canonical padded base64 only: one spelling per byte string, as the Python verifiers require.
export function fromBase64(s, what = "value") {
  if (typeof s !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4) {
    throw new VerifyError(`${what} is not base64`);
  }
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  if (toBase64(out) !== s) throw new VerifyError(`${what} is not canonical base64`);
  return out;
}

export function toBase64(b) {
  let bin = "";
  for (let i = 0; i < b.length; i += 0x8000) bin += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  return btoa(bin);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
export const utf8 = (s) => encoder.encode(s);
export const fromUtf8 = (b) => decoder.decode(b);

export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

export function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}
