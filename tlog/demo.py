"""Realistic sample AI-use records, for the demo log, benchmarks and tests.

A music platform's services, as in the SPEC's story: a recommender, a playlist generator, search, a
tagger, fraud and content-ID systems, support tooling, a talent scout, and (rarely) a service that asks
to train on content and is refused where the artist opted out."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import orjson

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


TIGHTENING_ID = "talent-consent"
LOOSENING_ID = "generative-training"
TIGHTEN_AFTER_S = 300  # the demo's tightening takes effect this long after the log is made


def announced_policies(now_ms: int) -> list[tuple[str, bytes, int]]:
    """(id, document, effective_at ms) of the demo's two announcements, in the order to publish them: a
    tightening (talent discovery needs the artist's consent) that takes effect a few minutes from now,
    and a loosening (generative training allowed unless the artist denies it) that waits for the notice
    the default policy promises, to the next midnight UTC after it."""
    from .policy import DAY_MS, DEFAULT_POLICY

    doc = orjson.loads(DEFAULT_POLICY.document)
    doc["purposes"]["talent_discovery"]["default"] = "refused"
    doc["text"] = DEFAULT_POLICY.text + " Talent discovery only with the artist's consent."
    tighter = orjson.dumps(doc)
    doc["purposes"]["model_training_generative"]["default"] = "allowed"
    doc["text"] += " Generative models may be trained on music unless its artist opts out."
    notice_end = now_ms + DEFAULT_POLICY.notice_days * DAY_MS + 60_000  # a minute for the publications themselves
    return [(TIGHTENING_ID, tighter, now_ms + TIGHTEN_AFTER_S * 1000),
            (LOOSENING_ID, orjson.dumps(doc), -(-notice_end // DAY_MS) * DAY_MS)]


def build_demo(db: str, records: int, origin: str = "demo.tlog.example/log", *, announcements: bool = False) -> None:
    """Creates a demo log: default policy, a few artists' preferences, then `records` sample uses; with
    `announcements`, then the two policy announcements of `announced_policies`."""
    from .log import init_log
    from .records import UseRecord, validate_use
    from .sequencer import Submission

    log = init_log(db, origin)
    try:
        seq = log.sequencer()
        for artist_id, prefs in sample_preferences().items():
            seq.set_preferences(artist_id, prefs, by="artist")
        now = datetime.now(timezone.utc)
        policy = seq.policy
        purposes = policy.purposes if policy else {}
        by_service: dict[str, list[UseRecord]] = {}
        for service, rec in sample_records(records):
            by_service.setdefault(service, []).append(validate_use(rec, now=now, purposes=purposes))
        seq.append_uses([Submission(s, rs) for s, rs in by_service.items()])
        if announcements:
            for policy_id, document, effective_ms in announced_policies(int(now.timestamp() * 1000)):
                seq.publish_policy(document, policy_id, effective_ms=effective_ms)
        print(f"demo log {db}: {log.store.size()} leaves, verifier key {log.verifier.key}")
    finally:
        log.close()


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Create a demo tlog log with sample AI uses and two announced policy "
                                             "changes; or, with --feed-key-for, make a feed key for an artist.")
    ap.add_argument("--db", required=True)
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--feed-key-for", metavar="ARTIST", help="print a new feed key of ARTIST (the log must exist)")
    args = ap.parse_args()
    if args.feed_key_for:
        print(demo_feed_key(args.db, args.feed_key_for))
    else:
        build_demo(args.db, args.records, announcements=True)


def demo_feed_key(db: str, artist_id: str) -> str:
    """A feed key of the artist, as `POST /v1/artists/{id}/feed-keys` makes one for the artist, so that
    the demo can print a feed's address."""
    import time

    from .log import open_log
    from .tokens import FEED_KEY_PREFIX, new_token

    log = open_log(db)
    try:
        key, digest = new_token(FEED_KEY_PREFIX)
        log.store.add_feed_key(artist_id, digest, int(time.time() * 1000))
        return key
    finally:
        log.close()


if __name__ == "__main__":
    main()
