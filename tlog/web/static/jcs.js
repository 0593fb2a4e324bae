// RFC 8785 (JCS) for the JSON subset tlog uses: strings, safe integers, booleans, null, arrays, objects.
// JCS is ECMAScript's own serialisation with object keys sorted by UTF-16 code units, which is exactly
// JSON.stringify for strings and integers, and Array.prototype.sort's default order for keys.
import { utf8, VerifyError } from "./bytes.js";

export function canonicalText(value) {
  if (value === null || typeof value === "boolean") return String(value);
  if (typeof value === "string") {
    if (!value.isWellFormed()) throw new VerifyError("a string holds a lone surrogate");
    return JSON.stringify(value);
  }
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new VerifyError(`not a safe integer: ${value}`);
    return String(value);
  }
  if (Array.isArray(value)) return "[" + value.map(canonicalText).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return "{" + keys.map((k) => canonicalText(k) + ":" + canonicalText(value[k])).join(",") + "}";
  }
  throw new VerifyError(`not a JSON value: ${typeof value}`);
}

export const canonical = (value) => utf8(canonicalText(value));
