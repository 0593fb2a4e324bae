"""The storage interface: a few narrow stores, which one backend class implements together.

- `LogStore`: the tree, entries, artist chains and what else a batch commits, written by `write_batch` alone;
- `CheckpointStore`: the signed checkpoints, latest, by size and published (never rolled back);
- `TokenStore`: API tokens and feed keys; `NotifyStore`: the webhook notifier's cursor.
`CheckpointedLog` and `Backend` name their unions for callers that need several. Callers are typed
against these protocols, never a backend class; tests/store/test_conformance.py holds every backend to them.

A backend stores what cannot be derived (private details, tree nodes, artist links, signed checkpoints,
policies, tokens) and nothing that can: public leaves are re-derived from details and the chain when
served, and checked against the stored leaf hash on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Iterator, Protocol, Sequence

from ..stats import StatRow


@dataclass(slots=True)
class Entry:
    """One leaf's private side. `details` is the JCS-able details object of SPEC §2.2; for leaves without
    private details, what their public leaf says: {"policy": id, "sha256": hex of the policy text,
    "effective_at": time} for a `policy` leaf, {"origin", "vrf": hex} for the `log` leaf, {"root": hex} for
    a `map` leaf. The artist fields are None for types without an artist."""

    index: int
    type: str
    logged_ms: int
    details: dict[str, Any]
    artist_id: str | None = None
    tag: bytes | None = None
    aseq: int | None = None
    aprev: int | None = None
    # The index of the erasure leaf that deleted this entry's private details (SPEC §2.2), or None. An
    # erased entry's `details` are then the fields of its public leaf that its columns do not hold
    # (purpose, phase, decision, policy, invocations, by, and the `details` commitment, hex), so that
    # the leaf can still be derived. A flag only: verifiers believe it where an erasure leaf says so.
    erased: int | None = None


@dataclass(slots=True)
class ArtistState:
    """What the sequencer needs to extend an artist's chain and decide its uses."""

    artist_id: str
    tag: bytes
    aseq: int
    head: int
    preferences: dict[str, Any] | None = None
    proof: bytes = b""  # the 80-byte VRF proof of the tag (SPEC §2.2), made once at first sight
    erased: bool = False  # an erased artist's chain, found by its tag: the store no longer knows its id


@dataclass(slots=True)
class PolicyRecord:
    policy_id: str
    index: int
    document: bytes


@dataclass(slots=True)
class Erasure:
    """An artist's private data deleted on request, in the batch that appends its `erasure` leaf (at
    `index`): every entry listed loses its details and keeps its public leaf's fields (`public`, as in
    `Entry.erased`); the artist's id, VRF proof, preferences and tokens are deleted with them. The tag,
    its chain head and the leaves stay, so every proof still holds."""

    index: int
    artist_id: str
    tag: bytes
    reason: str
    entries: list[tuple[int, dict[str, Any]]]  # (index, public fields) of each entry erased


@dataclass(slots=True)
class ErasureRecord:
    """A stored erasure leaf: its index, the tag it names, the reason given, and when."""

    index: int
    tag: bytes
    reason: str
    logged_ms: int


@dataclass(slots=True)
class BindingChange:
    """A content id bound to an artist or released from it (SPEC §2.1), by the leaf at `index`: a binding
    leaf, or the content's first use, which binds it to the artist it names (no leaf of its own)."""

    content_id: str
    artist_id: str
    index: int
    bound: bool  # False: released


# The `code` of the StorageError `write_batch` raises when `Batch.start` is not the store's size: another
# process appended since the writer read its state. Nothing was written; the batch may be rebuilt.
STALE_STATE = "stale_state"


@dataclass(slots=True)
class Batch:
    """Everything one sequencer batch writes, committed atomically or not at all.

    `start` must equal the store's size when the transaction begins, and `prev` (when given) the stored
    hash of the leaf before it (32 zero bytes for the first): a second writer, or a sequencer working from
    stale state, is refused instead of forking the log. The size alone would not do for a pipelined
    sequencer: a batch built on one still in flight names the size that batch will leave, which another
    writer's batch of the same length would leave too."""

    start: int
    entries: list[Entry]
    nodes: list[tuple[int, int, bytes]]
    artists: list[ArtistState] = field(default_factory=list)
    policies: list[PolicyRecord] = field(default_factory=list)
    checkpoint: bytes | None = None
    prev: bytes | None = None
    erasures: list[Erasure] = field(default_factory=list)
    bindings: list[BindingChange] = field(default_factory=list)  # in index order

    @property
    def end(self) -> int:
        return self.start + len(self.entries)


