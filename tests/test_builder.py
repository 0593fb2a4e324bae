"""The batch builder without storage: leaves, chains, the map leaf, the checkpoint, decisions by the policy
in effect, VRF tags, and undo of a rejected submission, over an in-memory `BuildReader`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import pytest

from tlog import merkle, records
from tlog.artistmap import ArtistMap, MapValue
from tlog.builder import BatchBuilder, Head, Submission
from tlog.checkpoint import Checkpoint
from tlog.errors import Conflict, Forbidden, ValidationError
from tlog.leaf import Leaf, parse_leaf
from tlog.note import Signer, generate_key, parse_note
from tlog.policy import DEFAULT_POLICY, Policy, make_policy
from tlog.records import validate_use
from tlog.store.base import ArtistState, Entry, PolicyRecord
from tlog.vrf import VrfSecret

from .conftest import records as sample

ORIGIN = "test.tlog.example/builder"
VRF = VrfSecret.from_secret(bytes(range(32)))
T0 = 1_790_000_000.0  # seconds: the builder's clock in these tests


@dataclass
class MemoryReader:
    """The five lookups of `BuildReader`, over what the test says is stored."""

    artists: dict[str, ArtistState] = field(default_factory=dict)
    bound: dict[str, frozenset[str]] = field(default_factory=dict)
    events: dict[tuple[str, str], Entry] = field(default_factory=dict)
    hashes: dict[int, bytes] = field(default_factory=dict)
    policies: dict[str, PolicyRecord] = field(default_factory=dict)
    reads: int = 0

    def artist_states(self, artist_ids: Sequence[str]) -> dict[str, ArtistState]:
        self.reads += 1
        return {a: self.artists[a] for a in artist_ids if a in self.artists}

    def bindings(self, content_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        return {c: self.bound[c] for c in content_ids if c in self.bound}

    def find_events(self, service: str, event_ids: Sequence[str]) -> dict[str, Entry]:
        return {e: self.events[(service, e)] for e in event_ids if (service, e) in self.events}

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        return [self.hashes[i] for i in range(start, end)]

    def policy(self, policy_id: str) -> PolicyRecord | None:
        return self.policies.get(policy_id)


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def new_builder(reader: MemoryReader | None = None, clock: Clock | None = None) -> tuple[BatchBuilder, MemoryReader]:
    reader = reader or MemoryReader()
    head = Head(0, merkle.Frontier(), bytes(32), 0, (), ArtistMap.empty())
    signer = Signer.from_key(generate_key(ORIGIN)[0])
    b = BatchBuilder(reader, head, origin=ORIGIN, signers=[signer], vrf=VRF, clock=clock or Clock())
    p = b.begin()
    b.first(p, VRF.pk, DEFAULT_POLICY)
    b.seal(p)
    b.advance(p)
    return b, reader


def leaves_of(p: Any) -> list[Leaf]:
    out, prev = [], p.base
    from tlog.rederive import entry_leaf

    for e in p.entries:
        leaf = entry_leaf(e, prev)
        out.append(parse_leaf(leaf))
        prev = merkle.leaf_hash(leaf)
    return out


def subs(b: BatchBuilder, recs: list[dict[str, Any]], service: str = "recsys") -> list[Submission]:
    now = datetime.now(timezone.utc)
    return [Submission(service, [validate_use(r, now=now, purposes=b.policy_now().purposes) for r in recs])]


def test_the_first_batch_is_log_policy_map():
    b, _ = new_builder()
    assert b.head.size == 3
    p = b.begin()
    assert p.start == 3 and p.policy is not None and p.policy.id == DEFAULT_POLICY.id


def test_a_batch_chains_its_leaves_and_ends_with_the_map_of_every_leaf_before_it():
    b, _ = new_builder()
    p = b.begin()
    (results,) = b.uses(p, subs(b, sample(40, artists=6)))
    signed, batch = b.seal(p)
    leaves = leaves_of(p)
    assert [r.index for r in results] == list(range(3, 43))
    assert leaves[-1].type == "map" and all(leaf.type in ("use", "refusal") for leaf in leaves[:-1])
    # Every artist's chain, replayed from the public leaves alone, gives the map the map leaf commits to.
    heads: dict[bytes, tuple[int, int]] = {}
    for i, leaf in enumerate(leaves[:-1], start=3):
        aseq, head = heads.get(leaf.artist, (0, None))
        assert (leaf.aseq, leaf.aprev) == (aseq + 1, head)
        heads[leaf.artist] = (leaf.aseq, i)
    want = ArtistMap.build((t, MapValue(a, h)) for t, (a, h) in heads.items())
    assert leaves[-1].root == want.root() == p.map.root()
    cp = Checkpoint.parse(parse_note(signed)[0])
    assert (cp.size, cp.root) == (44, p.frontier.root()) and batch.end == 44  # 40 uses and the map leaf


def test_a_new_artist_gets_its_vrf_tag_and_a_stored_one_keeps_its_own():
    stored_tag, stored_proof = records.artist_tag(VRF, "sc:user:1")
    reader = MemoryReader(artists={"sc:user:1": ArtistState("sc:user:1", stored_tag, 4, 2, None, stored_proof)})
    b, _ = new_builder(reader)
    p = b.begin()
    recs = sample(2, artists=1) + [dict(sample(1, seed=9, artists=1)[0], artist_id="sc:user:77")]
    b.uses(p, subs(b, recs))
    assert (p.artists["sc:user:1"].aseq, p.artists["sc:user:1"].tag) == (6, stored_tag)
    new = p.artists["sc:user:77"]
    records.check_artist_tag(VRF.pk, "sc:user:77", new.tag, new.proof)
    assert (new.aseq, leaves_of(p)[2].aprev) == (1, None)


def test_a_rejected_submission_leaves_nothing_behind():
    """The batch with a rejected submission in the middle holds exactly the leaves of the batch without
    it: entries, nodes, chains, remembered events and the map."""
    good1, good2 = sample(5, seed=1, artists=3), sample(5, seed=2, artists=3)
    bad = sample(3, seed=3, artists=3)
    bad[2] = dict(bad[1])  # the same event_id twice in one request
    clock = Clock()
    b1, _ = new_builder(clock=clock)
    b2, _ = new_builder(clock=clock)
    p1, p2 = b1.begin(), b2.begin()
    out = b1.uses(p1, [*subs(b1, good1), *subs(b1, bad), *subs(b1, good2)])
    b2.uses(p2, [*subs(b2, good1), *subs(b2, good2)])
    assert isinstance(out[1], ValidationError) and not isinstance(out[0], Exception)
    assert [(e.index, e.artist_id, e.aseq, e.aprev) for e in p1.entries] == \
        [(e.index, e.artist_id, e.aseq, e.aprev) for e in p2.entries]
    assert len(p1.nodes) == len(p2.nodes)
    assert set(b1.recent) == set(b2.recent)
    assert b1.seal(p1)[1].end == b2.seal(p2)[1].end and p1.map.root() == p2.map.root()


def test_an_event_sent_again_while_in_flight_is_a_duplicate_and_a_new_body_a_conflict():
    b, _ = new_builder()
    recs = sample(3)
    p = b.begin()
    (first,) = b.uses(p, subs(b, recs))
    b.seal(p)
    b.advance(p)
    p = b.begin()
    (again,) = b.uses(p, subs(b, recs))
    assert [r.duplicate for r in again] == [True] * 3 and [r.index for r in again] == [r.index for r in first]
    (conflict,) = b.uses(p, subs(b, [dict(recs[0], detail="another body")]))
    assert isinstance(conflict, Conflict) and not p.entries


def test_a_stored_event_is_answered_from_the_reader():
    reader = MemoryReader()
    b, _ = new_builder(reader)
    rec = sample(1)[0]
    (valid,) = subs(b, [rec])[0].records,
    reader.events[("recsys", rec["event_id"])] = Entry(9, "use", 0, dict(valid[0], decision="allowed"))
    reader.hashes[9] = b"\x09" * 32
    p = b.begin()
    ((res,),) = b.uses(p, subs(b, [rec]))
    assert (res.index, res.duplicate, res.leaf_hash) == (9, True, b"\x09" * 32) and not p.entries


DAY_MS = 86_400_000
T0_MS = int(T0 * 1000)


def changed(policy_id: str, notice_days: int = 30, **defaults: str) -> Policy:
    """The default policy under another id, with some purposes' defaults changed."""
    table = [dataclasses.replace(p, default=defaults.get(p.code, p.default)) for p in DEFAULT_POLICY.purposes.values()]
    return make_policy(policy_id, table, DEFAULT_POLICY.text, notice_days=notice_days)


