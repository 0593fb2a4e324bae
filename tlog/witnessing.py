"""The log's side of witnessing: a c2sp.org/tlog-policy file says which witnesses to ask and how many
cosignatures make a quorum; the publisher gets them and only then publishes the checkpoint.

Policy file (c2sp.org/tlog-policy, the format Sigsum uses), one item a line, `#` comments::

    log <vkey> [<url>]                    this log's key (optional; if any are listed, ours must be)
    witness <name> <vkey> [<url>]         a cosignature/v1 key; <url> is its submission prefix
    group <name> all|any|<k> <name>...    k of the members (witnesses or earlier groups) must cosign
    quorum <name>|none                    exactly once: the witness or group whose approval publishes

The publisher sends each new log-signed checkpoint to every witness with a consistency proof from the
size that witness last cosigned (learnt from its answers: a 409 names it, and the checkpoint is resent
once from there), checks each cosignature with the witness's key, and once the quorum holds stores the
checkpoint with the cosignature lines appended as the published one. A witness that is down only delays
publication (it is retried with backoff); appending goes on regardless, and nothing is ever published
that the quorum has not cosigned.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from . import merkle
from .background import task_context
from .backoff import Backoff
from .checkpoint import Checkpoint, open_checkpoint
from .errors import NoteError, TlogError, ValidationError
from .note import Signature, Verifier, open_note, parse_note
from .store.sqlite import SqliteStore
from .witness.core import format_request, parse_size

log = logging.getLogger("tlog.witnessing")

NONE = "none"
MAX_ANSWER = 64 << 10
_ITEM_SEPARATOR = re.compile(r"[ \t]+")
_THRESHOLD = re.compile(r"[1-9][0-9]*")


# --- the policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyWitness:
    name: str
    verifier: Verifier
    url: str | None


@dataclass(frozen=True)
class PolicyGroup:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class WitnessPolicy:
    """A parsed c2sp.org/tlog-policy. `quorum` is a witness or group name, or "none"."""

    logs: tuple[Verifier, ...]
    witnesses: dict[str, PolicyWitness]
    groups: dict[str, PolicyGroup]
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
        """What `GET /v1/log` publishes of the policy, so that anyone can check the cosignatures on its
        checkpoints: the witnesses' names and cosignature/v1 keys, the groups and the quorum. Not the
        witnesses' URLs: they are where this log submits, which is no one else's business."""
        return {
            "quorum": self.quorum,
            "witnesses": [{"name": w.name, "key": w.verifier.key} for w in self.witnesses.values()],
            "groups": [{"name": g.name, "threshold": g.threshold, "members": list(g.members)}
                       for g in self.groups.values()],
        }

    def cosigners(self, signed: bytes) -> dict[str, int]:
        """The policy's witnesses whose cosignature on a signed note verifies, in the policy's order, each
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
        """The policy's witnesses that cosigned a checkpoint signed by `log`, sorted by name. Strict, as
        a verifier must be (SPEC §5): NoteError if the log's signature or any cosignature by a key of the
        policy does not verify. (`cosigners` is the lenient view the pages show, which names and skips
        a bad cosignature.)"""
        names = {(w.verifier.name, w.verifier.key_hash): w.name for w in self.witnesses.values()}
        _, note = open_checkpoint(signed, [log, *(w.verifier for w in self.witnesses.values())])
        return sorted({names[s.name, s.key_hash] for s in note.verified if (s.name, s.key_hash) in names})

    def check_for_log(self, vkeys: Sequence[str]) -> None:
        """Refuses a policy that cannot publish this log: one that lists other logs only, or whose quorum
        needs witnesses it gives no URL for (the log could never ask them)."""
        if self.logs and not {v.key for v in self.logs} & set(vkeys):
            raise ValidationError("the witness policy lists logs, but none of this log's keys: " + ", ".join(vkeys))
        reachable = [w.name for w in self.witnesses.values() if w.url]
        if not self.satisfied(reachable):
            raise ValidationError(f"the witness policy's quorum {self.quorum!r} needs witnesses it gives no URL for")


def parse_witness_policy(data: bytes) -> WitnessPolicy:
    """Parses a policy file strictly (ValidationError naming the line): names defined before use, once;
    group thresholds 1 <= k <= n; no key listed twice; exactly one quorum line."""
    bad = next((i for i, b in enumerate(data) if (b < 0x20 and b not in (0x09, 0x0A)) or b == 0x7F), None)
    if bad is not None:
        raise ValidationError(f"witness policy: byte {bad} is control character 0x{data[bad]:02x}; only tab and newline may appear")
    p = _PolicyBuilder()
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
    return WitnessPolicy(tuple(p.logs), p.witnesses, p.groups, p.quorum)


def load_witness_policy(path: Path) -> WitnessPolicy:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read the witness policy {path}: {exc.strerror}") from None
    return parse_witness_policy(data)


@dataclass
class _PolicyBuilder:
    logs: list[Verifier] = field(default_factory=list)
    witnesses: dict[str, PolicyWitness] = field(default_factory=dict)
    groups: dict[str, PolicyGroup] = field(default_factory=dict)
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
        self.witnesses[name] = PolicyWitness(name, v, url)

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
        self.groups[name] = PolicyGroup(name, k, tuple(members))

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


# --- asking a witness ----------------------------------------------------------------------------


class Refused(Exception):
    """A witness did not cosign; the message says why, for the operator's log."""


