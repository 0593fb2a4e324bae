// An artist's audit bundle (SPEC §6, version 2) verified in the browser, page by page, then the walk as a
// whole: mirrors tlog/audit.py. Every failure is a VerifyError naming the log index it concerns.
import { fromBase64, fromHex, toHex, utf8, VerifyError } from "./bytes.js";
import { canonical } from "./jcs.js";
import { verifyMapProof } from "./artistmap.js";
import { decide, inEffect } from "./decide.js";
import { parseLeaf, loggedMs } from "./leaf.js";
import { verifyInclusion } from "./merkle.js";
import { openCheckpoint } from "./note.js";
import { leafHash, sha256 } from "./sha256.js";
import * as vrf from "./vrf.js";

const CHAIN_TYPES = new Set(["use", "refusal", "preference", "binding"]);
const SHOWN = {
  use: ["logged_at", "purpose", "phase", "decision", "policy", "invocations"],
  refusal: ["logged_at", "purpose", "phase", "decision", "policy", "invocations"],
  preference: ["logged_at", "by"],
  binding: [],
};
const ERASED = Symbol("erased");

function fields(obj, names, where) {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj) ||
      Object.keys(obj).length !== names.length || !names.every((n) => n in obj)) {
    throw new VerifyError(`${where} must have exactly ${names.join(", ")}`);
  }
}
const int = (v, where, min = 0) => {
  if (!Number.isSafeInteger(v) || v < min) throw new VerifyError(`${where} must be an integer of at least ${min}`);
  return v;
};

// Verifies one page against a checkpoint opened once per walk (`cp`); returns what the walk needs.
class Page {
  constructor(b, cp, artistId, tag) { this.b = b; this.cp = cp; this.artistId = artistId; this.tag = tag; }

  async included(part, index, what) {
    const data = fromBase64(part.leaf, `${what}'s leaf`);
    if (!Array.isArray(part.proof)) throw new VerifyError(`${what}'s proof is not a list`, index);
    const proof = part.proof.map((h) => fromBase64(h, `${what}'s inclusion proof`));
    try {
      await verifyInclusion(await leafHash(data), index, this.cp.size, proof, this.cp.root);
    } catch (e) {
      throw new VerifyError(`${what} is not in the log at checkpoint ${this.cp.size}: ${e.reason || e.message}`, index);
    }
    try { return parseLeaf(data); } catch (e) { throw new VerifyError(`${what} is not a canonical tlog leaf: ${e.reason}`, index); }
  }

  async policies() {
    const schedule = [];
    for (const part of this.b.policies) {
      fields(part, ["id", "index", "leaf", "proof", "document"], "a policy");
      const what = `policy ${part.id}`;
      const leaf = await this.included(part, int(part.index, "policy index"), what);
      if (leaf.type !== "policy" || leaf.policy !== part.id) throw new VerifyError(`the leaf is not the policy leaf of ${part.id}`, part.index);
      const doc = fromBase64(part.document, `${what}'s document`);
      if (toHex(await sha256(doc)) !== leaf.details) throw new VerifyError(`${what}: the document is not the one its leaf commits to`, part.index);
      let policy;
      try { policy = JSON.parse(new TextDecoder().decode(doc)); } catch { throw new VerifyError(`${what}: the document is not JSON`, part.index); }
      if (!policy || typeof policy.purposes !== "object") throw new VerifyError(`${what}: the document is not a policy`, part.index);
      schedule.push({ id: part.id, index: part.index, effective: loggedMs(leaf.effective_at), announced: leaf.logged_at, policy });
    }
    return schedule;
  }

  async details(details, leaf, index, what) {
    if (typeof details !== "object" || details === null || toHex(await sha256(canonical(details))) !== leaf.details) {
      throw new VerifyError(`${what}: the details shown are not the ones its public leaf commits to`, index);
    }
    if (details.artist_id !== this.artistId) throw new VerifyError(`${what}: the details are about someone else`, index);
    if (details.index !== index) throw new VerifyError(`${what}: the details say index ${details.index}`, index);
    for (const name of SHOWN[leaf.type]) {
      if (leaf[name] !== details[name]) throw new VerifyError(`${what}: the public leaf says ${name} ${leaf[name]}, the details ${details[name]}`, index);
    }
  }

