"""An opened log: its database (a SQLite file, or a PostgreSQL database by `postgresql://` URL) and its
key files.

`tlog init` makes `<name>.db` (mode 0600) with two secrets beside it, both mode 0600 and never stored in
the database or any export:
- `<name>.signer.key`: the log's Ed25519 signer key in x/mod note form (`PRIVATE+KEY+origin+hash+…`);
- `<name>.vrf.key`: the 32-byte ECVRF secret of the artist tags (SPEC §2.2), hex. It never changes for the
  life of the log: its public key is committed in the log's first leaf, and an artist's tag must stay
  the same forever for the artist map to prove completeness (docs/OPERATIONS.md: keeping it).
The database keeps the public verifier key, the VRF public key and the origin, so a copied database can
be verified without the secrets, and the server refuses to start if the stored checkpoint does not
verify under them.

A PostgreSQL log (SPEC §8) keeps the same files, named `tlog.signer.key` and `tlog.vrf.key`, in the key
folder given by `--keys DIR` or `$TLOG_KEYS` (mode 0700, made so by `tlog init`): the database is shared by
every front end, the secrets only by those that may sequence. A front end without them serves reads and
takes writes it hands to the sequencer.

Key rotation (`tlog key rotate`) adds `<name>.signer.<hex8>.key` beside them. The meta row `vkeys` lists the
active verifier keys, one a line (absent: just `vkey`, the primary); every active key signs every checkpoint,
and only key files whose key is listed there are loaded. Rotating and retiring first make every stored
checkpoint carry a signature by each remaining key, so the log's history verifies under any active key.
"""

from __future__ import annotations

import functools
import gc
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .checkpoint import Checkpoint, open_checkpoint
from .errors import Conflict, Damaged, NoteError, StorageError, TlogError, ValidationError
from .note import Signer, Verifier, generate_key, is_valid_name, parse_note, sign_note
from .intake import Appended, check_lines, read_jsonl
from .policy import in_effect
from .records import IdPattern, UseRecord
from .sequencer import Sequencer, Submission, read_schedule
from .store import SqliteStore, is_postgres_url, open_store
from .store.base import LogStore
from .store.writer import ProcessWriter
from .vrf import VrfSecret, generate_secret

if TYPE_CHECKING:
    from .store.postgres import Fence, PostgresStore

DEFAULT_DB = "data/tlog.db"
APPEND_BATCH = 1000  # records per batch of `append_uses`
Progress = Callable[[int, int], None]  # (done, total)
KEYS_ENV = "TLOG_KEYS"
KEY_STEM = "tlog"  # a PostgreSQL log's key files in its key folder: tlog.signer.key, tlog.vrf.key


def default_db() -> str:
    return os.environ.get("TLOG_DB") or DEFAULT_DB


def db_location(db: str | os.PathLike[str]) -> Path | str:
    """A log's database as given: a `postgresql://` URL stays a string, anything else is a SQLite file."""
    return str(db) if is_postgres_url(str(db)) else Path(db)


def shown(db: Path | str) -> str:
    """A log's database for messages: the file, or the URL without its password."""
    if isinstance(db, Path):
        return str(db)
    from .store.postgres import shown as shown_url

    return shown_url(db)


def key_stem(db: Path | str, keys: str | os.PathLike[str] | None = None) -> Path | None:
    """The common start of a log's key file names: beside a SQLite file (`data/tlog` for `data/tlog.db`),
    or in the key folder of a PostgreSQL log (`keys`, else $TLOG_KEYS; None when neither is set)."""
    if isinstance(db, str):
        folder = keys or os.environ.get(KEYS_ENV)
        return Path(folder, KEY_STEM) if folder else None
    if keys is not None:
        raise ValidationError(f"--keys is for a postgresql:// log; {db} keeps its key files beside it")
    return db.with_suffix("") if db.suffix == ".db" else db


def _key_files(stem: Path) -> tuple[Path, Path]:
    return Path(f"{stem}.signer.key"), Path(f"{stem}.vrf.key")