async def add_checkpoint(
    session: aiohttp.ClientSession, witness: PolicyWitness, signed: bytes, old: int, proof: Sequence[bytes]
) -> tuple[int, bytes]:
    """One c2sp.org/tlog-witness add-checkpoint call: (status, body)."""
    assert witness.url is not None
    url = witness.url.rstrip("/") + "/add-checkpoint"
    async with session.post(url, data=format_request(old, proof, signed)) as resp:
        return resp.status, await resp.content.read(MAX_ANSWER)


def verify_cosignatures(witness: PolicyWitness, text: bytes, answer: bytes) -> list[Signature]:
    """The witness's valid cosignature lines from a 200 answer over the checkpoint text. Lines by other
    keys are ignored; none by this witness, or a bad one, is a refusal."""
    try:
        return open_note(text + b"\n" + answer, [witness.verifier]).verified
    except NoteError as exc:
        raise Refused(f"its answer holds no valid cosignature: {exc.message}") from None


@dataclass
class _Contact:
    """What the publisher knows of one witness: the size it last cosigned, and when to try again. The
    publisher asks the witnesses together each round, so a witness that failed is not slept on but skipped
    until `retry_at`: 1, 2, 4… seconds after each failure in a row, at most RETRY_CAP."""

    known: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=Publisher.RETRY_CAP, jitter=0.0))
    retry_at: float = 0.0


class Publisher:
    """Publishes the log's latest checkpoint once the policy's quorum has cosigned it. `store` should be a
    connection of its own: the publisher writes the `published` table and reads proofs from it."""

    RETRY_CAP = 30.0  # seconds at most between two tries of a witness that keeps failing

    def __init__(self, store: SqliteStore, policy: WitnessPolicy, *, interval: float = 0.2,
                 timeout: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.policy = policy
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self._contacts = {name: _Contact() for name in policy.witnesses}
        self._target = b""
        self._cosignatures: dict[str, list[Signature]] = {}

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
            while True:
                try:
                    await self.step(session)
                except TlogError as exc:
                    log.error("witnessing: %s", exc.message)
                await asyncio.sleep(self.interval)

    async def step(self, session: aiohttp.ClientSession) -> bool:
        """One round: ask the witnesses still missing for the latest checkpoint; publish it if the quorum
        now holds. Returns whether it published."""
        signed = self.store.latest_checkpoint()
        published = self.store.published_checkpoint()
        if signed is None or (published is not None and published.startswith(signed)):
            return False
        if signed != self._target:  # cosignatures are for one checkpoint text only
            self._target, self._cosignatures = signed, {}
        text = parse_note(signed)[0]
        cp = Checkpoint.parse(text)
        now = self.clock()
        due = [w for w in self.policy.witnesses.values()
               if w.url and w.name not in self._cosignatures and self._contacts[w.name].retry_at <= now]
        answers = await asyncio.gather(*(self._ask(session, w, cp, signed, text) for w in due))
        self._cosignatures.update((w.name, sigs) for w, sigs in zip(due, answers) if sigs)
        if not self.policy.satisfied(self._cosignatures):
            return False
        note = signed + b"".join(s.line() for sigs in self._cosignatures.values() for s in sigs)
        self.store.set_published(cp.size, note, int(time.time() * 1000))
        log.info("published size %d, cosigned by %s", cp.size, ", ".join(sorted(self._cosignatures)))
        return True

    async def _ask(self, session: aiohttp.ClientSession, w: PolicyWitness, cp: Checkpoint, signed: bytes,
                   text: bytes) -> list[Signature]:
        contact = self._contacts[w.name]
        try:
            sigs = await self._exchange(session, w, contact, cp, signed, text)
        except (Refused, TlogError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            delay = contact.backoff.next_delay()
            contact.retry_at = self.clock() + delay
            reason = str(exc) or type(exc).__name__
            log.warning("witness %s did not cosign size %d: %s (retrying in %.0fs)", w.name, cp.size, reason, delay)
            return []
        contact.known, contact.retry_at = cp.size, 0.0
        contact.backoff.reset()
        return sigs

    async def _exchange(self, session: aiohttp.ClientSession, w: PolicyWitness, contact: _Contact,
                        cp: Checkpoint, signed: bytes, text: bytes) -> list[Signature]:
        for _ in range(2):  # a 409 names the witness's size: resend once from there
            old = contact.known
            if old > cp.size:
                raise Refused(f"it has cosigned size {old}, beyond this log's {cp.size}: a rollback or a fork")
            proof = merkle.consistency_proof(old, cp.size, self.store)
            status, body = await add_checkpoint(session, w, signed, old, proof)
            if status == 200:
                return verify_cosignatures(w, text, body)
            if status != 409:
                reason = body.decode("utf-8", "replace").strip().splitlines()
                raise Refused(f"it answered {status}: {reason[0] if reason else 'no reason given'}")
            size = parse_size(body)
            if size == old:
                raise Refused(f"it cosigned another tree at size {size}: this log's history differs from what "
                              f"it showed before (a fork or split view)")
            contact.known = size
        raise Refused("its size changed again while resending")


def publisher_context(db: Path, policy: WitnessPolicy) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context running a Publisher on its own connection to the log at db."""

    async def setup() -> Publisher:
        return Publisher(SqliteStore(db), policy)

    return task_context("tlog-witnessing", setup, Publisher.run, lambda publisher: publisher.store.close())
