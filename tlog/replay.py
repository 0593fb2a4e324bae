"""The public-leaf rules: what anyone can check from a log's public leaves alone, replayed in index order.
`tlog verify` (local and `--url`) and `tlog monitor` apply them through `ChainChecker`, and so can a
witness that replays new leaves before it cosigns. Pure: no I/O.

The rules, each failure naming the first bad index:
- the hash chain (`prev`), and `logged_at` never decreasing;
- index 0 is the `log` leaf, of this log's origin, committing to a valid VRF key (SPEC §2.2); no other
  leaf is a `log` leaf;
- every artist chain: a chained leaf (use, refusal, preference, binding; an erasure leaf names a tag but
  is not in its chain) has `aseq` one more than the tag's previous chained leaf and `aprev` its index;
- every erasure leaf's `erased` is the number of its tag's chain leaves before it that no earlier erasure
  leaf covered (SPEC §2.2), so at least one;
- every `map` leaf's root is the artist map over every leaf before it (SPEC §2.3), and every checkpoint
  ends at a map leaf;
- every use and refusal names the policy in effect at its `logged_at` (SPEC §4), and no policy takes
  effect before it is announced;
- every policy leaf comes with its document (which leaves do not hold: the caller fetches it, from
  `GET /v1/policies/{id}` or the store), which must be the one its `details` commit to, and keeps the
  notice rule (SPEC §4 Notice, `policy.notice_problem`): a loosening takes effect no sooner than the
  notice the policy in effect at its announcement promised.

The map, the policy schedule and the erasure counts need every earlier leaf. A range of leaves checked on its own (the
fsck's worker processes) records what those two rules need (`Deferred`: the map's changes between map
leaves, the policy leaves, runs of uses naming one policy at one time), and the caller replays the
ranges' records in order onto one `Sequential`, which applies them at once when leaves come in order."""

from __future__ import annotations

import hashlib
from typing import Any

from . import merkle
from .artistmap import ArtistMap, MapValue
from .errors import ProofError, ValidationError, VerificationError
from .leaf import Leaf
from .policy import Policy, notice_problem, parse_policy
from .records import parse_logged_at
from .vrf import validate_key


# The two policy rules of SPEC §4, named in their failures so that a monitor's alert says which one broke.
NOTICE_RULE = "notice rule broken"
IN_EFFECT_RULE = "policy-in-effect rule broken"


def fail(index: int | None, message: str, rule: str | None = None) -> VerificationError:
    where = f"index {index}: " if index is not None else ""
    return VerificationError(f"{where}{f'{rule}: ' if rule else ''}{message}", index=index)


class Sequential:
    """The rules that need every earlier leaf: the artist map, the policy schedule and erasure counts.

    `changed` holds the (aseq, head) of every tag whose chain moved since the last map leaf; a map leaf
    applies them to the map in one update and compares roots."""

    def __init__(self, amap: ArtistMap | None = None, schedule: list[tuple[str, int, Policy]] | None = None,
                 erased: dict[bytes, int] | None = None) -> None:
        self.map = amap or ArtistMap.empty()
        self.changed: dict[bytes, tuple[int, int]] = {}
        self.schedule = schedule or []  # every policy leaf so far: (effective_at, index, policy)
        self.erased = erased or {}  # tag → its aseq at its latest erasure leaf: what erasures covered so far
        self._effect: tuple[str, int, str | None] = ("", -1, None)  # (logged_at, len(schedule), id): the last answer

    def chained(self, tag: bytes, aseq: int, index: int) -> None:
        self.changed[tag] = (aseq, index)

    def map_leaf(self, index: int, root: bytes) -> None:
        if self.changed:
            self.map = self.map.update({t: MapValue(a, h) for t, (a, h) in self.changed.items()})
            self.changed = {}
        if self.map.root() != root:
            raise fail(index, "the map leaf's root is not the artist map of the leaves before it: the log left out "
                              "or altered an artist's history")

    def erasure_leaf(self, index: int, tag: bytes, erased: int, aseq: int | None = None) -> None:
        """`aseq`: the tag's aseq at the leaf, when the caller knows better (a range that moved the tag's
        chain since its last map leaf); else the chain as this knows it."""
        if aseq is None:
            moved = self.changed.get(tag)
            known = self.map.get(tag)
            aseq = moved[0] if moved else known.aseq if known else 0
        left = aseq - self.erased.get(tag, 0)
        if erased != left:
            raise fail(index, f"the erasure leaf says erased {erased}, but the chain leaves of its tag before it that "
                              f"no earlier erasure leaf covered number {left}")
        self.erased[tag] = aseq

    def policy_leaf(self, index: int, logged_at: str, effective_at: str, policy: Policy) -> None:
        for _, earlier, known in self.schedule:
            if known.id == policy.id:
                raise fail(index, f"policy {policy.id!r} was already published at index {earlier}")
        schedule = [(parse_logged_at(effective), i, p) for effective, i, p in self.schedule]
        problem = notice_problem(schedule, policy, parse_logged_at(logged_at), parse_logged_at(effective_at))
        if problem is not None:
            raise fail(index, f"policy {policy.id!r} {problem[0]}", NOTICE_RULE)
        self.schedule.append((effective_at, index, policy))

    def names_policy(self, index: int, logged_at: str, policy_id: str) -> None:
        want = self.in_effect(logged_at)
        if policy_id != want:
            in_effect = f"policy {want!r} was" if want else "no policy was"
            raise fail(index, f"the use names policy {policy_id!r}, but {in_effect} in effect at its logged_at {logged_at}",
                       IN_EFFECT_RULE)

    def in_effect(self, logged_at: str) -> str | None:
        """The id of the policy in effect at `logged_at` (SPEC §4, as `policy.in_effect`): among the policy
        leaves so far, the latest `effective_at` not after it, ties to the later leaf. Times of the one
        fixed-width UTC form order as strings. Uses come in runs of one `logged_at`, so the last answer
        is kept."""
        key = (logged_at, len(self.schedule))
        if self._effect[:2] != key:
            due = [(effective, index, p.id) for effective, index, p in self.schedule if effective <= logged_at]
            self._effect = (*key, max(due)[2] if due else None)
        return self._effect[2]

    def replay(self, deferred: Deferred) -> None:
        """Applies a range's records, in order (the range must start where these rules stand)."""
        for op in deferred.ops:
            kind = op[0]
            if kind == "map":
                self.changed.update(op[1])
                self.map_leaf(op[2], op[3])
            elif kind == "policy":
                self.policy_leaf(*op[1:])
            elif kind == "uses":
                self.names_policy(op[1], op[2], op[3])
            elif kind == "erasure":
                self.erasure_leaf(*op[1:])
        self.changed.update(deferred.changed)


