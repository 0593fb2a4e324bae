"""An artist's audit bundle (SPEC §6), checked offline against a verifier key the artist names. Pure: the
caller reads files and URLs and keeps the state between runs.

A bundle is one page of an artist's history at a signed checkpoint. `verify_bundle` checks a page alone and
`verify_walk` the pages of a walk together (the first page carries the map; completeness needs them all):

- the checkpoint is signed by the named key (and, with a witness policy, cosigned by its quorum);
- the `log` leaf at index 0 is in the tree, names the origin and a valid VRF key, and the VRF proof under
  that key gives the bundle's tag for the artist id: the tag is this artist's one and only tag;
- every entry's leaf is canonical, in the tree, carries the tag, commits to the details shown and says in
  public what they say; the details name this artist and this index;
- the artist chain (aseq, aprev) runs on without a gap within each page and from page to page;
- every policy leaf is in the tree, its document is the one it commits to, and it keeps the notice rule
  (SPEC §4: a loosening takes effect no sooner than the notice promised); every use and refusal names
  the policy in effect at its logged_at, and its decision is the one SPEC §4 derives from that policy and
  the preferences then in force (the page's `preferences_in_force`, then each preference entry in turn);
- the map leaf ending the checkpoint is in the tree and its map proof for the tag says (aseq, head) equal
  to the walk's last entry, or says the tag is absent when there is none: nothing was left out (§2.3).

With the state of an earlier run (`AuditState`), a bundle older than what was verified is refused, a newer
one must prove it extends it (the consistency proof from the remembered size, `since`), and the new
entries must continue the remembered head.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import merkle, vrf
from .artistmap import MapProof, MapValue, verify_proof
from .canonical import canonical
from .checkpoint import Checkpoint, open_checkpoint
from .errors import ProofError, ValidationError, VerificationError
from .leaf import CHAIN_TYPES, Leaf, parse_leaf
from .note import Note, Verifier, b64decode_strict
from .policy import Policy, decide, in_effect, notice_problem, parse_policy, validate_preferences
from .records import BASES, artist_alpha, details_hash, is_platform_id, parse_logged_at

if TYPE_CHECKING:
    from .witness.quorum import WitnessQuorum

BUNDLE_VERSION = 2
STATE_VERSION = 1

_BUNDLE_FIELDS = ("version", "origin", "artist_id", "tag", "vrf", "checkpoint", "log", "since", "consistency",
                  "entries", "preferences_in_force", "erasures", "map", "policies", "next_aseq")
_ENTRY_FIELDS = ("index", "leaf", "details", "erased", "proof")
_PREFERENCE_FIELDS = ("index", "leaf", "details", "proof")
_ERASURE_FIELDS = ("index", "leaf", "proof")
_MAP_FIELDS = ("index", "leaf", "proof", "map_proof")
_POLICY_FIELDS = ("id", "index", "leaf", "proof", "document")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
# What a chain leaf says in public that its details say too: the public statistics are these.
_SHOWN = {
    "use": ("logged_at", "purpose", "phase", "decision", "policy", "invocations"),
    "refusal": ("logged_at", "purpose", "phase", "decision", "policy", "invocations"),
    "preference": ("logged_at", "by"),
    "binding": (),
}
_ERASED = object()  # preferences in force that were erased: decisions after them cannot be re-derived


@dataclass(frozen=True)
class Head:
    """An artist's latest entry: its number in the chain (aseq) and its index in the log."""

    aseq: int
    index: int


@dataclass(frozen=True)
class AuditState:
    """What an artist's verifier remembers between runs (`tlog audit --state`): the last checkpoint it
    verified, the artist's head there, and the preference entry in force there (its index)."""

    origin: str
    artist_id: str
    size: int
    root: bytes
    checkpoint: str
    head: Head | None
    preference: int | None

    def to_json(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "origin": self.origin, "artist_id": self.artist_id, "size": self.size,
                "root": self.root.hex(), "checkpoint": self.checkpoint,
                "head": None if self.head is None else {"aseq": self.head.aseq, "index": self.head.index},
                "preference": self.preference}

    @classmethod
    def from_json(cls, obj: Any) -> AuditState:
        """ValidationError unless `obj` is exactly what `to_json` writes."""
        try:
            _fields(obj, ("version", "origin", "artist_id", "size", "root", "checkpoint", "head", "preference"), "")
            if obj["version"] != STATE_VERSION:
                raise ValidationError(f"version {obj['version']!r}")
            head = obj["head"]
            if head is not None:
                _fields(head, ("aseq", "index"), "head")
                head = Head(_int(head["aseq"], "head.aseq", 1), _int(head["index"], "head.index"))
            preference = obj["preference"]
            return cls(_str(obj["origin"], "origin"), _str(obj["artist_id"], "artist_id"), _int(obj["size"], "size", 1),
                       _hex(obj["root"], 32, "root"), _str(obj["checkpoint"], "checkpoint"), head,
                       None if preference is None else _int(preference, "preference"))
        except (ValidationError, VerificationError) as exc:
            raise ValidationError(f"not a tlog audit state: {exc.message}") from None


