"""Log AI uses from an asyncio service with tlog's client, and act on the answer.

    TLOG_TOKEN=<a service token> python examples/log_uses_async.py http://127.0.0.1:8080 'VERIFIER-KEY'

The verifier key is the one `tlog init` printed (also in GET /v1/log); the client checks it against the
log when it opens and verifies every receipt with it, so an answer it returns is proven, not just said.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timezone

from tlog.client import TlogClient


def record(event_id: str, artist_id: str, purpose: str) -> dict[str, object]:
    """One AI use (SPEC §2.1). The event_id is your idempotency key: sending it again is safe. A track
    belongs to its artists: a use names one of them (here each artist's own track), or it is refused (409)."""
    return {
        "event_id": event_id, "content_id": f"sc:track:{artist_id.rsplit(':', 1)[-1]}01", "artist_id": artist_id,
        "purpose": purpose, "phase": "inference",
        "system": {"id": "recs-ranker", "model": "ranker", "version": "2026.07.3"},
        "occurred_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


async def main(url: str, vkey: str, token: str) -> None:
    run = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    async with TlogClient(url, token, vkey=vkey) as log:
        # Ask before using: the log decides by the artist's preferences and the policy, and logs either way.
        answer = await log.use(record(f"example-async-{run}", "sc:user:7", "recommendation"))
        if answer.refused:
            print(f"{answer.event_id}: refused by the artist's preferences; not used (logged at {answer.index})")
        else:
            print(f"{answer.event_id}: {answer.decision} at index {answer.index}, "
                  f"proven in checkpoint {answer.checkpoint.size if answer.checkpoint else '?'}")
        # Many uses at once (up to 1000 a request, all or nothing); batches carry receipt URLs, fetched on demand.
        batch = await log.log_many([record(f"example-async-{run}-{i}", f"sc:user:{i}", "search_indexing")
                                    for i in range(3)])
        print(f"logged {len(batch)} uses: {', '.join(r.decision for r in batch)}")
        proof = await log.receipt(batch[0].index, leaf_hash=batch[0].leaf_hash)
        print(f"receipt for index {proof.index} verified in checkpoint {proof.checkpoint.size}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or "TLOG_TOKEN" not in os.environ:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], os.environ["TLOG_TOKEN"]))