LOOSE = changed("loose", model_training_generative="allowed")


def publish(b: BatchBuilder, policy: Policy, effective_ms: int | None) -> int:
    """Publishes `policy` in a batch of its own; returns the index of its leaf."""
    p = b.begin()
    index, _ = b.policy(p, policy, effective_ms)
    b.seal(p)
    b.advance(p)
    return index


def test_decisions_follow_the_policy_in_effect_at_logged_at():
    """A policy announced for later decides nothing until then; from its effective time on, it does."""
    clock = Clock()
    b, reader = new_builder(clock=clock)
    publish(b, LOOSE, T0_MS + 30 * DAY_MS)
    rec = dict(sample(1)[0], purpose="model_training_generative", phase="training")
    p = b.begin()
    ((before,),) = b.uses(p, subs(b, [rec]))
    assert before.decision == "refused" and p.policy.id == DEFAULT_POLICY.id
    b.seal(p)
    b.advance(p)
    clock.t = T0 + 30 * 86_400
    p = b.begin()
    ((after,),) = b.uses(p, subs(b, [dict(rec, event_id="later")]))
    assert after.decision == "allowed" and p.policy.id == "loose" and leaves_of(p)[0].policy == "loose"


def test_a_policy_cannot_take_effect_before_it_is_announced_or_be_published_twice():
    b, reader = new_builder()
    p = b.begin()
    with pytest.raises(ValidationError):
        b.policy(p, make_policy("early", DEFAULT_POLICY.purposes.values(), "t"), int(T0 * 1000) - 1)
    reader.policies["taken"] = PolicyRecord("taken", 1, b"{}")
    with pytest.raises(Conflict):
        b.policy(p, make_policy("taken", DEFAULT_POLICY.purposes.values(), "t"), None)


