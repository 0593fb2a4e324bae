"""The web pages (SPEC §6 `GET /`, `GET /artist`, static assets): the public transparency page and the
artist page, with their ES modules and stylesheet under content-hashed names.

- Every figure the pages show comes from the JSON API (`/v1/stats`, `/v1/policies`, `/v1/leaves`,
  `/checkpoint`, the artist routes): the public page renders them on the server too, so its key figures
  are readable without JavaScript, and caches that HTML per published checkpoint.
- The pages load only their own modules (no CDN, no third-party request of any kind) under a strict
  Content-Security-Policy without `unsafe-inline` or `unsafe-eval`; assets are immutable, named by the hash
  of their content, so a module's name changes whenever it or anything it imports changes.
- The artist page never sends its token in a URL: the JavaScript moves a sign-in link's `#token=…` into the
  tab's session storage and out of the address bar, and sends it only in the Authorization header.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from aiohttp import web

from ..checkpoint import Checkpoint
from ..errors import NotFound, TlogError
from ..leaf import parse_leaf
from ..note import parse_note
from ..policy import Policy, in_effect, parse_policy
from ..records import format_logged_at, parse_logged_at
from ..rederive import iter_leaves
from ..web import words
from ..witness.quorum import WitnessQuorum
from .state import State, get_state
from .summary import per_state

routes = web.RouteTableDef()

WEB = Path(__file__).resolve().parent.parent / "web"
CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
              "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
IMMUTABLE: Final = "public, max-age=31536000, immutable"
TYPES: Final = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_IMPORT = re.compile(r"""(\bfrom\s+|\bimport\s+)(["'])\./([A-Za-z0-9_-]+\.js)\2""")
CHART_WEEKS: Final = 26


# --- assets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assets:
    """The static files under hashed names: `url(name)` is "/static/<stem>.<hash><ext>"; `files` maps that
    file name to (body, content type)."""

    names: dict[str, str]
    files: dict[str, tuple[bytes, str]]

    def url(self, name: str) -> str:
        return "/static/" + self.names[name]


def build_assets(directory: Path = WEB / "static") -> Assets:
    """Hashes every asset; a module's relative imports are rewritten to the hashed names of what it imports
    first, so its own hash covers its dependencies (imports must not form a cycle)."""
    sources = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.suffix in TYPES}
    names: dict[str, str] = {}
    files: dict[str, tuple[bytes, str]] = {}

    def resolve(name: str, path: tuple[str, ...] = ()) -> str:
        if name in names:
            return names[name]
        if name in path:
            raise RuntimeError(f"import cycle through {name}")
        if name not in sources:
            raise RuntimeError(f"{path[-1] if path else '?'} imports {name}, which is not in {directory}")
        body = sources[name]
        if name.endswith(".js"):
            text = _IMPORT.sub(lambda m: f"{m[1]}{m[2]}./{resolve(m[3], (*path, name))}{m[2]}", body.decode())
            body = text.encode()
        stem, ext = name.rsplit(".", 1)
        hashed = f"{stem}.{hashlib.sha256(body).hexdigest()[:12]}.{ext}"
        names[name] = hashed
        files[hashed] = (body, TYPES["." + ext])
        return hashed

    for name in sources:
        resolve(name)
    return Assets(names, files)


_ASSETS: Assets | None = None


def assets() -> Assets:
    global _ASSETS
    if _ASSETS is None:
        _ASSETS = build_assets()
    return _ASSETS


R = TypeVar("R", bound=web.StreamResponse)


def secure(response: R) -> R:
    response.headers.update(SECURITY_HEADERS)
    return response


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.StreamResponse:
    found = assets().files.get(request.match_info["name"])
    if found is None:
        raise NotFound("no such asset (asset names carry the hash of their content)")
    body, content_type = found
    return secure(web.Response(body=body, content_type=content_type, headers={"Cache-Control": IMMUTABLE}))


# --- the page layout -----------------------------------------------------------------------------------


def _template(name: str) -> str:
    return (WEB / "templates" / name).read_text()


