"""What the public log tells about a pseudonymous artist tag: measured on the demo log and on a large log.

Only public leaves are read (the bytes the tiles serve): for each tag, its leaves' purposes, decisions,
invocations and `logged_at`. Figures:

- fingerprints: how many tags are alone (unique), or in a crowd of fewer than 5, when tags are grouped
  by what an observer can count: leaf count; + refusal share; + purpose mix (leaves per purpose and
  decision); + total invocations; and a coarse form (count to two significant digits, the set of
  purposes, refusal share to 10 %). The same within one epoch (a thirtieth of the log), as per-epoch
  tags would allow.
- opt-outs that show: tags refused a purpose that the policy allows by default.
- time: for an observer who knows when one use of an artist's content happened (they streamed it, or
  know the release day), the tags in the log at that time, for public times of batch, second, minute,
  hour and day precision; and how many such observations single the artist's tag out.

The large log is built as scripts/bench builds its 1M log (the sequencer, batches of 1000, the child
writer), with a skewed artist distribution: artist k (k = 1…N) is named by a use with probability
∝ 1/k^s (Zipf, s = --zipf), and some artists set preferences first (--strict, --deny shares).
Times: the sequencer stamps a batch when it commits, so a large log built in minutes has no realistic
times. The time figures use the log's own uses in order, each given an arrival time from a Poisson
stream at --rate uses/s, and a batch per --window of group commit (what a server under that load
does); the figures depend only on that model and on which tags the uses name.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from tlog.demo import SERVICES, WEIGHTS, build_demo
from tlog.log import init_log, open_log
from tlog.policy import DEFAULT_POLICY
from tlog.records import parse_logged_at, validate_use
from tlog.rederive import iter_leaves
from tlog.sequencer import Submission

CHAIN = ("use", "refusal")
CROWD = 5  # "in a crowd of fewer than 5": k-anonymity below 5
PRECISIONS = (("batch (ms)", 0), ("1 s", 1_000), ("1 min", 60_000), ("1 h", 3_600_000), ("1 day", 86_400_000))


@dataclass
class Use:
    tag: str
    purpose: str
    decision: str
    invocations: int
    logged_ms: int


# --- reading the public leaves --------------------------------------------------------------------------


def public_uses(db: Path) -> tuple[list[Use], set[str]]:
    """The use and refusal leaves of a log, in order, and the tags that have a preference leaf."""
    log = open_log(db, readonly=True)
    try:
        size = log.latest_checkpoint()[0].size
        uses, preferring = [], set()
        for _, leaf, _ in iter_leaves(log.store, 0, size):
            obj = orjson.loads(leaf)
            if obj["type"] in CHAIN:
                uses.append(Use(obj["artist"], obj["purpose"], obj["decision"], obj["invocations"],
                                parse_logged_at(obj["logged_at"])))
            elif obj["type"] == "preference":
                preferring.add(obj["artist"])
        return uses, preferring
    finally:
        log.close()


# --- fingerprints -----------------------------------------------------------------------------------------


def _count(uses: Sequence[Use]) -> int:
    return len(uses)


def _refusal_share(uses: Sequence[Use]) -> tuple[int, int]:
    return len(uses), sum(u.decision == "refused" for u in uses)


def _mix(uses: Sequence[Use]) -> tuple[int, int, tuple[tuple[str, str, int], ...]]:
    c = Counter((u.purpose, u.decision) for u in uses)
    return (*_refusal_share(uses), tuple(sorted((p, d, n) for (p, d), n in c.items())))


def _mix_invocations(uses: Sequence[Use]) -> tuple[Hashable, ...]:
    return (_mix(uses), sum(u.invocations for u in uses))


def _coarse(uses: Sequence[Use]) -> tuple[Hashable, ...]:
    n = len(uses)
    two_digits = round(n, 1 - int(math.log10(n))) if n else 0
    return two_digits, frozenset(u.purpose for u in uses), round(10 * _refusal_share(uses)[1] / n)


FINGERPRINTS: list[tuple[str, Callable[[Sequence[Use]], Hashable]]] = [
    ("leaf count", _count),
    ("leaf count, refusal share", _refusal_share),
    ("leaf count, purpose mix, refusal share", _mix),
    ("  + total invocations", _mix_invocations),
    ("coarse: count ~2 digits, purposes used, refusals ~10%", _coarse),
]


def crowds(by_tag: dict[str, list[Use]], fingerprint: Callable[[Sequence[Use]], Hashable]) -> tuple[float, float, float]:
    """(share of tags alone, share in a crowd < CROWD, median crowd size) under a fingerprint."""
    prints = {tag: fingerprint(us) for tag, us in by_tag.items()}
    sizes = Counter(prints.values())
    per_tag = [sizes[p] for p in prints.values()]
    n = len(per_tag)
    return sum(s == 1 for s in per_tag) / n, sum(s < CROWD for s in per_tag) / n, statistics.median(per_tag)


def group(uses: Sequence[Use]) -> dict[str, list[Use]]:
    by_tag: dict[str, list[Use]] = defaultdict(list)
    for u in uses:
        by_tag[u.tag].append(u)
    return by_tag


def visible_opt_outs(by_tag: dict[str, list[Use]]) -> int:
    """Tags refused a purpose the default policy allows (or flags): only a preference refuses those."""
    defaults = {code: p.default for code, p in DEFAULT_POLICY.purposes.items()}
    return sum(any(u.decision == "refused" and defaults.get(u.purpose) != "refused" for u in us) for us in by_tag.values())


# --- time ---------------------------------------------------------------------------------------------------


def modelled_times(uses: Sequence[Use], rate: float, window_ms: int, seed: int) -> list[int]:
    """A public time per use: Poisson arrivals at `rate`/s, each stamped with the end of its group-commit
    window, as a server under that load would (one batch, one logged_at, per window that has uses)."""
    rnd = random.Random(seed)
    t, out = 0.0, []
    for _ in uses:
        t += rnd.expovariate(rate)
        out.append((int(t * 1000) // window_ms + 1) * window_ms)
    return out


def time_candidates(uses: Sequence[Use], times: Sequence[int], precision_ms: int, samples: int,
                    seed: int) -> tuple[float, float, float]:
    """For tags picked at random (each tag alike, not weighted by volume), an observer who knows the times
    of the tag's uses to `precision_ms` (0: the exact batch): the median number of tags in the log at the
    time of one of those uses; the share of tags that the times of their uses (up to 50 of them) single
    out; and, for those, the median number of known uses it took."""
    slot = (lambda ms: ms) if precision_ms == 0 else (lambda ms: ms // precision_ms)
    tags_at: dict[int, set[str]] = defaultdict(set)
    at_of_tag: dict[str, list[int]] = defaultdict(list)
    for u, ms in zip(uses, times):
        s = slot(ms)
        tags_at[s].add(u.tag)
        at_of_tag[u.tag].append(s)
    rnd = random.Random(seed)
    tags = sorted(at_of_tag)
    sizes, needed = [], []
    for tag in (rnd.choice(tags) for _ in range(samples)):
        slots = list(dict.fromkeys(at_of_tag[tag]))
        rnd.shuffle(slots)
        sizes.append(len(tags_at[slots[0]]))
        candidates = set(tags_at[slots[0]])
        for k, s in enumerate(slots[:50], 1):
            candidates &= tags_at[s]
            if len(candidates) == 1:
                needed.append(k)
                break
    return statistics.median(sizes), len(needed) / samples, statistics.median(needed) if needed else math.inf


# --- building the large log --------------------------------------------------------------------------------


def skewed_records(n: int, artists: int, zipf: float, seed: int) -> Iterator[tuple[str, dict]]:
    """demo.sample_records' services and records, with artist k named ∝ 1/k^zipf."""
    rnd = random.Random(seed)
    names = list(SERVICES)
    cum = list(_cumulative([1 / (k ** zipf) for k in range(1, artists + 1)]))
    t0 = time.time() - n * 0.01 - 3600
    for i in range(n):
        service = rnd.choices(names, WEIGHTS)[0]
        system_id, model, phase, purpose, detail = SERVICES[service]
        artist = bisect.bisect_left(cum, rnd.random() * cum[-1])
        when = datetime.fromtimestamp(t0 + i * 0.01, timezone.utc)
        yield service, {
            "event_id": f"{service}-{seed}-{i:09d}", "content_id": f"sc:track:{artist * 1000 + rnd.randrange(20)}",
            "artist_id": f"sc:user:{artist + 1}", "purpose": purpose, "phase": phase,
            "system": {"id": system_id, "model": model, "version": "2026.07.3"},
            "occurred_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "invocations": rnd.choice([1, 1, 1, 12, 240]),
            "detail": detail, "basis": None,
        }


