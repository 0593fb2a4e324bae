"""The reliability report: tlog under crashes, faults and hostile input, with figures.

Runs, on loopback only and bounded in time (a few minutes):
  1. the kill loop: `tlog serve` under load from the Python client, SIGKILLed at random moments (50
     times by default), restarted each time; every acknowledged record must be there exactly once, every
     checkpoint ever served consistent with the next;
  2. the spool outage: a service logs through the client's BatchLogger (durable spool) while the server
     is killed and kept down; nothing it logged may be lost;
  3. the crash matrix, disk and resource faults and tamper detection (tests/test_crash.py,
     tests/test_faults.py, tests/test_tamper.py), counting every injected fault;
  4. a locked database against the real server and CLI with the default busy timeout;
  5. the fuzzing campaign of scripts/fuzz (schemathesis against the running server), when it exists;
  6. bounded work: `GET /checkpoint` latency while one artist's audit of 20,000 entries (every page) and
     `uses` listings whose filter matches nothing run, against the same server idle, in alternating
     rounds; those reads must not delay it by more than 50 ms (p99);
  7. the cluster kill loop (when PostgreSQL is installed): three `tlog serve` front ends of one
     PostgreSQL log under load from the Python client, the sequencing one SIGKILLed at random (30 times
     by default) and restarted; every acknowledged record there exactly once, every served checkpoint
     consistent with the next, `tlog verify` clean, and the failover time (SIGKILL to the first
     acknowledged write sent after it) p50 / p99, p99 under 5 s.

Prints a table; exits 0 only if nothing acknowledged was lost, nothing forked, nothing was duplicated
and no bad input got a 5xx.

    scripts/reliability                      # the default run
    scripts/reliability --kills 200          # longer
    scripts/reliability --quick              # 10 kills, short fuzzing: a smoke test
    scripts/reliability --only-cluster --cluster-kills 50   # the cluster kill loop alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faultkit import cli, http, make_token, serve, stop  # noqa: E402
from tests.clusterloop import ClusterReport, cluster_kill_loop  # noqa: E402
from tests.killloop import KillReport, kill_loop, spool_outage  # noqa: E402
from tlog.log import init_log  # noqa: E402
from tlog.pglocal import LocalPostgres, pg_bin  # noqa: E402


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_pytest(files: list[str], timeout: float) -> dict[str, Any]:
    """Runs test files with tests.faultkit as a plugin; returns its figures (injected faults, outcomes)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        report = Path(f.name)
    env = {**os.environ, "TLOG_FAULT_REPORT": str(report)}
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.faultkit", "-p", "no:cacheprovider",
                               *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        out = json.loads(report.read_text() or "{}")
        out["stdout"] = proc.stdout[-3000:]
        out["returncode"] = proc.returncode
    except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
        out = {"injected": {}, "tests": {}, "returncode": -1, "stdout": str(exc)}
    finally:
        report.unlink(missing_ok=True)
    out["seconds"] = time.monotonic() - t0
    return out


def locked_with_default_timeout(work: Path) -> dict[str, Any]:
    """Another process holds the write lock: POST /v1/uses must answer 503 within the busy timeout (5 s)
    and `tlog append` exit 1 with one line; both succeed once the lock goes. No corruption."""
    db = work / "tlog.db"
    init_log(db, "locked.example/log").close()
    token = make_token(db, "--service", "svc")
    server = serve(db)
    res: dict[str, Any] = {"ok": False}
    rec = {"event_id": "locked-1", "content_id": "sc:track:1", "artist_id": "sc:user:1", "purpose": "recommendation",
           "phase": "inference", "system": {"id": "s", "model": "m", "version": "1"},
           "occurred_at": "2026-01-01T00:00:00Z"}
    try:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        status, body = http("POST", server.url + "/v1/uses", rec, token, timeout=30)
        res["http_seconds"] = round(time.monotonic() - t0, 2)
        res["http_status"] = status
        res["http_error"] = json.loads(body)["error"]["message"] if status != 200 else None
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "tlog.cli", "append", "--db", str(db), "--service", "cli", "-"],
                           input=json.dumps({**rec, "event_id": "locked-2"}), capture_output=True, text=True, timeout=60)
        res["cli_seconds"] = round(time.monotonic() - t0, 2)
        res["cli_stderr"] = p.stderr.strip()
        res["cli_rc"] = p.returncode
        other.execute("ROLLBACK")
        other.close()
        status2, _ = http("POST", server.url + "/v1/uses", rec, token)
        res["after_status"] = status2
    finally:
        stop(server)
    verify = cli("verify", "--db", str(db), "--quiet", check=False)
    res["verify"] = verify.returncode == 0
    res["ok"] = (res["http_status"] == 503 and res["http_seconds"] < 10 and res["cli_rc"] == 1
                 and len(res["cli_stderr"].splitlines()) == 1 and res["after_status"] == 200 and res["verify"])
    return res


