"""A local log on disk: the database and the key files beside it.

`tlog init` makes `<name>.db` (mode 0600) with two secrets beside it, both mode 0600 and never stored in
the database or any export:
- `<name>.signer.key`: the log's Ed25519 signer key in x/mod note form (`PRIVATE+KEY+origin+hash+…`);
- `<name>.tag.key`: the 32-byte HMAC key of the artist tags, hex.
The database keeps the public verifier key and origin, so a copied database can be verified without the
secrets, and the server refuses to start if the stored checkpoint does not verify under them.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoint, open_checkpoint
from .errors import NoteError, StorageError, TlogError, ValidationError
from .note import Signer, Verifier, generate_key, is_valid_name
from .sequencer import Sequencer
from .store.sqlite import SqliteStore

DEFAULT_DB = "data/tlog.db"


def default_db() -> str:
    return os.environ.get("TLOG_DB") or DEFAULT_DB


def key_paths(db: Path) -> tuple[Path, Path]:
    stem = db.with_suffix("") if db.suffix == ".db" else db
    return Path(f"{stem}.signer.key"), Path(f"{stem}.tag.key")


def _write_secret(path: Path, text: str) -> None:
    # O_EXCL: never overwrite a key; 0600 from the first byte, not chmod after the fact.
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise StorageError(f"cannot read the {what} at {path}: {exc.strerror}") from exc


@dataclass
class LocalLog:
    """An opened log: its store and, when the secrets are readable, what is needed to write."""

    path: Path
    store: SqliteStore
    origin: str
    verifier: Verifier
    signers: list[Signer]
    tag_key: bytes | None

    def sequencer(self, **kwargs: object) -> Sequencer:
        if not self.signers or self.tag_key is None:
            raise StorageError(f"the key files beside {self.path} are needed to write to the log")
        return Sequencer(self.store, origin=self.origin, signers=self.signers, tag_key=self.tag_key, **kwargs)  # type: ignore[arg-type]

    def latest_checkpoint(self) -> tuple[Checkpoint, bytes]:
        """The latest stored checkpoint, verified with the log's key and origin."""
        signed = self.store.latest_checkpoint()
        if signed is None:
            raise StorageError(f"{self.path} has no checkpoint")
        try:
            cp, _ = open_checkpoint(signed, [self.verifier])
        except NoteError as exc:
            raise StorageError(f"the stored checkpoint does not verify with the log's key: {exc}") from exc
        if cp.origin != self.origin:
            raise StorageError(f"the stored checkpoint names origin {cp.origin!r}, not {self.origin!r}")
        return cp, signed

    def close(self) -> None:
        self.store.close()


def init_log(db: str | os.PathLike[str], origin: str) -> LocalLog:
    """Creates the database and keys, publishes the default policy and signs the first checkpoint."""
    path = Path(db)
    if not is_valid_name(origin) or "+" in origin:
        raise ValidationError(f"origin {origin!r} must be a key name: printable, no spaces, no '+'")
    signer_path, tag_path = key_paths(path)
    for p in (path, signer_path, tag_path):
        if p.exists():
            raise StorageError(f"{p} already exists; refusing to overwrite a log")
    path.parent.mkdir(parents=True, exist_ok=True)
    skey, vkey = generate_key(origin)
    tag_key = secrets.token_bytes(32)
    _write_secret(signer_path, skey)
    _write_secret(tag_path, tag_key.hex())
    store = SqliteStore(path, create=True)
    store.set_meta("origin", origin)
    store.set_meta("vkey", vkey)
    log = LocalLog(path, store, origin, Verifier.from_key(vkey), [Signer.from_key(skey)], tag_key)
    seq = log.sequencer()
    store.add_checkpoint(0, seq.checkpoint_empty(), int(time.time() * 1000))
    seq.publish_default_policy()
    return log


def open_log(db: str | os.PathLike[str], *, secrets_needed: bool = False, readonly: bool = False) -> LocalLog:
    path = Path(db)
    store = SqliteStore(path, readonly=readonly)
    try:
        origin, vkey = store.get_meta("origin"), store.get_meta("vkey")
        if origin is None or vkey is None:
            raise StorageError(f"{path} has no origin or verifier key; was `tlog init` interrupted?")
        verifier = Verifier.from_key(vkey)
        signer_path, tag_path = key_paths(path)
        signers: list[Signer] = []
        tag_key: bytes | None = None
        if secrets_needed or (signer_path.exists() and tag_path.exists()):
            signer = Signer.from_key(_read_secret(signer_path, "signer key"))
            if signer.verifier_key != vkey:
                raise StorageError(f"{signer_path} is not the key of this log (its verifier key differs)")
            signers = [signer]
            try:
                tag_key = bytes.fromhex(_read_secret(tag_path, "tag key"))
            except ValueError:
                raise StorageError(f"{tag_path} is not a hex key") from None
            if len(tag_key) != 32:
                raise StorageError(f"{tag_path} must hold 32 bytes")
        return LocalLog(path, store, origin, verifier, signers, tag_key)
    except TlogError:
        store.close()
        raise
