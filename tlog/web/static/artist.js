// The artist page: sign-in (the token lives in this tab's session storage only), the first figures from
// GET /v1/artists/{id}/summary, the entries with filters, paging and CSV, the tracks, the artist's
// choices, and one verdict computed here by walking the audit bundle (audit.js).
import { verifyWalk } from "./audit.js";
import { checkAndRemember } from "./trust.js";
import { $, DECISION_WORDS, DECISIONS, el, num, purposeName, verdict, weeklyChart, when } from "./ui.js";
import { checkWitnesses, TRUST_NOTE, witnessLines, witnessStatus } from "./witnesses.js";

const TOKEN = "tlog.token";
const ARTIST = "tlog.artist";
const PAGE = 50;
const AUDIT_PAGE = 1000;
const timings = (window.__tlogTimings = { start: performance.now() });

// A sign-in link /artist#token=… : keep the token for this tab only and take it out of the address bar
// (and so out of the history, bookmarks and anything the URL is shared with).
function takeFragment() {
  if (!location.hash) return false;
  const params = new URLSearchParams(location.hash.slice(1));
  const found = !!params.get("token");
  if (found) {
    sessionStorage.setItem(TOKEN, params.get("token"));
    if (params.get("artist")) sessionStorage.setItem(ARTIST, params.get("artist"));
  }
  history.replaceState(null, "", location.pathname + location.search);
  return found;
}
takeFragment();
window.addEventListener("hashchange", () => { if (takeFragment()) start(); });

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN)}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  if (!r.ok) {
    let message = `the server answered ${r.status}`;
    try { message = (await r.json()).error.message; } catch { /* not JSON */ }
    throw new ApiError(r.status, message);
  }
  return raw ? r : r.json();
}

const state = { artist: null, info: null, summary: null, prefs: null, cursors: [null], page: 0 };
const base = () => `/v1/artists/${encodeURIComponent(state.artist)}`;

// --- sign-in --------------------------------------------------------------------------------------------

$("#signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("#token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN, token);
  const artist = $("#artist-id").value.trim();
  if (artist) sessionStorage.setItem(ARTIST, artist); else sessionStorage.removeItem(ARTIST);
  $("#token").value = "";
  start();
});

$("#signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(ARTIST);
  location.replace("/artist");
});

function showPick(ids) {
  const pick = $("#artist-pick");
  $("#pick").hidden = ids.length < 2;
  pick.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
  pick.value = state.artist;
}

$("#artist-pick").addEventListener("change", () => {
  sessionStorage.setItem(ARTIST, $("#artist-pick").value);
  location.reload();
});

function showSignin(message = "") {
  $("#dashboard").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = message;
}

async function start() {
  if (!sessionStorage.getItem(TOKEN)) return showSignin();
  let who;
  try {
    who = await api("/v1/whoami");
  } catch (e) {
    sessionStorage.removeItem(TOKEN);
    // The server says why in plain words: "this token expired at …; ask for a new one", or unknown or revoked.
    return showSignin(e.status === 401 ? `This token does not work: ${e.message}.` : e.message);
  }
  // A label's or manager's token covers several artists (who.artist_ids): the one chosen last, else the first.
  const ids = who.artist_ids || [];
  const chosen = sessionStorage.getItem(ARTIST);
  state.artist = who.role === "artist" ? (ids.includes(chosen) ? chosen : ids[0]) : chosen;
  if (who.role === "service") return showSignin("This is a service's token; sign in with an artist's or an auditor's token.");
  if (!state.artist) return showSignin("An auditor's token needs the artist id to look at.");
  $("#signin").hidden = true;
  $("#dashboard").hidden = false;
  showPick(ids);
  $("#who").textContent = who.role === "artist" ? state.artist : `${state.artist} (as an auditor)`;
  try {
    const [summary, info] = await Promise.all([api(`${base()}/summary`), fetch("/v1/log").then((r) => r.json())]);
    state.summary = summary;
    state.info = info;
    renderSummary(summary);
    timings.firstFiguresAt = performance.now(); // since the navigation began
    renderPrefs(summary.preferences, info);
    loadEntries();
    verify();
  } catch (e) {
    verdict($("#verdict"), "bad", "The page could not load your figures.", e.message);
  }
}

// --- figures --------------------------------------------------------------------------------------------