AUDIT_ENTRIES = 20_000
DELAY_BUDGET_MS = 50.0


def _busy_artist_log(db: Path, entries: int) -> None:
    """A log where one artist has `entries` uses among others' (every tenth record is another's)."""
    from datetime import datetime, timezone

    from tlog.demo import sample_records
    from tlog.records import validate_use
    from tlog.sequencer import Submission

    log = init_log(db, "bounds.example/log")
    seq = log.sequencer()
    now = datetime.now(timezone.utc)
    purposes = seq.policy.purposes  # type: ignore[union-attr]
    made = 0
    for batch in range(entries * 10 // 9 // 1000 + 1):
        recs = []
        for k, (_, r) in enumerate(sample_records(1000, seed=batch, artists=5)):
            mine = k % 10 != 0 and made < entries
            made += mine
            r.update(event_id=f"busy-{batch}-{k}", artist_id="sc:user:busy" if mine else f"sc:user:other-{k % 7}")
            recs.append(validate_use(r, now=now, purposes=purposes))
        seq.append_uses([Submission("svc", recs)])
    log.close()


def _audit_load(url: str, token: str, stop_at: float) -> None:
    """From two threads, until `stop_at` (time.time()): walks the busy artist's whole audit, page by page,
    and lists its uses under filters that match nothing (SQLite scans its whole history to say so)."""
    import threading

    base = f"{url}/v1/artists/sc:user:busy"

    def walk() -> None:
        while time.time() < stop_at:
            status, body = http("GET", f"{base}/audit", token=token, timeout=120)
            page = orjson.loads(body)
            size = page["checkpoint"].split("\n")[1] if status == 200 else ""
            while status == 200 and page["next_aseq"] is not None and time.time() < stop_at:
                status, body = http("GET", f"{base}/audit?size={size}&from_aseq={page['next_aseq']}", token=token, timeout=120)
                page = orjson.loads(body)
            http("GET", f"{base}/uses?content_id=sc:track:none", token=token, timeout=120)
            http("GET", f"{base}/uses?purpose=talent_discovery&decision=allowed_override", token=token, timeout=120)

    threads = [threading.Thread(target=walk) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _checkpoint_latencies(url: str, seconds: float) -> list[float]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        status, _ = http("GET", url + "/checkpoint")
        out.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            out[-1] = float("inf")
        time.sleep(0.01)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def audit_vs_checkpoint(work: Path, rounds: int = 3, seconds: float = 6.0) -> dict[str, Any]:
    """`GET /checkpoint` latency, idle and while the busy artist's audits and empty listings run (in
    another process), alternating idle and busy rounds so that the machine's own drift hits both."""
    import multiprocessing

    work.mkdir(parents=True, exist_ok=True)
    db = work / "tlog.db"
    t0 = time.monotonic()
    _busy_artist_log(db, AUDIT_ENTRIES)
    token = make_token(db, "--auditor")
    res: dict[str, Any] = {"build_seconds": round(time.monotonic() - t0, 1)}
    server = serve(db)
    idle: list[float] = []
    busy: list[float] = []
    audits = 0
    try:
        url = server.url
        status, body = http("GET", f"{url}/v1/artists/sc:user:busy/summary", token=token, timeout=120)
        res["busy_artist_entries"] = json.loads(body)["entries"] if status == 200 else None
        for _ in range(rounds):
            idle += _checkpoint_latencies(url, seconds)
            load = multiprocessing.get_context("fork").Process(target=_audit_load, args=(url, token, time.time() + seconds + 1))
            load.start()
            time.sleep(1.0)  # the audits are under way
            busy += _checkpoint_latencies(url, seconds)
            load.join()
            audits += 1
    finally:
        stop(server)
    res.update(
        rounds=audits, idle_n=len(idle), busy_n=len(busy),
        idle_p50=_pct(idle, 0.5), idle_p99=_pct(idle, 0.99), busy_p50=_pct(busy, 0.5), busy_p99=_pct(busy, 0.99),
    )
    res["delay_p99_ms"] = res["busy_p99"] - res["idle_p99"]
    res["ok"] = res["delay_p99_ms"] <= DELAY_BUDGET_MS and res["busy_artist_entries"] is not None
    return res


def run_fuzz(examples: int, timeout: float) -> dict[str, Any] | None:
    script = ROOT / "scripts" / "fuzz"
    if not script.exists() or examples <= 0:
        return None
    env = {**os.environ, "FUZZ_EXAMPLES": str(examples)}
    t0 = time.monotonic()
    try:
        p = subprocess.run([str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "note": f"scripts/fuzz did not finish in {timeout:.0f} s"}
    figures = {k: int(v) for k, v in re.findall(r"^(cases tried|2xx|4xx|5xx|refused writes|tracebacks)\s+(\d+)",
                                                  p.stdout, re.M)}
    return {"ok": p.returncode == 0, "returncode": p.returncode, "seconds": time.monotonic() - t0, **figures,
            "tail": (p.stdout + p.stderr)[-1500:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=50, help="SIGKILLs in the kill loop (default 50)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients in the kill loop")
    ap.add_argument("--outages", type=int, default=4, help="server outages during the spool run")
    ap.add_argument("--outage", type=float, default=1.5, help="seconds each outage lasts")
    ap.add_argument("--fuzz-examples", type=int, default=30, help="scripts/fuzz cases per operation (0: skip)")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--quick", action="store_true", help="10 kills, 2 outages, a short fuzz")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--only-bounds", action="store_true", help="run only section 6 (bounded work)")
    ap.add_argument("--cluster-kills", type=int, default=30, help="SIGKILLs of the sequencer in the cluster kill loop")
    ap.add_argument("--only-cluster", action="store_true", help="run only section 7 (the cluster kill loop)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.quick:
        args.kills, args.outages, args.outage, args.fuzz_examples = 10, 2, 0.7, min(args.fuzz_examples, 10)
        args.cluster_kills = min(args.cluster_kills, 5)
    logging.basicConfig(level=logging.ERROR)  # the client's "cannot deliver yet, retrying" is the point here
    work = Path(tempfile.mkdtemp(prefix="tlog-reliability-"))
    t0 = time.monotonic()
    figures: dict[str, Any] = {"seed": args.seed}
    say(f"reliability run, seed {args.seed}, work dir {work}")
    if args.only_bounds:
        return _bounds_only(work)
    if args.only_cluster:
        return _cluster_only(work, args)

    say(f"1/7 kill loop: {args.kills} SIGKILLs of tlog serve under load from {args.clients} clients")
    kl: KillReport = asyncio.run(kill_loop(work / "kill", kills=args.kills, clients=args.clients, seed=args.seed, say=say))
    figures["kill_loop"] = kl.as_dict()

    say(f"2/7 spool: {args.outages} outages of {args.outage} s while a service logs through BatchLogger")
    sp: KillReport = asyncio.run(spool_outage(work / "spool", outages=args.outages, outage=args.outage,
                                              seed=args.seed, say=say))
    figures["spool"] = sp.as_dict()

    say("3/7 crash matrix, disk and resource faults, tamper detection (pytest)")
    suites = {}
    for name, files in (("crash", ["tests/test_crash.py"]), ("faults", ["tests/test_faults.py"]),
                        ("tamper", ["tests/test_tamper.py"])):
        suites[name] = run_pytest(files, timeout=300)
    figures["suites"] = {k: {kk: vv for kk, vv in v.items() if kk != "stdout"} for k, v in suites.items()}

    say("4/7 a locked database, default busy timeout, real server and CLI")
    (work / "locked").mkdir()
    locked = locked_with_default_timeout(work / "locked")
    figures["locked"] = locked

    say(f"5/7 fuzzing (scripts/fuzz, {args.fuzz_examples} cases per operation)")
    fuzz = run_fuzz(args.fuzz_examples, timeout=600)
    figures["fuzz"] = fuzz

    say(f"6/7 bounded work: /checkpoint while an audit of {AUDIT_ENTRIES:,} entries runs")
    bounds = audit_vs_checkpoint(work / "bounds")
    figures["bounds"] = bounds

    cl = run_cluster(work, args)
    figures["cluster"] = None if cl is None else cl.as_dict()
    figures["seconds"] = round(time.monotonic() - t0, 1)

    ok = _print(figures, kl, sp, suites, locked, fuzz, bounds, cl)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    if not args.keep and ok:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if ok else 1


FAILOVER_P99_S = 5.0  # the target: from SIGKILL of the sequencer to the next acknowledged write


def run_cluster(work: Path, args: argparse.Namespace) -> ClusterReport | None:
    """The cluster kill loop on a scratch PostgreSQL of its own; None where PostgreSQL is not installed."""
    if pg_bin() is None:
        say("7/7 cluster kill loop: not run, PostgreSQL is not installed (scripts/install-postgres)")
        return None
    say(f"7/7 cluster kill loop: {args.cluster_kills} SIGKILLs of the sequencing front end among 3, under load")
    pg = LocalPostgres.create().start()
    try:
        return asyncio.run(cluster_kill_loop(work / "cluster", pg, kills=args.cluster_kills, clients=args.clients,
                                             seed=args.seed, say=say))
    finally:
        pg.remove()


def _cluster_rows(cl: ClusterReport | None) -> list[tuple[str, str, bool | None]]:
    if cl is None:
        return [("cluster kill loop: not run (PostgreSQL is not installed)", "", None)]
    return [
        (f"cluster kill loop ({cl.fronts} front ends, one PostgreSQL)", "", None),
        ("  SIGKILLs of the sequencing front end", str(cl.kills), cl.kills > 0),
        ("  records acknowledged", str(cl.acknowledged), cl.acknowledged == cl.sent > 0),
        ("  acknowledged records lost / duplicates", f"{cl.lost + cl.wrong} / {cl.duplicates}", cl.lost + cl.wrong + cl.duplicates == 0),
        ("  checkpoints served (polled), forks / rollbacks", f"{cl.checkpoints}, {cl.forks} / {cl.rollbacks}",
         cl.forks + cl.rollbacks == 0),
        ("  batches refused by the fence", str(cl.fence_refusals), None),
        ("  tlog verify --db postgresql://…", "clean" if cl.verified else "FAILED", cl.verified),
        ("  unexpected answers, tracebacks", f"{cl.unexpected}, {cl.tracebacks}", cl.unexpected + cl.tracebacks == 0),
        ("  failover p50 / p99 / max, s", f"{cl.percentile(50):.2f} / {cl.percentile(99):.2f} / "
         f"{max(cl.failovers, default=0):.2f}", cl.percentile(99) < FAILOVER_P99_S and cl.ok()),
        ("  seconds", f"{cl.seconds:.0f}", None),
    ]


def _cluster_only(work: Path, args: argparse.Namespace) -> int:
    cl = run_cluster(work, args)
    rows = _cluster_rows(cl)
    width = max(len(r[0]) for r in rows) + 2
    print()
    for what, value, good in rows:
        print(f"{what:<{width}}{value:>24}  {'' if good is None else 'ok' if good else 'FAIL'}")
    ok = cl is not None and all(good is not False for _, _, good in rows)
    if ok and not args.keep:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if ok else 1


def _outcomes(suite: dict[str, Any]) -> tuple[int, int, int, list[str]]:
    tests = suite.get("tests", {})
    passed = sum(1 for t in tests.values() if t["outcome"] == "passed")
    failed = [n for n, t in tests.items() if t["outcome"] == "failed"]
    skipped = sum(1 for t in tests.values() if t["outcome"] == "skipped")
    return passed, len(failed), skipped, failed


def _bounds_rows(bounds: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (f"bounded work (an audit of {AUDIT_ENTRIES:,} entries)", "", ""),
        ("  the busy artist's entries (its summary)", str(bounds.get("busy_artist_entries")), ""),
        ("  rounds idle / busy, GET /checkpoint each", f"{bounds['rounds']} ({bounds['idle_n']} / {bounds['busy_n']})", ""),
        ("  /checkpoint idle p50 / p99, ms", f"{bounds['idle_p50']:.1f} / {bounds['idle_p99']:.1f}", ""),
        ("  /checkpoint during audits p50 / p99, ms", f"{bounds['busy_p50']:.1f} / {bounds['busy_p99']:.1f}", ""),
        (f"  delay at p99, ms (at most {DELAY_BUDGET_MS:.0f})", f"{bounds['delay_p99_ms']:.1f}",
         "ok" if bounds["ok"] else "FAIL"),
    ]


def _bounds_only(work: Path) -> int:
    bounds = audit_vs_checkpoint(work / "bounds")
    rows = _bounds_rows(bounds)
    width = max(len(r[0]) for r in rows) + 2
    print()
    for what, value, mark in rows:
        print(f"{what:<{width}}{value:>18}  {mark}")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if bounds["ok"] else 1


def _print(figures: dict[str, Any], kl: KillReport, sp: KillReport, suites: dict[str, Any], locked: dict[str, Any],
           fuzz: dict[str, Any] | None, bounds: dict[str, Any], cl: ClusterReport | None) -> bool:
    rows: list[tuple[str, str, str]] = []
    ok = True

    def row(what: str, value: Any, good: bool | None = None) -> None:
        nonlocal ok
        mark = "" if good is None else ("ok" if good else "FAIL")
        ok &= good is not False
        rows.append((what, str(value), mark))

    crash = suites["crash"]
    injected = sum(crash.get("injected", {}).values())
    rows.append(("kill loop", "", ""))
    row("  SIGKILLs of tlog serve under load", kl.kills, kl.kills > 0)
    row("  records acknowledged", kl.acknowledged, kl.acknowledged == kl.sent and kl.sent > 0)
    row("  resent after a kill, answered 'already logged'", kl.duplicate_answers)
    row("  checkpoints served (polled)", kl.checkpoints)
    row("  acknowledged records lost", kl.lost + kl.wrong, kl.lost + kl.wrong == 0)
    row("  duplicates", kl.duplicates, kl.duplicates == 0)
    row("  forks / rollbacks between served checkpoints", f"{kl.forks} / {kl.rollbacks}", kl.forks + kl.rollbacks == 0)
    row("  unexpected answers, tracebacks", f"{kl.unexpected}, {kl.tracebacks}", kl.unexpected + kl.tracebacks == 0)
    row("  map roots checked after each start / wrong", f"{kl.map_checks} / {kl.map_errors}", kl.map_errors == 0)
    row("  seconds", f"{kl.seconds:.0f}")
    rows.append(("spool outage (client BatchLogger)", "", ""))
    row("  outages (server SIGKILLed, down a while)", sp.kills, sp.kills > 0)
    row("  records the service logged / acknowledged", f"{sp.sent} / {sp.acknowledged}", sp.sent == sp.acknowledged > 0)
    row("  lost / duplicates / forks", f"{sp.lost + sp.wrong} / {sp.duplicates} / {sp.forks + sp.rollbacks}",
        sp.lost + sp.wrong + sp.duplicates + sp.forks + sp.rollbacks == 0 and sp.ok())
    rows.append(("crash matrix (tests/test_crash.py)", "", ""))
    for kind, n in sorted(crash.get("injected", {}).items()):
        row(f"  {kind}", n)
    p, f, s, failed = _outcomes(crash)
    row("  scenarios passed / failed", f"{p} / {f}", f == 0 and crash.get("returncode") == 0)
    for n in failed:
        rows.append((f"    failed: {n.split('::')[-1]}", "", "FAIL"))
        say(f"--- {n}\n{crash['tests'][n].get('message', '')}")
    for name in ("faults", "tamper"):
        p, f, s, failed = _outcomes(suites[name])
        title = {"faults": "disk and resource faults (tests/test_faults.py)",
                 "tamper": "tamper detection (tests/test_tamper.py)"}[name]
        rows.append((title, "", ""))
        row("  scenarios passed / failed / skipped", f"{p} / {f} / {s}", f == 0 and suites[name].get("returncode") == 0)
        for n in failed:
            rows.append((f"    failed: {n.split('::')[-1]}", "", "FAIL"))
            say(f"--- {n}\n{suites[name]['tests'][n].get('message', '')}")
        for n, t in suites[name].get("tests", {}).items():
            if t["outcome"] == "skipped":
                rows.append((f"    skipped: {n.split('::')[-1]}: {t.get('reason', '')[:60]}", "", ""))
    rows.append(("locked database, default busy timeout", "", ""))
    row("  POST /v1/uses answered", f"{locked.get('http_status')} in {locked.get('http_seconds')} s",
        locked.get("http_status") == 503)
    row("  tlog append", f"exit {locked.get('cli_rc')} in {locked.get('cli_seconds')} s", locked.get("cli_rc") == 1)
    row("  after the lock went / verify", f"{locked.get('after_status')} / {'ok' if locked.get('verify') else 'FAIL'}",
        locked.get("ok"))
    rows.append(("fuzzing (scripts/fuzz)", "", ""))
    if fuzz is None:
        rows.append(("  not run (no scripts/fuzz, or --fuzz-examples 0)", "", ""))
    else:
        row("  bad and good inputs tried", fuzz.get("cases tried", "?"))
        row("  5xx seen", fuzz.get("5xx", "?"), fuzz.get("5xx") == 0 and fuzz.get("ok"))
    for what, value, mark in _bounds_rows(bounds):
        row(what, value, None if not mark else mark == "ok")
    for what, value, good in _cluster_rows(cl):
        row(what, value, good)

    clusters = [cl] if cl is not None else []
    crashes = kl.kills + sp.kills + injected + sum(c.kills for c in clusters)
    lost = kl.lost + kl.wrong + sp.lost + sp.wrong + sum(c.lost + c.wrong for c in clusters)
    forks = kl.forks + kl.rollbacks + sp.forks + sp.rollbacks + sum(c.forks + c.rollbacks for c in clusters)
    dups = kl.duplicates + sp.duplicates + sum(c.duplicates for c in clusters)
    width = max(len(r[0]) for r in rows) + 2
    print(f"\ntlog reliability report (seed {figures['seed']}, {figures['seconds']:.0f} s, loopback only)\n")
    for what, value, mark in rows:
        print(f"{what:<{width}}{value:>18}  {mark}")
    print("\nsummary")
    summary = [
        ("crashes survived (SIGKILLs, outages, injected faults)", crashes),
        ("acknowledged records lost (must be 0)", lost),
        ("forks or rollbacks (must be 0)", forks),
        ("duplicates (must be 0)", dups),
        ("bad inputs tried", "-" if fuzz is None else fuzz.get("cases tried", "?")),
        ("5xx seen on bad input (must be 0)", "-" if fuzz is None else fuzz.get("5xx", "?")),
    ]
    for what, value in summary:
        print(f"  {what:<56}{value!s:>10}")
    print(f"\n{'ALL HELD' if ok else 'SOMETHING FAILED: see FAIL above'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