@dataclass(slots=True)
class TokenRecord:
    """A token as stored: its SHA-256 only. `subject`: the service name, or an artist token's artist ids
    joined by spaces (tokens.Principal); `rights`: a service's extra rights (tokens.RIGHTS)."""

    token_id: int
    role: str
    subject: str | None
    created_ms: int
    revoked_ms: int | None = None
    digest: bytes = b""
    rights: frozenset[str] = frozenset()  # of a service token: "catalog", "issuer" (tokens.RIGHTS)
    expires_ms: int | None = None


MAX_ENTRIES = 1 << 62  # the `limit` of a listing that wants every entry


@dataclass(frozen=True, slots=True)
class UseFilter:
    """Filters of `GET /v1/artists/{id}/uses`; `after` is the cursor (exclusive leaf index)."""

    purpose: str | None = None
    phase: str | None = None
    content_id: str | None = None
    decision: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    after: int = -1


class _Connection(Protocol):
    def close(self) -> None: ...


class LogStore(_Connection, Protocol):
    """The log: what `write_batch` commits and what is derived from it (tree nodes, entries, artist chains,
    policies, erasures, bindings, statistics), with the log's identity (`meta`: origin, keys, id pattern).
    `write_batch` is its only write of log data; everything else reads. A read never sees half a batch."""

    # --- identity -----------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...  # at init, and by key rotation (log.py)

    # --- the tree (also a merkle.HashReader) --------------------------------------------------
    def size(self) -> int: ...
    def read_nodes(self, coords: Sequence[tuple[int, int]]) -> list[bytes]: ...
    def leaf_hashes(self, start: int, end: int) -> list[bytes]: ...
    def remember_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None: ...  # committed elsewhere; thread-safe
    def iter_nodes(self, level: int, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]: ...

    # --- entries -------------------------------------------------------------------------------
    def entries(self, start: int, end: int) -> Iterator[Entry]: ...
    def entry(self, index: int) -> Entry | None: ...
    def find_events(self, service: str, event_ids: Sequence[str]) -> dict[str, Entry]: ...
    def entries_of(self, start: int, end: int, types: Sequence[str], decisions: Sequence[str]) -> list[Entry]: ...

    # --- artist chains -------------------------------------------------------------------------
    def artist_state(self, artist_id: str) -> ArtistState | None: ...
    def artist_states(self, artist_ids: Sequence[str]) -> dict[str, ArtistState]: ...
    def artists(self) -> list[ArtistState]: ...  # the artists with an id (an erased one has none)
    def heads(self) -> dict[bytes, tuple[int, int]]: ...  # tag → (aseq, head) of every chain, erased ones too
    def artist_entries(self, artist_id: str, flt: UseFilter, limit: int) -> list[Entry]: ...
    def erased_artist(self, tag: bytes) -> ArtistState | None: ...  # the chain of an erased id, by its tag
    def chain_entries(self, artist: ArtistState, flt: UseFilter, limit: int) -> list[Entry]: ...  # by id, or erased by tag
    def artist_latest(self, artist_id: str, before: int, limit: int) -> list[Entry]: ...  # newest first

    # --- policies ------------------------------------------------------------------------------
    def policies(self) -> list[PolicyRecord]: ...
    def policy(self, policy_id: str) -> PolicyRecord | None: ...

    # --- erasures ------------------------------------------------------------------------------
    def erasures(self, tag: bytes | None = None) -> list[ErasureRecord]: ...  # in log order; of one tag, or all
    def scrub(self) -> None: ...  # after an erasure batch, what it deleted off the medium: see SqliteStore.scrub

    # --- content bound to its artists (SPEC §2.1) ---------------------------------------------
    def bindings(self, content_ids: Sequence[str]) -> dict[str, frozenset[str]]: ...  # bound contents only
    def content_artists(self, content_id: str) -> list[tuple[str, int]]: ...  # (artist id, index that bound it)
    def iter_bindings(self) -> Iterator[tuple[str, str, int]]: ...  # (content id, artist id, index)
    def content_events(self, end: int) -> Iterator[tuple[int, str, str, str | None]]: ...  # uses and bindings, in order
    def content_uses(self, content_ids: Sequence[str], end: int) -> list[Entry]: ...

    # --- statistics ----------------------------------------------------------------------------
    def stats(self, size: int | None = None, since_ms: int | None = None,
              until_ms: int | None = None) -> list[StatRow]: ...  # leaves [0, size) logged in [since, until)

    # --- the one write path --------------------------------------------------------------------
    def write_batch(self, batch: Batch) -> None: ...


