// Runs the JS verifiers of tlog/web/static against the shared vectors, as the Python tests do, and
// leaves the outcome in window.__vectors for selenium: {passed, failed: [...], counts}.
import { fromBase64, fromHex, toHex, utf8 } from "/static/bytes.js";
import { decide } from "/static/decide.js";
import { mapRoot, verifyMapProof } from "/static/artistmap.js";
import * as vrf from "/static/vrf.js";
import { leafHash } from "/static/sha256.js";
import { verifyConsistency, verifyInclusion } from "/static/merkle.js";
import { openNote, parseKey } from "/static/note.js";
import { canonicalText } from "/static/jcs.js";

const failed = [];
const counts = {};
function result(group, name, ok, detail = "") {
  counts[group] = (counts[group] || 0) + 1;
  if (!ok) failed.push(`${group}: ${name} ${detail}`);
}
const get = async (path) => (await fetch(path)).json();

async function decisions() {
  const policy = await get("/vectors/policy.json");
  const { cases } = await get("/vectors/decisions.json");
  cases.forEach((c, i) => {
    const got = decide(policy, c.purpose, c.content_id, c.preferences, c.basis);
    result("decisions", `case ${i}`, got === c.decision, `got ${got}, want ${c.decision}`);
  });
}

async function artistMap() {
  const v = await get("/vectors/artist-map.json");
  for (const [i, m] of v.maps.entries()) {
    const root = await mapRoot(m.entries.map((e) => ({ tag: fromHex(e.tag), aseq: e.aseq, head: e.head })));
    result("map roots", `map ${i}`, toHex(root) === m.root);
  }
  const root = fromHex(v.maps[2].root);
  for (const [i, p] of v.proofs.entries()) {
    try {
      const got = await verifyMapProof(root, p);
      result("map proofs", `proof ${i}`, JSON.stringify(got) === JSON.stringify(p.found));
    } catch (e) { result("map proofs", `proof ${i}`, false, e.message); }
  }
  for (const p of v.invalid_proofs) {
    let ok = false;
    try { await verifyMapProof(root, p.proof); } catch { ok = true; }
    result("map invalid_proofs", p.why, ok, "was accepted");
  }
}

async function ecvrf() {
  const v = await get("/vectors/ecvrf-edwards25519-sha512-tai.json");
  for (const [i, c] of v.valid.entries()) {
    try {
      const beta = await vrf.verify(fromHex(c.pk), fromHex(c.alpha), fromHex(c.pi));
      result("ecvrf valid", `case ${i}`, toHex(beta) === c.beta, "wrong beta");
    } catch (e) { result("ecvrf valid", `case ${i}`, false, e.message); }
  }
  for (const c of v.invalid) {
    let ok = false;
    try { await vrf.verify(fromHex(c.pk), fromHex(c.alpha), fromHex(c.pi)); } catch { ok = true; }
    result("ecvrf invalid", c.why, ok, "was accepted");
  }
}

// As in tests/test_merkle.py: roots that are not 32 bytes are refused even where that suite accepts them.
const STRICTER = new Set(["sizes-are-equal-one-and-proof-is-empty.json"]);

async function merkle() {
  const files = await get("/vectors/rfc6962-index.json");
  for (const f of files) {
    const c = await get(`/vectors/${f}`);
    let ok;
    try {
      if ("leafIdx" in c) {
        await verifyInclusion(fromBase64(c.leafHash || ""), c.leafIdx, c.treeSize, (c.proof || []).map((h) => fromBase64(h)), fromBase64(c.root || ""));
      } else {
        await verifyConsistency(c.size1, c.size2, fromBase64(c.root1 || ""), fromBase64(c.root2 || ""), (c.proof || []).map((h) => fromBase64(h)));
      }
      ok = !c.wantErr && !STRICTER.has(f.split("/").pop());
    } catch { ok = !!c.wantErr || STRICTER.has(f.split("/").pop()); }
    result("rfc6962", f, ok);
  }
}

async function notes() {
  const v = await get("/vectors/signed-notes.json");
  for (const c of v.verify) {
    let ok;
    try { await openNote(utf8(c.note), [await parseKey(c.verifier_key)]); ok = c.ok; } catch { ok = !c.ok; }
    result("signed notes", c.desc, ok);
  }
  for (const c of v.sign) {
    let ok;
    try { await openNote(utf8(c.signed), [await parseKey(c.verifier_key)]); ok = true; } catch { ok = false; }
    result("signed notes", "sign vector verifies", ok);
  }
}

function jcs() {
  const cases = [
    [{ b: 1, a: [true, null, "x"] }, '{"a":[true,null,"x"],"b":1}'],
    [{ "\u20ac": 1, "\r": 2, "\ud83d\ude00": 3, "\ufb33": 4 }, '{"\\r":2,"\u20ac":1,"\ud83d\ude00":3,"\ufb33":4}'],
    ["\u0000\u001f\"\\/\u007f", '"\\u0000\\u001f\\"\\\\/\u007f"'],
  ];
  cases.forEach(([v, want], i) => result("jcs", `case ${i}`, canonicalText(v) === want, canonicalText(v)));
}

(async () => {
  const t0 = performance.now();
  for (const run of [decisions, artistMap, ecvrf, merkle, notes, jcs]) {
    try { await run(); } catch (e) { failed.push(`${run.name}: threw ${e.stack || e}`); }
  }
  const passed = Object.values(counts).reduce((a, b) => a + b, 0) - failed.length;
  window.__vectors = { passed, failed, counts, ms: Math.round(performance.now() - t0) };
  document.getElementById("out").textContent = JSON.stringify(window.__vectors, null, 2);
})();