  async entry(part) {
    fields(part, ["index", "leaf", "details", "erased", "proof"], "an entry");
    const index = int(part.index, "entry index");
    const what = `entry ${index}`;
    const leaf = await this.included(part, index, what);
    if (!CHAIN_TYPES.has(leaf.type)) throw new VerifyError(`${what} is a ${leaf.type} leaf, not one of an artist's entries`, index);
    if (leaf.artist !== this.tag) throw new VerifyError(`${what} is about someone else: its tag is not yours`, index);
    if (part.details === null) {
      if (!part.erased) throw new VerifyError(`${what} has neither details nor an erasure note`, index);
      return { index, leaf, details: null, erased: part.erased };
    }
    await this.details(part.details, leaf, index, what);
    return { index, leaf, details: part.details, erased: null };
  }

  async map() {
    const part = this.b.map;
    if (part === null) return undefined;
    fields(part, ["index", "leaf", "proof", "map_proof"], "map");
    const index = part.index;
    if (index !== this.cp.size - 1) throw new VerifyError(`the map leaf must be the checkpoint's last leaf`, index);
    const leaf = await this.included(part, index, `the map leaf`);
    if (leaf.type !== "map") throw new VerifyError(`the checkpoint's last leaf is a ${leaf.type} leaf, not a map leaf`, index);
    if (!part.map_proof || part.map_proof.tag !== this.tag) throw new VerifyError("the map proof is for another tag than yours", index);
    let value;
    try { value = await verifyMapProof(fromHex(leaf.root), part.map_proof); } catch (e) {
      throw new VerifyError(`the map proof of your tag does not lead to the map root of checkpoint ${this.cp.size}: ${e.reason || e.message}`, index);
    }
    if (value && value.head >= index) throw new VerifyError("the map proof puts your latest entry after the map leaf", index);
    return { value, loggedAt: leaf.logged_at };
  }
}

function checkDecision(e, schedule, prefs) {
  const d = e.details, leaf = e.leaf;
  const what = `entry ${e.index}`;
  const p = inEffect(schedule.filter((s) => s.index < e.index), loggedMs(leaf.logged_at));
  if (!p) throw new VerifyError(`${what}: no policy was in effect at ${leaf.logged_at}`, e.index);
  if (leaf.policy !== p.id) throw new VerifyError(`${what}: it names policy ${leaf.policy}, but ${p.id} was in effect`, e.index);
  if (prefs === ERASED) throw new VerifyError(`${what}: the preferences it was decided by were erased`, e.index);
  let want;
  try { want = decide(p.policy, d.purpose, d.content_id, prefs, d.basis ?? null); } catch {
    throw new VerifyError(`${what}: ${d.purpose} is not a purpose of policy ${p.id}`, e.index);
  }
  if (want !== d.decision) {
    throw new VerifyError(`${what}: the decision was "${d.decision}", but the policy and your choices at the time give "${want}"`, e.index);
  }
}