def test_a_loosening_is_refused_naming_the_earliest_time_it_may_take_effect():
    """SPEC §4 Notice: the default policy promises 30 days; a loosening announced now takes effect no
    sooner, and the refusal says when it may. Refused, nothing of it is staged."""
    b, _ = new_builder()
    earliest = T0_MS + 30 * DAY_MS
    p = b.begin()
    for effective in (None, T0_MS, earliest - 1):
        with pytest.raises(ValidationError) as err:
            b.policy(p, LOOSE, effective)
        assert err.value.message == (
            f"policy 'loose' loosens 'default' — model_training_generative: refused → allowed — but takes effect at "
            f"{records.format_logged_at(effective or T0_MS)}, before the 30 days' notice 'default' promised "
            f"(not before {records.format_logged_at(earliest)})")
        assert err.value.details == [{"field": "effective_at", "message": "the earliest allowed is 2026-10-21T14:13:20.000Z"}]
    assert not p.entries and len(p.schedule) == 1
    index, _ = b.policy(p, LOOSE, earliest)
    assert leaves_of(p)[0].effective_at == records.format_logged_at(earliest) == "2026-10-21T14:13:20.000Z"
    later, _ = new_builder()
    assert publish(later, LOOSE, earliest + DAY_MS) == index


def test_a_policy_that_does_not_loosen_may_take_effect_at_once():
    b, _ = new_builder()
    stricter = changed("stricter", notice_days=60, recommendation="flagged", talent_discovery="refused")
    assert publish(b, stricter, None) == 3
    assert publish(b, changed("copy", notice_days=60, recommendation="flagged", talent_discovery="refused"), None) == 5
    assert b.begin().policy.id == "copy"
    # Now 60 days' notice is promised, and giving it back (default's table) loosens.
    with pytest.raises(ValidationError, match="before the 60 days' notice 'copy' promised"):
        publish(b, DEFAULT_POLICY, T0_MS + 59 * DAY_MS)