def render(title: str, script: str, main: str, *, origin: str, current: str) -> bytes:
    a = assets()
    out = _template("layout.html")
    out = re.sub(r"\{\{asset:([A-Za-z0-9_.-]+)\}\}", lambda m: a.url(m[1]), out)
    out = re.sub(r"\{\{current:([a-z]+)\}\}", lambda m: ' aria-current="page"' if m[1] == current else "", out)
    return (out.replace("{{title}}", html.escape(title)).replace("{{script}}", a.url(script))
            .replace("{{origin}}", html.escape(origin)).replace("{{main}}", main)).encode()


def _page(body: bytes, cache: str = "no-cache") -> web.Response:
    return secure(web.Response(body=body, content_type="text/html", charset="utf-8", headers={"Cache-Control": cache}))


@routes.get("/artist")
async def artist_page(request: web.Request) -> web.Response:
    state = get_state(request)
    return _page(render("Your music and AI", "artist.js", _template("artist.html"), origin=state.log.origin,
                        current="artist"))


@routes.get("/")
async def public_page(request: web.Request) -> web.Response:
    state = get_state(request)
    try:
        size = state.published_size()
    except TlogError:
        size = 0
    cache = per_state(state, "pages", dict)  # {"public": (published size, page, good until: an ms time)}
    cached = cache.get("public")
    if cached is None or cached[0] != size or time.time() * 1000 >= cached[2]:
        cached = cache["public"] = (size, *render_public(state, size))
    return _page(cached[1])


# --- the public page -------------------------------------------------------------------------------------


@dataclass
class PolicyVersion:
    id: str
    index: int
    announced: str
    effective: str
    policy: Policy


def replaced_policies(pols: list[PolicyVersion]) -> list[PolicyVersion | None]:
    """For each policy, in log order, the one it replaces (SPEC §4 Notice's O): the policy that would be
    in effect at its `effective_at` among the earlier policy leaves; None for the log's first. With
    several announcements pending, that is not always the leaf before it."""
    out: list[PolicyVersion | None] = []
    for k, v in enumerate(pols):
        old = in_effect([(parse_logged_at(p.effective), p.index, p.policy) for p in pols[:k]], parse_logged_at(v.effective))
        out.append(next((p for p in pols[:k] if p.policy is old), None))
    return out


def published_policies(state: State, size: int) -> list[PolicyVersion]:
    """Every policy published under the checkpoint, in log order, with the dates its leaf states."""
    out = []
    for rec in state.store.policies():
        if rec.index >= size:
            continue
        ((_, data, _),) = list(iter_leaves(state.store, rec.index, rec.index + 1))
        leaf = parse_leaf(data)
        out.append(PolicyVersion(rec.policy_id, rec.index, leaf.logged_at, leaf.effective_at or leaf.logged_at,
                                 parse_policy(rec.document, rec.policy_id)))
    return out


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


def _when(t: str) -> str:
    return f"{t[:10]} {t[11:16]} UTC"


def week_of(day: str) -> str:
    """The Monday that starts the ISO week of a date "YYYY-MM-DD"."""
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


Weeks = dict[str, dict[str, int]]  # week (its Monday) → decision → logged uses


@dataclass
class Figures:
    """The public page's counts, from the same rows as `GET /v1/stats` (uses and refusals only)."""

    totals: dict[tuple[str, str], list[int]]  # (purpose, decision) → [logged uses, invocations]
    weeks: Weeks
    purpose_weeks: dict[str, Weeks]  # purpose → its weeks


def figures(state: State) -> Figures:
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    weeks: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    purpose_weeks: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for day, kind, purpose, _phase, decision, leaves, uses in state.store.stats(state.published_size()):
        if kind not in ("use", "refusal"):
            continue
        t = totals[(purpose, decision)]
        t[0] += leaves
        t[1] += uses
        week = week_of(day)
        weeks[week][decision] += leaves
        purpose_weeks[purpose][week][decision] += leaves
    return Figures(dict(totals), _sorted(weeks), {p: _sorted(w) for p, w in purpose_weeks.items()})