def _beside(db: Path) -> Path:
    """The key files' stem of the SQLite log at `db` (a PostgreSQL log's are in its key folder)."""
    stem = key_stem(Path(db))
    assert stem is not None  # a file's keys are always beside it
    return stem


def key_paths(db: Path) -> tuple[Path, Path]:
    """The signer and VRF key files of the SQLite log at `db`."""
    return _key_files(_beside(db))


def _rotated(stem: Path, key_hash: int) -> Path:
    return Path(f"{stem}.signer.{key_hash:08x}.key")


def rotated_key_path(db: Path, key_hash: int) -> Path:
    """Where `tlog key rotate` writes a new signer key of the SQLite log at `db`: beside the first, named
    by its key hash."""
    return _rotated(_beside(db), key_hash)


def private_folder(folder: Path) -> None:
    """Makes the key folder of a PostgreSQL log, mode 0700; refuses one that others may read."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        raise ValidationError(f"the key folder {folder} is open to others (mode {mode:o}): chmod 700 {folder}")


def copy_keys(db: Path, folder: Path) -> list[Path]:
    """Copies the key files of the SQLite log at `db` (every signer key beside it, rotated ones too, and the
    VRF key) into `folder`, the key folder of the same log moved to PostgreSQL (`tlog migrate`): the folder
    made mode 0700, the files 0600 under the folder's names, never over an existing file. Returns them."""
    stem = _beside(db)
    sources = [*sorted(stem.parent.glob(f"{stem.name}.signer*.key")), _key_files(stem)[1]]
    targets = [folder / f"{KEY_STEM}{p.name.removeprefix(stem.name)}" for p in sources]
    private_folder(folder)
    for target in targets:
        if target.exists():
            raise Conflict(f"{target} already exists; refusing to overwrite a key")
    for source, target in zip(sources, targets):
        write_secret(target, read_secret(source, "key file"))
    return targets


def write_secret(path: Path, text: str) -> None:
    # O_EXCL: never overwrite a key; 0600 from the first byte, not chmod after the fact.
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise StorageError(f"cannot read the {what} at {path}: {exc.strerror}") from exc


