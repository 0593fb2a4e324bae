"""The sequencer: dense indexes, the chain, artist chains, decisions, idempotency, all-or-nothing."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone

import orjson
import pytest

from tlog import merkle
from tlog.checkpoint import open_checkpoint
from tlog.errors import Conflict, Forbidden, StorageError, ValidationError
from tlog.artistmap import ArtistMap, MapValue
from tlog.leaf import parse_leaf
from tlog.policy import DEFAULT_POLICY
from tlog.records import artist_tag, check_artist_tag, validate_use
from tlog.rederive import iter_leaves
from tlog.sequencer import Submission
from tlog.store.writer import InlineWriter

from .conftest import append, records
from .mapcheck import map_problems


def _leaves(log):
    size = log.store.size()
    return [(e, orjson.loads(leaf), h) for e, leaf, h in iter_leaves(log.store, 0, size)]


def test_init_writes_the_log_leaf_the_default_policy_and_a_map_leaf_and_signs(log):
    """SPEC §2.3: `tlog init` writes the log leaf, the default policy leaf and a map leaf, in one batch
    under one checkpoint of size 3; no checkpoint of the empty tree is signed any more."""
    cp, signed = log.latest_checkpoint()
    assert cp.size == 3 and cp.origin == "test.tlog.example/log"
    assert cp.root == merkle.tree_root(3, log.store)
    assert log.store.checkpoint_sizes() == [3] and log.store.checkpoint_at(0) is None
    (_, first, h0), (_, policy, h1), (_, amap, _) = _leaves(log)
    assert first == {"v": 2, "type": "log", "prev": "0" * 64, "logged_at": first["logged_at"],
                     "origin": "test.tlog.example/log", "vrf": log.vrf.pk.hex()}
    assert log.vrf_key == log.vrf.pk
    assert policy["type"] == "policy" and policy["prev"] == h0.hex() and "artist" not in policy
    assert policy["policy"] == DEFAULT_POLICY.id and policy["effective_at"] == policy["logged_at"]
    assert policy["details"] == hashlib.sha256(DEFAULT_POLICY.document).hexdigest()
    assert amap == {"v": 2, "type": "map", "prev": h1.hex(), "logged_at": policy["logged_at"], "root": "0" * 64}
    assert log.sequencer().policy.id == DEFAULT_POLICY.id
    assert not map_problems(log.store)


def test_append_assigns_dense_indexes_and_chains(log):
    seq = log.sequencer()
    res = append(seq, records(30))
    # After the three leaves of init; the batch ends with its map leaf (SPEC §2.3).
    assert [r.index for r in res] == list(range(3, 33))
    leaves = _leaves(log)
    assert len(leaves) == 34 and leaves[33][1]["type"] == "map"
    for (_, leaf, _), (_, prev_leaf, prev_hash) in zip(leaves[1:], leaves):
        assert leaf["prev"] == prev_hash.hex()
        assert leaf["logged_at"] >= prev_leaf["logged_at"]
    # Each artist's leaves form a chain: aseq 1.. and aprev pointing at the previous one.
    by_tag: dict[str, list[tuple[int, dict]]] = {}
    for e, leaf, _ in leaves[3:33]:
        assert leaf["type"] in ("use", "refusal") and leaf["invocations"] == e.details["invocations"]
        by_tag.setdefault(leaf["artist"], []).append((e.index, leaf))
    assert len(by_tag) == 5
    for chain in by_tag.values():
        assert [l["aseq"] for _, l in chain] == list(range(1, len(chain) + 1))
        assert chain[0][1]["aprev"] is None
        assert [l["aprev"] for _, l in chain[1:]] == [i for i, _ in chain[:-1]]
    # The map leaf commits to every artist's (aseq, head) as the chains above end.
    want = ArtistMap.build((bytes.fromhex(t), MapValue(len(c), c[-1][0])) for t, c in by_tag.items())
    assert leaves[33][1]["root"] == want.root().hex()
    cp, _ = log.latest_checkpoint()
    assert cp.size == 34 and cp.root == merkle.tree_root(34, log.store)
    assert not map_problems(log.store)


def test_checkpoint_after_every_batch_verifies_and_is_consistent(log):
    seq = log.sequencer()
    for seed in range(3):
        append(seq, records(10, seed=seed + 10))
    sizes = log.store.checkpoint_sizes()
    assert sizes == [3, 14, 25, 36]  # init's 3 leaves, then 10 records and a map leaf a batch
    roots = {}
    for s in sizes:
        cp, _ = open_checkpoint(log.store.checkpoint_at(s), [log.verifier])
        roots[s] = cp.root
        assert log.store.entry(s - 1).type == "map"  # every checkpoint ends at a map leaf
    for old, new in zip(sizes, sizes[1:]):
        merkle.verify_consistency(old, new, roots[old], roots[new], merkle.consistency_proof(old, new, log.store))
    assert not map_problems(log.store)


def test_leaf_commits_to_details_and_hides_identity(log):
    seq = log.sequencer()
    append(seq, records(3))
    e, leaf, _ = _leaves(log)[3]
    raw = orjson.dumps(leaf)
    assert b"sc:user" not in raw and b"sc:track" not in raw and b"recsys" not in raw
    parsed = parse_leaf(next(iter_leaves(log.store, 3, 4))[1])
    assert parsed.type == "use"
    assert e.details["nonce"] and e.details["service"] == "recsys" and e.details["index"] == 3
    # The tag is the VRF output on the artist id, and the stored proof shows it (SPEC §2.2).
    tag, proof = artist_tag(log.vrf, e.details["artist_id"])
    assert leaf["artist"] == tag.hex() and log.store.artist_state(e.details["artist_id"]).proof == proof
    check_artist_tag(log.vrf_key, e.details["artist_id"], tag, proof)


def test_same_event_id_is_idempotent_and_different_body_conflicts(log):
    seq = log.sequencer()
    recs = records(5)
    first = append(seq, recs)
    size = log.store.size()
    again = append(seq, recs)
    assert [r.index for r in again] == [r.index for r in first]
    assert all(r.duplicate for r in again) and not any(r.duplicate for r in first)
    assert [r.leaf_hash for r in again] == [r.leaf_hash for r in first]
    # A batch of duplicates only writes nothing: not even a map leaf or a checkpoint.
    assert log.store.size() == size and log.store.checkpoint_sizes()[-1] == size
    changed = [dict(recs[0], detail="something else")]
    with pytest.raises(Conflict):
        append(seq, changed)
    # The same event id from another service is a different event.
    assert not append(seq, recs[:1], service="playlists")[0].duplicate
    assert log.store.size() == size + 2  # the record and its batch's map leaf


def test_a_rejected_submission_writes_nothing_and_spares_the_others(log):
    seq = log.sequencer()
    now = datetime.now(timezone.utc)
    good = [validate_use(r, now=now, purposes=seq.policy.purposes) for r in records(3, seed=2)]
    bad = [validate_use(r, now=now, purposes=seq.policy.purposes) for r in records(2, seed=3)]
    bad[1] = dict(bad[1], purpose="not_a_purpose")
    res = seq.append_uses([Submission("a", bad), Submission("b", good)])
    assert isinstance(res[0], ValidationError) and "purpose" in str(res[0].details)
    assert [r.index for r in res[1]] == [3, 4, 5]
    assert log.store.size() == 7  # init's 3, the good submission's 3 and the map leaf
    assert not map_problems(log.store)
    assert not log.store.find_events("a", [r["event_id"] for r in bad])


def test_decisions_follow_preferences(log):
    seq = log.sequencer()
    seq.set_preferences("sc:user:1", {"no_ai": True}, by="artist")
    seq.set_preferences("sc:user:2", {"strict": True}, by="artist")
    base = records(1, artist_id="sc:user:1", content_id="sc:track:1")[0]

    def use(i, **kw):
        return dict(base, event_id=f"e{i}", **kw)

    res = append(seq, [
        use(1, purpose="model_training_generative", phase="training"),
        use(2, purpose="recommendation"),
        use(3, artist_id="sc:user:2", content_id="sc:track:2", purpose="fraud_detection", basis="legitimate_interest_security"),
        use(4, artist_id="sc:user:2", content_id="sc:track:2", purpose="recommendation", basis="legitimate_interest_security"),
        use(5, purpose="talent_discovery"),
    ])
    assert [r.decision for r in res] == ["refused", "allowed", "allowed_override", "refused", "flagged"]
    types = [orjson.loads(leaf)["type"] for _, leaf, _ in iter_leaves(log.store, res[0].index, res[-1].index + 1)]
    assert types == ["refusal", "use", "use", "refusal", "use"]


def test_only_the_artist_may_loosen_preferences(log):
    seq = log.sequencer()
    seq.set_preferences("sc:user:9", {"no_ai": True}, by="service", service="trust")
    size = log.store.size()
    with pytest.raises(Forbidden):
        seq.set_preferences("sc:user:9", {}, by="service", service="trust")
    assert log.store.size() == size
    change = seq.set_preferences("sc:user:9", {}, by="artist")
    assert change.dropped == [{"setting": "no_ai", "was": True, "now": None}]
    leaf = orjson.loads(next(iter_leaves(log.store, change.index, change.index + 1))[1])
    assert leaf["type"] == "preference" and leaf["by"] == "artist" and leaf["aseq"] == 2


def test_logged_at_never_goes_back_even_if_the_clock_does(log):
    t = [time.time()]
    seq = log.sequencer(clock=lambda: t[0])
    append(seq, records(2, seed=1))
    t[0] -= 3600
    append(seq, records(2, seed=2))
    stamps = [orjson.loads(leaf)["logged_at"] for _, leaf, _ in iter_leaves(log.store, 0, log.store.size())]
    assert len(stamps) == 9
    assert stamps == sorted(stamps)


class _FailingStore:
    """Wraps a store; its next write_batch fails after (or instead of) writing."""

    def __init__(self, inner):
        self.inner = inner
        self.fail = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write_batch(self, batch):
        if self.fail:
            self.fail = False
            raise StorageError("disk on fire")
        return self.inner.write_batch(batch)


def test_a_failed_write_leaves_memory_and_disk_agreeing(log):
    store = _FailingStore(log.store)
    seq = log.sequencer(writer=InlineWriter(store))
    append(seq, records(3, seed=1))
    store.fail = True
    with pytest.raises(StorageError):
        append(seq, records(3, seed=2))
    assert log.store.size() == 7
    res = append(seq, records(3, seed=2))
    assert [r.index for r in res] == [7, 8, 9]
    assert not map_problems(log.store)
    from tlog.verify import verify_log

    assert verify_log(log).size == 11


def test_a_second_writer_cannot_fork_the_log(log):
    a, b = log.sequencer(), log.sequencer()
    append(a, records(2, seed=1))
    # The store refuses b's batch built on the old size (no fork); b reloads and builds it again on top.
    assert [r.index for r in append(b, records(2, seed=2))] == [6, 7]
    assert [r.index for r in append(a, records(2, seed=3))] == [9, 10]
    from tlog.store.base import Batch

    with pytest.raises(StorageError, match="another writer") as err:
        log.store.write_batch(Batch(6, [], []))
    assert err.value.code == "stale_state"
    # Each rebuilt batch's map leaf commits to the map it extends, not the one its writer had in memory.
    assert not map_problems(log.store)
    from tlog.verify import verify_log

    assert verify_log(log).size == 12


def test_policy_publication(log):
    seq = log.sequencer()
    doc = log.store.policies()[0].document
    index, _ = seq.publish_policy(doc, "2026-12")
    assert log.store.entry(index + 1).type == "map"  # a publication is a batch of its own
    leaf = orjson.loads(next(iter_leaves(log.store, index, index + 1))[1])
    assert leaf["effective_at"] == leaf["logged_at"]  # at once by default
    res = append(seq, records(1))
    assert res[0].index == index + 2
    assert log.store.entry(res[0].index).details["policy"] == "2026-12"
    with pytest.raises(Conflict):
        seq.publish_policy(doc, "2026-12")



def test_a_rejected_submission_restores_artists_touched_earlier_in_the_batch(log):
    seq = log.sequencer()
    now = datetime.now(timezone.utc)

    def valid(recs):
        return [validate_use(r, now=now, purposes=seq.policy.purposes) for r in recs]

    first = append(seq, records(1, seed=7, artist_id="sc:user:x"))
    a = valid(records(2, seed=8, artist_id="sc:user:x"))
    # b touches the same artist, then fails on its second record (an event_id logged with another body).
    b = valid([records(1, seed=9, artist_id="sc:user:x")[0], dict(records(1, seed=7, artist_id="sc:user:x")[0], detail="changed")])
    res = seq.append_uses([Submission("recsys", a), Submission("recsys", b)])
    assert [r.index for r in res[0]] == [5, 6] and isinstance(res[1], Conflict)
    later = append(seq, records(1, seed=10, artist_id="sc:user:x"))
    leaf = orjson.loads(next(iter_leaves(log.store, later[0].index, later[0].index + 1))[1])
    assert later[0].index == 8 and leaf["aseq"] == 4 and leaf["aprev"] == 6
    assert first[0].index == 3
    # The map leaf of the batch with the rejected submission holds x at (3, 6), not the undone (4, 7).
    assert not map_problems(log.store)
    from tlog.verify import verify_log

    assert verify_log(log).size == 10


def test_a_policy_takes_effect_at_its_effective_at(log):
    """SPEC §4: uses are decided by the policy in effect at their `logged_at` (the latest `effective_at`
    not after it); one announced for later changes nothing until then, and one cannot take effect
    before it is announced."""
    t = [time.time()]
    seq = log.sequencer(clock=lambda: t[0])
    doc = orjson.loads(DEFAULT_POLICY.document)
    doc["purposes"]["recommendation"]["default"] = "refused"  # a tightening: it may take effect at any time
    later_ms = int(t[0] * 1000) + 3_600_000
    index, _ = seq.publish_policy(orjson.dumps(doc), "stricter", effective_ms=later_ms)
    leaf = orjson.loads(next(iter_leaves(log.store, index, index + 1))[1])
    assert leaf["effective_at"] > leaf["logged_at"]
    rec = dict(records(1, seed=3)[0], purpose="recommendation", phase="inference")
    (before,) = append(seq, [rec])
    assert seq.policy.id == DEFAULT_POLICY.id and before.decision == "allowed"
    assert log.store.entry(before.index).details["policy"] == DEFAULT_POLICY.id
    t[0] += 3600  # the clock reaches effective_at
    assert seq.policy.id == "stricter"
    (after,) = append(seq, [dict(rec, event_id="after")])
    assert after.decision == "refused" and log.store.entry(after.index).details["policy"] == "stricter"
    # A reloaded sequencer reads the schedule back from the policy leaves; its clock going back does not
    # bring the old policy back (logged_at never decreases).
    assert log.sequencer(clock=lambda: t[0]).policy.id == "stricter"
    assert log.sequencer(clock=lambda: t[0] - 7200).policy.id == "stricter"
    size = log.store.size()
    with pytest.raises(ValidationError, match="before it is announced"):
        seq.publish_policy(DEFAULT_POLICY.document, "backdated", effective_ms=int(t[0] * 1000) - 1000)
    assert log.store.size() == size and log.store.policy("backdated") is None


def test_preferences_may_name_purposes_of_an_announced_policy_only(log):
    """SPEC §4: a code of the policy in effect or of one announced for later (an artist may deny a purpose
    before it applies); any other is refused and nothing is logged."""
    t = [time.time()]
    seq = log.sequencer(clock=lambda: t[0])
    with pytest.raises(ValidationError) as e:
        seq.set_preferences("sc:user:1", {"purposes": {"voice_cloning": "deny"}}, by="artist")
    assert e.value.details[0]["field"] == "purposes.voice_cloning"
    size = log.store.size()
    doc = orjson.loads(DEFAULT_POLICY.document)
    doc["purposes"]["voice_cloning"] = {"covers": "voice models", "category": "cawg.ai_generative_training",
                                        "default": "refused", "override_eligible": False}
    seq.publish_policy(orjson.dumps(doc), "with-voice", effective_ms=int(t[0] * 1000) + 3_600_000)
    assert log.store.size() == size + 2  # the policy leaf and its map leaf: the refusal logged nothing
    seq.set_preferences("sc:user:1", {"purposes": {"voice_cloning": "deny"}}, by="artist")
    assert log.store.artist_state("sc:user:1").preferences["purposes"] == {"voice_cloning": "deny"}


def test_preference_limits_are_the_sequencers(log):
    from tlog.errors import TooLarge
    from tlog.policy import PreferenceLimits

    seq = log.sequencer(preference_limits=PreferenceLimits(max_bytes=200, max_content=1))
    size = log.store.size()
    with pytest.raises(ValidationError):
        seq.set_preferences("sc:user:1", {"content": {"sc:t:1": {"no_ai": True}, "sc:t:2": {"no_ai": True}}}, by="artist")
    with pytest.raises(TooLarge):
        seq.set_preferences("sc:user:1", {"purposes": {c: "deny" for c in DEFAULT_POLICY.purposes}}, by="artist")
    assert log.store.size() == size
    seq.set_preferences("sc:user:1", {"content": {"sc:t:1": {"no_ai": True}}}, by="artist")
