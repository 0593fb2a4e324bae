"""A witness quorum file: which witnesses a log's checkpoints must carry cosignatures of, and how many make
a quorum. The file format is c2sp.org/tlog-policy (the one Sigsum uses); users and SPEC call it the
"witness policy" (`--witness-policy FILE`), and its errors say so. In code it is a WitnessQuorum, because
"policy" in tlog means the AI policy (policy.py) and nothing else.

File format, one item a line, `#` comments::

    log <vkey> [<url>]                    this log's key (optional; if any are listed, ours must be)
    witness <name> <vkey> [<url>]         a cosignature/v1 key; <url> is its submission prefix
    group <name> all|any|<k> <name>...    k of the members (witnesses or earlier groups) must cosign
    quorum <name>|none                    exactly once: the witness or group whose approval publishes

Parsing is strict (pure, no I/O but `load_witness_quorum`'s read): names defined before use, once; group
thresholds 1 <= k <= n; no key listed twice; exactly one quorum line. Who uses it: the log's publisher
(server/publisher.py) to know when to publish, and every verifier (`tlog audit`, `tlog monitor`, the web
pages) to check that a checkpoint carries the quorum's cosignatures.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import open_checkpoint
from ..errors import NoteError, ValidationError, VerificationError
from ..note import Verifier, parse_note

NONE = "none"
_ITEM_SEPARATOR = re.compile(r"[ \t]+")
_THRESHOLD = re.compile(r"[1-9][0-9]*")

@dataclass(frozen=True)
class QuorumWitness:
    name: str
    verifier: Verifier
    url: str | None


@dataclass(frozen=True)
class QuorumGroup:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class WitnessQuorum:
    """A parsed c2sp.org/tlog-policy. `quorum` is a witness or group name, or "none"."""

    logs: tuple[Verifier, ...]
    witnesses: dict[str, QuorumWitness]
    groups: dict[str, QuorumGroup]
    quorum: str

    def satisfied(self, cosigners: Collection[str]) -> bool:
        """Whether cosignatures by the named witnesses meet the quorum."""
        return self.quorum == NONE or self._witnessed(self.quorum, set(cosigners))

    def _witnessed(self, name: str, cosigners: set[str]) -> bool:
        group = self.groups.get(name)
        if group is None:
            return name in cosigners
        return sum(self._witnessed(m, cosigners) for m in group.members) >= group.threshold

    def as_json(self) -> dict[str, Any]:
        """What `GET /v1/log` publishes of the quorum file (as `witness_policy`), so that anyone can check the cosignatures on its
        checkpoints: the witnesses' names and cosignature/v1 keys, the groups and the quorum. Not the
        witnesses' URLs: they are where this log submits, which is no one else's business."""
        return {
            "quorum": self.quorum,
            "witnesses": [{"name": w.name, "key": w.verifier.key} for w in self.witnesses.values()],
            "groups": [{"name": g.name, "threshold": g.threshold, "members": list(g.members)}
                       for g in self.groups.values()],
        }

    def cosigners(self, signed: bytes) -> dict[str, int]:
        """The file's witnesses whose cosignature on a signed note verifies, in the file's order, each
        with the time its cosignature states (seconds since the epoch). Other lines are left out."""
        text, sigs = parse_note(signed)
        by_key = {(w.verifier.name, w.verifier.key_hash): w for w in self.witnesses.values()}
        valid = {}
        for s in sigs:
            w = by_key.get((s.name, s.key_hash))
            if w is not None and w.verifier.verify(text, s.sig):
                valid[w.name] = int.from_bytes(s.sig[:8], "big")
        return {name: valid[name] for name in self.witnesses if name in valid}

    def signed_by(self, signed: bytes, log: Verifier) -> list[str]:
        """The file's witnesses that cosigned a checkpoint signed by `log`, sorted by name. Strict, as
        a verifier must be (SPEC §5): NoteError if the log's signature or any cosignature by a key of the
        file does not verify. (`cosigners` is the lenient view the pages show, which names and skips
        a bad cosignature.)"""
        names = {(w.verifier.name, w.verifier.key_hash): w.name for w in self.witnesses.values()}
        _, note = open_checkpoint(signed, [log, *(w.verifier for w in self.witnesses.values())])
        return sorted({names[s.name, s.key_hash] for s in note.verified if (s.name, s.key_hash) in names})

    def require(self, signed: bytes, log: Verifier, *, whose: str) -> list[str]:
        """`signed_by`, and VerificationError unless those witnesses make the quorum: a checkpoint the
        witnesses have not seen may be a view shown to one verifier alone. `whose` names the file in the
        message ("the witness policy", "your witness policy")."""
        try:
            cosigners = self.signed_by(signed, log)
        except NoteError as exc:
            raise VerificationError(f"a witness cosignature on the checkpoint does not verify: {exc.message}") from None
        if not self.satisfied(cosigners):
            raise VerificationError(f"the checkpoint is cosigned by {', '.join(cosigners) or 'no witness'} of {whose}, "
                                    f"short of its quorum {self.quorum!r}")
        return cosigners

    def check_for_log(self, vkeys: Sequence[str]) -> None:
        """Refuses a quorum file that cannot publish this log: one that lists other logs only, or whose quorum
        needs witnesses it gives no URL for (the log could never ask them)."""
        if self.logs and not {v.key for v in self.logs} & set(vkeys):
            raise ValidationError("the witness policy lists logs, but none of this log's keys: " + ", ".join(vkeys))
        reachable = [w.name for w in self.witnesses.values() if w.url]
        if not self.satisfied(reachable):
            raise ValidationError(f"the witness policy's quorum {self.quorum!r} needs witnesses it gives no URL for")


def parse_witness_quorum(data: bytes) -> WitnessQuorum:
    """Parses a quorum file strictly (ValidationError naming the line): names defined before use, once;
    group thresholds 1 <= k <= n; no key listed twice; exactly one quorum line."""
    bad = next((i for i, b in enumerate(data) if (b < 0x20 and b not in (0x09, 0x0A)) or b == 0x7F), None)
    if bad is not None:
        raise ValidationError(f"witness policy: byte {bad} is control character 0x{data[bad]:02x}; only tab and newline may appear")
    p = _QuorumBuilder()
    # Names are opaque octets: surrogateescape keeps non-UTF-8 bytes distinct and round-trippable.
    for n, line in enumerate(data.decode("utf-8", "surrogateescape").split("\n"), 1):
        items = [i for i in _ITEM_SEPARATOR.split(line) if i]
        if not items or items[0].startswith("#"):
            continue
        try:
            p.add(items[0], items[1:])
        except (ValidationError, NoteError) as exc:
            raise ValidationError(f"witness policy line {n}: {exc.message}") from None
    if p.quorum is None:
        raise ValidationError("witness policy: no quorum line (use `quorum none` for no witnessing)")
    return WitnessQuorum(tuple(p.logs), p.witnesses, p.groups, p.quorum)


def load_witness_quorum(path: Path, log: Verifier | None = None) -> WitnessQuorum:
    """The quorum file at `path`. With `log` (a verifier checking that log's checkpoints): refused if the
    file lists logs but not that one, since its witnesses then vouch for another log."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read the witness policy {path}: {exc.strerror}") from None
    quorum = parse_witness_quorum(data)
    if log is not None and quorum.logs and log.key not in {v.key for v in quorum.logs}:
        raise ValidationError(f"the witness policy {path} lists logs, but not the key {log.key}")
    return quorum


