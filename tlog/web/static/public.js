// The public page: its figures are in the HTML already; here the browser checks the latest checkpoint's
// signature and its witnesses' cosignatures itself, and that it extends the one this browser checked on an
// earlier visit.
import { openCheckpoint } from "./note.js";
import { checkAndRemember } from "./trust.js";
import { $, el, num, verdict, when } from "./ui.js";
import { checkWitnesses, witnessLines, witnessStatus } from "./witnesses.js";

for (const span of document.querySelectorAll(".site-url")) span.textContent = location.origin;

async function check() {
  const box = $("#browser-check");
  if (!box) return;
  verdict(box, "pending", "Checking the checkpoint in your browser…");
  try {
    const info = await (await fetch("/v1/log")).json();
    // no-cache: the page checks the newest checkpoint, not the copy caches may keep for two seconds
    const signed = await (await fetch("/checkpoint", { cache: "no-cache" })).text();
    const cp = await openCheckpoint(signed, info.verifier_keys);
    const witnesses = await checkWitnesses(cp.note, info.witness_policy);
    const seen = await checkAndRemember(cp, info.verifier_keys);
    const shown = Number(($("[data-figure=size]") || {}).textContent?.replaceAll(",", "") || cp.size);
    const lines = [
      `Signed by the log's key ${cp.note.verified.map((s) => s.key.key.split("+").slice(0, 2).join("+")).join(", ")}.`,
      ...witnessLines(witnesses),
      seen.previous === null ? "This is the first checkpoint this browser has checked for this log; it will check that later ones extend it."
        : seen.previous === cp.size ? "It is the same checkpoint this browser checked on your last visit."
          : `It extends checkpoint ${num(seen.previous)}, which this browser checked on an earlier visit: nothing before it was changed.`,
      seen.keysChanged ? "Note: the log's keys are not the ones this browser saw last time." : null,
      shown !== cp.size ? `The log has grown to ${num(cp.size)} entries since this page was made; reload for the latest figures.` : null,
    ];
    showWitnesses(witnesses);
    box.dataset.witnesses = witnessStatus(witnesses);
    if (witnessStatus(witnesses) === "short") {
      verdict(box, "warn", `Checked in your browser: checkpoint ${num(cp.size)} is signed by the log, but its witnesses have not confirmed it.`, ...lines);
    } else {
      verdict(box, "ok", `Checked in your browser: checkpoint ${num(cp.size)} is genuine.`, ...lines);
    }
  } catch (e) {
    verdict(box, "bad", "Your browser could not confirm this checkpoint.", e.message);
  }
}

// The server's list of witnesses, replaced by what this browser verified.
function showWitnesses(r) {
  const list = $("#witness-list");
  if (!list || !r.policy) return;
  const item = ({ name }) => {
    const c = r.cosigned.find((x) => x.name === name);
    if (c) return el("li", { "data-witness": name, "data-status": "verified" }, `${name}: cosigned at ${when(new Date(c.at * 1000).toISOString())}; your browser checked the signature`);
    if (r.invalid.includes(name)) return el("li", { "data-witness": name, "data-status": "invalid", class: "error" }, `${name}: its cosignature does not verify, so it is not counted`);
    return el("li", { "data-witness": name, "data-status": "missing" }, `${name}: did not cosign it`);
  };
  list.replaceChildren(...r.policy.witnesses.map(item),
    ...r.unlisted.map((n) => el("li", { "data-status": "unlisted" }, `${n}: not one of this log's witnesses, so not counted`)));
}

check();
