"""The public-leaf rules (tlog/replay.py) on hand-made leaves, including leaf types the sequencer does not
write yet (binding) and shapes no parser lets through, and the same verdicts when a log is
checked in ranges whose records are replayed in order."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import replace

import pytest

from tlog import merkle
from tlog.artistmap import ArtistMap, MapValue
from tlog.errors import VerificationError
from tlog.leaf import Leaf
from tlog.policy import DEFAULT_POLICY, make_policy
from tlog.replay import ChainChecker, Sequential
from tlog.vrf import VrfSecret

ORIGIN = "replay.example/log"
VRF_KEY = VrfSecret.from_secret(bytes(range(32))).pk
A, B = bytes([1]) * 32, bytes([0x80]) * 32
T0 = "2026-08-01T12:00:00.000Z"
T1 = "2026-08-01T12:00:01.000Z"
T2 = "2026-08-01T12:00:02.000Z"


def log_leaf(**kw) -> Leaf:
    return Leaf("log", bytes(32), T0, origin=kw.get("origin", ORIGIN), vrf=kw.get("vrf", VRF_KEY))


def document(policy_id: str) -> bytes:
    """Each policy's document: the default table under a text of its own (so none loosens another),
    except `loose`, which allows generative training by default."""
    table = [dataclasses.replace(p, default="allowed") if policy_id == "loose" and p.code == "model_training_generative"
             else p for p in DEFAULT_POLICY.purposes.values()]
    return make_policy(policy_id, table, f"policy {policy_id}").document


def policy_leaf(policy: str, effective_at: str, logged_at: str = T0) -> Leaf:
    return Leaf("policy", bytes(32), logged_at, details=hashlib.sha256(document(policy)).digest(), policy=policy,
                effective_at=effective_at)


def add(checker: ChainChecker, h: bytes, leaf: Leaf, documents: dict[str, bytes] | None = None) -> None:
    """Adds the leaf and, to a policy leaf, its document (from `documents`, else `document`)."""
    doc = (documents or {}).get(leaf.policy, document(leaf.policy)) if leaf.type == "policy" else None  # type: ignore[arg-type]
    checker.add(h, leaf, doc)


def use(tag: bytes, aseq: int, aprev: int | None, policy: str = "p1", logged_at: str = T0, kind: str = "use") -> Leaf:
    return Leaf(kind, bytes(32), logged_at, details=bytes(32), purpose="recommendation", phase="inference",
                decision="refused" if kind == "refusal" else "allowed", policy=policy, artist=tag, aseq=aseq,
                aprev=aprev, invocations=1)


def binding(tag: bytes, aseq: int, aprev: int | None) -> Leaf:
    return Leaf("binding", bytes(32), T0, details=bytes(32), artist=tag, aseq=aseq, aprev=aprev)


def erasure(tag: bytes, erased: int) -> Leaf:
    return Leaf("erasure", bytes(32), T0, artist=tag, erased=erased)


def map_leaf(heads: dict[bytes, tuple[int, int]]) -> Leaf:
    root = ArtistMap.build((t, MapValue(a, h)) for t, (a, h) in heads.items()).root()
    return Leaf("map", bytes(32), T0, root=root)


def chained(leaves: list[Leaf]) -> list[tuple[bytes, Leaf]]:
    """(hash, leaf), each leaf's prev the hash before it. The rules never hash a leaf themselves (their
    callers do, from its bytes), so any distinct hashes will do; these leaves need not even encode."""
    out: list[tuple[bytes, Leaf]] = []
    prev = bytes(32)
    for i, leaf in enumerate(leaves):
        out.append((merkle.leaf_hash(b"leaf %d" % i), replace(leaf, prev=prev)))
        prev = out[-1][0]
    return out


def sound() -> list[Leaf]:
    """A log of 11 leaves: A's chain runs through a binding; an erasure names A but is not in its chain."""
    return [
        log_leaf(), policy_leaf("p1", T0), map_leaf({}),                         # 0-2
        use(A, 1, None), use(B, 1, None, kind="refusal"), binding(A, 2, 3),   # 3-5
        map_leaf({A: (2, 5), B: (1, 4)}),                                        # 6
        erasure(A, 2), use(A, 3, 5), use(B, 2, 4),                              # 7-9
        map_leaf({A: (3, 8), B: (2, 9)}),                                        # 10
    ]


def check(leaves: list[Leaf], documents: dict[str, bytes] | None = None) -> ChainChecker:
    checker = ChainChecker(ORIGIN)
    for h, leaf in chained(leaves):
        add(checker, h, leaf, documents)
    return checker


def fails(leaves: list[Leaf], index: int | None, message: str, documents: dict[str, bytes] | None = None) -> None:
    with pytest.raises(VerificationError) as err:
        check(leaves, documents)
    assert err.value.index == index and message in err.value.message, err.value.message


def test_a_sound_log_passes_and_every_checkpoint_ends_at_its_map_leaf():
    checker = check(sound())
    assert checker.artists == {A: (3, 8), B: (2, 9)}
    checker.check_end(11)
    with pytest.raises(VerificationError, match="a checkpoint of size 0 has no map leaf to end at"):
        checker.check_end(0)


