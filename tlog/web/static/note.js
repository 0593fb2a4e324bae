// c2sp.org/signed-note with Ed25519 (WebCrypto), golang.org/x/mod note keys, c2sp.org/tlog-checkpoint
// bodies and c2sp.org/tlog-cosignature timestamps. Mirrors tlog/note.py and tlog/checkpoint.py.
import { concat, equal, fromBase64, utf8, fromUtf8, VerifyError } from "./bytes.js";
import { sha256 } from "./sha256.js";

const ED25519 = 0x01;
export const COSIGNATURE = 0x04;
const NAME = /^[^\s+]+$/u;

async function keyHash(name, alg, pub) {
  const h = await sha256(concat(utf8(name + "\n"), new Uint8Array([alg]), pub));
  return h.subarray(0, 4);
}

// A verifier key "name+hex8+base64(alg ‖ key)": {name, hash (4 bytes), alg, pub, key (the string)}.
export async function parseKey(key) {
  const m = typeof key === "string" ? /^([^+]+)\+([^+]+)\+(.*)$/s.exec(key) : null;
  const parts = m ? m.slice(1) : [];
  if (parts.length !== 3 || !NAME.test(parts[0]) || !/^[0-9a-f]{8}$/.test(parts[1])) {
    throw new VerifyError(`not a note verifier key: ${String(key).slice(0, 60)}`);
  }
  const raw = fromBase64(parts[2], "verifier key");
  if (raw.length !== 33 || (raw[0] !== ED25519 && raw[0] !== COSIGNATURE)) {
    throw new VerifyError("the verifier key is not an Ed25519 or cosignature/v1 key");
  }
  const pub = raw.subarray(1);
  const hash = await keyHash(parts[0], raw[0], pub);
  if (parseInt(parts[1], 16) !== new DataView(hash.buffer, hash.byteOffset).getUint32(0)) {
    throw new VerifyError("the verifier key's hash does not match its name and key");
  }
  return { name: parts[0], hash, alg: raw[0], pub, key };
}

// {text (bytes, ending "\n"), sigs: [{name, hash, sig}]}; refuses anything that is not a signed note.
export function parseNote(msg) {
  const s = typeof msg === "string" ? msg : fromUtf8(msg);
  const split = s.lastIndexOf("\n\n");
  if (split < 0 || !s.endsWith("\n")) throw new VerifyError("not a signed note");
  const text = s.slice(0, split + 1);
  const lines = s.slice(split + 2, -1).split("\n");
  const sigs = lines.map((line) => {
    const m = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/u.exec(line);
    if (!m) throw new VerifyError("a signature line of the note is malformed");
    const raw = fromBase64(m[2], "signature");
    if (raw.length < 5) throw new VerifyError("a signature of the note is too short");
    return { name: m[1], hash: raw.subarray(0, 4), sig: raw.subarray(4) };
  });
  if (!sigs.length) throw new VerifyError("the note has no signatures");
  return { text: utf8(text), sigs };
}

const imported = new Map();
async function importKey(pub) {
  const k = [...pub].join(",");
  if (!imported.has(k)) imported.set(k, crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]));
  return imported.get(k);
}

export async function ed25519Verify(pub, sig, msg) {
  if (sig.length !== 64) return false;
  return crypto.subtle.verify({ name: "Ed25519" }, await importKey(pub), sig, msg);
}

// Opens a note: the signatures of `keys` (parsed with parseKey) that are on it must verify, and at least
// one must be there. Unknown signature lines are kept in `others`, a known key's bad signature is refused.
export async function openNote(msg, keys) {
  const note = parseNote(msg);
  const verified = [], others = [];
  for (const s of note.sigs) {
    const key = keys.find((k) => k.name === s.name && equal(k.hash, s.hash));
    if (!key) { others.push(s); continue; }
    if (!await verifyLine(key, s, note.text)) throw new VerifyError(`the signature of ${key.name} on the checkpoint is not valid`);
    verified.push({ ...s, key });
  }
  if (!verified.length) throw new VerifyError("the checkpoint is not signed by the log's key");
  return { ...note, verified, others };
}

// Whether signature line `s` of a note is `key`'s valid signature of the note's text (a cosignature/v1
// key signs the text under a header with the time the signature states).
export async function verifyLine(key, s, text) {
  if (key.alg === ED25519) return ed25519Verify(key.pub, s.sig, text);
  return s.sig.length === 72 && ed25519Verify(key.pub, s.sig.subarray(8), cosignedMessage(text, s.sig));
}

function cosignedMessage(text, sig) {
  return concat(utf8(`cosignature/v1\ntime ${cosignedAt(sig)}\n`), text);
}

// The time (seconds since the epoch) in a cosignature/v1 signature, or null if it is not one.
export function cosignedAt(sig) {
  if (sig.length !== 72) return null;
  return Number(new DataView(sig.buffer, sig.byteOffset).getBigUint64(0));
}

// c2sp.org/tlog-checkpoint body: "origin\nsize\nbase64(root)\n", nothing else (SPEC §5).
export function parseCheckpoint(text) {
  const s = fromUtf8(text);
  const m = /^([^\n]+)\n(0|[1-9][0-9]{0,15})\n([A-Za-z0-9+/]{43}=)\n$/.exec(s);
  if (!m) throw new VerifyError("the checkpoint body is malformed");
  const size = Number(m[2]);
  if (!Number.isSafeInteger(size)) throw new VerifyError("the checkpoint size is too large");
  return { origin: m[1], size, root: fromBase64(m[3], "checkpoint root") };
}

// Opens a signed checkpoint with the log's keys (strings); its origin must be the keys' name. Other
// signature lines stay unverified in `note.others` (witnesses.js checks the witnesses').
export async function openCheckpoint(signed, keyStrings) {
  const keys = await Promise.all(keyStrings.map(parseKey));
  const note = await openNote(signed, keys);
  const cp = parseCheckpoint(note.text);
  if (note.verified.some((s) => s.key.name !== cp.origin)) {
    throw new VerifyError(`the checkpoint's origin ${cp.origin} is not the name of the log's key`);
  }
  return { ...cp, note };
}