@dataclass
class LocalLog:
    """An opened log: its store and, when the secrets are readable, what is needed to write. Use as
    `with open_log(db) as log:`, which closes the store however the block ends. `verifier` is
    the primary key, `verifiers` every active one (the primary first); `signers` is shared with the
    sequencers made here, so `reload_keys` moves a running server to a rotated key set."""

    path: Path | str  # the SQLite file, or the postgresql:// URL
    store: "SqliteStore | PostgresStore"
    origin: str
    verifier: Verifier
    signers: list[Signer]
    vrf: VrfSecret | None
    verifiers: list[Verifier] = field(default_factory=list)
    keys: Path | None = None  # the start of the key files' names (key_stem); None: no key folder given
    fence: "Fence | None" = None  # of a PostgreSQL log's writer: see store/postgres.py

    def __post_init__(self) -> None:
        if not self.verifiers:
            self.verifiers = [self.verifier]

    def sequencer(self, **kwargs: object) -> Sequencer:
        if not self.signers or self.vrf is None:
            raise StorageError(f"{self._keys_where} are needed to write to the log")
        return Sequencer(self.store, origin=self.origin, signers=self.signers, vrf=self.vrf, **kwargs)  # type: ignore[arg-type]

    def append_jsonl(self, service: str, file: IO[bytes], progress: Progress | None = None) -> Appended:
        """`tlog append`: the JSON Lines records of `file` appended as `service`, all or nothing: if any
        line is not a valid record (SPEC §2.1, under the policy in effect), ValidationError names every
        problem by line and nothing is appended."""
        _check_service(service)
        policy = in_effect(read_schedule(self.store), int(time.time() * 1000))
        records = check_lines(read_jsonl(file), now=datetime.now(timezone.utc),
                              purposes=policy.purposes if policy else {})
        return self.append_uses(service, records, progress)

    def append_uses(self, service: str, records: Sequence[UseRecord], progress: Progress | None = None) -> Appended:
        """Appends validated records (intake.check_lines) as `service`, in batches of APPEND_BATCH, each
        built while the one before it is written; returns once a signed checkpoint covering them is
        stored. `progress(done, total)` after each durable batch. A batch's error stops the append there:
        the batches before it stay appended."""
        _check_service(service)
        # The records live until the end: keep them out of the cyclic collector's scans (with a million
        # of them those scans cost about a quarter of the append time).
        gc.freeze()
        # More than one batch: write each (in a child process) while the next is built.
        seq = self.sequencer(writer=self.process_writer()) if len(records) > APPEND_BATCH else self.sequencer()
        done = Appended()
        try:
            batches = ([Submission(service, list(records[i : i + APPEND_BATCH]))]
                       for i in range(0, len(records), APPEND_BATCH))
            for (res,) in seq.append_all(batches):
                if isinstance(res, TlogError):
                    raise res
                done.count(res)
                if progress is not None:
                    progress(done.appended + done.duplicate, len(records))
            seq.close()
        finally:
            seq.writer.close()  # after a failure: the batches in flight are not waited for
        done.size = self.latest_checkpoint()[0].size
        return done

    @property
    def vrf_key(self) -> bytes:
        """The VRF public key of the artist tags, as the log leaf at index 0 commits to it."""
        return bytes.fromhex(self.store.get_meta("vrf") or "")

    def process_writer(self) -> ProcessWriter:
        """A writer of this log's batches from a child process (see store/writer.py), for a sequencer that
        pipelines: `log.sequencer(writer=log.process_writer())`, closed with the sequencer."""
        return ProcessWriter(functools.partial(open_store, self.path, fence=self.fence))

    def latest_checkpoint(self) -> tuple[Checkpoint, bytes]:
        """The latest stored checkpoint, verified with the log's keys and origin."""
        signed = self.store.latest_checkpoint()
        if signed is None:
            raise StorageError(f"{self.shown} has no checkpoint")
        try:
            cp, _ = open_checkpoint(signed, self.verifiers)
        except NoteError as exc:
            raise Damaged(f"the stored checkpoint does not verify with the log's key: {exc}") from exc
        if cp.origin != self.origin:
            raise Damaged(f"the stored checkpoint names origin {cp.origin!r}, not {self.origin!r}")
        return cp, signed

    # --- keys ----------------------------------------------------------------------------------

    def reload_keys(self) -> bool:
        """Re-reads the active keys from the database (another process may have rotated them); returns
        whether they changed. Signers are reloaded only when this log was opened with its secrets."""
        vkeys = active_vkeys(self.store)
        if vkeys == [v.key for v in self.verifiers]:
            return False
        verifiers = [Verifier.from_key(k) for k in vkeys]
        if self.signers:
            self.signers[:] = _load_signers(self.keys, vkeys)  # type: ignore[arg-type]
        self.verifiers, self.verifier = verifiers, verifiers[0]
        return True

    def rotate_key(self) -> Signer:
        """Adds a new signer key (a file beside the database, mode 0600, never overwriting one). From now
        on checkpoints carry its signature beside the others', and so does every stored checkpoint."""
        self._need_signers("rotate the log's key")
        skey, vkey = generate_key(self.origin)
        signer = Signer.from_key(skey)
        write_secret(_rotated(self.keys, signer.key_hash), skey)  # type: ignore[arg-type]
        self._set_active([*active_vkeys(self.store), vkey])
        self.sign_history()
        return signer

    def retire_key(self, vkey: str) -> None:
        """Stops signing with vkey. The remaining keys first sign every stored checkpoint, so the whole
        history still verifies without the retired key. Its key file is left for the operator to destroy."""
        self._need_signers("retire a key")
        active = active_vkeys(self.store)
        if vkey not in active:
            raise ValidationError(f"{vkey} is not an active key of this log; active: {', '.join(active)}")
        if len(active) == 1:
            raise ValidationError("refusing to retire the log's only key: run `tlog key rotate` first")
        self.sign_history()
        self._set_active([k for k in active if k != vkey])

    def sign_history(self) -> int:
        """Adds a signature by every active key to each stored checkpoint that lacks one, keeping the
        signatures it has; the texts, and so the tree heads, are unchanged. Returns how many changed."""
        self.reload_keys()
        self._need_signers("sign checkpoints")
        changed = []
        for size in self.store.checkpoint_sizes():
            note = self.store.checkpoint_at(size) or b""
            text, sigs = parse_note(note)
            have = {(s.name, s.key_hash) for s in sigs}
            missing = [s for s in self.signers if (s.name, s.key_hash) not in have]
            if missing:
                changed.append((size, sign_note(text, missing, existing=sigs)))
        self.store.replace_checkpoint_notes(changed)
        return len(changed)

    def _set_active(self, vkeys: list[str]) -> None:
        self.store.set_meta("vkeys", "\n".join(vkeys))
        self.store.set_meta("vkey", vkeys[0])
        self.reload_keys()

    def _need_signers(self, what: str) -> None:
        if not self.signers:
            raise StorageError(f"{self._keys_where} are needed to {what}")

    @property
    def shown(self) -> str:
        return shown(self.path)

    @property
    def key_files(self) -> tuple[Path, ...]:
        """The signer and VRF key files (none if no key folder was given)."""
        return _key_files(self.keys) if self.keys is not None else ()

    @property
    def _keys_where(self) -> str:
        if isinstance(self.path, Path):
            return f"the key files beside {self.path}"
        if self.keys is None:
            return f"the key files of {self.shown} (in the folder given by --keys DIR or ${KEYS_ENV})"
        return f"the key files in {self.keys.parent}"

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> LocalLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_service(service: str) -> None:
    if not service or any(c.isspace() for c in service) or len(service) > 128:
        raise ValidationError(f"--service {service!r} must be 1-128 characters without spaces")