def test_a_checkpoint_that_does_not_end_at_a_map_leaf_is_refused():
    checker = check(sound()[:10])
    with pytest.raises(VerificationError, match="^index 9: the checkpoint of size 10 does not end at a map leaf: "
                                                "leaf 9 is a use leaf$"):
        checker.check_end(10)


def two_ranges(leaves: list[tuple[bytes, Leaf]], cut: int) -> tuple[ChainChecker, ChainChecker]:
    """The leaves (hash, leaf) checked as two ranges, split before index `cut`."""
    first = ChainChecker(ORIGIN, tree=False)
    for h, leaf in leaves[:cut]:
        add(first, h, leaf)
    second = ChainChecker(ORIGIN, start=cut, prev=leaves[cut - 1][0], tree=False)
    for h, leaf in leaves[cut:]:
        add(second, h, leaf)
    return first, second


@pytest.mark.parametrize("cut", [1, 4, 6, 7, 9])
def test_ranges_replayed_in_order_agree_with_one_pass(cut):
    leaves = chained(sound())
    first, second = two_ranges(leaves, cut)
    rules = Sequential()
    rules.replay(first.sequential)  # type: ignore[arg-type]
    rules.replay(second.sequential)  # type: ignore[arg-type]
    assert rules.map.root() == leaves[-1][1].root and not rules.changed

    broken = [(h, replace(leaf, root=bytes(32)) if i == 10 else leaf) for i, (h, leaf) in enumerate(leaves)]
    _, second = two_ranges(broken, cut)  # the break is at index 10, in the second range
    rules = Sequential()
    rules.replay(first.sequential)  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="^index 10: the map leaf's root is not the artist map"):
        rules.replay(second.sequential)  # type: ignore[arg-type]


def test_a_range_records_a_run_of_uses_once():
    checker = ChainChecker(ORIGIN, start=3, prev=bytes(32), tree=False)
    run = [use(A, 1, None), use(B, 1, None), use(A, 2, 3, logged_at=T1), use(B, 2, 4, logged_at=T1, policy="p2")]
    for h, leaf in chained(run):
        checker.add(h, leaf)
    assert checker.sequential.ops == [("uses", 3, T0, "p1"), ("uses", 5, T1, "p1"), ("uses", 6, T1, "p2")]


@pytest.mark.parametrize("index, leaf, message", [
    (0, use(A, 1, None), "the first leaf must be the log leaf, not a use leaf"),
    (0, log_leaf(origin="other.example/log"), "the log leaf names origin 'other.example/log', not 'replay.example/log'"),
    (0, log_leaf(vrf=bytes(32)), "the log leaf's VRF key is not valid"),
    (4, log_leaf(), "a log leaf may only be the first leaf (index 0)"),
    (3, use(A, 2, None), "artist chain broken: aseq 2 skips (expected aseq 1, aprev None)"),
    (9, use(B, 1, None), "artist chain broken: aseq 1 repeats an earlier one (expected aseq 2, aprev 4)"),
    (8, use(A, 3, 3), "artist chain broken: aprev 3 is not the index of the artist's previous leaf (expected aseq 3, aprev 5)"),
    # The binding leaf at 5 is in A's chain: a use that skips it repeats its aseq.
    (8, use(A, 2, 3), "artist chain broken: aseq 2 repeats an earlier one (expected aseq 3, aprev 5)"),
    (6, map_leaf({A: (1, 3), B: (1, 4)}), "the map leaf's root is not the artist map of the leaves before it"),
    (10, map_leaf({A: (3, 8), B: (2, 9), bytes(32): (1, 7)}), "the map leaf's root is not the artist map"),
    (8, use(A, 3, 5, policy="p2"), "the use names policy 'p2', but policy 'p1' was in effect at its logged_at"),
    (4, use(B, 1, None, kind="refusal", logged_at=T0, policy="nope"), "the use names policy 'nope'"),
])
def test_each_rule_names_the_first_bad_index(index, leaf, message):
    leaves = sound()
    leaves[index] = leaf
    fails(leaves, index, message)


# --- erasure leaves (SPEC §2.2): each counts its tag's chain leaves no earlier erasure leaf covered ------


def erasures() -> list[Leaf]:
    """sound(), then a second erasure of A (covering only leaf 8) and one of B (leaves 4 and 9)."""
    return [*sound(), erasure(A, 1), erasure(B, 2), map_leaf({A: (3, 8), B: (2, 9)})]  # 11-13


@pytest.mark.parametrize("index, leaf, left", [
    (7, erasure(A, 3), 2), (7, erasure(A, 1), 2), (7, erasure(bytes(32), 1), 0),  # a tag with no chain at all
    (11, erasure(A, 3), 1), (12, erasure(B, 1), 2),
])
def test_an_erasure_leaf_must_count_what_no_earlier_one_covered(index, leaf, left):
    check(erasures())
    leaves = erasures()
    leaves[index] = leaf
    fails(leaves, index, f"the erasure leaf says erased {leaf.erased}, but the chain leaves of its tag before it that no "
          f"earlier erasure leaf covered number {left}")


