"""Realistic sample AI-use records, for the demo log, benchmarks and tests.

A music platform's services, as in the SPEC's story: a recommender, a playlist generator, search, a
tagger, fraud and content-ID systems, support tooling, a talent scout, and (rarely) a service that asks
to train on content and is refused where the artist opted out."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

# service name → (system id, model, phase, purpose, detail)
SERVICES: dict[str, tuple[str, str, str, str, str]] = {
    "recsys": ("recs-ranker", "ranker", "inference", "recommendation", "daily candidate scoring"),
    "playlists": ("playlist-gen", "seq2seq-small", "inference", "playlist_generation", "weekly mix"),
    "search": ("search-embed", "clap-embed", "embedding_extraction", "search_indexing", "catalogue embedding"),
    "tagger": ("genre-tagger", "tagger", "inference", "content_organization", "genre and mood tags"),
    "trust": ("stream-fraud", "gbdt", "inference", "fraud_detection", "stream manipulation screening"),
    "contentid": ("fingerprint", "chromaprint-nn", "indexing", "content_identification", "fingerprint index"),
    "support": ("support-assist", "llm-support", "inference", "customer_support", "ticket triage"),
    "scouting": ("talent-radar", "growth-model", "inference", "talent_discovery", "emerging artist radar"),
    "research": ("music-gen", "diffusion-xl", "training", "model_training_generative", "generative pretraining"),
}
WEIGHTS = [40, 15, 12, 10, 8, 8, 3, 3, 1]


def sample_records(n: int, *, artists: int = 50, seed: int = 1, start: datetime | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (service, record) pairs: `n` uses spread over `artists` artists with ~20 tracks each."""
    rnd = random.Random(seed)
    names = list(SERVICES)
    step = 7.0 if n <= 10_000 else 0.1  # seconds between uses; every occurred_at stays in the past
    t0 = start or datetime.now(timezone.utc) - timedelta(seconds=n * step + 3600)
    for i in range(n):
        service = rnd.choices(names, WEIGHTS)[0]
        system_id, model, phase, purpose, detail = SERVICES[service]
        artist = rnd.randrange(artists)
        when = t0 + timedelta(seconds=i * step + rnd.randrange(5))
        yield service, {
            "event_id": f"{service}-{seed}-{i:09d}",
            "content_id": f"sc:track:{artist * 1000 + rnd.randrange(20)}",
            "artist_id": f"sc:user:{artist + 1}",
            "purpose": purpose,
            "phase": phase,
            "system": {"id": system_id, "model": model, "version": "2026.07.3"},
            "occurred_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "invocations": rnd.choice([1, 1, 1, 12, 240]),
            "detail": detail,
            "basis": None,
        }


def sample_preferences() -> dict[str, dict[str, Any]]:
    """A few artists with opt-outs, so the demo shows refusals and overrides."""
    return {
        "sc:user:1": {"no_ai": True},
        "sc:user:2": {"strict": True, "purposes": {"fraud_detection": "allow"}},
        "sc:user:3": {"purposes": {"talent_discovery": "deny"}},
        "sc:user:4": {"content": {"sc:track:3001": {"strict": True}}},
    }


def build_demo(db: str, records: int, origin: str = "demo.tlog.example/log") -> None:
    """Creates a demo log: default policy, a few artists' preferences, then `records` sample uses."""
    from .log import init_log
    from .records import validate_use
    from .sequencer import Submission

    log = init_log(db, origin)
    try:
        seq = log.sequencer()
        for artist_id, prefs in sample_preferences().items():
            seq.set_preferences(artist_id, prefs, by="artist")
        now = datetime.now(timezone.utc)
        by_service: dict[str, list[dict[str, Any]]] = {}
        for service, rec in sample_records(records):
            by_service.setdefault(service, []).append(validate_use(rec, now=now, purposes=seq.policy.purposes))
        seq.append_uses([Submission(s, rs) for s, rs in by_service.items()])
        print(f"demo log {db}: {log.store.size()} leaves, verifier key {log.verifier.key}")
    finally:
        log.close()


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Create a demo tlog log with sample AI uses.")
    ap.add_argument("--db", required=True)
    ap.add_argument("--records", type=int, default=400)
    args = ap.parse_args()
    build_demo(args.db, args.records)


if __name__ == "__main__":
    main()
