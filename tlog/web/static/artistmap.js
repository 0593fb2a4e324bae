// SPEC §2.3 artist-map proofs, checked against a map root (mirrors tlog/artistmap.py `verify_proof`).
import { concat, equal, fromHex, VerifyError } from "./bytes.js";
import { sha256 } from "./sha256.js";

const EMPTY = new Uint8Array(32);
const HEX64 = /^[0-9a-f]{64}$/;
const UINT64_LIMIT = 2n ** 64n;

function uint64be(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

export const mapLeafHash = (tag, aseq, head) => sha256(concat(new Uint8Array([2]), tag, uint64be(aseq), uint64be(head)));
const mapNodeHash = (l, r) => sha256(concat(new Uint8Array([3]), l, r));
const bit = (tag, d) => (tag[d >> 3] >> (7 - (d & 7))) & 1;

function value(raw, what, extra = []) {
  if (raw === null) return null;
  if (typeof raw !== "object" || Array.isArray(raw)) throw new VerifyError(`map proof: ${what} must be an object or null`);
  const keys = ["aseq", "head", ...extra];
  if (Object.keys(raw).length !== keys.length || !keys.every((k) => k in raw)) {
    throw new VerifyError(`map proof: ${what} must have exactly ${keys.join(", ")}`);
  }
  for (const k of ["aseq", "head"]) {
    if (!Number.isSafeInteger(raw[k]) || raw[k] < 0 || BigInt(raw[k]) >= UINT64_LIMIT) {
      throw new VerifyError(`map proof: ${what}.${k} must be a non-negative integer`);
    }
  }
  return { aseq: raw.aseq, head: raw.head };
}

// The strict shape of a map proof object (one spelling per proof), as tlog's MapProof.from_json.
export function parseMapProof(obj) {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new VerifyError("a map proof must be an object");
  const keys = ["tag", "depth", "siblings", "found", "other"];
  if (Object.keys(obj).length !== keys.length || !keys.every((k) => k in obj)) {
    throw new VerifyError("a map proof has exactly tag, depth, siblings, found, other");
  }
  if (typeof obj.tag !== "string" || !HEX64.test(obj.tag)) throw new VerifyError("map proof: tag must be 64 lowercase hex digits");
  if (!Number.isSafeInteger(obj.depth) || obj.depth < 0) throw new VerifyError("map proof: depth must be a non-negative integer");
  if (!Array.isArray(obj.siblings) || !obj.siblings.every((s) => typeof s === "string" && HEX64.test(s))) {
    throw new VerifyError("map proof: siblings must be a list of 64-digit hex hashes");
  }
  const found = value(obj.found, "found");
  let other = null;
  if (obj.other !== null) {
    const v = value(obj.other, "other", ["tag"]);
    if (typeof obj.other.tag !== "string" || !HEX64.test(obj.other.tag)) throw new VerifyError("map proof: other.tag must be 64 lowercase hex digits");
    other = { tag: fromHex(obj.other.tag), ...v };
  }
  return { tag: fromHex(obj.tag), depth: obj.depth, siblings: obj.siblings.map(fromHex), found, other };
}

// {aseq, head} if the proof shows the tag in the map with this root, null if it shows the tag absent;
// VerifyError for anything else.
export async function verifyMapProof(root, obj) {
  const { tag, depth, siblings, found, other } = parseMapProof(obj);
  if (depth > 256) throw new VerifyError(`map proof depth ${depth} is outside 0..256`);
  if (siblings.length !== depth) throw new VerifyError(`map proof has ${siblings.length} siblings for depth ${depth}`);
  let h;
  if (found) {
    if (other) throw new VerifyError("map proof claims both a value for the tag and another key in its place");
    h = await mapLeafHash(tag, found.aseq, found.head);
  } else if (other) {
    if (equal(other.tag, tag)) throw new VerifyError("map proof shows the tag absent by naming the tag itself");
    for (let d = 0; d < depth; d++) {
      if (bit(other.tag, d) !== bit(tag, d)) throw new VerifyError(`map proof's other key does not share the tag's first ${depth} bits`);
    }
    h = await mapLeafHash(other.tag, other.aseq, other.head);
  } else {
    h = EMPTY;
  }
  for (let d = depth - 1; d >= 0; d--) h = bit(tag, d) ? await mapNodeHash(siblings[d], h) : await mapNodeHash(h, siblings[d]);
  if (!equal(h, root)) throw new VerifyError("map proof does not lead to the map root");
  return found;
}

export async function mapRoot(items) {
  // The root of a whole map (for the vectors): items are [{tag (bytes), aseq, head}].
  async function build(list, depth) {
    if (list.length === 0) return EMPTY;
    if (list.length === 1) return mapLeafHash(list[0].tag, list[0].aseq, list[0].head);
    const left = list.filter((i) => !bit(i.tag, depth)), right = list.filter((i) => bit(i.tag, depth));
    return mapNodeHash(await build(left, depth + 1), await build(right, depth + 1));
  }
  return build(items, 0);
}