@dataclass
class _QuorumBuilder:
    logs: list[Verifier] = field(default_factory=list)
    witnesses: dict[str, QuorumWitness] = field(default_factory=dict)
    groups: dict[str, QuorumGroup] = field(default_factory=dict)
    quorum: str | None = None

    def add(self, keyword: str, args: list[str]) -> None:
        if keyword == "log":
            self._log(*_arity(keyword, args, 1, 2))
        elif keyword == "witness":
            self._witness(*_arity(keyword, args, 2, 3))
        elif keyword == "group":
            if len(args) < 3:
                raise ValidationError("a group needs a name, a threshold (all, any or k) and at least one member")
            self._group(args[0], args[1], args[2:])
        elif keyword == "quorum":
            (name,) = _arity(keyword, args, 1, 1)
            if self.quorum is not None:
                raise ValidationError("a policy has exactly one quorum line")
            if name != NONE and name not in self.witnesses and name not in self.groups:
                raise ValidationError(f"quorum {name!r} is not a witness or group defined on an earlier line")
            self.quorum = name
        else:
            raise ValidationError(f"unknown keyword {keyword!r} (expected log, witness, group or quorum)")

    def _log(self, vkey: str, url: str | None = None) -> None:
        """A log's URL is for monitors and submitters; the log itself has no use for its own."""
        v = Verifier.from_key(vkey)
        if v.is_cosigner:
            raise ValidationError(f"log key {vkey} is a witness key (type 0x04), not a log's Ed25519 key")
        if any(_raw(v) == _raw(o) for o in self.logs):
            raise ValidationError(f"log key {vkey} wraps a public key already listed")
        self.logs.append(v)

    def _witness(self, name: str, vkey: str, url: str | None = None) -> None:
        self._new_name(name)
        v = Verifier.from_key(vkey)
        if not v.is_cosigner:
            raise ValidationError(f"witness {name!r}: {vkey} is not a cosignature/v1 key (type 0x04)")
        if any(_raw(v) == _raw(w.verifier) for w in self.witnesses.values()):
            raise ValidationError(f"witness {name!r}: its public key is already listed for another witness")
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValidationError(f"witness {name!r}: URL {url!r} must start with http:// or https://")
        self.witnesses[name] = QuorumWitness(name, v, url)

    def _group(self, name: str, threshold: str, members: list[str]) -> None:
        self._new_name(name)
        for m in members:
            if m == NONE or (m not in self.witnesses and m not in self.groups):
                raise ValidationError(f"group {name!r}: member {m!r} is not a witness or group defined earlier")
        if len(set(members)) != len(members):
            raise ValidationError(f"group {name!r} lists a member twice")
        if threshold in ("all", "any"):
            k = len(members) if threshold == "all" else 1
        elif _THRESHOLD.fullmatch(threshold) and int(threshold) <= len(members):
            k = int(threshold)
        else:
            raise ValidationError(f"group {name!r}: threshold {threshold!r} must be all, any or 1..{len(members)}")
        self.groups[name] = QuorumGroup(name, k, tuple(members))

    def _new_name(self, name: str) -> None:
        if name == NONE:
            raise ValidationError("'none' is predefined and cannot name a witness or group")
        if name in self.witnesses or name in self.groups:
            raise ValidationError(f"{name!r} is already defined")


def _arity(keyword: str, args: list[str], least: int, most: int) -> list[str]:
    if not least <= len(args) <= most:
        raise ValidationError(f"{keyword} takes {least}{f' or {most}' if most != least else ''} items, not {len(args)}")
    return args


def _raw(v: Verifier) -> bytes:
    return v.public.public_bytes_raw()