class Deferred:
    """What `Sequential` would be told about a range, kept compactly for a later `Sequential.replay`:
    each map leaf with the chain changes since the one before, each policy leaf, each run of uses
    naming one policy at one `logged_at` (a batch's uses share both) by its first index, and each erasure
    leaf with its tag's aseq if the range moved the tag's chain since its last map leaf."""

    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] = []
        self.changed: dict[bytes, tuple[int, int]] = {}  # since the range's last map leaf

    def chained(self, tag: bytes, aseq: int, index: int) -> None:
        self.changed[tag] = (aseq, index)

    def map_leaf(self, index: int, root: bytes) -> None:
        self.ops.append(("map", self.changed, index, root))
        self.changed = {}

    def policy_leaf(self, index: int, logged_at: str, effective_at: str, policy: Policy) -> None:
        self.ops.append(("policy", index, logged_at, effective_at, policy))

    def erasure_leaf(self, index: int, tag: bytes, erased: int) -> None:
        moved = self.changed.get(tag)
        self.ops.append(("erasure", index, tag, erased, moved[0] if moved else None))

    def names_policy(self, index: int, logged_at: str, policy_id: str) -> None:
        last = self.ops[-1] if self.ops else None
        if last is None or last[0] != "uses" or last[2:] != (logged_at, policy_id):
            self.ops.append(("uses", index, logged_at, policy_id))