@pytest.mark.parametrize("cut", [1, 6, 7, 8, 10, 11, 12, 13])
@pytest.mark.parametrize("broken", [None, 11])
def test_ranges_replayed_in_order_check_erasure_counts_as_one_pass(cut, broken):
    """A range that did not see a tag's whole chain records the erasure with what it saw since its last
    map leaf; replayed in order, the counts are checked as in one pass."""
    leaves = erasures()
    if broken is not None:
        leaves[broken] = erasure(A, 2)
    first, second = two_ranges(chained(leaves), cut)
    rules = Sequential()
    if broken is None:
        rules.replay(first.sequential)  # type: ignore[arg-type]
        rules.replay(second.sequential)  # type: ignore[arg-type]
        assert rules.erased == {A: 3, B: 2}
        return
    with pytest.raises(VerificationError, match="^index 11: the erasure leaf says erased 2, but the chain leaves .* number 1$"):
        rules.replay(first.sequential)  # type: ignore[arg-type]
        rules.replay(second.sequential)  # type: ignore[arg-type]


def test_a_use_before_any_policy_names_none_in_effect():
    fails([log_leaf(), use(A, 1, None)], 1, "the use names policy 'p1', but no policy was in effect at its logged_at")


def test_the_policy_in_effect_goes_by_effective_at_then_by_index():
    base = [log_leaf(), policy_leaf("p1", T0), policy_leaf("p2", T2), map_leaf({})]
    check(base + [use(A, 1, None, logged_at=T1)])  # p2 announced, not yet in effect
    fails(base + [use(A, 1, None, policy="p2", logged_at=T1)], 4, "policy 'p1' was in effect at its logged_at 2026-08-01T12:00:01.000Z")
    check(base + [use(A, 1, None, policy="p2", logged_at=T2)])
    # Two policies taking effect at the same time: the later leaf wins.
    tied = [log_leaf(), policy_leaf("p1", T1), policy_leaf("p2", T1), map_leaf({})]
    check(tied + [use(A, 1, None, policy="p2", logged_at=T1)])
    fails(tied + [use(A, 1, None, policy="p1", logged_at=T1)], 4, "but policy 'p2' was in effect")


def test_a_policy_takes_effect_no_earlier_than_announced_and_is_published_once():
    fails([log_leaf(), policy_leaf("p1", T0, logged_at=T1)], 1,
          "the policy takes effect at 2026-08-01T12:00:00.000Z, before it was announced (2026-08-01T12:00:01.000Z)")
    fails([log_leaf(), policy_leaf("p1", T0), policy_leaf("p1", T1)], 2, "policy 'p1' was already published at index 1")


# --- the notice rule (SPEC §4): it needs each policy leaf's document --------------------------------

LATER = "2026-08-31T12:00:01.000Z"  # 30 days after T1


def test_a_loosening_with_too_little_notice_is_refused_at_its_policy_leaf():
    base = [log_leaf(), policy_leaf("p1", T0), map_leaf({})]
    fails(base + [policy_leaf("loose", T2, logged_at=T1)], 3,
          "policy 'loose' loosens 'p1' — model_training_generative: refused → allowed — but takes effect at "
          "2026-08-01T12:00:02.000Z, before the 30 days' notice 'p1' promised (not before 2026-08-31T12:00:01.000Z)")
    check(base + [policy_leaf("loose", LATER, logged_at=T1)])
    check(base + [policy_leaf("p2", T1, logged_at=T1)])  # no loosening: at once


def test_a_policy_leaf_needs_the_document_it_commits_to():
    base = [log_leaf(), policy_leaf("p1", T0), map_leaf({}), policy_leaf("p2", T1)]
    fails(base, 3, "the document of policy 'p2' is not the one its policy leaf commits to",
          documents={"p2": document("p3")})
    not_a_policy = b'{"purposes":{},"text":"t","notice_days":30}'
    fails([*base[:3], replace(base[3], details=hashlib.sha256(not_a_policy).digest())], 3,
          "the document of policy 'p2' is not a valid policy: purposes: required", documents={"p2": not_a_policy})
    checker = ChainChecker(ORIGIN)
    leaves = chained(base)
    for h, leaf in leaves[:3]:
        add(checker, h, leaf)
    with pytest.raises(VerificationError, match="^index 3: policy 'p2' has a policy leaf but no document to check it against$"):
        checker.add(*leaves[3])


@pytest.mark.parametrize("cut", [2, 3, 4])
def test_ranges_replayed_in_order_find_a_loosening_announced_in_another_range(cut):
    """The policy it loosens (and the notice promised) may be in an earlier range: the rule is replayed."""
    leaves = chained([log_leaf(), policy_leaf("p1", T0), map_leaf({}), policy_leaf("p2", T0),
                      policy_leaf("loose", T2, logged_at=T1)])
    first, second = two_ranges(leaves, cut)
    rules = Sequential()
    rules.replay(first.sequential)  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="^index 4: notice rule broken: policy 'loose' loosens 'p2' — "):
        rules.replay(second.sequential)  # type: ignore[arg-type]
