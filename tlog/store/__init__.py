"""Storage: the interface (`base`: the log, checkpoint, token and notify stores) and its backends. Only the
sequencer writes log data."""

from .base import (ArtistState, Backend, Batch, CheckpointedLog, CheckpointStore, Entry, LogStore, NotifyStore,
                   PolicyRecord, TokenRecord, TokenStore, UseFilter)
from .sqlite import SqliteStore

__all__ = ["ArtistState", "Backend", "Batch", "CheckpointStore", "CheckpointedLog", "Entry", "LogStore", "NotifyStore",
           "PolicyRecord", "SqliteStore", "TokenRecord", "TokenStore", "UseFilter"]
