// SPEC §4 decisions (mirrors tlog/policy.py `decide`, `preference_verdict` and `in_effect`).

export const NO_AI_CATEGORIES = new Set(["cawg.ai_training", "cawg.ai_generative_training", null]);

function levelVerdict(settings, purpose) {
  const explicit = settings.purposes;
  if (explicit && Object.prototype.hasOwnProperty.call(explicit, purpose.code)) return explicit[purpose.code];
  if (settings.strict) return "deny";
  if (settings.no_ai && NO_AI_CATEGORIES.has(purpose.category)) return "deny";
  return null;
}

// "allow", "deny" or null: what the artist's preferences say about this purpose for this content.
export function preferenceVerdict(purpose, contentId, prefs) {
  if (!prefs) return null;
  const settings = prefs.content && Object.prototype.hasOwnProperty.call(prefs.content, contentId) ? prefs.content[contentId] : null;
  if (settings) {
    const v = levelVerdict(settings, purpose);
    if (v !== null) return v;
  }
  return levelVerdict(prefs, purpose);
}

// policy: a parsed policy document ({purposes: {code: {category, default, override_eligible}}}).
export function decide(policy, code, contentId, prefs, basis = null) {
  const entry = policy.purposes[code];
  if (!entry || !Object.prototype.hasOwnProperty.call(policy.purposes, code)) throw new Error(`${code} is not a purpose of the policy`);
  const purpose = { code, ...entry };
  const verdict = preferenceVerdict(purpose, contentId, prefs);
  if (verdict === "deny") return basis !== null && entry.override_eligible ? "allowed_override" : "refused";
  if (verdict === null) {
    if (entry.default === "refused") return "refused";
    if (entry.default === "flagged") return "flagged";
  }
  return basis === null ? "allowed" : "flagged";
}

// The policy in effect at time `ms`: among [{effective (ms), index, ...}], the latest effective not after
// ms, ties to the later leaf; null before the first.
export function inEffect(schedule, ms) {
  let best = null;
  for (const s of schedule) {
    if (s.effective <= ms && (!best || s.effective > best.effective || (s.effective === best.effective && s.index > best.index))) best = s;
  }
  return best;
}
