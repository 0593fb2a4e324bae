"""Tokens: the cache that spares the server a database read per request, and what invalidates it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tlog import tokens
from tlog.errors import ValidationError
from tlog.server.state import State
from tlog.tokens import Principal, TokenCache, new_token

SERVICE = Principal("service", "recsys", 1)


def test_a_cached_token_is_served_until_the_version_changes_or_it_expires():
    cache = TokenCache()
    _, digest = new_token()
    assert cache.get(digest, None, 0.0) is None
    cache.put(digest, SERVICE, 0.0)
    assert cache.get(digest, None, 1.0) == SERVICE
    assert cache.get(digest, None, tokens.TOKEN_CACHE_SECONDS + 0.1) is None  # expired
    cache.put(digest, SERVICE, 10.0)
    assert cache.get(digest, (1, 2), 10.5) is None  # a revocation somewhere: everything is forgotten
    assert cache.entries == {}


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(tokens, "TOKEN_CACHE_ENTRIES", 3)
    cache = TokenCache()
    digests = [new_token()[1] for _ in range(4)]
    for d in digests:
        cache.put(d, SERVICE, 0.0)
    assert len(cache.entries) <= 3 and cache.get(digests[-1], None, 0.0) == SERVICE


def test_revoking_changes_the_stores_tokens_version(log):
    store = log.store
    _, digest = new_token()
    token_id = store.add_token("service", "recsys", digest, 0)
    before = store.tokens_version()
    assert store.revoke_token(token_id, 1)
    after = store.tokens_version()
    assert after is not None and after != before
    _, other = new_token()
    assert store.revoke_token(store.add_token("auditor", None, other, 2), 3)
    assert store.tokens_version() not in (before, after)


async def test_the_server_reads_the_tokens_version_once_per_loop_iteration():
    """Requests served in one event loop iteration share one read; the next iteration reads again, so
    a request that arrives after a revocation sees it (auth.py reads the version before the lookup)."""
    reads = []

    class Store:
        def tokens_version(self):
            reads.append(1)
            return (len(reads), 0)

    state = State(log=SimpleNamespace(store=Store()), tile_cache=None, rate_limit=None, reads=None)  # type: ignore[arg-type]
    assert state.tokens_version() == state.tokens_version() == (1, 0)
    await asyncio.sleep(0)
    assert state.tokens_version() == (2, 0) and len(reads) == 2


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2592000),
                                               ("2w", 1209600), (" 1d ", 86400)])
def test_durations(text, seconds):
    assert tokens.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "1.5h", "30 d", "30days", "-1d", "1y", "4000d", "１d"])
def test_bad_durations_are_named(text):
    with pytest.raises(ValidationError, match="duration|ten years"):
        tokens.parse_duration(text)


def test_an_artist_token_covers_each_of_its_ids_and_nothing_else():
    subject = tokens.artist_subject(["sc:user:1", "sc:user:2", "sc:user:1"])
    assert subject == "sc:user:1 sc:user:2"
    p = Principal("artist", subject, 1)
    assert p.artist_ids == ("sc:user:1", "sc:user:2")
    assert p.is_artist("sc:user:1") and p.is_artist("sc:user:2")
    assert not p.is_artist("sc:user:") and not p.is_artist("sc:user:1 sc:user:2") and not p.is_artist("")
    assert Principal("service", "sc:user:1", 2).artist_ids == ()
    with pytest.raises(ValidationError):
        tokens.artist_subject([])
    with pytest.raises(ValidationError, match="not an artist id"):
        tokens.artist_subject(["ok", "has space"])


def test_expiry_and_rights():
    p = Principal("artist", "a", 1, expires_ms=1000)
    assert not p.expired(999) and p.expired(1000)
    assert not Principal("artist", "a", 1).expired(2**62)
    assert tokens.check_rights("service", ["issuer"]) == frozenset({"issuer"})
    with pytest.raises(ValidationError, match="only a service token"):
        tokens.check_rights("artist", ["issuer"])
    with pytest.raises(ValidationError, match="unknown right"):
        tokens.check_rights("service", ["admin"])
