"""Files that hold private data: a monitor's or an auditor's state, an exported log, an audit bundle, a
client's spool of uses not yet sent.

- They are created mode 0600, and their directories 0700, from the first byte: a file chmod-ed after
  writing was readable by anyone on the host in between.
- A file is replaced atomically: a new file beside it, written, fsynced, renamed over it, then the
  directory fsynced (the rename itself lasts only once the directory is on disk). A crash, a Ctrl-C or a
  closed pipe at any moment leaves the old file or the new one, never half of either.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> None:
    """Creates `path` (and missing parents) mode 0700; an existing directory is left as it is."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)


def create_private(path: Path) -> None:
    """Creates `path` empty, mode 0600, unless it exists: for files another library opens (SQLite keeps
    the mode of the database file for its -wal and -shm files)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE))
    except FileExistsError:
        pass


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A new file to write that replaces `path` atomically when the block ends without an error (and
    is removed, leaving `path` untouched, when it does not)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crashed run that had our pid
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_private(path: Path, data: bytes) -> None:
    """`data` as the whole of `path`, mode 0600, replaced atomically."""
    with replacing(path) as f:
        f.write(data)
