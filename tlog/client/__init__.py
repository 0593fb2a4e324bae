"""The Python client of a tlog log (asyncio, aiohttp).

- `SyncTlogClient`: the same calls, blocking, for synchronous code (WSGI services, scripts).
- `TlogClient`: one request per call (`use`, `log_many`, `receipt`, preferences), every receipt verified
  against the log's verifier key before it is returned.
- `BatchLogger`: for hot paths; a durable local spool, coalesced requests, retries, backpressure.
- `Aggregator`: folds high-volume uses into one record per key and time window.
"""

from .aggregate import Aggregator
from .batch import BatchLogger
from .client import LogInfo, PreferenceChange, TlogClient, UseReceipt, UseRefused, VerifiedReceipt
from .errors import NotYetPublished, ProtocolError, RateLimited, ReceiptError, SpoolError, TooLarge, TransientError
from .spool import FailedRecord
from .sync import SyncTlogClient

__all__ = [
    "Aggregator", "BatchLogger", "FailedRecord", "LogInfo", "NotYetPublished", "PreferenceChange", "ProtocolError",
    "RateLimited", "ReceiptError", "SpoolError", "SyncTlogClient", "TlogClient", "TooLarge", "TransientError",
    "UseReceipt", "UseRefused",
    "VerifiedReceipt",
]
