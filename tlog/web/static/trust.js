// What this browser verified before, per log (localStorage: public data only, never a token): the last
// checkpoint and the log's keys. A new checkpoint must extend the remembered one (a consistency proof
// from the server, checked here); a smaller one, or other keys, is reported.
import { fromBase64, fromHex, toHex, VerifyError } from "./bytes.js";
import { verifyConsistency } from "./merkle.js";

const KEY = (origin) => `tlog.verified.${origin}`;

export function remembered(origin) {
  try { return JSON.parse(localStorage.getItem(KEY(origin)) || "null"); } catch { return null; }
}

// Checks a verified checkpoint {origin, size, root (bytes)} against the remembered one, then remembers
// it. Returns {previous: size or null, keysChanged: bool}; VerifyError on a rollback or a fork.
export async function checkAndRemember(cp, keys) {
  const before = remembered(cp.origin);
  let previous = null, keysChanged = false;
  if (before) {
    previous = before.size;
    keysChanged = JSON.stringify(before.keys) !== JSON.stringify(keys);
    if (before.size > cp.size) {
      throw new VerifyError(`the log now shows checkpoint ${cp.size}, older than checkpoint ${before.size} which this browser verified before`);
    }
    if (before.size === cp.size && before.root !== toHex(cp.root)) {
      throw new VerifyError(`the log shows two different trees of size ${cp.size}: it has forked`);
    }
    if (before.size < cp.size) {
      const r = await fetch(`/v1/proof/consistency?old=${before.size}&new=${cp.size}`);
      if (!r.ok) throw new VerifyError(`the log gives no proof that checkpoint ${cp.size} extends ${before.size}`);
      const proof = (await r.json()).proof.map((h) => fromBase64(h, "consistency proof"));
      try {
        await verifyConsistency(before.size, cp.size, fromHex(before.root), cp.root, proof);
      } catch (e) {
        throw new VerifyError(`checkpoint ${cp.size} does not extend checkpoint ${before.size} which this browser verified before: ${e.reason || e.message}`);
      }
    }
  }
  localStorage.setItem(KEY(cp.origin), JSON.stringify({ size: cp.size, root: toHex(cp.root), keys, at: Date.now() }));
  return { previous, keysChanged };
}