class CheckpointStore(_Connection, Protocol):
    """Signed checkpoints: the one each batch commits (written by `LogStore.write_batch`, in its
    transaction), and the published one (cosigned by a witness policy's quorum), which never rolls back:
    `set_published` refuses a size below the latest published, inside the transaction that writes it."""

    def latest_checkpoint(self) -> bytes | None: ...
    def checkpoint_at(self, size: int) -> bytes | None: ...
    def checkpoint_sizes(self) -> list[int]: ...
    def iter_checkpoints(self) -> Iterator[tuple[int, bytes]]: ...
    def checkpoint_created_ms(self, size: int) -> int: ...
    def replace_checkpoint_notes(self, notes: Sequence[tuple[int, bytes]]) -> None: ...  # same texts, new signatures
    def set_published(self, size: int, note: bytes, now_ms: int = 0) -> None: ...  # cosigned; never rolls back
    def published_checkpoint(self) -> bytes | None: ...


class TokenStore(_Connection, Protocol):
    """The credentials: API tokens (SPEC §1, §7) and artists' feed keys (SPEC §6). Both are kept as their
    SHA-256 only, refused from the next request once revoked, and deleted with their artist: by an erasure
    batch, or by `forget_artist` for an artist with nothing left to erase. That shared lifecycle, in one
    transaction, is why feed keys live here rather than in a store of their own."""

    def add_token(self, role: str, subject: str | None, digest: bytes, now_ms: int, *,
                  rights: frozenset[str] = frozenset(), expires_ms: int | None = None) -> int: ...
    def token_by_digest(self, digest: bytes) -> TokenRecord | None: ...
    def tokens(self) -> list[TokenRecord]: ...
    def revoke_token(self, token_id: int, now_ms: int) -> bool: ...
    def tokens_version(self) -> object: ...  # changes when any token is revoked or erased; cheap (no query)

    def add_feed_key(self, artist_id: str, digest: bytes, now_ms: int) -> int: ...
    def feed_key(self, digest: bytes) -> tuple[int, str] | None: ...  # (id, artist id) if valid
    def revoke_feed_key(self, artist_id: str, key_id: int, now_ms: int) -> bool: ...

    def forget_artist(self, artist_id: str) -> int: ...  # its tokens and feed keys; returns how many tokens


class NotifyStore(_Connection, Protocol):
    """The webhook notifier's place in the log (webhooks.py): the log is its outbox, so this cursor is all
    it keeps. Written only by the notifier, never with a batch."""

    def notify_state(self) -> tuple[int, set[int]] | None: ...  # (done_before, policy indexes done) or None
    def save_notify_state(self, done_before: int, effective: Collection[int]) -> None: ...


class CheckpointedLog(LogStore, CheckpointStore, Protocol):
    """The log with its checkpoints: what the sequencer, the fsck and the witness publisher read."""


class Backend(CheckpointedLog, TokenStore, NotifyStore, Protocol):
    """A whole backend: every store above over one transactional database (an erasure batch deletes the
    artist's tokens and feed keys in the transaction that erases its entries). Methods raise
    tlog.errors.StorageError for backend failures. For callers that need several stores at once (the
    server's state, the CLI); everything else is typed against the narrowest store it reads."""