class ChainChecker:
    """The public-leaf rules, applied leaf by leaf in index order (see the module docstring).

    From index 0 (the default) it also rebuilds the tree. For a range of a log checked on its own
    (`start`, `prev`: the hash of the leaf before it, `tree=False`), an artist's first leaf in the range
    cannot be checked against history it has not seen: it is kept in `firsts` for the caller to stitch,
    and the map and policy rules are recorded in `sequential` (a `Deferred`) for the caller to replay."""

    def __init__(self, origin: str, *, start: int = 0, prev: bytes = bytes(32), tree: bool = True) -> None:
        self.origin = origin
        self.frontier: merkle.Frontier | None = merkle.Frontier() if tree else None
        self._next = start
        self.prev = prev
        self.logged_at = ""
        self.first_logged_at: str | None = None
        self.last_type: str | None = None  # of the leaf at size - 1, once seen
        self.artists: dict[bytes, tuple[int, int]] = {}  # tag → (aseq, index of the latest chained leaf)
        whole = tree and not start
        self.firsts: dict[bytes, tuple[int, int | None, int | None]] | None = None if whole else {}
        self.sequential: Sequential | Deferred = Sequential() if whole else Deferred()

    @property
    def size(self) -> int:
        return self.frontier.size if self.frontier is not None else self._next

    def add(self, h: bytes, leaf: Leaf, document: bytes | None = None) -> list[tuple[int, int, bytes]]:
        """Checks the next leaf (hash `h`); returns the tree nodes it completes (none without a tree).
        Of `leaf` it reads only what the rules need: type, prev, logged_at, the chain fields, and the
        policy, effective_at, details, origin, vrf and root where the type has them. A policy leaf needs
        `document`, the exact bytes of its policy document."""
        index = self.size
        if leaf.prev != self.prev:
            raise fail(index, "prev does not match the hash of the leaf before it (the hash chain is broken)")
        if leaf.logged_at < self.logged_at:  # fixed-width RFC 3339 UTC strings order like the times they name
            raise fail(index, f"logged_at {leaf.logged_at} goes back before {self.logged_at}")
        kind = leaf.type
        if index == 0 or kind == "log":
            self._log_leaf(index, leaf)
        elif kind == "use" or kind == "refusal":
            self.sequential.names_policy(index, leaf.logged_at, leaf.policy)  # type: ignore[arg-type]
        elif kind == "map":
            self.sequential.map_leaf(index, leaf.root)  # type: ignore[arg-type]
        elif kind == "policy":
            self._policy(index, leaf, document)
        elif kind == "erasure":
            self.sequential.erasure_leaf(index, leaf.artist, leaf.erased)  # type: ignore[arg-type]
        if leaf.aseq is not None:
            self._chain(index, leaf.artist, leaf.aseq, leaf.aprev)  # type: ignore[arg-type]
        if self.first_logged_at is None:
            self.first_logged_at = leaf.logged_at
        self.prev = h
        self.logged_at = leaf.logged_at
        self.last_type = kind
        if self.frontier is None:
            self._next += 1
            return []
        return self.frontier.append(h)

    def check_end(self, size: int) -> None:
        """A checkpoint of `size`, once the checker has reached it, must end at a map leaf (SPEC §2.3), so
        that it commits to the artist map."""
        if size == 0:
            raise fail(None, "a checkpoint of size 0 has no map leaf to end at, as every checkpoint of a log must")
        if self.last_type != "map":
            raise fail(size - 1, f"the checkpoint of size {size} does not end at a map leaf: leaf {size - 1} is "
                                 f"a {self.last_type} leaf")

    def _chain(self, index: int, tag: bytes, aseq: int, aprev: int | None) -> None:
        last = self.artists.get(tag)
        if last is None and self.firsts is not None:
            self.firsts[tag] = (index, aseq, aprev)
        else:
            last_seq, last_index = last or (0, None)
            if aseq != last_seq + 1 or aprev != last_index:
                raise fail(index, chain_message(aseq, aprev, last_seq, last_index))
        self.artists[tag] = (aseq, index)
        self.sequential.chained(tag, aseq, index)

    def _policy(self, index: int, leaf: Leaf, document: bytes | None) -> None:
        if leaf.effective_at < leaf.logged_at:  # type: ignore[operator]
            raise fail(index, f"the policy takes effect at {leaf.effective_at}, before it was announced ({leaf.logged_at})",
                       NOTICE_RULE)
        policy = announced_policy(index, leaf, document)
        self.sequential.policy_leaf(index, leaf.logged_at, leaf.effective_at, policy)  # type: ignore[arg-type]

    def _log_leaf(self, index: int, leaf: Leaf) -> None:
        if index != 0:
            raise fail(index, "a log leaf may only be the first leaf (index 0)")
        if leaf.type != "log":
            raise fail(0, f"the first leaf must be the log leaf, not a {leaf.type} leaf")
        if leaf.origin != self.origin:
            raise fail(0, f"the log leaf names origin {leaf.origin!r}, not {self.origin!r}")
        try:
            validate_key(leaf.vrf)  # type: ignore[arg-type]
        except ProofError as exc:
            raise fail(0, f"the log leaf's VRF key is not valid: {exc.message}") from None


def announced_policy(index: int, leaf: Leaf, document: bytes | None) -> Policy:
    """The policy a policy leaf announces, from `document`, which must be the one the leaf commits to."""
    if document is None:
        raise fail(index, f"policy {leaf.policy!r} has a policy leaf but no document to check it against")
    if hashlib.sha256(document).digest() != leaf.details:
        raise fail(index, f"the document of policy {leaf.policy!r} is not the one its policy leaf commits to "
                          "(their SHA-256 differ)")
    try:
        return parse_policy(document, leaf.policy)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise fail(index, f"the document of policy {leaf.policy!r} is not a valid policy: {exc.message}") from None


def chain_message(aseq: int, aprev: int | None, last_seq: int, last_index: int | None) -> str:
    """Why a chained leaf does not follow its tag's previous one (aseq `last_seq`, at `last_index`)."""
    if aseq == last_seq + 1:
        what = f"aprev {aprev} is not the index of the artist's previous leaf"
    else:
        what = f"aseq {aseq} " + ("skips" if aseq > last_seq else "repeats an earlier one")
    return f"artist chain broken: {what} (expected aseq {last_seq + 1}, aprev {last_index})"
