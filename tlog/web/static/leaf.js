// Public leaves (SPEC §2.2, version 2), decoded strictly: the fields of their type and nothing else, and
// the bytes exactly canonical (mirrors tlog/leaf.py `parse_leaf`).
import { fromUtf8, VerifyError } from "./bytes.js";
import { canonicalText } from "./jcs.js";

const CHAIN = ["artist", "aseq", "aprev"];
const USE = ["prev", "logged_at", "purpose", "phase", "decision", "policy", "invocations", "details", ...CHAIN];
const FIELDS = {
  use: USE,
  refusal: USE,
  preference: ["prev", "logged_at", "by", "details", ...CHAIN],
  binding: ["prev", "logged_at", "details", ...CHAIN],
  policy: ["prev", "logged_at", "policy", "effective_at", "details"],
  erasure: ["prev", "logged_at", "artist", "erased"],
  log: ["prev", "logged_at", "origin", "vrf"],
  map: ["prev", "logged_at", "root"],
};
const HEX64 = /^[0-9a-f]{64}$/;
const LOGGED_AT = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$/;
const CHECKS = {
  prev: (v) => HEX64.test(v), details: (v) => HEX64.test(v), artist: (v) => HEX64.test(v),
  root: (v) => HEX64.test(v), vrf: (v) => HEX64.test(v),
  logged_at: (v) => LOGGED_AT.test(v) && !Number.isNaN(Date.parse(v)),
  effective_at: (v) => LOGGED_AT.test(v) && !Number.isNaN(Date.parse(v)),
  purpose: (v) => /^[a-z][a-z0-9_]{0,63}$/.test(v),
  phase: (v) => ["training", "fine_tuning", "evaluation", "inference", "embedding_extraction", "indexing"].includes(v),
  decision: (v, o) => (o.type === "refusal" ? v === "refused" : ["allowed", "allowed_override", "flagged"].includes(v)),
  policy: (v) => /^[A-Za-z0-9._:-]{1,64}$/.test(v),
  aseq: (v) => Number.isSafeInteger(v) && v >= 1,
  aprev: (v, o) => (o.aseq === 1 ? v === null : Number.isSafeInteger(v) && v >= 0),
  invocations: (v) => Number.isSafeInteger(v) && v >= 1,
  erased: (v) => Number.isSafeInteger(v) && v >= 1,
  by: (v) => v === "artist" || v === "service",
  origin: (v) => typeof v === "string" && v.length > 0 && !/[\s+]/.test(v),
};

export function parseLeaf(bytes) {
  if (bytes.length > 65535) throw new VerifyError("the leaf is larger than 65,535 bytes");
  let text, obj;
  try { text = fromUtf8(bytes); obj = JSON.parse(text); } catch { throw new VerifyError("the leaf is not JSON"); }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new VerifyError("a leaf is a JSON object");
  if (obj.v !== 2) throw new VerifyError(obj.v === 1 ? "a version 1 leaf (tlog 0.1), which this page does not read" : "not a version 2 leaf");
  const fields = FIELDS[obj.type];
  if (!fields) throw new VerifyError(`unknown leaf type ${String(obj.type).slice(0, 20)}`);
  const keys = Object.keys(obj);
  if (keys.length !== fields.length + 2 || !fields.every((f) => f in obj)) throw new VerifyError(`the ${obj.type} leaf does not have the fields of its type`);
  for (const f of fields) if (!CHECKS[f](obj[f], obj)) throw new VerifyError(`the leaf's ${f} is malformed`);
  if (obj.effective_at !== undefined && obj.effective_at < obj.logged_at) throw new VerifyError("the policy leaf takes effect before it was logged");
  if (canonicalText(obj) !== text) throw new VerifyError("the leaf is not in canonical form (RFC 8785)");
  return obj;
}

export const loggedMs = (t) => Date.parse(t);
