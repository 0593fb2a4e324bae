// Small DOM helpers: every text goes in through textContent, never as HTML.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

export const $ = (sel) => document.querySelector(sel);
export const num = (n) => Number(n).toLocaleString("en-US");
export const when = (t) => (t ? `${t.slice(0, 10)} ${t.slice(11, 16)} UTC` : "");

export function verdict(box, kind, headline, ...lines) {
  box.className = `verdict ${kind}`;
  box.replaceChildren(el("p", { class: "headline" }, headline), ...lines.filter(Boolean).map((l) => el("p", {}, l)));
}

export const DECISIONS = ["allowed", "flagged", "allowed_override", "refused"];
export const DECISION_WORDS = {
  allowed: "allowed", flagged: "flagged for review", allowed_override: "allowed over an opt-out", refused: "refused",
};
export const purposeName = (code) => code.charAt(0).toUpperCase() + code.slice(1).replaceAll("_", " ");

// A stacked bar chart (SVG built node by node) of {label: {decision: n}}, with its table as the text alternative.
export function weeklyChart(weeks, titleId) {
  const NS = "http://www.w3.org/2000/svg";
  const shown = Object.entries(weeks).slice(-26);
  if (!shown.length) return el("p", {}, "Nothing has been logged yet.");
  const top = Math.max(1, ...shown.map(([, by]) => Object.values(by).reduce((a, b) => a + b, 0)));
  const W = 640, H = 200, bar = W / shown.length;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-label", "Logged uses per week, stacked by decision; the table below gives the numbers.");
  shown.forEach(([week, by], i) => {
    let y = H;
    for (const d of DECISIONS) {
      const n = by[d] || 0;
      if (!n) continue;
      const h = (n / top) * (H - 10);
      y -= h;
      const r = document.createElementNS(NS, "rect");
      r.setAttribute("class", { allowed: "c-allowed", flagged: "c-flagged", allowed_override: "c-override", refused: "c-refused" }[d]);
      r.setAttribute("x", (i * bar + 2).toFixed(1));
      r.setAttribute("y", y.toFixed(1));
      r.setAttribute("width", Math.max(bar - 4, 1).toFixed(1));
      r.setAttribute("height", h.toFixed(1));
      const t = document.createElementNS(NS, "title");
      t.textContent = `Week of ${week}: ${num(n)} ${DECISION_WORDS[d]}`;
      r.append(t);
      svg.append(r);
    }
  });
  const legend = el("ul", { class: "legend" }, DECISIONS.map((d) => el("li", {},
    el("span", { class: `swatch ${{ allowed: "c-allowed", flagged: "c-flagged", allowed_override: "c-override", refused: "c-refused" }[d]}`, "aria-hidden": "true" }), DECISION_WORDS[d])));
  const table = el("table", {}, el("caption", {}, "Logged uses per week (weeks start on Monday)"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Week of"), DECISIONS.map((d) => el("th", { scope: "col" }, DECISION_WORDS[d])), el("th", { scope: "col" }, "All"))),
    el("tbody", {}, shown.map(([w, by]) => el("tr", {}, el("th", { scope: "row" }, w),
      DECISIONS.map((d) => el("td", {}, num(by[d] || 0))), el("td", {}, num(Object.values(by).reduce((a, b) => a + b, 0)))))));
  return el("div", {}, el("figure", { class: "chart" }, svg, el("figcaption", {}, legend)),
    el("details", {}, el("summary", {}, "The numbers behind the chart"), el("div", { class: "scroll", tabindex: "0" }, table)));
}
