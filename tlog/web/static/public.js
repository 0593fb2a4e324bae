// The public page: its figures are in the HTML already; here the browser checks the latest checkpoint's
// signature itself and that it extends the one this browser checked on an earlier visit.
import { openCheckpoint } from "./note.js";
import { checkAndRemember } from "./trust.js";
import { $, el, num, verdict, when } from "./ui.js";

for (const span of document.querySelectorAll(".site-url")) span.textContent = location.origin;

async function check() {
  const box = $("#browser-check");
  if (!box) return;
  verdict(box, "pending", "Checking the checkpoint in your browser…");
  try {
    const info = await (await fetch("/v1/log")).json();
    const signed = await (await fetch("/checkpoint")).text();
    const cp = await openCheckpoint(signed, info.verifier_keys);
    const seen = await checkAndRemember(cp, info.verifier_keys);
    const shown = Number(($("[data-figure=size]") || {}).textContent?.replaceAll(",", "") || cp.size);
    const lines = [
      `Signed by the log's key ${cp.note.verified.map((s) => s.key.key.split("+").slice(0, 2).join("+")).join(", ")}.`,
      cp.witnesses.length ? `Carries cosignatures from ${cp.witnesses.map((w) => w.name + (w.at ? ` (${when(new Date(w.at * 1000).toISOString())})` : "")).join(", ")}; \`tlog monitor --witness-policy\` checks them with keys you trust.` : null,
      seen.previous === null ? "This is the first checkpoint this browser has checked for this log; it will check that later ones extend it."
        : seen.previous === cp.size ? "It is the same checkpoint this browser checked on your last visit."
          : `It extends checkpoint ${num(seen.previous)}, which this browser checked on an earlier visit: nothing before it was changed.`,
      seen.keysChanged ? "Note: the log's keys are not the ones this browser saw last time." : null,
      shown !== cp.size ? `The log has grown to ${num(cp.size)} entries since this page was made; reload for the latest figures.` : null,
    ];
    verdict(box, "ok", `Checked in your browser: checkpoint ${num(cp.size)} is genuine.`, ...lines);
  } catch (e) {
    verdict(box, "bad", "Your browser could not confirm this checkpoint.", e.message);
  }
}

check();
