"""Storage: the interface (`base.Store`) and its backends. Only the sequencer writes."""

from .base import ArtistState, Batch, Entry, PolicyRecord, Store, TokenRecord, UseFilter
from .sqlite import SqliteStore

__all__ = ["ArtistState", "Batch", "Entry", "PolicyRecord", "Store", "SqliteStore", "TokenRecord", "UseFilter"]
