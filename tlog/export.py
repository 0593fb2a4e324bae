"""Exports of leaves: JSON Lines (`{index, leaf_hash, leaf}`, the leaf byte for byte, and locally the
private details) and CSV of the public leaves, one stable column per leaf field, for a spreadsheet or
DuckDB. The server streams a bounded range (`GET /v1/export`); `tlog export --url` walks the ranges."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from .errors import ValidationError
from .rederive import iter_leaves
from .remote import TileClient
from .store.base import LogStore

# The CSV columns, in this order for good (new ones only ever appended): the leaf's index and hash, every
# field a public leaf may carry (empty where its type has none), and the leaf's exact JSON, whose SHA-256
# with the 0x00 prefix is leaf_hash.
CSV_COLUMNS = ("index", "leaf_hash", "type", "logged_at", "purpose", "phase", "decision", "policy", "invocations",
               "artist", "aseq", "aprev", "by", "effective_at", "erased", "root", "origin", "vrf", "prev", "details",
               "leaf")
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
CHUNK = 256  # leaves per write


def rows(store: LogStore, start: int, end: int, fmt: str, *, details: bool = False, header: bool = True) -> Iterator[bytes]:
    """Leaves [start, end) in `fmt`, a chunk of lines at a time (CSV with its header first, unless this
    continues an answer that has it)."""
    if fmt == "csv" and header:
        yield _csv_line(CSV_COLUMNS)
    lines: list[bytes] = []
    for entry, leaf, h in iter_leaves(store, start, end):
        if fmt == "csv":
            fields = orjson.loads(leaf)
            lines.append(_csv_line([entry.index, h.hex(), *(_cell(fields.get(c)) for c in CSV_COLUMNS[2:-1]), leaf.decode()]))
        else:
            row: dict[str, Any] = {"index": entry.index, "leaf_hash": h.hex(), "leaf": orjson.Fragment(leaf)}
            if details:
                row["details"] = entry.details
            lines.append(orjson.dumps(row) + b"\n")
        if len(lines) == CHUNK:
            yield b"".join(lines)
            lines.clear()
    if lines:
        yield b"".join(lines)


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _csv_line(values: Any) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode()


def download(url: str, fmt: str, start: int, end: int | None, out: IO[bytes],
             progress: Callable[[int, int], None]) -> None:
    """Writes the public leaves [start, end) of the log at `url` (end: its published size) to `out`, one
    request per range the server allows, with one CSV header."""
    asyncio.run(_download(url, fmt, start, end, out, progress))


async def _download(url: str, fmt: str, start: int, end: int | None, out: IO[bytes],
                    progress: Callable[[int, int], None]) -> None:
    async with TileClient(url) as client:
        size = (await client.json("v1/log"))["size"]
        end = size if end is None else min(end, size)
        pos = start
        while pos < end:
            body = await client.get("v1/export", {"start": str(pos), "end": str(end), "format": fmt})
            if fmt == "csv":
                header, _, body = body.partition(b"\n")
                if pos == start:
                    out.write(header + b"\n")
            got = body.count(b"\n")
            if got == 0:
                raise ValidationError(f"GET {client.base}v1/export?start={pos}: no leaves, though the log has {size}")
            out.write(body)
            pos += got
            progress(pos - start, end - start)