def active_vkeys(store: LogStore) -> list[str]:
    """The verifier keys that sign new checkpoints, the primary first."""
    listed = store.get_meta("vkeys")
    if listed:
        return listed.split("\n")
    vkey = store.get_meta("vkey")
    return [vkey] if vkey else []


def _load_signers(stem: Path, vkeys: list[str]) -> list[Signer]:
    """The signer of each listed key, from the `<stem>.signer*.key` files; files of other keys (a retired
    one, say) are ignored, a listed key without a file is an error."""
    first, _ = _key_files(stem)
    found: dict[str, Signer] = {}
    for path in sorted(first.parent.glob(first.name.removesuffix(".key") + "*.key")):
        try:
            signer = Signer.from_key(read_secret(path, "signer key"))
        except NoteError as exc:  # a damaged key file is named, not just "a key"
            raise Damaged(f"{path} is not a valid signer key: {exc.message}") from None
        found.setdefault(signer.verifier_key, signer)
    missing = [k for k in vkeys if k not in found]
    if missing:
        raise StorageError(f"no signer key file {first.parent}/{first.name.removesuffix('.key')}*.key holds the "
                           f"log's key {missing[0]}")
    return [found[k] for k in vkeys]


def init_log(db: str | os.PathLike[str], origin: str, *, clock: Callable[[], float] = time.time,
             id_pattern: str | None = None, keys: str | os.PathLike[str] | None = None) -> LocalLog:
    """Creates the database and keys, and writes the first batch (SPEC §2.3: the log leaf, the default
    policy and a map leaf) with the first checkpoint, of size 3. `clock` dates that batch: a test or a
    demo that needs a log with a past (a loosening announced with its notice, now in effect) starts it
    earlier and writes that past with `sequencer(clock=…)`. `id_pattern` (a regular expression) narrows
    the content and artist ids the log accepts (records.IdPattern); it is kept in the meta `id_pattern`.
    `db` is a file, or the URL of an empty PostgreSQL database, whose key files go in `keys` (or
    $TLOG_KEYS), a folder made mode 0700."""
    where = db_location(db)
    if not is_valid_name(origin) or "+" in origin:
        raise ValidationError(f"origin {origin!r} must be a key name: printable, no spaces, no '+'")
    if id_pattern is not None:
        IdPattern(id_pattern)  # a pattern that does not compile is refused before anything is made
    stem = key_stem(where, keys)
    if stem is None:
        raise ValidationError(f"a postgresql:// log keeps its key files in a folder of their own: give --keys DIR "
                              f"(or set ${KEYS_ENV})")
    signer_path, vrf_path = _key_files(stem)
    for p in (where, signer_path, vrf_path):
        if isinstance(p, Path) and p.exists():
            raise Conflict(f"{p} already exists; refusing to overwrite a log")
    if isinstance(where, Path):
        where.parent.mkdir(parents=True, exist_ok=True)
    else:
        private_folder(stem.parent)
    store = open_store(where, create=True)  # before the keys: a database that is not empty is refused first
    try:
        skey, vkey = generate_key(origin)
        vrf = VrfSecret.from_secret(generate_secret())
        write_secret(signer_path, skey)
        write_secret(vrf_path, vrf.sk.hex())
        store.set_meta("origin", origin)
        store.set_meta("vkey", vkey)
        store.set_meta("vrf", vrf.pk.hex())
        if id_pattern is not None:
            store.set_meta("id_pattern", id_pattern)
    except BaseException:
        store.close()
        raise
    log = LocalLog(where, store, origin, Verifier.from_key(vkey), [Signer.from_key(skey)], vrf, keys=stem)
    log.sequencer(clock=clock).start_log(vrf.pk)
    return log