def _sorted(weeks: dict[str, dict[str, int]]) -> Weeks:
    return {w: dict(v) for w, v in sorted(weeks.items())}


def chart_weeks(weeks: Iterable[str]) -> list[str]:
    """The weeks the charts show: every week from the first with a logged use to the last, a week without
    any as no bar, and only the latest CHART_WEEKS of them."""
    known = sorted(weeks)
    if not known:
        return []
    last = date.fromisoformat(known[-1])
    first = max(date.fromisoformat(known[0]), last - timedelta(weeks=CHART_WEEKS - 1))
    return [(first + timedelta(weeks=i)).isoformat() for i in range((last - first).days // 7 + 1)]


def render_public(state: State, size: int) -> tuple[bytes, float]:
    """The page, and until when it holds (ms): the next announced policy's effective time, else forever."""
    pols = published_policies(state, size)
    now = format_logged_at(int(time.time() * 1000))
    upcoming = [parse_logged_at(v.effective) for v in pols if v.effective > now]
    figs = figures(state)
    sections = [
        _intro(figs),
        _training(figs, pols),
        _policy_section(pols),
        _changes(pols),
        _usage(figs, pols),
        _checkpoint(state, size),
        _how_to_verify(state),
    ]
    main = "\n".join(sections)
    page = render("What the platform does with AI", "public.js", main, origin=state.log.origin, current="public")
    return page, min(upcoming, default=float("inf"))


def _intro(f: Figures) -> str:
    leaves = sum(v[0] for v in f.totals.values())
    uses = sum(v[1] for v in f.totals.values())
    by: defaultdict[str, int] = defaultdict(int)
    for (_, decision), v in f.totals.items():
        by[decision] += v[0]
    cells = "".join(f'<div class="figure"><span class="value" data-figure="{d}">{_n(by.get(d, 0))}</span>'
                    f'<span class="label">{_e(words.DECISION_WORDS[d])}</span></div>' for d in words.DECISIONS)
    return f"""<h1>What the platform does with AI, and how you can check it</h1>
<p class="lead">Each time the platform's AI systems use an artist's music, the use is written into this public
log before it happens: which purpose, whether it was allowed, and under which policy. Nobody, not even the
platform, can quietly change or remove an entry afterwards: witnesses, monitors and your own browser can check.</p>
<div class="figures" id="key-figures">
<div class="figure"><span class="value" data-figure="logged">{_n(leaves)}</span><span class="label">AI uses logged</span></div>
{cells}
<div class="figure"><span class="value" data-figure="invocations">{_n(uses)}</span><span class="label">individual model runs they cover</span></div>
</div>"""


def _training(f: Figures, pols: list[PolicyVersion]) -> str:
    training = {code for v in pols for code, p in v.policy.purposes.items() if p.category in words.TRAINING_CATEGORIES}
    used = {d: v for (p, d), v in f.totals.items() if p in training and d != "refused"}
    refused = sum(v[0] for (p, d), v in f.totals.items() if p in training and d == "refused")
    n_used = sum(v[0] for v in used.values())
    third = {d: v[0] for (p, d), v in f.totals.items() if p == "third_party_ai_access"}
    if n_used == 0:
        answer = (f'<p class="answer" data-figure="training-used">No.</p><p>No artist\'s music has been used to train '
                  f"AI models. {_n(refused)} request{'s' if refused != 1 else ''} to train on music "
                  f"{'were' if refused != 1 else 'was'} refused.</p>")
    else:
        parts = ", ".join(f"{_n(v[0])} {_e(words.DECISION_WORDS[d])}" for d, v in sorted(used.items()))
        answer = (f'<p class="answer" data-figure="training-used">Yes: {_n(n_used)} time{"s" if n_used != 1 else ""}.</p>'
                  f"<p>{parts}. Training is refused by default, so each of these was allowed by the artist "
                  f"choosing to opt in, or by a policy that allows it (see below). {_n(refused)} other requests to train "
                  "on music were refused.</p>")
    if third:
        answer += ("<p>Processing by outside AI companies, which may include training: "
                   + ", ".join(f"{_n(n)} {_e(words.DECISION_WORDS[d])}" for d, n in sorted(third.items())) + ".</p>")
    return f"""<section aria-labelledby="training-title" class="card highlight">
<h2 id="training-title">Was anyone's music used to train AI?</h2>
{answer}
</section>"""


def _policy_section(pols: list[PolicyVersion]) -> str:
    if not pols:
        return "<section><h2>The AI policy</h2><p>No policy has been published yet.</p></section>"
    current = policy_in_effect(pols)
    upcoming = [v for v in pols if v.effective > current.effective]
    rows = []
    for code, p in current.policy.purposes.items():
        rows.append(
            f"<tr><th scope=\"row\">{_e(words.purpose_name(code))}<span class=\"code\">{_e(code)}</span></th>"
            f"<td>{_e(p.covers)}</td><td class=\"default-{_e(p.default)}\">{_e(words.DEFAULT_WORDS[p.default])}</td>"
            f"<td>{'Yes: refused' if words.no_ai_applies(p) else 'No'}</td>"
            f"<td>{_e(words.OVERRIDE_WORDS) if p.override_eligible else 'No'}</td></tr>")
    return f"""<section aria-labelledby="policy-title">
<h2 id="policy-title">The AI policy</h2>
<p>The policy in force is <strong>{_e(current.id)}</strong>, in effect since {_e(_when(current.effective))}.{_upcoming(upcoming)} In the platform's words:</p>
<blockquote>{_e(current.policy.text)}</blockquote>
<p>What each purpose means for an artist who has made no choice, and what an artist's choices change. The
<strong>\u201cno AI\u201d</strong> switch refuses AI training and AI processing by outside companies; <strong>strict</strong>
refuses every purpose the artist has not allowed one by one.</p>
<div class="scroll"><table id="policy-table">
<caption>Purposes the platform may use music for</caption>
<thead><tr><th scope="col">Purpose</th><th scope="col">What it covers</th><th scope="col">Without a choice by the artist</th>
<th scope="col">With \u201cno AI\u201d on</th><th scope="col">May go ahead over an artist's no?</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></div>
</section>"""


def policy_in_effect(pols: list[PolicyVersion]) -> PolicyVersion:
    """SPEC §4: the published policy with the latest effective_at not after now (ties: the later leaf);
    the first one if none has taken effect yet."""
    now = format_logged_at(int(time.time() * 1000))
    due = [v for v in pols if v.effective <= now]
    return max(due, key=lambda v: (v.effective, v.index)) if due else pols[0]


def _upcoming(upcoming: list[PolicyVersion]) -> str:
    return "".join(f" <strong>{_e(v.id)}</strong> is announced and takes effect {_e(_when(v.effective))}; see the "
                   "changes below." for v in upcoming)


def _changes(pols: list[PolicyVersion]) -> str:
    items = []
    for old, new in zip(replaced_policies(pols), pols):
        if old is None:
            continue
        changes = words.policy_diff(old.policy, new.policy)
        lis = "".join(_change_item(c) for c in changes) or "<li>No change to the purposes (only the wording).</li>"
        items.append(f"<li><p><strong>{_e(new.id)}</strong>, announced {_e(_when(new.announced))}, in effect from "
                     f"{_e(_when(new.effective))} (replacing {_e(old.id)}):</p><ul>{lis}</ul></li>")
    first = pols[0] if pols else None
    start = (f"<li><p><strong>{_e(first.id)}</strong>: the first policy, in effect from {_e(_when(first.effective))}.</p></li>"
             if first else "")
    return f"""<section aria-labelledby="changes-title">
<h2 id="changes-title">Policy changes</h2>
<ol class="changes" reversed>{''.join(reversed(items))}{start}</ol>
</section>"""


def _change_item(c: words.Change) -> str:
    attr = ' class="loosens"' if c.loosens else ""
    tag = ' <span class="tag">more use of music</span>' if c.loosens else ""
    return f"<li{attr}><strong>{_e(words.purpose_name(c.code))}</strong>: {_e(c.what)}{tag}</li>"


def _usage(f: Figures, pols: list[PolicyVersion]) -> str:
    purposes: list[str] = []
    for v in pols:
        purposes += [c for c in v.policy.purposes if c not in purposes]
    purposes += sorted({p for p, _ in f.totals if p not in purposes})
    rows = []
    for code in purposes:
        cells = [f.totals.get((code, d), [0, 0])[0] for d in words.DECISIONS]
        runs = sum(f.totals.get((code, d), [0, 0])[1] for d in words.DECISIONS)
        rows.append(f'<tr><th scope="row">{_e(words.purpose_name(code))}</th>'
                    + "".join(f'<td data-purpose="{_e(code)}" data-decision="{d}">{_n(n)}</td>' for d, n in zip(words.DECISIONS, cells))
                    + f"<td>{_n(runs)}</td></tr>")
    shown = chart_weeks(f.weeks)
    return f"""<section aria-labelledby="usage-title">
<h2 id="usage-title">AI uses by purpose</h2>
<div class="scroll"><table id="by-purpose">
<caption>Logged AI uses of artists' music, by purpose and decision, since the log began</caption>
<thead><tr><th scope="col">Purpose</th>{_decision_heads()}<th scope="col">Model runs</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></div>
<h3 id="weekly-title">Week by week</h3>
{weekly_chart(f.weeks, shown)}
<h3 id="purpose-weekly-title">Week by week, purpose by purpose</h3>
{purpose_charts(purposes, f.purpose_weeks, shown)}
</section>"""


CHART_COLORS = {"allowed": "c-allowed", "flagged": "c-flagged", "allowed_override": "c-override", "refused": "c-refused"}


def _decision_heads() -> str:
    return "".join(f'<th scope="col">{_e(words.DECISION_WORDS[d].capitalize())}</th>' for d in words.DECISIONS)


def _legend() -> str:
    items = "".join(f'<li><span class="swatch {CHART_COLORS[d]}" aria-hidden="true"></span>{_e(words.DECISION_WORDS[d])}</li>'
                    for d in words.DECISIONS)
    return f'<ul class="legend">{items}</ul>'


def _bars(series: list[tuple[str, dict[str, int]]], width: float, height: float, what: str = "") -> tuple[str, int]:
    """One bar a week, stacked by decision, as SVG rects whose titles give their figures (`what` names the
    purpose); and the tallest bar's count, which sets the scale."""
    top = max((sum(by.values()) for _, by in series), default=0) or 1
    bar = width / max(len(series), 1)
    rects = []
    for i, (week, by) in enumerate(series):
        y = height
        for d in words.DECISIONS:
            n = by.get(d, 0)
            if not n:
                continue
            h = n / top * height * 0.95
            y -= h
            rects.append(f'<rect class="{CHART_COLORS[d]}" x="{i * bar + bar * 0.1:.1f}" y="{y:.1f}" width="{bar * 0.8:.1f}" '
                         f'height="{h:.1f}"><title>{_e(what)}Week of {_e(week)}: {_n(n)} {_e(words.DECISION_WORDS[d])}</title></rect>')
    return "".join(rects), top


def weekly_chart(weeks: Weeks, shown: list[str]) -> str:
    """A stacked bar chart of logged uses per week and decision over the `shown` weeks (inline SVG, no
    script), with the table it is drawn from as its text alternative."""
    if not shown:
        return "<p>No AI use has been logged yet.</p>"
    series = [(w, weeks.get(w, {})) for w in shown]
    rects, top = _bars(series, 640, 200)
    rows = "".join(f'<tr><th scope="row">{_e(w)}</th>' + "".join(f"<td>{_n(by.get(d, 0))}</td>" for d in words.DECISIONS)
                   + f"<td>{_n(sum(by.values()))}</td></tr>" for w, by in series)
    return f"""<figure class="chart">
<svg viewBox="0 0 640 200" role="img" aria-labelledby="weekly-title weekly-desc" preserveAspectRatio="none">
<desc id="weekly-desc">Logged AI uses per week, stacked by decision; the table below gives the numbers.</desc>
{rects}</svg>
<figcaption>{_legend()}<p class="axis">{_e(shown[0])} to {_e(shown[-1])}; the tallest bar is {_n(top)} uses.</p></figcaption>
</figure>
<details><summary>The numbers behind the chart</summary>
<div class="scroll"><table id="weekly-table"><caption>Logged AI uses per week (weeks start on Monday)</caption>
<thead><tr><th scope="col">Week of</th>{_decision_heads()}<th scope="col">All</th></tr></thead><tbody>{rows}</tbody></table></div>
</details>"""


def purpose_charts(purposes: list[str], purpose_weeks: dict[str, Weeks], shown: list[str]) -> str:
    """Small multiples: a small chart per purpose over the same weeks as the weekly chart, stacked by
    decision, each to its own scale (stated under it, so that a purpose used a handful of times shows as
    clearly as one used thousands of times); the table they are drawn from is their text alternative."""
    if not shown:
        return "<p>No AI use has been logged yet.</p>"
    panels, rows = [], []
    for code in purposes:
        series = [(w, purpose_weeks.get(code, {}).get(w, {})) for w in shown]
        panels.append(_panel(code, series))
        rows += [f'<tr data-purpose="{_e(code)}" data-week="{_e(w)}"><th scope="row">{_e(words.purpose_name(code))}</th><td>{_e(w)}</td>'
                 + "".join(f'<td data-decision="{d}">{_n(by.get(d, 0))}</td>' for d in words.DECISIONS)
                 + f"<td>{_n(sum(by.values()))}</td></tr>" for w, by in series if by]
    return f"""<p>The same weeks, one small chart for each purpose, stacked by decision as above. Each chart has its
own scale, stated under its name, so that a purpose used a few times shows as clearly as one used thousands of times.</p>
{_legend()}
<ul class="multiples" id="purpose-charts">{''.join(panels)}</ul>
<details><summary>The numbers behind these charts</summary>
<div class="scroll"><table id="purpose-weekly-table"><caption>Logged AI uses per purpose and week (a purpose's weeks without
any use are left out)</caption>
<thead><tr><th scope="col">Purpose</th><th scope="col">Week of</th>{_decision_heads()}<th scope="col">All</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></div>
</details>"""


def _panel(code: str, series: list[tuple[str, dict[str, int]]]) -> str:
    name = words.purpose_name(code)
    total = sum(sum(by.values()) for _, by in series)
    rects, top = _bars(series, 320, 60, f"{name}, ")
    scale = f"{_n(total)} use{'s' if total != 1 else ''}, at most {_n(top)} in a week" if total else "no use in these weeks"
    return (f'<li><figure data-purpose="{_e(code)}" data-total="{total}"><figcaption><strong>{_e(name)}</strong>: {scale}</figcaption>'
            f'<svg viewBox="0 0 320 60" role="img" aria-label="{_e(name)}: {scale}" preserveAspectRatio="none">{rects}</svg></figure></li>')


def _checkpoint(state: State, size: int) -> str:
    if size == 0:
        return "<section><h2>The latest checkpoint</h2><p>No checkpoint has been published yet.</p></section>"
    note = state.published_note()
    text, _ = parse_note(note)
    cp = Checkpoint.parse(text)
    ((_, last, _),) = list(iter_leaves(state.store, size - 1, size - 1 + 1))
    made = parse_leaf(last).logged_at
    keys_html = "".join(f"<li><code>{_e(k)}</code></li>" for k in state.verifier_keys())
    quorum = state.witness_quorum
    return f"""<section aria-labelledby="checkpoint-title">
<h2 id="checkpoint-title">The latest checkpoint</h2>
<p>A checkpoint is the log's signed promise about everything written so far: <strong data-figure="size">{_n(cp.size)}</strong>
entries, made {_e(_when(made))}. Anyone can check that every later checkpoint still contains it unchanged.</p>
<dl class="facts">
<dt>Log</dt><dd><code>{_e(cp.origin)}</code></dd>
<dt>Entries</dt><dd>{_n(cp.size)}</dd>
<dt>Root hash</dt><dd><code class="hash">{_e(text.decode().split(chr(10))[2])}</code></dd>
<dt>Signed with the log's key</dt><dd><ul class="keys">{keys_html}</ul></dd>
{_witnesses(quorum, note)}
</dl>
{_about_witnesses(quorum)}
<div id="browser-check" class="verdict pending" role="status" aria-live="polite"><p>Your browser can check this checkpoint's signatures itself; that needs JavaScript.</p></div>
</section>"""


def _witnesses(quorum: WitnessQuorum | None, note: bytes) -> str:
    """The quorum file's witnesses, each with the time of its cosignature on the note or the fact that it did
    not cosign; public.js replaces the list with what the browser verified itself."""
    if quorum is None:
        return ('<dt>Cosigned by witnesses</dt><dd><p id="witness-list">None: this log runs without witnesses.</p></dd>')
    cosigned = quorum.cosigners(note)
    items = "".join(
        f'<li data-witness="{_e(name)}" data-status="cosigned">{_e(name)}: cosigned at {_e(_when(format_logged_at(cosigned[name] * 1000)))}</li>'
        if name in cosigned else f'<li data-witness="{_e(name)}" data-status="missing">{_e(name)}: did not cosign it</li>'
        for name in quorum.witnesses)
    keys = "".join(f"<li>{_e(w.name)}: <code>{_e(w.verifier.key)}</code></li>" for w in quorum.witnesses.values())
    return (f'<dt>Cosigned by witnesses</dt><dd><ul id="witness-list" class="keys">{items}</ul></dd>'
            f'<dt>The witnesses\' keys</dt><dd><ul class="keys">{keys}</ul></dd>')


def _about_witnesses(quorum: WitnessQuorum | None) -> str:
    if quorum is None:
        return ("<p>Without witnesses, nobody independent cosigns the checkpoints: a log showing different histories to "
                "different people would be caught only by those who compare what they saw, such as <code>tlog monitor</code>.</p>")
    return f"""<p>Witnesses are independent services that cosign a checkpoint only if it extends every checkpoint they
cosigned before, so that the log cannot show one history to some people and another to others. This log publishes a
checkpoint only once its witness quorum, <strong id="quorum">{_e(words.quorum_words(quorum))}</strong>, has cosigned it,
and your browser checks the cosignatures with the witnesses' keys above.</p>
<p>Those keys come from the log itself, so to check without trusting it, get each key from whoever runs the witness
and give them to <code>tlog audit --witness-policy</code> or <code>tlog monitor --witness-policy</code>.</p>"""


def _how_to_verify(state: State) -> str:
    key = state.verifier_keys()[0] if state.verifier_keys() else "KEY"
    return f"""<section aria-labelledby="verify-title">
<h2 id="verify-title">Check it yourself</h2>
<p>You do not have to trust this page. The log is public, and tlog's own tools check it from the outside. Compare the
key below with the one the platform publishes elsewhere (its website, its terms), then run:</p>
<pre><code>tlog verify --url <span class="site-url">https://this-site</span> --vkey {_e(key)}
tlog monitor --url <span class="site-url">https://this-site</span> --vkey {_e(key)} --state ~/.tlog-monitor --follow
tlog audit --url <span class="site-url">https://this-site</span> --vkey {_e(key)} --artist YOUR-ARTIST-ID --token YOUR-TOKEN</code></pre>
<p>The first re-derives every entry and the tree from the public tiles; the second follows the log over time and warns
of any rewrite; the third is what an artist runs to check its own record. The raw data: <a href="/checkpoint">the checkpoint</a>,
<a href="/v1/stats">the statistics</a>, <a href="/v1/policies">the policies</a>, <a href="/v1/log">the log's keys</a>.</p>
</section>"""


def setup(app: web.Application) -> None:
    """Adds the pages' routes (and checks the assets build)."""
    assets()
    app.add_routes(routes)