@dataclass
class Tally:
    """Uses counted under one heading of the report (a track, a purpose, a month): how many leaves and
    invocations, when the first and the last were logged, by which systems, for which purposes, with
    which decisions."""

    leaves: int = 0
    invocations: int = 0
    first: str | None = None
    last: str | None = None
    systems: set[str] = field(default_factory=set)
    purposes: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)

    def add(self, leaf: Leaf, system: str | None) -> None:
        self.leaves += 1
        self.invocations += leaf.invocations or 0
        self.first = self.first or leaf.logged_at
        self.last = leaf.logged_at  # entries arrive in log order
        if system is not None:
            self.systems.add(system)
        for counts, key in ((self.purposes, leaf.purpose), (self.decisions, leaf.decision)):
            if key is not None:  # always, on the use and refusal leaves counted here
                counts[key] = counts.get(key, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {"leaves": self.leaves, "invocations": self.invocations, "first": self.first, "last": self.last,
                "systems": sorted(self.systems), "purposes": dict(sorted(self.purposes.items())),
                "decisions": dict(sorted(self.decisions.items()))}

    def line(self, *, purposes: bool = True) -> str:
        """One line of the readable report, e.g. `12 uses (340 runs), 2026-11-02 to 2026-12-01: 10
        recommendation, 2 talent_discovery; refused 1; systems recs-ranker (ranker 2026.07.3)`."""
        runs = f" ({self.invocations:,} runs)" if self.invocations != self.leaves else ""
        first, last = (self.first or "")[:10], (self.last or "")[:10]
        when = first if first == last else f"{first} to {last}"
        parts = [f"{self.leaves:,} use{'s' if self.leaves != 1 else ''}{runs}, {when}"]
        if purposes:
            parts[0] += ": " + ", ".join(f"{n:,} {p}" for p, n in _most(self.purposes))
        not_allowed = [f"{d} {n:,}" for d, n in _most(self.decisions) if d != "allowed"]
        if not_allowed:
            parts.append(", ".join(not_allowed))
        if self.systems:
            parts.append("systems " + ", ".join(sorted(self.systems)))
        return "; ".join(parts)


def _most(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


TRACKS_SHOWN = 50  # tracks the readable report lists, most used first (--json lists them all)
ERASED_TRACK = "(erased)"  # the heading of uses whose details were erased: their content id is gone


@dataclass
class AuditReport:
    """What a verified bundle or walk showed. `complete`: the map proved the walk holds every entry about
    the artist up to the checkpoint (since `since`, when that is set)."""

    origin: str
    artist_id: str
    size: int
    root: bytes
    checkpoint: str
    logged_at: str | None = None  # when the checkpoint was made: its map leaf's logged_at
    pages: int = 1
    entries: int = 0
    complete: bool = False
    since: int | None = None
    extends: int | None = None  # the remembered checkpoint this one was proved to extend
    head: Head | None = None
    preference: int | None = None
    first_aseq: int | None = None
    uses: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (purpose, decision) → [leaves, invocations]
    preference_changes: int = 0
    bindings: int = 0
    erased: int = 0
    cosigners: list[str] = field(default_factory=list)
    quorum: str | None = None
    tracks: dict[str, Tally] = field(default_factory=dict)  # by content id
    purposes: dict[str, Tally] = field(default_factory=dict)
    months: dict[str, Tally] = field(default_factory=dict)  # "2026-12", by logged_at (UTC)

    def state(self) -> AuditState | None:
        """The state to remember, if this run may advance it: a complete walk that starts at the artist's
        first entry or continues the state it was checked against."""
        if not self.complete or (self.since is not None and self.since != self.extends):
            return None
        return AuditState(self.origin, self.artist_id, self.size, self.root, self.checkpoint, self.head, self.preference)

    def verdict(self) -> str:
        """One plain paragraph for the artist."""
        at = f"checkpoint {self.size:,}" + (f" ({_when(self.logged_at)})" if self.logged_at else "")
        if not self.complete:
            first = self.first_aseq or 0
            span = f" (your entries {first:,} to {first + self.entries - 1:,})" if self.entries else ""
            return (f"Verified {self.entries:,} entries{span} at {at}: each is in the log, matches its public leaf, and "
                    f"{self._decided()}. This is not the whole walk, so it cannot show that nothing was left out; "
                    f"`tlog audit` fetches and checks all of it.{self._witnessed()}")
        if self.since is None and self.entries == 0:
            return (f"No entries for this id ({self.artist_id}) up to {at}: nothing about it has been logged. If you "
                    f"expected some, check the id for a typo: ids are compared exactly.{self._witnessed()}")
        if self.since is not None and self.entries == 0:
            before = f"checkpoint {self.since:,}" + (" (your last check)" if self.since == self.extends else "")
            return f"Nothing new about you since {before}; complete at {at}.{self._witnessed()}"
        scope = ("every AI use logged under your artist id" if self.since is None else
                 f"since checkpoint {self.since:,}" + (" (your last check)" if self.since == self.extends else ""))
        return f"Complete at {at}: {scope}, {self._what()}; {self._decided()}.{self._witnessed()}"

    def readable(self) -> str:
        """The verdict, then what was logged: by track, by purpose and by month, with dates and systems."""
        out = [self.verdict()]
        if self.tracks:
            shown = sorted(self.tracks.items(), key=lambda kv: (-kv[1].leaves, kv[0]))
            out += ["", f"By track ({len(shown):,}):"] + [f"  {c}: {t.line()}" for c, t in shown[:TRACKS_SHOWN]]
            if len(shown) > TRACKS_SHOWN:
                out.append(f"  … and {len(shown) - TRACKS_SHOWN:,} more (--json lists them all)")
            out += ["", "By purpose:"] + [f"  {p}: {t.line(purposes=False)}" for p, t in sorted(self.purposes.items())]
            out += ["", "By month (UTC):"] + [f"  {m}: {t.line()}" for m, t in sorted(self.months.items())]
        return "\n".join(out)

    def _what(self) -> str:
        total = sum(n for n, _ in self.uses.values())
        new = "new " if self.since is not None else ""
        parts = [f"{total:,} {new}use{'s' if total != 1 else ''}"]
        if self.uses:
            rows = sorted(self.uses.items(), key=lambda kv: (-kv[1][0], kv[0]))
            parts[0] += " — " + ", ".join(f"{n:,} {purpose} {decision}" for (purpose, decision), (n, _) in rows)
        for count, one, many in ((self.preference_changes, "preference change", "preference changes"),
                                 (self.bindings, "catalogue binding", "catalogue bindings"),
                                 (self.erased, "erased entry", "erased entries")):
            if count:
                parts.append(f"{count:,} {one if count == 1 else many}")
        return "; ".join(parts)

    def _decided(self) -> str:
        return "every decision follows the policy and your preferences" if self.uses else "no decision to re-derive"

    def _witnessed(self) -> str:
        if self.quorum is None:
            return ""
        return f" Cosigned by {', '.join(self.cosigners) or 'no witness'} (quorum {self.quorum})."

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True, "complete": self.complete, "origin": self.origin, "artist_id": self.artist_id,
            "size": self.size, "root": self.root.hex(), "logged_at": self.logged_at, "pages": self.pages,
            "entries": self.entries, "since": self.since, "extends": self.extends,
            "head": None if self.head is None else {"aseq": self.head.aseq, "index": self.head.index},
            "uses": [{"purpose": p, "decision": d, "leaves": n, "invocations": i}
                     for (p, d), (n, i) in sorted(self.uses.items())],
            "preference_changes": self.preference_changes, "bindings": self.bindings, "erased": self.erased,
            "cosigners": self.cosigners, "quorum": self.quorum, "verdict": self.verdict(),
            "tracks": [{"content_id": c, **t.to_json()} for c, t in sorted(self.tracks.items())],
            "by_purpose": [{"purpose": p, **t.to_json()} for p, t in sorted(self.purposes.items())],
            "by_month": [{"month": m, **t.to_json()} for m, t in sorted(self.months.items())],
        }


def _entries(n: int) -> str:
    return f"{n:,} {'entry' if n == 1 else 'entries'}"


def _when(logged_at: str) -> str:
    return f"{logged_at[:10]} {logged_at[11:16]} UTC"


# --- reading a bundle's fields -----------------------------------------------------------------------
# Shape problems are ValidationErrors (not a bundle at all); values that fail a check are VerificationErrors.


def _fields(obj: Any, names: Sequence[str], where: str) -> None:
    if not isinstance(obj, dict) or set(obj) != set(names):
        raise ValidationError(f"{where or 'the bundle'} must be an object with exactly {', '.join(names)}")


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:
        raise ValidationError(f"{where} must be an integer of at least {minimum}")
    return value


def _str(value: Any, where: str) -> str:
    if type(value) is not str:
        raise ValidationError(f"{where} must be a string")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if type(value) is not list:
        raise ValidationError(f"{where} must be a list")
    return value


def _hex(value: Any, size: int, where: str) -> bytes:
    """Lowercase hex of exactly `size` bytes: one spelling per value, so a flipped letter case is refused."""
    if type(value) is not str or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise VerificationError(f"{where} is not {size} bytes of lowercase hex")
    return bytes.fromhex(value)


def _b64(value: Any, where: str) -> bytes:
    if type(value) is not str:
        raise ValidationError(f"{where} must be a base64 string")
    try:
        return b64decode_strict(value, where)
    except ProofError as exc:
        raise VerificationError(exc.message) from None


# --- one page ------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    index: int
    leaf: Leaf
    details: dict[str, Any] | None  # None: erased


@dataclass
class _Page:
    """A page that verified alone."""

    checkpoint: Checkpoint
    note: Note
    signed: str
    identity: tuple[Any, ...]  # origin, artist id, tag, VRF key and proof: the same on every page
    since: int | None
    consistency: list[bytes] | None
    entries: list[_Entry]
    in_force: int | None  # index of preferences_in_force
    last_preference: int | None  # index of the latest preference entry up to the page's end
    erasures: list[tuple[int, int]]  # (index, erased count)
    map: MapValue | None
    map_logged_at: str | None  # None: the page carries no map
    next_aseq: int | None


class _Verifier:
    """Checks one parsed bundle; each method checks one part and names what failed."""

    def __init__(self, bundle: Any, verifier: Verifier) -> None:
        try:
            canonical(bundle)  # only what strict JSON can hold: no floats, lone surrogates, huge integers
        except ValidationError as exc:
            raise ValidationError(f"not a tlog audit bundle: {exc.message}") from None
        if isinstance(bundle, dict) and bundle.get("version") == 1:
            raise ValidationError("this is a version 1 audit bundle (tlog 0.1: HMAC artist tags, no artist map); "
                                  "this version verifies version 2 bundles only: verify it with tlog 0.1")
        if not isinstance(bundle, dict) or bundle.get("version") != BUNDLE_VERSION:
            raise ValidationError(f"not a tlog audit bundle (version {BUNDLE_VERSION})")
        _fields(bundle, _BUNDLE_FIELDS, "")
        self.b = bundle
        self.verifier = verifier
        self.artist_id = _str(bundle["artist_id"], "artist_id")
        if not is_platform_id(self.artist_id):
            raise ValidationError("the bundle's artist_id is not a platform id")
        self.tag = _hex(bundle["tag"], 32, "the bundle's tag")

    def page(self) -> _Page:
        b = self.b
        signed = _str(b["checkpoint"], "checkpoint")
        try:
            cp, note = open_checkpoint(signed.encode(), [self.verifier])
        except ProofError as exc:
            raise VerificationError(f"the checkpoint does not verify with the key you named ({self.verifier.key}): "
                                    f"{exc.message}") from None
        self.cp = cp
        if b["origin"] != cp.origin:
            raise VerificationError(f"the bundle names origin {b['origin']!r}, its checkpoint {cp.origin!r}")
        vrf_key = self._log_leaf()
        since, consistency = self._since()
        schedule = self._policies()
        erasures = self._erasures()
        entries = [self._entry(e, n) for n, e in enumerate(_list(b["entries"], "entries"))]
        _erased_before(entries, erasures)
        in_force, prefs = self._in_force(entries)
        self._chain(entries, since)
        last_preference = self._decisions(entries, schedule, erasures, in_force, prefs)
        amap, map_logged_at = self._map()
        next_aseq = self._next_aseq(entries)
        vrf_proof = _hex(b["vrf"]["proof"], vrf.PROOF_SIZE, "the VRF proof")
        self._vrf(vrf_key, vrf_proof)  # last: the dearest check (about a millisecond)
        return _Page(cp, note, signed, (cp.origin, self.artist_id, self.tag, vrf_key, vrf_proof), since, consistency,
                     entries, in_force, last_preference, erasures, amap, map_logged_at, next_aseq)

    def _included(self, part: Any, index: int, what: str) -> Leaf:
        """The leaf of `part` (a dict with leaf and proof), checked to be canonical and at `index` in the
        checkpoint's tree."""
        data = _b64(part["leaf"], f"{what}'s leaf")
        proof = [_b64(h, f"{what}'s inclusion proof") for h in _list(part["proof"], f"{what}'s proof")]
        try:
            merkle.verify_inclusion(merkle.leaf_hash(data), index, self.cp.size, proof, self.cp.root)
        except ProofError as exc:
            raise VerificationError(f"{what} is not in the log at checkpoint {self.cp.size:,}: {exc.message}",
                                    index=index) from None
        try:
            return parse_leaf(data)
        except ValidationError as exc:
            raise VerificationError(f"{what} is not a canonical tlog leaf: {exc.message}", index=index) from None

    def _log_leaf(self) -> bytes:
        """The VRF public key, from the log leaf at index 0 (the key the bundle names must be that one)."""
        part, keys = self.b["log"], self.b["vrf"]
        _fields(part, ("leaf", "proof"), "log")
        _fields(keys, ("key", "proof"), "vrf")
        leaf = self._included(part, 0, "the log leaf (index 0)")
        if leaf.type != "log":
            raise VerificationError(f"the leaf at index 0 is a {leaf.type} leaf, not the log leaf", index=0)
        if leaf.origin != self.cp.origin:
            raise VerificationError(f"the log leaf names origin {leaf.origin!r}, the checkpoint {self.cp.origin!r}", index=0)
        key = _hex(keys["key"], vrf.PUBLIC_SIZE, "the VRF key")
        if key != leaf.vrf:
            raise VerificationError("the bundle's VRF key is not the one the log committed to in its first leaf", index=0)
        return key

    def _vrf(self, key: bytes, proof: bytes) -> None:
        try:
            beta = vrf.verify(key, artist_alpha(self.artist_id), proof)
        except ProofError as exc:
            raise VerificationError(f"the VRF proof of your tag does not verify: {exc.message}") from None
        if beta[:32] != self.tag:
            raise VerificationError(f"the bundle's tag is not the tag of {self.artist_id!r}: the VRF proof gives "
                                    f"{beta[:32].hex()}")

    def _since(self) -> tuple[int | None, list[bytes] | None]:
        since, proof = self.b["since"], self.b["consistency"]
        if since is None and proof is None:
            return None, None
        if since is None or proof is None:
            raise ValidationError("since and consistency must be given together")
        since = _int(since, "since", 1)
        if since > self.cp.size:
            raise VerificationError(f"since {since:,} is beyond the checkpoint ({self.cp.size:,})")
        return since, [_b64(h, "the consistency proof") for h in _list(proof, "consistency")]

    def _policies(self) -> list[tuple[int, int, Policy]]:
        """The policy schedule (effective_at ms, index, policy), each policy checked against its leaf and
        against the policies before it for the notice rule (the bundle holds every policy leaf)."""
        schedule: list[tuple[int, int, Policy]] = []
        for n, part in enumerate(_list(self.b["policies"], "policies")):
            _fields(part, _POLICY_FIELDS, f"policies[{n}]")
            index, policy_id = _int(part["index"], f"policies[{n}].index"), _str(part["id"], f"policies[{n}].id")
            what = f"policy {policy_id!r} (index {index:,})"
            leaf = self._included(part, index, what)
            if leaf.type != "policy" or leaf.policy != policy_id:
                raise VerificationError(f"{what}: the leaf at that index is not the policy leaf of {policy_id!r}", index=index)
            if schedule and index <= schedule[-1][1]:
                raise ValidationError("the bundle's policies are not in log order")
            document = _b64(part["document"], f"{what}'s document")
            if hashlib.sha256(document).digest() != leaf.details:
                raise VerificationError(f"{what}: the document shown is not the one its leaf commits to", index=index)
            try:
                policy = parse_policy(document, policy_id)
            except ValidationError as exc:
                raise VerificationError(f"{what}: the document is not a policy: {exc.message}", index=index) from None
            effective = parse_logged_at(leaf.effective_at)
            problem = notice_problem(schedule, policy, parse_logged_at(leaf.logged_at), effective)
            if problem is not None:
                raise VerificationError(f"{what} {problem[0]}", index=index)
            schedule.append((effective, index, policy))
        return schedule

    def _erasures(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for n, part in enumerate(_list(self.b["erasures"], "erasures")):
            _fields(part, _ERASURE_FIELDS, f"erasures[{n}]")
            index = _int(part["index"], f"erasures[{n}].index")
            leaf = self._included(part, index, f"erasure leaf {index:,}")
            if leaf.type != "erasure" or leaf.artist != self.tag:
                raise VerificationError(f"the leaf at index {index:,} is not an erasure of your entries", index=index)
            if out and index <= out[-1][0]:
                raise ValidationError("the bundle's erasures are not in log order")
            out.append((index, leaf.erased))  # type: ignore[arg-type]  # an erasure leaf has its count
        return out

    def _entry(self, part: Any, n: int) -> _Entry:
        _fields(part, _ENTRY_FIELDS, f"entries[{n}]")
        index = _int(part["index"], f"entries[{n}].index")
        what = f"entry {index:,}"
        leaf = self._included(part, index, what)
        if leaf.type not in CHAIN_TYPES:
            raise VerificationError(f"{what} is a {leaf.type} leaf, not one of an artist's entries", index=index)
        if leaf.artist != self.tag:
            raise VerificationError(f"{what} is about someone else: its tag is not yours", index=index)
        details = part["details"]
        if details is None:
            _erased(part["erased"], f"entries[{n}]")
            return _Entry(index, leaf, None)
        if part["erased"] is not None:
            raise ValidationError(f"entries[{n}] shows details and says they were erased")
        self._details(details, leaf, index, what)
        return _Entry(index, leaf, details)

    def _details(self, details: Any, leaf: Leaf, index: int, what: str) -> None:
        """The details are the ones the leaf commits to, about this artist at this index, and say what the
        leaf says in public."""
        if not isinstance(details, dict) or details_hash(details) != leaf.details:
            raise VerificationError(f"{what}: the details shown are not the ones its public leaf commits to", index=index)
        if details.get("artist_id") != self.artist_id:
            raise VerificationError(f"{what}: the details are about {details.get('artist_id')!r}, not you", index=index)
        if details.get("index") != index:
            raise VerificationError(f"{what}: the details say index {details.get('index')!r}", index=index)
        for name in _SHOWN[leaf.type]:
            if getattr(leaf, name) != details.get(name):
                raise VerificationError(f"{what}: the public leaf says {name} {getattr(leaf, name)!r}, the details "
                                        f"{details.get(name)!r}", index=index)

    def _in_force(self, entries: list[_Entry]) -> tuple[int | None, Any]:
        """(index, preferences) of the preference entry in force before the page's first entry."""
        part = self.b["preferences_in_force"]
        if part is None:
            return None, None
        _fields(part, _PREFERENCE_FIELDS, "preferences_in_force")
        index = _int(part["index"], "preferences_in_force.index")
        what = f"the preferences in force (entry {index:,})"
        leaf = self._included(part, index, what)
        if leaf.type != "preference" or leaf.artist != self.tag:
            raise VerificationError(f"{what}: the leaf at that index is not one of your preference changes", index=index)
        if entries and (index >= entries[0].index or leaf.aseq >= entries[0].leaf.aseq):  # type: ignore[operator]
            raise VerificationError(f"{what} does not come before the page's first entry", index=index)
        if part["details"] is None:  # erased: only an erasure leaf between it and the page makes that right
            return index, _ERASED
        self._details(part["details"], leaf, index, what)
        return index, self._preferences(part["details"], index)

    def _preferences(self, details: dict[str, Any], index: int) -> dict[str, Any]:
        try:
            return validate_preferences(details.get("preferences"), limits=None)  # the log's, as it holds them
        except ValidationError as exc:
            raise VerificationError(f"entry {index:,}: the preferences are not a preferences document: {exc.message}",
                                    index=index) from None

    def _chain(self, entries: list[_Entry], since: int | None) -> None:
        """aseq and aprev run on without a gap: each entry names the one before it."""
        for prev, e in zip([None, *entries], entries):
            leaf = e.leaf
            if since is not None and e.index < since:
                raise VerificationError(f"entry {e.index:,} is before since ({since:,})", index=e.index)
            if leaf.aprev is not None and leaf.aprev >= e.index:
                raise VerificationError(f"entry {e.index:,} names a later entry ({leaf.aprev:,}) as its previous one",
                                        index=e.index)
            if prev is None:
                continue
            if leaf.aseq != prev.leaf.aseq + 1:  # type: ignore[operator]
                missing = leaf.aseq - prev.leaf.aseq - 1  # type: ignore[operator]
                raise VerificationError(
                    f"entry {e.index:,} is your entry number {leaf.aseq:,}, but the one before it in the bundle is "
                    f"number {prev.leaf.aseq:,}" + (f": {_entries(missing)} missing" if missing > 0 else ""),
                    index=e.index)
            if leaf.aprev != prev.index:
                raise VerificationError(f"entry {e.index:,} says your previous entry is at index {leaf.aprev:,}, but "
                                        f"the bundle shows it at {prev.index:,}", index=e.index)

    def _decisions(self, entries: list[_Entry], schedule: list[tuple[int, int, Policy]],
                   erasures: list[tuple[int, int]], in_force: int | None, prefs: Any) -> int | None:
        """Re-derives every decision (SPEC §4); returns the index of the latest preference entry."""
        pending = [index for index, _ in erasures if in_force is None or index > in_force]
        latest = in_force
        for e in entries:
            while pending and pending[0] < e.index:  # an erasure of the tag: no preferences from then on
                pending.pop(0)
                prefs = None
            if e.leaf.type == "preference":
                latest = e.index
                prefs = _ERASED if e.details is None else self._preferences(e.details, e.index)
            elif e.leaf.type in ("use", "refusal") and e.details is not None:
                _check_decision(e, schedule, prefs)
        return latest

    def _map(self) -> tuple[MapValue | None, str | None]:
        """The artist map's value for the tag at the checkpoint ((None, None) when the page has no map)."""
        part = self.b["map"]
        if part is None:
            return None, None
        _fields(part, _MAP_FIELDS, "map")
        index = _int(part["index"], "map.index")
        if index != self.cp.size - 1:
            raise VerificationError(f"the map leaf must be the checkpoint's last leaf ({self.cp.size - 1:,}), not "
                                    f"{index:,}", index=index)
        leaf = self._included(part, index, f"the map leaf (index {index:,})")
        if leaf.type != "map":
            raise VerificationError(f"the checkpoint's last leaf is a {leaf.type} leaf, not a map leaf", index=index)
        try:
            proof = MapProof.from_json(part["map_proof"])
        except ValidationError as exc:
            raise VerificationError(f"the map proof is malformed: {exc.message}") from None
        if proof.tag != self.tag:
            raise VerificationError("the map proof is for another tag than yours")
        try:
            value = verify_proof(leaf.root, proof)  # type: ignore[arg-type]  # a map leaf has its root
        except ProofError as exc:
            raise VerificationError(f"the map proof does not lead to the map root of checkpoint {self.cp.size:,}: "
                                    f"{exc.message}") from None
        if value is not None and value.head >= index:
            raise VerificationError(f"the map proof puts your latest entry at index {value.head:,}, not before the map leaf")
        return value, leaf.logged_at

    def _next_aseq(self, entries: list[_Entry]) -> int | None:
        raw = self.b["next_aseq"]
        if raw is None:
            return None
        next_aseq = _int(raw, "next_aseq", 2)
        if not entries or next_aseq != entries[-1].leaf.aseq + 1:  # type: ignore[operator]
            raise ValidationError("next_aseq must be the number after the page's last entry")
        return next_aseq


def _erased(erased: Any, where: str) -> None:
    if erased is None:
        raise ValidationError(f"{where} has neither details nor an erasure note")
    _fields(erased, ("at", "reason"), f"{where}.erased")
    _str(erased["at"], f"{where}.erased.at")
    _str(erased["reason"], f"{where}.erased.reason")


def _erased_before(entries: list[_Entry], erasures: list[tuple[int, int]]) -> None:
    """An entry shown without details was erased: an erasure leaf of the tag must follow it."""
    last = erasures[-1][0] if erasures else -1
    for e in entries:
        if e.details is None and e.index > last:
            raise VerificationError(f"entry {e.index:,} shows no details, yet no erasure leaf follows it", index=e.index)


def _check_decision(e: _Entry, schedule: list[tuple[int, int, Policy]], prefs: Any) -> None:
    """The use names the policy in effect at its logged_at and its decision is the one §4 derives."""
    d, leaf, index = e.details, e.leaf, e.index
    assert d is not None
    what = f"entry {index:,}"
    policy = in_effect([s for s in schedule if s[1] < index], parse_logged_at(leaf.logged_at))
    if policy is None:
        raise VerificationError(f"{what}: no policy in the bundle was in effect at {leaf.logged_at}", index=index)
    if leaf.policy != policy.id:
        raise VerificationError(f"{what}: it names policy {leaf.policy!r}, but policy {policy.id!r} was in effect at "
                                f"{leaf.logged_at}", index=index)
    if prefs is _ERASED:
        raise VerificationError(f"{what}: the preferences it was decided by were erased, with no erasure leaf after "
                                "them", index=index)
    purpose, content_id, basis = d.get("purpose"), d.get("content_id"), d.get("basis")
    if purpose not in policy.purposes or not is_platform_id(content_id) or not (basis is None or basis in BASES):
        raise VerificationError(f"{what}: its purpose, content or basis is not one policy {policy.id!r} can decide",
                                index=index)
    want = decide(policy, purpose, content_id, prefs, basis)  # type: ignore[arg-type]
    if d.get("decision") != want:
        raise VerificationError(
            f"{what}: the log decided {d.get('decision')!r} for {purpose} of {content_id}, but policy {policy.id!r} "
            f"with your preferences then in force gives {want!r}", index=index)


# --- pages, walks and state ------------------------------------------------------------------------------


def verify_bundle(bundle: Any, verifier: Verifier, *, state: AuditState | None = None,
                  quorum: WitnessQuorum | None = None) -> AuditReport:
    """Checks one bundle as parsed from its JSON: a walk of one page. ValidationError if it is not a bundle
    (or does not fit the state), VerificationError naming the first thing that failed; nothing else."""
    return verify_walk([bundle], verifier, state=state, quorum=quorum)


def verify_walk(pages: Sequence[Any], verifier: Verifier, *, state: AuditState | None = None,
                quorum: WitnessQuorum | None = None) -> AuditReport:
    """Checks the pages of a walk: the first as served without from_aseq, each next one from the previous
    page's next_aseq at the first page's size."""
    walk = AuditWalk(verifier, state=state, quorum=quorum)
    for page in pages:
        walk.add(page)
    return walk.report()


class AuditWalk:
    """A walk over an artist's pages, verified page by page as they arrive (so that a long history need
    not be held in memory): each page alone, then as the continuation of the one before it. `report`
    decides completeness from the first page's map, the walk's ends and the remembered state."""

    def __init__(self, verifier: Verifier, *, state: AuditState | None = None,
                 quorum: WitnessQuorum | None = None) -> None:
        self.verifier = verifier
        self.state = state
        self.quorum = quorum
        self.first: _Page | None = None
        self.last: _Page | None = None
        self.pages = 0
        self.head: _Entry | None = None  # the walk's first entry
        self.tail: _Entry | None = None  # and its last
        self.segments: list[int] = []  # entries before each erasure leaf (and after the last)
        self._report: AuditReport | None = None  # filled in page by page

    @property
    def next_aseq(self) -> int | None:
        """Where the next page starts, if the last page said the history goes on."""
        return None if self.last is None else self.last.next_aseq

    @property
    def size(self) -> int | None:
        return None if self.first is None else self.first.checkpoint.size

    def add(self, bundle: Any) -> None:
        page = _Verifier(bundle, self.verifier).page()
        self.pages += 1
        if self.first is None:
            self._start(page)
        else:
            _continues(page, self.first, self.last, self.pages)  # type: ignore[arg-type]
        assert self._report is not None
        _count(page.entries, self._report)
        erasures = [i for i, _ in page.erasures]
        for e in page.entries:
            self.segments[bisect.bisect_left(erasures, e.index)] += 1
        if page.entries:
            self.head = self.head or page.entries[0]
            self.tail = page.entries[-1]
        self.last = page

    def _start(self, page: _Page) -> None:
        cp = page.checkpoint
        self.first = page
        report = self._report = AuditReport(cp.origin, page.identity[1], cp.size, cp.root, page.signed,
                                            logged_at=page.map_logged_at, since=page.since)
        if self.quorum is not None:
            report.cosigners = _cosigners(page.signed, self.verifier, self.quorum)
            report.quorum = self.quorum.quorum
        if self.state is not None:
            report.extends = _check_state(page, self.state)
        self.segments = [0] * (len(page.erasures) + 1)

    def report(self) -> AuditReport:
        """What the walk showed; VerificationError if the map or the state shows entries left out."""
        first, last, report = self.first, self.last, self._report
        if first is None or last is None or report is None:
            raise ValidationError("no audit bundle to verify")
        report.pages = self.pages
        # The remembered head and preferences apply when this walk starts where the state ended.
        state = self.state if self.state is not None and first.since == self.state.size else None
        report.complete = self._complete(first, last, state)
        no_news = state is not None and self.head is None
        report.preference = state.preference if no_news else last.last_preference  # type: ignore[union-attr]
        if report.complete and first.map is not None:
            report.head = Head(first.map.aseq, first.map.head)
        return report

    def _complete(self, first: _Page, last: _Page, state: AuditState | None) -> bool:
        """Whether the walk holds every entry about the artist (since `since`)."""
        if first.map_logged_at is None or last.next_aseq is not None:
            return False  # no map to judge by, or the walk stops early: verified, but not shown complete
        value, since = first.map, first.since
        remembered = state.head if state is not None else None
        if self.head is not None and self.tail is not None:
            _starts(self.head, since, state)
            _ends(self.tail, value)
            if state is not None and first.in_force != state.preference:
                raise VerificationError(f"the preferences in force shown (entry {first.in_force}) are not the ones "
                                        f"you verified before (entry {state.preference})")
        elif value is None:
            if remembered is not None:
                raise VerificationError(f"the log's map says nothing is logged about you, but you verified entries "
                                        f"up to number {remembered.aseq:,} before: the log lost them")
        elif since is None or value.head >= since:
            raise VerificationError(f"the log's artist map says your latest entry is number {value.aseq:,} at index "
                                    f"{value.head:,}, but the bundle lists none"
                                    f"{'' if since is None else f' since {since:,}'}: entries were left out")
        elif state is not None and remembered != Head(value.aseq, value.head):
            raise VerificationError(f"the log's map says your latest entry is number {value.aseq:,} at index "
                                    f"{value.head:,}, not the one you verified before")
        if since is None:
            _check_erasure_counts(first.erasures, self.segments)
        return True


def _continues(page: _Page, first: _Page, last: _Page, n: int) -> None:
    """Page n continues the walk: same checkpoint, artist and since; its chain picks up where the last
    page's ended, with the same preferences in force."""
    if (page.checkpoint.size, page.checkpoint.root) != (first.checkpoint.size, first.checkpoint.root):
        raise VerificationError(f"page {n} is at checkpoint {page.checkpoint.size:,}, the walk at "
                                f"{first.checkpoint.size:,}: the pages do not belong together")
    if page.identity != first.identity or page.since != first.since:
        raise VerificationError(f"page {n} is for another artist, tag or starting point than page 1")
    if page.map_logged_at is not None:
        raise ValidationError(f"page {n} carries the map: only the first page of a walk does")
    if last.next_aseq is None:
        raise ValidationError(f"page {n - 1} said it was the last, yet page {n} follows")
    if not page.entries:
        raise VerificationError(f"page {n} is empty, but page {n - 1} said your entries go on from number "
                                f"{last.next_aseq:,}")
    head, tail = page.entries[0], last.entries[-1]
    if head.leaf.aseq != last.next_aseq or head.leaf.aprev != tail.index:
        raise VerificationError(f"entry {head.index:,} (number {head.leaf.aseq:,}) does not follow entry "
                                f"{tail.index:,} (number {tail.leaf.aseq:,}), where page {n - 1} ended", index=head.index)
    if page.in_force != last.last_preference:
        raise VerificationError(f"page {n} shows other preferences in force than the walk reached "
                                f"(entry {page.in_force} instead of {last.last_preference})")


def _starts(e: _Entry, since: int | None, state: AuditState | None) -> None:
    """The walk's first entry is the artist's first, or the first since `since` (right after the head
    the state remembers, if the walk continues one)."""
    leaf = e.leaf
    assert leaf.aseq is not None
    if since is None and leaf.aseq != 1:
        raise VerificationError(f"the bundle starts at your entry number {leaf.aseq:,} (index {e.index:,}): "
                                f"{_entries(leaf.aseq - 1)} before it left out", index=e.index)
    if since is not None and leaf.aprev is not None and leaf.aprev >= since:
        raise VerificationError(f"entry {e.index:,} follows entry {leaf.aprev:,}, also since {since:,}, which the "
                                "bundle left out", index=e.index)
    if state is None:
        return
    head = state.head
    if (leaf.aseq, leaf.aprev) != ((head.aseq + 1, head.index) if head else (1, None)):
        raise VerificationError(f"entry {e.index:,} (number {leaf.aseq:,}) does not follow your last verified entry "
                                + (f"(number {head.aseq:,} at index {head.index:,})" if head else "(none)"),
                                index=e.index)


def _ends(e: _Entry, value: MapValue | None) -> None:
    aseq = e.leaf.aseq
    assert aseq is not None
    if value is None:
        raise VerificationError("the log's artist map says nothing is logged under your tag, yet the bundle lists "
                                "entries: the map and the log disagree")
    if (aseq, e.index) == (value.aseq, value.head):
        return
    if aseq < value.aseq:
        raise VerificationError(f"the log's artist map says your latest entry is number {value.aseq:,} at index "
                                f"{value.head:,}, but the bundle stops at number {aseq:,} (index {e.index:,}): "
                                f"{_entries(value.aseq - aseq)} left out", index=value.head)
    raise VerificationError(f"the log's artist map says your latest entry is number {value.aseq:,} at index "
                            f"{value.head:,}, but the bundle's last is number {aseq:,} at index {e.index:,}",
                            index=e.index)


def _check_erasure_counts(erasures: list[tuple[int, int]], segments: list[int]) -> None:
    """Each erasure leaf counts the chain entries before it that no earlier erasure covered (SPEC §2.2);
    `segments` counts the walk's entries between them."""
    for (index, erased), count in zip(erasures, segments):
        if count != erased:
            raise VerificationError(f"the erasure leaf at index {index:,} says {erased:,} entries were erased, but "
                                    f"{count:,} of yours came before it", index=index)


def _count(entries: list[_Entry], report: AuditReport) -> None:
    if entries and report.first_aseq is None:
        report.first_aseq = entries[0].leaf.aseq
    report.entries += len(entries)
    for e in entries:
        kind = e.leaf.type
        if e.details is None:
            report.erased += 1
        if kind in ("use", "refusal"):
            row = report.uses.setdefault((e.leaf.purpose, e.leaf.decision), [0, 0])  # type: ignore[arg-type]
            row[0] += 1
            row[1] += e.leaf.invocations  # type: ignore[operator]
            _tally(e, report)
        elif kind == "preference":
            report.preference_changes += 1
        elif kind == "binding":
            report.bindings += 1


def _tally(e: _Entry, report: AuditReport) -> None:
    """Counts a use or refusal under its track, purpose and month. An erased entry's public leaf still
    gives its purpose, decision and date; its track and system went with its details."""
    d = e.details
    track, system = ERASED_TRACK, None
    if d is not None:
        track = str(d.get("content_id"))
        s = d.get("system")
        if isinstance(s, dict):
            system = f"{s.get('id')} ({s.get('model')} {s.get('version')})"
    for tallies, key in ((report.tracks, track), (report.purposes, e.leaf.purpose), (report.months, e.leaf.logged_at[:7])):
        tallies.setdefault(key, Tally()).add(e.leaf, system)  # type: ignore[arg-type]


def _check_state(page: _Page, state: AuditState) -> int:
    """The page's checkpoint is not older than the remembered one and provably extends it; returns the
    remembered size."""
    cp = page.checkpoint
    if (state.origin, state.artist_id) != (cp.origin, page.identity[1]):
        raise ValidationError(f"the state is for {state.artist_id!r} on {state.origin}, not this bundle's artist and log")
    if cp.size < state.size:
        raise VerificationError(f"this bundle's checkpoint ({cp.size:,}) is an older checkpoint than one you already "
                                f"verified ({state.size:,}): a log never goes back, so it is refused")
    if cp.size == state.size:
        if cp.root != state.root:
            raise VerificationError(f"the log shows two different histories of size {cp.size:,}: the one you verified "
                                    "before and this one (a fork)")
        return state.size
    if page.since != state.size:
        raise ValidationError(f"this bundle does not prove that it extends checkpoint {state.size:,}, the last you "
                              f"verified: fetch it with since={state.size} (tlog audit --state does)")
    try:
        merkle.verify_consistency(state.size, cp.size, state.root, cp.root, page.consistency or [])
    except ProofError as exc:
        raise VerificationError(f"checkpoint {cp.size:,} does not extend checkpoint {state.size:,}, which you "
                                f"verified before: the log rewrote its history ({exc.message})") from None
    return state.size


def _cosigners(signed: str, verifier: Verifier, quorum: WitnessQuorum) -> list[str]:
    """The quorum file's witnesses that cosigned the checkpoint (WitnessQuorum.require)."""
    try:
        return quorum.require(signed.encode(), verifier, whose="your witness policy")
    except VerificationError as exc:
        raise VerificationError(f"{exc.message}: it may be a view shown to you alone") from None