// The whole walk. `fetchPage(query)` returns a parsed bundle page ({} for the first, then {size,
// from_aseq}); `keys` are the log's verifier key strings. Returns the verified figures; the caller checks
// the checkpoint against the one this browser verified before (trust.js).
export async function verifyWalk({ fetchPage, keys, artistId, onProgress = () => {} }) {
  let b = await fetchPage({});
  const cp = await openCheckpoint(b.checkpoint, keys);
  if (b.version !== 2) throw new VerifyError("not a version 2 audit bundle");
  if (b.origin !== cp.origin) throw new VerifyError(`the bundle names origin ${b.origin}, its checkpoint ${cp.origin}`);
  if (b.artist_id !== artistId) throw new VerifyError("the bundle is about another artist id");
  const tag = b.tag;
  const first = new Page(b, cp, artistId, tag);

  // The log leaf names the VRF key; the VRF proof makes the tag this artist's one and only tag.
  fields(b.log, ["leaf", "proof"], "log");
  const logLeaf = await first.included(b.log, 0, "the log leaf (index 0)");
  if (logLeaf.type !== "log" || logLeaf.origin !== cp.origin) throw new VerifyError("the leaf at index 0 is not this log's log leaf", 0);
  if (b.vrf.key !== logLeaf.vrf) throw new VerifyError("the bundle's VRF key is not the one the log committed to in its first leaf", 0);
  let beta;
  try { beta = await vrf.verify(fromHex(b.vrf.key), utf8("artist:" + artistId), fromHex(b.vrf.proof)); } catch (e) {
    throw new VerifyError(`the VRF proof of your tag does not verify: ${e.reason || e.message}`);
  }
  if (toHex(beta.subarray(0, 32)) !== tag) throw new VerifyError("the bundle's tag is not your tag: the VRF proof gives another");

  const schedule = await first.policies();
  const mapPart = await first.map();
  if (mapPart === undefined) throw new VerifyError("the first page carries no map proof");
  const erasures = [];
  for (const part of b.erasures) {
    fields(part, ["index", "leaf", "proof"], "an erasure");
    const leaf = await first.included(part, part.index, `erasure leaf ${part.index}`);
    if (leaf.type !== "erasure" || leaf.artist !== tag) throw new VerifyError("not an erasure of your entries", part.index);
    erasures.push(part.index);
  }

  const counts = new Map();
  let last = null, prefs = null, prefIndex = null, pages = 0, total = 0;
  for (;;) {
    const page = pages === 0 ? first : new Page(b, cp, artistId, tag);
    if (pages > 0) {
      if (b.checkpoint !== first.b.checkpoint || b.tag !== tag) throw new VerifyError("a later page of the walk is at another checkpoint");
    }
    const entries = await Promise.all(b.entries.map((part) => page.entry(part)));
    if (b.preferences_in_force !== null) {
      const part = b.preferences_in_force;
      fields(part, ["index", "leaf", "details", "proof"], "preferences_in_force");
      const leaf = await page.included(part, part.index, "the preferences in force");
      if (leaf.type !== "preference" || leaf.artist !== tag) throw new VerifyError("the preferences in force are not yours", part.index);
      if (entries.length && part.index >= entries[0].index) throw new VerifyError("the preferences in force do not come before the page", part.index);
      if (pages > 0 && part.index !== prefIndex) throw new VerifyError(`the page starts from preferences ${part.index}, the walk had ${prefIndex}`, part.index);
      if (pages === 0) {
        if (part.details === null) prefs = ERASED;
        else { await page.details(part.details, leaf, part.index, "the preferences in force"); prefs = part.details.preferences; }
        prefIndex = part.index;
      }
    } else if (pages > 0 && prefIndex !== null) {
      throw new VerifyError("a page of the walk leaves out the preferences in force");
    }
    for (const e of entries) {
      const leaf = e.leaf;
      const expected = last ? last.leaf.aseq + 1 : 1;
      if (last === null && pages === 0 && leaf.aseq !== 1) throw new VerifyError(`your first entry is number ${leaf.aseq}, not 1`, e.index);
      if (leaf.aseq !== expected) throw new VerifyError(`entry ${e.index} is your entry number ${leaf.aseq}, but ${expected} was expected: entries are missing`, e.index);
      if (leaf.aprev !== (last ? last.index : null)) throw new VerifyError(`entry ${e.index} names index ${leaf.aprev} as your previous entry, not ${last ? last.index : "none"}`, e.index);
      while (erasures.length && erasures[0] < e.index && (prefIndex === null || erasures[0] > prefIndex)) { erasures.shift(); prefs = null; }
      if (leaf.type === "preference") {
        prefIndex = e.index;
        prefs = e.details === null ? ERASED : e.details.preferences;
      } else if ((leaf.type === "use" || leaf.type === "refusal") && e.details !== null) {
        checkDecision(e, schedule, prefs);
        const key = `${leaf.purpose}\u0000${leaf.decision}`;
        const c = counts.get(key) || { purpose: leaf.purpose, decision: leaf.decision, leaves: 0, uses: 0 };
        c.leaves += 1; c.uses += leaf.invocations;
        counts.set(key, c);
      }
      last = e;
    }
    total += entries.length;
    pages += 1;
    onProgress({ verified: total, of: mapPart.value ? mapPart.value.aseq : 0 });
    if (b.next_aseq === null) break;
    if (!entries.length || b.next_aseq !== last.leaf.aseq + 1) throw new VerifyError("the page's next_aseq does not follow its last entry");
    b = await fetchPage({ size: cp.size, from_aseq: b.next_aseq });
  }

  // Completeness (SPEC §2.3): the map says the artist's head is exactly the walk's last entry.
  const value = mapPart.value;
  if (value === null && last !== null) throw new VerifyError("the map says nothing about you is logged, yet the log shows entries", last.index);
  if (value !== null) {
    if (last === null) throw new VerifyError(`the map says you have ${value.aseq} entries, the log showed none`, value.head);
    if (last.leaf.aseq !== value.aseq || last.index !== value.head) {
      throw new VerifyError(`the map says your latest entry is number ${value.aseq} at index ${value.head}, but the log showed number ${last.leaf.aseq} at index ${last.index}: entries were left out`, value.head);
    }
  }
  return {
    origin: cp.origin, size: cp.size, root: toHex(cp.root), checkpoint: b.checkpoint, loggedAt: mapPart.loggedAt,
    entries: total, pages, counts: [...counts.values()], cp,
  };
}