def test_several_announcements_may_be_pending_at_once():
    """Each new policy is compared with what would be in effect when it takes effect, which may be an
    announced policy not yet in effect; the notice is that of the policy in effect when it is announced."""
    clock = Clock()
    b, _ = new_builder(clock=clock)
    week = changed("week", notice_days=7, recommendation="flagged")  # a shorter notice loosens: 30 days ahead
    publish(b, week, T0_MS + 30 * DAY_MS)
    # Before "week" takes effect, a copy of the default replaces the default: no loosening, so at once.
    publish(b, changed("copy"), T0_MS + DAY_MS)
    # Taking effect after "week", the same table loosens "week", with the 30 days of "copy", now in effect.
    clock.t = T0 + 2 * 86_400
    with pytest.raises(ValidationError, match="loosens 'week' — recommendation: flagged → allowed — .* the 30 days' "
                                              "notice 'copy' promised"):
        publish(b, changed("back"), T0_MS + 31 * DAY_MS)
    publish(b, changed("back"), T0_MS + 32 * DAY_MS)
    # With "week" and "back" pending, a tightening of "week" slots in between them, at once.
    publish(b, changed("tighter", notice_days=7, recommendation="refused"), T0_MS + 30 * DAY_MS + 1)
    # Once "week" is in effect its 7 days are the notice, and "loose" is compared with "tighter" or "back".
    clock.t = T0 + 30 * 86_400
    with pytest.raises(ValidationError, match="loosens 'tighter' — recommendation: refused → allowed; "
                                              "model_training_generative: refused → allowed — .* the 7 days' notice 'week'"):
        publish(b, LOOSE, T0_MS + 31 * DAY_MS)
    with pytest.raises(ValidationError, match="loosens 'back' — model_training_generative: refused → allowed — .* "
                                              "the 7 days' notice 'week' promised"):
        publish(b, LOOSE, T0_MS + 33 * DAY_MS)
    publish(b, LOOSE, T0_MS + 37 * DAY_MS)
    assert [policy.id for _, _, policy in b.head.schedule] == ["default", "week", "copy", "back", "tighter", "loose"]


def test_only_the_artist_may_loosen_preferences():
    b, _ = new_builder()
    p = b.begin()
    b.preferences(p, "sc:user:5", {"no_ai": True}, by="service", service="recsys")
    with pytest.raises(Forbidden):
        b.preferences(p, "sc:user:5", {}, by="service", service="recsys")
    index, _ = b.preferences(p, "sc:user:5", {}, by="artist", service=None)
    assert p.artists["sc:user:5"].aseq == 2 and leaves_of(p)[-1].by == "artist" and index == 4


def test_artists_are_read_once_per_batch():
    b, reader = new_builder()
    p = b.begin()
    before = reader.reads
    b.uses(p, [*subs(b, sample(30, seed=1, artists=10)), *subs(b, sample(30, seed=2, artists=10))])
    assert reader.reads - before == 1


def test_training_cannot_be_logged_under_another_purpose():
    """SPEC §3: a recommendation with phase `training` is refused, naming the purposes to log it under,
    and nothing of that submission is logged; under a training purpose it is logged (and decided)."""
    b, _ = new_builder()
    p = b.begin()
    rec = dict(sample(1)[0], purpose="recommendation", phase="fine_tuning")
    (err,) = b.uses(p, subs(b, [rec]))
    assert isinstance(err, ValidationError) and not p.entries
    assert err.details == [{"field": "records[0].phase", "message": (
        "phase 'fine_tuning' is training, which is logged under a training purpose (model_training_discriminative, "
        "model_training_generative, third_party_ai_access), not under 'recommendation'")}]
    ((ok,),) = b.uses(p, subs(b, [dict(rec, purpose="model_training_discriminative")]))
    assert ok.decision == "refused" and len(p.entries) == 1
