"""`tlog append --url`: a file's records logged to a remote server, as `rekor-cli upload` does.

Records go in requests of up to 1000, each all or nothing; a failed request stops the upload and says
which lines were logged, and running the same file again is safe (each event_id is logged once, later
sends are answered as duplicates). The last record's receipt is fetched and verified against the log's
key, so the size printed is one the log signed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from ..errors import TlogError
from ..intake import Appended
from .client import MAX_RECORDS, TlogClient

_RECORD_FIELD = re.compile(r"records\[(\d+)\]\.?")


def upload(url: str, token: str, vkey: str, rows: list[tuple[int, Any]],
           progress: Callable[[int, int], None]) -> Appended:
    """Logs `rows` ((line number, record) of a JSON Lines file, intake.read_jsonl); returns what became of
    them, with the size of the checkpoint that proves the last."""
    return asyncio.run(_upload(url, token, vkey, rows, progress))


async def _upload(url: str, token: str, vkey: str, rows: list[tuple[int, Any]],
                  progress: Callable[[int, int], None]) -> Appended:
    done = Appended()
    async with TlogClient(url, token, vkey=vkey) as client:
        for start in range(0, len(rows), MAX_RECORDS):
            chunk = rows[start : start + MAX_RECORDS]
            try:
                results = await client.log_many([record for _, record in chunk])
            except TlogError as exc:
                raise _by_line(exc, chunk, logged=rows[start - 1][0] if start else None) from None
            done.count(results)
            progress(start + len(chunk), len(rows))
        if rows:
            done.size = (await client.receipt(results[-1].index, leaf_hash=results[-1].leaf_hash)).checkpoint.size
        else:
            done.size = (await client.log_info()).size
    return done


def _by_line(exc: TlogError, chunk: list[tuple[int, Any]], logged: int | None) -> TlogError:
    """The server's error with `records[i]` turned into the file's line numbers, saying what was logged."""
    details = []
    for d in exc.details or []:
        field = str(d.get("field") or "")
        m = _RECORD_FIELD.match(field)
        if m and int(m.group(1)) < len(chunk):
            field = f"line {chunk[int(m.group(1))][0]}: {field[m.end():]}".rstrip(": ")
        details.append({**d, "field": field})
    done = f"lines up to {logged} were logged" if logged is not None else "nothing was logged"
    exc.message = f"{exc.message.rstrip('.')} ({done}; from line {chunk[0][0]} on, nothing: run again to finish)"
    exc.details = details
    return exc
