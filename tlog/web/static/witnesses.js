// The log's witnesses and their cosignatures on a checkpoint, checked in the browser with the keys of the
// log's witness policy (GET /v1/log `witness_policy`). Those keys come from the log itself: this catches a
// cosignature altered on its way or missing, not a log that lies about who its witnesses are (for that,
// `tlog audit --witness-policy` with keys got from the witnesses). Mirrors tlog/witnessing.py.
import { equal, VerifyError } from "./bytes.js";
import { COSIGNATURE, cosignedAt, parseKey, verifyLine } from "./note.js";

export const TRUST_NOTE = "The witnesses' keys your browser used come from this log itself; to check without trusting it, " +
  "run `tlog audit --witness-policy` with keys you got from the witnesses.";

// {policy, cosigned: [{name, at (seconds)}], invalid: [names], missing: [names], unlisted: [key names],
// holds: whether the verified cosigners meet the quorum (null without a policy), quorum: it in words}.
// `note` is an opened note (note.js openNote/openCheckpoint): its `others` are the lines to check.
export async function checkWitnesses(note, policy) {
  if (!policy) return { policy: null, cosigned: [], invalid: [], missing: [], unlisted: note.others.map((s) => s.name), holds: null, quorum: null };
  const witnesses = await policyKeys(policy);
  const valid = new Map(), bad = new Set(), unlisted = [];
  for (const s of note.others) {
    const w = witnesses.find((x) => x.key.name === s.name && equal(x.key.hash, s.hash));
    if (!w) unlisted.push(s.name);
    else if (await verifyLine(w.key, s, note.text)) valid.set(w.name, cosignedAt(s.sig));
    else bad.add(w.name);
  }
  const names = witnesses.map((w) => w.name);
  return {
    policy,
    cosigned: names.filter((n) => valid.has(n)).map((n) => ({ name: n, at: valid.get(n) })),
    invalid: names.filter((n) => bad.has(n) && !valid.has(n)),
    missing: names.filter((n) => !bad.has(n) && !valid.has(n)),
    unlisted,
    holds: satisfied(policy, policy.quorum, new Set(valid.keys())),
    quorum: quorumWords(policy, policy.quorum),
  };
}

// The policy's witnesses with their parsed keys; refuses a policy that names what it does not define.
async function policyKeys(policy) {
  const defined = new Set();
  const witnesses = [];
  for (const w of policy.witnesses || []) {
    const key = await parseKey(w.key);
    if (key.alg !== COSIGNATURE) throw new VerifyError(`the key of witness ${w.name} is not a cosignature/v1 key`);
    witnesses.push({ name: w.name, key });
    defined.add(w.name);
  }
  for (const g of policy.groups || []) {
    if (!g.members.every((m) => defined.has(m))) throw new VerifyError(`the log's witness group ${g.name} names a witness it does not list`);
    defined.add(g.name);
  }
  if (!defined.has(policy.quorum)) throw new VerifyError(`the log's witness quorum ${policy.quorum} is not a witness or group it lists`);
  return witnesses;
}

function satisfied(policy, name, cosigners) {
  const g = (policy.groups || []).find((x) => x.name === name);
  if (!g) return cosigners.has(name);
  return g.members.filter((m) => satisfied(policy, m, cosigners)).length >= g.threshold;
}

export const andList = (names) => (names.length === 1 ? names[0] : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`);

// The same words as quorum_words in tlog/web/words.py: "w1", "2 of w1, w2 and w3", "both of w1 and (any one of w2 and w3)".
export function quorumWords(policy, name) {
  const g = (policy.groups || []).find((x) => x.name === name);
  if (!g) return name;
  const members = g.members.map((m) => quorumWords(policy, m)).map((w) => (w.includes(" of ") ? `(${w})` : w));
  if (members.length === 1) return members[0];
  const k = g.threshold, n = members.length;
  const how = k === n ? (n === 2 ? "both" : "all") : k === 1 ? "any one" : String(k);
  return `${how} of ${andList(members)}`;
}

// "met", "short" (the verified cosignatures do not make the quorum) or "none" (no witness policy).
export const witnessStatus = (r) => (r.policy ? (r.holds ? "met" : "short") : "none");

// What the check found, in plain sentences.
export function witnessLines(r) {
  if (!r.policy) {
    return [r.unlisted.length
      ? `It carries ${r.unlisted.length} cosignature${r.unlisted.length === 1 ? "" : "s"} by witnesses this log does not name; they are not counted.`
      : "No witness cosigned this checkpoint: the log runs without witnesses."];
  }
  const names = r.cosigned.map((c) => c.name);
  const one = (list, single, plural) => (list.length === 1 ? single : plural);
  return [
    names.length
      ? `Cosigned by ${andList(names)}, ${one(names, "a witness", "witnesses")} of this log: your browser checked ${one(names, "its signature", "their signatures")}.`
      : "No witness of this log has cosigned this checkpoint with a signature that verifies.",
    r.invalid.length ? `The cosignature${one(r.invalid, "", "s")} of ${andList(r.invalid)} ${one(r.invalid, "does", "do")} not verify, so ${one(r.invalid, "it is", "they are")} not counted.` : null,
    r.missing.length ? `${andList(r.missing)} did not cosign it.` : null,
    r.unlisted.length ? `${r.unlisted.length} other cosignature${one(r.unlisted, " is", "s are")} by keys that are not this log's witnesses, and not counted.` : null,
    r.holds ? `That meets the log's witness quorum: ${r.quorum}.`
      : `That is short of the log's witness quorum (${r.quorum}): this may not be the checkpoint everyone else sees.`,
  ].filter(Boolean);
}
