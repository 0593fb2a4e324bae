// RFC 9162 §2.1.3–2.1.4: inclusion and consistency proofs checked against a root (mirrors tlog/merkle.py).
import { equal, VerifyError } from "./bytes.js";
import { nodeHash } from "./sha256.js";

// Indexes may pass 2^31, where JavaScript's bitwise operators on numbers stop working: BigInt here.
const bitLength = (n) => n.toString(2).length - (n === 0n ? 1 : 0);
const popcount = (n) => [...n.toString(2)].filter((c) => c === "1").length;
const isPowerOfTwo = (n) => (n & (n - 1n)) === 0n;

function inclusionLength(index, size) {
  const inner = bitLength(BigInt(index) ^ BigInt(size - 1));
  return inner + popcount(BigInt(index) >> BigInt(inner));
}

export async function rootFromInclusion(leafHash, index, size, proof) {
  if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index >= 0 && index < size)) {
    throw new VerifyError(`index ${index} is not in a tree of size ${size}`);
  }
  if (leafHash.length !== 32) throw new VerifyError("the leaf hash is not 32 bytes");
  const want = inclusionLength(index, size);
  if (proof.length !== want) throw new VerifyError(`inclusion proof has ${proof.length} hashes, want ${want}`);
  let fn = BigInt(index), sn = BigInt(size - 1);
  let r = leafHash;
  for (const p of proof) {
    if (p.length !== 32) throw new VerifyError("an inclusion proof hash is not 32 bytes");
    if (fn & 1n || fn === sn) {
      r = await nodeHash(p, r);
      while (!(fn & 1n) && fn) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n; sn >>= 1n;
  }
  return r;
}

export async function verifyInclusion(leafHash, index, size, proof, root) {
  const r = await rootFromInclusion(leafHash, index, size, proof);
  if (!equal(r, root)) throw new VerifyError(`inclusion proof does not lead to the root of size ${size}`);
}

function consistencyLength(old, size) {
  const o = BigInt(old);
  const inner = bitLength((o - 1n) ^ BigInt(size - 1));
  const border = popcount((o - 1n) >> BigInt(inner));
  const shift = bitLength(o & -o) - 1; // trailing zeros of old: the height of the old tree's last subtree
  const seed = isPowerOfTwo(o) ? 0 : 1;
  return seed + inner - shift + border;
}

export async function verifyConsistency(old, size, oldRoot, newRoot, proof) {
  if (oldRoot.length !== 32 || newRoot.length !== 32) throw new VerifyError("a root is not 32 bytes");
  if (proof.some((p) => p.length !== 32)) throw new VerifyError("a consistency proof hash is not 32 bytes");
  if (!(old >= 1 && old <= size)) throw new VerifyError(`no consistency proof from size ${old} to size ${size}`);
  if (old === size) {
    if (proof.length || !equal(oldRoot, newRoot)) throw new VerifyError(`two different trees of size ${old}`);
    return;
  }
  const want = consistencyLength(old, size);
  if (proof.length !== want) throw new VerifyError(`consistency proof has ${proof.length} hashes, want ${want}`);
  const path = [...proof];
  if (isPowerOfTwo(BigInt(old))) path.unshift(oldRoot); // the old tree is a complete subtree of the new
  let fn = BigInt(old - 1), sn = BigInt(size - 1);
  while (fn & 1n) { fn >>= 1n; sn >>= 1n; }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (fn & 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while (!(fn & 1n) && fn) { fn >>= 1n; sn >>= 1n; }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n; sn >>= 1n;
  }
  if (!equal(fr, oldRoot)) throw new VerifyError(`consistency proof does not lead to the root of size ${old}`);
  if (!equal(sr, newRoot)) throw new VerifyError(`consistency proof does not lead to the root of size ${size}`);
}