function renderSummary(s) {
  const byDecision = {};
  for (const r of s.by_purpose) byDecision[r.decision] = (byDecision[r.decision] || 0) + r.leaves;
  $("#figures").replaceChildren(
    el("div", { class: "figure" }, el("span", { class: "value", "data-figure": "uses" }, num(s.uses.leaves)), el("span", { class: "label" }, "AI uses of your music logged")),
    ...DECISIONS.map((d) => el("div", { class: "figure" }, el("span", { class: "value", "data-figure": d }, num(byDecision[d] || 0)), el("span", { class: "label" }, DECISION_WORDS[d]))),
    el("div", { class: "figure" }, el("span", { class: "value" }, num(s.track_count)), el("span", { class: "label" }, "of your tracks involved")),
  );
  const purposes = [...new Set(s.by_purpose.map((r) => r.purpose))];
  const cell = (p, d) => { const r = s.by_purpose.find((x) => x.purpose === p && x.decision === d); return r ? r.leaves : 0; };
  $("#by-purpose").replaceChildren(purposes.length
    ? el("div", { class: "scroll", tabindex: "0" }, el("table", {}, el("caption", {}, "Uses of your music by purpose and decision"),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Purpose"), DECISIONS.map((d) => el("th", { scope: "col" }, DECISION_WORDS[d])))),
      el("tbody", {}, purposes.map((p) => el("tr", {}, el("th", { scope: "row" }, purposeName(p)), DECISIONS.map((d) => el("td", {}, num(cell(p, d)))))))))
    : el("p", {}, "No AI use of your music has been logged."));
  const weeks = {};
  for (const r of s.by_week) { weeks[r.week] ??= {}; weeks[r.week][r.decision] = (weeks[r.week][r.decision] || 0) + r.leaves; }
  $("#weekly").replaceChildren(weeklyChart(weeks));
  const sel = $("#f-purpose");
  const codes = new Set([...purposes, ...(state.info ? state.info.purposes.map((p) => p.code) : [])]);
  sel.replaceChildren(el("option", { value: "" }, "All purposes"), [...codes].sort().map((c) => el("option", { value: c }, purposeName(c))));
  renderTracks(s);
}