def _cumulative(weights: Sequence[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def build_large(db: Path, n: int, artists: int, zipf: float, strict: float, deny: float, seed: int) -> None:
    rnd = random.Random(seed + 1)
    log = init_log(db, "privacy.tlog.example/log")
    seq = log.sequencer(writer=log.process_writer())
    for k in range(1, artists + 1):
        r = rnd.random()
        if r < strict:
            seq.set_preferences(f"sc:user:{k}", {"strict": True}, by="artist")
        elif r < strict + deny:
            seq.set_preferences(f"sc:user:{k}", {"purposes": {"talent_discovery": "deny"}}, by="artist")
    purposes = seq.policy.purposes  # type: ignore[union-attr]
    records = skewed_records(n, artists, zipf, seed)

    def batches() -> Iterator[list[Submission]]:
        while chunk := [r for _, r in zip(range(1000), records)]:
            now = datetime.now(timezone.utc)
            by_service: dict[str, list] = defaultdict(list)
            for service, rec in chunk:
                by_service[service].append(validate_use(rec, now=now, purposes=purposes))
            yield [Submission(s, rs) for s, rs in by_service.items()]

    for results in seq.append_all(batches()):
        for r in results:
            if isinstance(r, Exception):
                raise r
    seq.close()
    log.close()


# --- report -------------------------------------------------------------------------------------------------


def report(name: str, db: Path, args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    uses, preferring = public_uses(db)
    by_tag = group(uses)
    print(f"\n## {name}: {len(uses):,} use and refusal leaves, {len(by_tag):,} tags "
          f"(read from the public leaves in {time.perf_counter() - t0:.0f} s)\n")
    leaves = sorted(len(us) for us in by_tag.values())
    print(f"leaves per tag: min {leaves[0]}, median {statistics.median(leaves):g}, max {leaves[-1]:,}; "
          f"tags with a preference leaf: {len(preferring):,}; tags whose opt-out shows (refused a purpose "
          f"allowed by default): {visible_opt_outs(by_tag):,}\n")
    print(f"| tags grouped by | alone | in a crowd < {CROWD} | median crowd |")
    print("|---|---:|---:|---:|")
    for label, fp in FINGERPRINTS:
        alone, small, median = crowds(by_tag, fp)
        print(f"| {label} | {alone:.1%} | {small:.1%} | {median:g} |")
    epoch = uses[: max(1, len(uses) // args.epochs)]
    alone, small, median = crowds(group(epoch), _mix)
    print(f"| one epoch (1/{args.epochs} of the log, per-epoch tags): count, mix, refusals | {alone:.1%} | {small:.1%} | {median:g} |")
    exact = Counter(u.logged_ms for u in uses)
    print(f"\npublic times as logged: {len(exact):,} distinct logged_at values (batches), "
          f"median {statistics.median(exact.values()):g} leaves per batch")
    times = modelled_times(uses, args.rate, args.window, args.seed)
    print(f"\ntime model: {args.rate:g} uses/s (Poisson), group commit every {args.window} ms\n")
    print("| time known to / public time precision | tags at the time of one use (median) | tags singled out by the times "
          "of their uses (≤ 50) | known uses it took (median) |")
    print("|---|---:|---:|---:|")
    for label, precision in PRECISIONS:
        size, share, needed = time_candidates(uses, times, precision, args.samples, args.seed)
        print(f"| {label} | {size:g} | {share:.1%} | {'-' if needed == math.inf else f'{needed:g}'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-records", type=int, default=400, help="uses in the demo log (as scripts/serve makes it)")
    ap.add_argument("--entries", type=int, default=1_000_000, help="uses in the large log (0: skip it)")
    ap.add_argument("--artists", type=int, default=20_000)
    ap.add_argument("--zipf", type=float, default=1.0, help="artist k is named ∝ 1/k^s")
    ap.add_argument("--strict", type=float, default=0.02, help="share of artists with strict preferences")
    ap.add_argument("--deny", type=float, default=0.05, help="share of artists denying talent_discovery")
    ap.add_argument("--rate", type=float, default=12.0, help="uses per second in the time model (12/s: 1M a day)")
    ap.add_argument("--window", type=int, default=50, help="group commit window in ms in the time model")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per log for per-epoch tags")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--db", type=Path, default=None, help="measure this log only (e.g. one built with --keep)")
    ap.add_argument("--keep", type=Path, default=None, help="build the logs in this folder and keep them")
    args = ap.parse_args()
    if args.db is not None:
        report(str(args.db), args.db, args)
    elif args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        measure(args.keep, args)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            measure(Path(tmp), args)


def measure(work: Path, args: argparse.Namespace) -> None:
    """Builds the demo log and the large log in `work` and reports on both."""
    demo = work / "demo.db"
    build_demo(str(demo), args.demo_records)
    report(f"demo log ({args.demo_records} uses, 50 artists)", demo, args)
    if args.entries:
        big = work / "large.db"
        t0 = time.perf_counter()
        build_large(big, args.entries, args.artists, args.zipf, args.strict, args.deny, args.seed)
        print(f"\n(large log built in {time.perf_counter() - t0:.0f} s)")
        report(f"large log ({args.entries:,} uses, {args.artists:,} artists, Zipf s={args.zipf:g}, "
               f"{args.strict:.0%} strict, {args.deny:.0%} denying talent_discovery)", big, args)


if __name__ == "__main__":
    main()
