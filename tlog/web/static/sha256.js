// SHA-256 and SHA-512 through WebCrypto (crypto.subtle: only in a secure context, e.g. https or localhost).
import { concat } from "./bytes.js";

const subtle = globalThis.crypto && globalThis.crypto.subtle;

export async function sha256(data) {
  if (!subtle) throw new Error("this browser offers no WebCrypto here (the page must be served over https)");
  return new Uint8Array(await subtle.digest("SHA-256", data));
}

export async function sha512(data) {
  return new Uint8Array(await subtle.digest("SHA-512", data));
}

const LEAF = new Uint8Array([0]);
const NODE = new Uint8Array([1]);

// RFC 9162 §2.1.1: leaf hash SHA-256(0x00 ‖ leaf), node hash SHA-256(0x01 ‖ left ‖ right).
export const leafHash = (leaf) => sha256(concat(LEAF, leaf));
export const nodeHash = (left, right) => sha256(concat(NODE, left, right));