function renderTracks(s) {
  if (!s.tracks.length) return $("#tracks").replaceChildren(el("p", {}, "No track of yours has been used by AI."));
  $("#tracks").replaceChildren(el("div", { class: "scroll", tabindex: "0" }, el("table", { id: "tracks-table" },
    el("caption", {}, s.track_count > s.tracks.length ? `Your ${num(s.tracks.length)} most used tracks of ${num(s.track_count)}` : "Each track's AI uses"),
    el("thead", {}, el("tr", {}, ["Track", "Uses", "Refused", "Last use", "See"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, s.tracks.map((t) => {
      const show = el("button", { type: "button", class: "secondary" }, "Its uses");
      show.setAttribute("aria-label", `Show the uses of ${t.content_id}`);
      show.addEventListener("click", () => {
        $("#filters").reset();
        $("#f-track").value = t.content_id;
        loadEntries(true);
        $("#entries-title").scrollIntoView();
        $("#f-track").focus();
      });
      return el("tr", {}, el("th", { scope: "row" }, el("code", {}, t.content_id)), el("td", {}, num(t.leaves)),
        el("td", {}, num(t.refused)), el("td", {}, when(t.last)), el("td", {}, show));
    })))));
}

// --- entries --------------------------------------------------------------------------------------------

function filterQuery() {
  const q = new URLSearchParams();
  const add = (k, v) => { if (v) q.set(k, v); };
  add("purpose", $("#f-purpose").value);
  add("content_id", $("#f-track").value.trim());
  add("decision", $("#f-decision").value);
  add("since", $("#f-since").value && `${$("#f-since").value}T00:00:00Z`);
  add("until", $("#f-until").value && `${$("#f-until").value}T00:00:00Z`);
  return q;
}

async function loadEntries(reset = false) {
  if (reset) { state.cursors = [null]; state.page = 0; }
  const q = filterQuery();
  q.set("limit", PAGE);
  const cursor = state.cursors[state.page];
  if (cursor) q.set("cursor", cursor);
  const status = $("#entries-status");
  status.textContent = "Loading…";
  try {
    const page = await api(`${base()}/uses?${q}`);
    state.cursors[state.page + 1] = page.next_cursor;
    $("#entries tbody").replaceChildren(...page.entries.map(entryRow));
    status.textContent = page.entries.length ? "" : "No logged use matches these filters.";
    $("#page-no").textContent = `Page ${state.page + 1}`;
    $("#prev").disabled = state.page === 0;
    $("#next").disabled = !page.next_cursor;
  } catch (e) {
    status.textContent = `Could not load the entries: ${e.message}`;
  }
}

function entryRow(e) {
  const d = e.details;
  if (e.erased) {  // its private details were deleted on request; its public leaf stays in the log
    return el("tr", { class: "erased-row" }, el("td", {}, when(e.logged_at)), el("td", { colspan: 5 }, `Erased on ${when(e.erased.at)}, reason: ${e.erased.reason}`), el("td", {}, num(e.index)));
  }
  if (e.type === "preference") {
    return el("tr", { class: "pref-row" }, el("td", {}, when(e.logged_at)), el("td", { colspan: 5 }, `Your choices changed (by ${d.by === "artist" ? "you" : d.service || "a service"})`), el("td", {}, num(e.index)));
  }
  if (e.type === "binding") {
    const what = d.change === "release" ? "was unlinked from you in the catalogue" : "was linked to you in the catalogue";
    return el("tr", {}, el("td", {}, when(e.logged_at)), el("td", { colspan: 5 }, "Track ", el("code", {}, d.content_id), ` ${what}`), el("td", {}, num(e.index)));
  }
  return el("tr", { "data-index": e.index }, el("td", {}, when(e.logged_at)), el("td", {}, el("code", {}, d.content_id)),
    el("td", {}, purposeName(d.purpose)), el("td", { class: `decision-${d.decision}` }, DECISION_WORDS[d.decision] + (d.basis ? ` (${d.basis.replaceAll("_", " ")})` : "")),
    el("td", {}, `${d.system.id} ${d.system.version}`), el("td", {}, num(d.invocations)), el("td", {}, num(e.index)));
}

$("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadEntries(true); });
$("#filters").addEventListener("reset", () => setTimeout(() => loadEntries(true), 0));
$("#next").addEventListener("click", () => { state.page += 1; loadEntries(); });
$("#prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); loadEntries(); });

$("#csv").addEventListener("click", async () => {
  const status = $("#entries-status");
  status.textContent = "Preparing the CSV file…";
  try {
    const q = filterQuery();
    q.set("format", "csv");
    q.set("limit", 1000);
    let text = "", cursor = null, pages = 0;
    do {
      if (cursor) q.set("cursor", cursor);
      const r = await api(`${base()}/uses?${q}`, { raw: true });
      const body = await r.text();
      text += pages === 0 ? body : body.slice(body.indexOf("\n") + 1);
      cursor = r.headers.get("X-Next-Cursor");
      pages += 1;
    } while (cursor && pages < 1000);
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = el("a", { href: url, download: `ai-uses-${state.artist.replace(/[^A-Za-z0-9._-]/g, "_")}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    status.textContent = "The CSV file is downloading.";
  } catch (e) {
    status.textContent = `Could not make the CSV file: ${e.message}`;
  }
});

// --- preferences ----------------------------------------------------------------------------------------

const NO_AI_CATEGORIES = new Set(["cawg.ai_training", "cawg.ai_generative_training", null]);
const DEFAULT_WORDS = { allowed: "Allowed", flagged: "Allowed, flagged for review", refused: "Refused" };

function renderPrefs(prefs, info) {
  state.prefs = JSON.parse(JSON.stringify(prefs || {}));
  state.prefs.content ??= {};
  state.prefs.purposes ??= {};
  $("#p-no-ai").checked = !!state.prefs.no_ai;
  $("#p-strict").checked = !!state.prefs.strict;
  $("#p-purposes tbody").replaceChildren(...info.purposes.map((p) => {
    const id = `p-purpose-${p.code}`;
    const select = el("select", { id, "data-code": p.code },
      el("option", { value: "" }, "Platform default"), el("option", { value: "allow" }, "Allow"), el("option", { value: "deny" }, "Don't allow"));
    select.value = state.prefs.purposes[p.code] || "";
    const override = p.override_eligible ? "Yes, under a legal obligation or for security; logged as an override" : "No";
    return el("tr", {}, el("th", { scope: "row" }, el("label", { for: id }, purposeName(p.code)), el("span", { class: "code" }, p.covers)),
      el("td", {}, DEFAULT_WORDS[p.default] + (NO_AI_CATEGORIES.has(p.category) ? "; refused with \u201cno AI\u201d" : "")),
      el("td", {}, override), el("td", {}, select));
  }));
  renderTrackPrefs();
}

function renderTrackPrefs() {
  const ids = Object.keys(state.prefs.content).sort();
  $("#p-tracks").replaceChildren(...(ids.length ? ids.map((cid, i) => {
    const s = state.prefs.content[cid];
    const box = (key, label) => {
      const id = `pt-${i}-${key}`;
      const input = el("input", { type: "checkbox", id, checked: !!s[key] });
      input.addEventListener("change", () => { s[key] = input.checked; });
      return el("div", { class: "check" }, input, el("label", { for: id }, label));
    };
    const remove = el("button", { type: "button", class: "secondary" }, "Remove");
    remove.setAttribute("aria-label", `Remove the choices for ${cid}`);
    remove.addEventListener("click", () => { delete state.prefs.content[cid]; renderTrackPrefs(); });
    const own = Object.entries(s.purposes || {}).map(([c, v]) => `${purposeName(c)}: ${v === "allow" ? "allowed" : "not allowed"}`);
    return el("div", { class: "track-prefs" }, el("p", {}, el("strong", {}, "Track "), el("code", {}, cid)),
      box("no_ai", "No AI for this track"), box("strict", "Strict for this track"), own.length ? el("p", { class: "hint" }, own.join("; ")) : "", remove);
  }) : [el("p", { class: "hint" }, "No choice for a single track yet.")]));
}

$("#p-add").addEventListener("click", () => {
  const cid = $("#p-add-track").value.trim();
  if (!cid) return;
  state.prefs.content[cid] ??= { no_ai: true, strict: false, purposes: {} };
  $("#p-add-track").value = "";
  renderTrackPrefs();
});

$("#prefs").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const status = $("#prefs-status");
  const doc = { no_ai: $("#p-no-ai").checked, strict: $("#p-strict").checked, purposes: {}, content: {} };
  for (const sel of document.querySelectorAll("#p-purposes select")) if (sel.value) doc.purposes[sel.dataset.code] = sel.value;
  for (const [cid, s] of Object.entries(state.prefs.content)) doc.content[cid] = { no_ai: !!s.no_ai, strict: !!s.strict, purposes: s.purposes || {} };
  status.textContent = "Saving…";
  try {
    const r = await api(`${base()}/preferences`, { method: "PUT", body: doc });
    status.textContent = `Saved. Your choices are in the public log as entry ${num(r.index)}, and apply to every use from now on.`;
    state.prefs = r.preferences;
    const summary = await api(`${base()}/summary`);
    renderSummary(summary);
    loadEntries(true);
    verify();
  } catch (e) {
    status.textContent = `Your choices were not saved: ${e.message}`;
  }
});

// --- the verdict ----------------------------------------------------------------------------------------

let verifying = 0;
async function verify() {
  const run = ++verifying;
  const box = $("#verdict");
  const bar = $("#verify-progress");
  verdict(box, "pending", "Checking the log in your browser…", "This takes a moment for a long history; you can use the page meanwhile.");
  box.removeAttribute("data-result");
  box.removeAttribute("data-index");
  box.removeAttribute("data-witnesses");
  bar.hidden = false;
  const t0 = performance.now();
  let mark = t0;
  timings.pageMs = [];
  try {
    const result = await verifyWalk({
      keys: state.info.verifier_keys,
      artistId: state.artist,
      fetchPage: (q) => api(`${base()}/audit?${new URLSearchParams({ ...q, limit: AUDIT_PAGE })}`),
      onProgress: ({ verified, of }) => {
        bar.max = Math.max(of, 1);
        bar.value = verified;
        const now = performance.now();
        timings.pageMs.push(now - mark);
        mark = now;
      },
    });
    const seen = await checkAndRemember(result.cp, state.info.verifier_keys);
    const found = await checkWitnesses(result.cp.note, state.info.witness_policy);
    if (run !== verifying) return;
    timings.verifyMs = performance.now() - t0;
    timings.verifiedEntries = result.entries;
    const short = witnessStatus(found) === "short";
    const witnesses = [...witnessLines(found), found.policy ? TRUST_NOTE : null];
    const complete = `Complete at checkpoint ${num(result.size)}: every use logged under your artist id up to ${when(result.loggedAt)}, and every decision followed your choices`;
    const checked = `${num(result.entries)} entries checked here: the log's signature, each entry's place in the log and its details, your chain from first to last, your tag, and the map that says nothing was left out.`;
    const since = seen.previous !== null && seen.previous !== result.size ? `It extends checkpoint ${num(seen.previous)}, which this browser verified before.` : null;
    box.dataset.result = "complete";
    box.dataset.witnesses = witnessStatus(found);
    // Short of the witnesses' quorum, this checkpoint may be a history shown to this artist alone: say so first.
    verdict(box, short ? "warn" : "ok", short ? `${complete}; but the log's witnesses have not confirmed this checkpoint.` : `${complete}.`,
      ...(short ? [...witnesses, checked] : [checked, ...witnesses]), since);
  } catch (e) {
    if (run !== verifying) return;
    timings.verifyMs = performance.now() - t0;
    box.dataset.result = "failed";
    if (e.index !== undefined && e.index !== null) box.dataset.index = e.index;
    verdict(box, "bad", e.index !== undefined && e.index !== null
      ? `Something is wrong at log entry ${num(e.index)}.` : "Something is wrong: the log's answer did not verify.",
    e.reason || e.message, "Keep this page's address and the time, and tell the platform or an auditor: your browser checked this itself.");
  } finally {
    bar.value = bar.max;
    if (run === verifying) bar.hidden = true;
  }
}

start();