def open_log(db: str | os.PathLike[str], *, secrets_needed: bool = False, readonly: bool = False,
             keys: str | os.PathLike[str] | None = None, fence: "Fence | None" = None) -> LocalLog:
    """Opens the log at `db` (a file or a postgresql:// URL), with its secrets when they are readable
    (`secrets_needed`: or fail). A PostgreSQL log's key files are in `keys` (or $TLOG_KEYS); `fence` is
    its writer's (store/postgres.py)."""
    where = db_location(db)
    stem = key_stem(where, keys)
    store = open_store(where, readonly=readonly, fence=fence)
    try:
        origin, vkeys = store.get_meta("origin"), active_vkeys(store)
        if origin is None or not vkeys:
            raise StorageError(f"{shown(where)} has no origin or verifier key; was `tlog init` interrupted?")
        verifiers = [Verifier.from_key(k) for k in vkeys]
        signers: list[Signer] = []
        vrf: VrfSecret | None = None
        if stem is not None:
            signer_path, vrf_path = _key_files(stem)
            if secrets_needed or (signer_path.exists() and vrf_path.exists()):
                signers = _load_signers(stem, vkeys)
                vrf = _load_vrf(vrf_path, store.get_meta("vrf"))
        log = LocalLog(where, store, origin, verifiers[0], signers, vrf, verifiers, keys=stem, fence=fence)
        if secrets_needed:
            log._need_signers("write to the log")
        return log
    except TlogError:
        store.close()
        raise


def _load_vrf(path: Path, vrf_key: str | None) -> VrfSecret:
    """The VRF secret, checked against the public key the log committed to: a swapped key file would give
    every artist a second tag, which is exactly what the tags exist to rule out."""
    try:
        secret = VrfSecret.from_secret(bytes.fromhex(read_secret(path, "VRF key")))
    except ValueError:
        raise Damaged(f"{path} does not hold a 32-byte hex VRF secret") from None
    if secret.pk.hex() != vrf_key:
        raise Damaged(f"{path} is not the VRF key this log committed to in its first leaf")
    return secret
