"""What every backend must do, whatever it stores in: the behaviour of tlog/store/base.py's protocols.

Each test runs once per backend (conftest.OPENERS). Batches come from the real sequencer; what a store
gives back is compared with the batches it was given, or with a recount of its own entries in Python.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from tlog.errors import StorageError
from tlog.merkle import MemoryHashes, inclusion_proof
from tlog.note import parse_note, sign_note
from tlog.policy import DEFAULT_POLICY
from tlog.rederive import entry_leaves, iter_leaves
from tlog.stats import Tally
from tlog.store.base import MAX_ENTRIES, STALE_STATE, Backend, Entry, PolicyRecord, UseFilter
from tlog.tokens import digest

from ..conftest import append, records
from .conftest import Harness, held

USE_TYPES = ("use", "refusal")
BOUND = "sc:track:900001"  # bound by binding leaves, never used


@pytest.fixture
def grown(harness: Harness) -> Harness:
    """Uses of five artists (sc:user:1 refuses every AI use, so its uses are refusals) in three batches, a
    second policy, and a content bound to two artists, then released by one: every kind of leaf but an
    erasure, over several days."""
    seq = harness.sequencer()
    seq.set_preferences("sc:user:1", {"no_ai": True}, by="artist")
    append(seq, records(12, seed=1))
    seq.bind_content(BOUND, ["sc:user:2", "sc:user:4"])
    seq.publish_policy(DEFAULT_POLICY.document, "second")
    append(seq, records(12, seed=2, phase="evaluation"))
    seq.release_content(BOUND, "sc:user:4")
    append(seq, records(12, seed=3), service="fingerprint")
    return harness


def everything(store: Backend) -> list[Entry]:
    return list(store.entries(0, store.size()))


def written_entries(h: Harness) -> list[Entry]:
    return [e for b in h.written for e in b.entries]


# --- meta ------------------------------------------------------------------------------------------


def test_meta_is_kept_by_key_and_replaced(harness: Harness):
    store = harness.store
    assert store.get_meta("origin") == "conformance.test/log"
    assert store.get_meta("no such key") is None
    store.set_meta("vkeys", "a\nb")
    store.set_meta("vkeys", "b")
    assert store.get_meta("vkeys") == "b"


# --- the batch write -------------------------------------------------------------------------------


def test_what_batches_wrote_reads_back_as_it_was_given(grown: Harness):
    store = grown.store
    given = written_entries(grown)
    assert [e.index for e in given] == list(range(len(given))) and store.size() == len(given)
    assert everything(store) == given
    assert [store.entry(i) for i in (0, len(given) - 1)] == [given[0], given[-1]]
    assert store.entry(len(given)) is None
    assert list(store.entries(5, 9)) == given[5:9]


def test_the_tree_reads_back_every_node_the_batches_wrote(grown: Harness):
    store = grown.store
    nodes = {(level, n): h for b in grown.written for level, n, h in b.nodes}
    size = store.size()
    assert store.leaf_hashes(0, size) == [nodes[0, i] for i in range(size)]
    assert store.read_nodes(list(nodes)) == list(nodes.values())
    assert store.read_nodes([]) == []
    for level in (0, 1, 3):
        assert list(store.iter_nodes(level)) == sorted((n, h) for (lv, n), h in nodes.items() if lv == level)
        assert list(store.iter_nodes(level, 2, 4)) == [(n, nodes[level, n]) for n in (2, 3)]
    memory = MemoryHashes(store.leaf_hashes(0, size))
    assert inclusion_proof(7, size, store) == inclusion_proof(7, size, memory)
    with pytest.raises(StorageError):
        store.read_nodes([(0, size)])
    store.remember_nodes(grown.written[-1].nodes)  # what another connection committed: the same hashes
    assert store.read_nodes(list(nodes)) == list(nodes.values())


def _stored(store: Backend) -> tuple[object, ...]:
    """Everything a batch could have changed, read back."""
    return (store.size(), everything(store), store.latest_checkpoint(), store.checkpoint_sizes(), store.heads(),
            [(a.artist_id, a.aseq, a.head, a.preferences) for a in store.artists()], store.policies(),
            list(store.iter_bindings()), store.stats(), store.erasures())


def test_a_batch_not_starting_at_the_size_is_stale_and_writes_nothing(grown: Harness):
    store = grown.store
    before = _stored(store)
    for batch in (grown.written[-1], dataclasses.replace(grown.written[-1], start=store.size() + 1)):
        with pytest.raises(StorageError) as caught:
            store.write_batch(batch)
        assert caught.value.code == STALE_STATE
    assert _stored(store) == before


def test_a_batch_extending_another_leaf_is_stale_though_its_start_is_the_size(grown: Harness, store_factory):
    """Two writers build on the same log: one writes a batch, the other one of the same length and then a
    second on top of its first. That second batch starts at the stored size, but extends a leaf that is
    not the stored one: refused, and nothing of it written."""
    store = grown.store
    mine = grown.sequencer(write=False)
    theirs = grown.sequencer(store_factory(), write=False)
    append(mine, records(3, seed=7))
    append(mine, records(3, seed=8))
    append(theirs, records(3, seed=9))
    (first, second), (other,) = held(mine), held(theirs)
    assert (first.start, first.end) == (other.start, other.end) and second.start == first.end
    store.write_batch(other)
    before = _stored(store)
    with pytest.raises(StorageError) as caught:
        store.write_batch(second)
    assert caught.value.code == STALE_STATE
    assert _stored(store) == before
    with pytest.raises(StorageError) as caught:
        store.write_batch(dataclasses.replace(first, start=store.size()))  # a start that fits, on a wrong leaf
    assert caught.value.code == STALE_STATE
    assert _stored(store) == before


def test_a_batch_that_fails_half_way_stores_nothing_and_the_next_one_is_whole(grown: Harness):
    """The batch's last write (a policy record whose id is taken: the store is the backstop of the
    builder's check) fails after its entries, nodes, artists and bindings were written: none of them
    may stay, and the store must not remember them (ids, caches) when the same batch comes back whole."""
    store = grown.store
    seq = grown.sequencer(write=False)
    seq.set_preferences("sc:user:77", {"no_ai": True}, by="artist")  # an artist the store never saw
    append(seq, records(4, seed=11, artist_id="sc:user:77", content_id="sc:track:77"))
    first, second = held(seq)
    taken = PolicyRecord("second", first.start, DEFAULT_POLICY.document)
    before = _stored(store)
    with pytest.raises(StorageError):
        store.write_batch(dataclasses.replace(first, policies=[taken]))
    assert _stored(store) == before
    assert store.artist_state("sc:user:77") is None and store.bindings(["sc:track:77"]) == {}
    store.write_batch(first)
    store.write_batch(second)
    assert list(store.entries(first.start, second.end)) == first.entries + second.entries
    assert store.artist_state("sc:user:77").aseq == 5  # type: ignore[union-attr]
    assert store.bindings(["sc:track:77"]) == {"sc:track:77": frozenset({"sc:user:77"})}


# --- entries ---------------------------------------------------------------------------------------


def test_find_events_finds_each_stored_event_of_the_service(grown: Harness):
    store = grown.store
    uses = [e for e in everything(store) if e.type in USE_TYPES]
    service = uses[0].details["service"]
    mine = {e.details["event_id"]: e for e in uses if e.details["service"] == service}
    asked = [*mine, "never-logged", next(e.details["event_id"] for e in uses if e.details["service"] != service)]
    assert store.find_events(service, asked) == mine
    assert store.find_events("no-such-service", list(mine)) == {}
    assert store.find_events(service, []) == {}


@pytest.mark.parametrize("types, decisions", [(("policy", "preference", "refusal"), ("allowed_override",)),
                                              (("binding",), ()), ((), ("allowed",)), (("no-such-type",), ())])
def test_entries_of_picks_its_types_and_decisions_in_a_range(grown: Harness, types, decisions):
    store = grown.store
    size = store.size()
    for start, end in ((0, size), (4, size - 3)):
        want = [e for e in everything(store)[start:end]
                if e.type in types or (e.type in USE_TYPES and e.details["decision"] in decisions)]
        assert store.entries_of(start, end, types, decisions) == want


# --- artist chains ---------------------------------------------------------------------------------


def test_artist_states_and_heads_follow_the_chains(grown: Harness):
    store = grown.store
    chains: dict[str, list[Entry]] = {}
    for e in everything(store):
        if e.artist_id is not None:
            chains.setdefault(e.artist_id, []).append(e)
    assert sorted(a.artist_id for a in store.artists()) == sorted(chains)
    states = store.artist_states([*chains, "sc:user:404"])
    assert sorted(states) == sorted(chains)
    for artist_id, chain in chains.items():
        state = states[artist_id]
        assert state == store.artist_state(artist_id)
        assert (state.aseq, state.head, state.tag) == (chain[-1].aseq, chain[-1].index, chain[0].tag)
        assert [e.aseq for e in chain] == list(range(1, len(chain) + 1))
        assert [e.aprev for e in chain] == [None, *(e.index for e in chain[:-1])]
        assert len(state.proof) == 80 and not state.erased
    assert store.artist_state("sc:user:404") is None
    assert store.heads() == {c[0].tag: (c[-1].aseq, c[-1].index) for c in chains.values()}
    last = {a.artist_id: a for b in grown.written for a in b.artists}  # each artist's state as last written
    assert {a: s.preferences for a, s in states.items()} == {a: s.preferences for a, s in last.items()}
    assert states["sc:user:1"].preferences is not None and states["sc:user:2"].preferences is None


def _matches(e: Entry, flt: UseFilter) -> bool:
    """UseFilter in Python: purpose, phase and decision are those of uses and refusals; a content id also
    that of a binding leaf; an erased entry has none of them."""
    d = e.details if e.erased is None else {}
    fields = d if e.type in USE_TYPES else {}
    content = d.get("content_id") if e.type in (*USE_TYPES, "binding") else None
    return (e.index > flt.after
            and all(v is None or fields.get(k) == v for k, v in
                    (("purpose", flt.purpose), ("phase", flt.phase), ("decision", flt.decision)))
            and (flt.content_id is None or content == flt.content_id)
            and (flt.since_ms is None or e.logged_ms >= flt.since_ms)
            and (flt.until_ms is None or e.logged_ms < flt.until_ms))


def _filters(chain: list[Entry]) -> list[UseFilter]:
    """Filters on every UseFilter field, with values the chain has (and one it has not)."""
    uses = [e for e in chain if e.type in USE_TYPES]
    middle = chain[len(chain) // 2]
    content = [e.details["content_id"] for e in chain if e.type in (*USE_TYPES, "binding")]
    return [
        UseFilter(),
        *(UseFilter(purpose=p) for p in {e.details["purpose"] for e in uses}),
        UseFilter(purpose="no_such_purpose"),
        UseFilter(phase="evaluation"), UseFilter(phase="inference"),
        *(UseFilter(decision=d) for d in {e.details["decision"] for e in uses}),
        *(UseFilter(content_id=c) for c in set(content)), UseFilter(content_id="sc:track:none"),
        UseFilter(since_ms=middle.logged_ms), UseFilter(until_ms=middle.logged_ms),
        UseFilter(since_ms=chain[1].logged_ms, until_ms=middle.logged_ms + 1),
        UseFilter(after=middle.index), UseFilter(after=chain[-1].index),
        UseFilter(phase="evaluation", since_ms=chain[0].logged_ms, after=chain[0].index),
    ]


@pytest.mark.parametrize("artist_id", ["sc:user:1", "sc:user:2", "sc:user:4"])
def test_artist_listings_apply_every_filter(grown: Harness, artist_id: str):
    store = grown.store
    chain = [e for e in everything(store) if e.artist_id == artist_id]
    state = store.artist_state(artist_id)
    for flt in _filters(chain):
        want = [e for e in chain if _matches(e, flt)]
        assert store.artist_entries(artist_id, flt, MAX_ENTRIES) == want, flt
        assert store.chain_entries(state, flt, MAX_ENTRIES) == want, flt  # type: ignore[arg-type]
        assert store.artist_entries(artist_id, flt, 2) == want[:2], flt
    assert store.artist_entries("sc:user:404", UseFilter(), MAX_ENTRIES) == []


def test_a_listing_pages_through_the_whole_chain(grown: Harness):
    store = grown.store
    chain = [e for e in everything(store) if e.artist_id == "sc:user:2"]
    got: list[Entry] = []
    while page := store.artist_entries("sc:user:2", UseFilter(after=got[-1].index if got else -1), 3):
        got += page
    assert got == chain


def test_artist_latest_is_newest_first_below_an_index(grown: Harness):
    store = grown.store
    chain = [e for e in everything(store) if e.artist_id == "sc:user:3"]
    assert store.artist_latest("sc:user:3", store.size(), 4) == chain[::-1][:4]
    assert store.artist_latest("sc:user:3", chain[3].index, MAX_ENTRIES) == chain[:3][::-1]
    assert store.artist_latest("sc:user:3", chain[0].index, 5) == []
    assert store.artist_latest("sc:user:404", store.size(), 5) == []


# --- checkpoints -----------------------------------------------------------------------------------


def test_each_batch_checkpoint_is_kept_at_its_size(grown: Harness):
    store = grown.store
    batches = [b for b in grown.written if b.checkpoint is not None]
    assert store.latest_checkpoint() == batches[-1].checkpoint
    assert store.checkpoint_sizes() == [b.end for b in batches]
    assert list(store.iter_checkpoints()) == [(b.end, b.checkpoint) for b in batches]
    for b in batches:
        assert store.checkpoint_at(b.end) == b.checkpoint
        assert store.checkpoint_created_ms(b.end) == b.entries[-1].logged_ms
    assert store.checkpoint_at(batches[0].end + 1) is None


def test_checkpoint_notes_are_replaced_all_or_none(grown: Harness):
    store = grown.store
    sizes = store.checkpoint_sizes()
    resigned = [(s, sign_note(parse_note(store.checkpoint_at(s))[0], [grown.signer])) for s in sizes[:2]]  # type: ignore[arg-type]
    before = list(store.iter_checkpoints())
    with pytest.raises(StorageError, match=str(sizes[-1] + 1)):
        store.replace_checkpoint_notes([*resigned, (sizes[-1] + 1, b"never stored")])
    assert list(store.iter_checkpoints()) == before
    store.replace_checkpoint_notes(resigned)
    assert [store.checkpoint_at(s) for s in sizes[:2]] == [n for _, n in resigned]
    assert store.checkpoint_sizes() == sizes


def test_the_published_checkpoint_never_rolls_back(grown: Harness, store_factory):
    store, other = grown.store, store_factory()
    sizes = store.checkpoint_sizes()
    assert store.published_checkpoint() is None
    store.set_published(sizes[1], b"cosigned 1", 1)
    other.set_published(sizes[2], b"cosigned 2", 2)
    with pytest.raises(StorageError, match="already published"):
        store.set_published(sizes[1], b"cosigned 1 again", 3)
    assert store.published_checkpoint() == other.published_checkpoint() == b"cosigned 2"
    store.set_published(sizes[2], b"cosigned 2, more witnesses", 4)  # the same size: more cosignatures
    assert other.published_checkpoint() == b"cosigned 2, more witnesses"
    assert store.latest_checkpoint() == grown.written[-1].checkpoint  # a batch's own is another thing


# --- policies, bindings, erasures --------------------------------------------------------------------


def test_policies_are_listed_in_log_order(grown: Harness):
    store = grown.store
    given = [p for b in grown.written for p in b.policies]
    assert [p.policy_id for p in given] == [DEFAULT_POLICY.id, "second"]
    assert store.policies() == given
    assert store.policy("second") == given[1]
    assert store.entry(given[1].index).type == "policy"  # type: ignore[union-attr]
    assert store.policy("never") is None


def test_bindings_follow_first_uses_and_binding_leaves(grown: Harness):
    store = grown.store
    entries = everything(store)
    first_use: dict[str, Entry] = {}
    for e in entries:
        if e.type in USE_TYPES:
            first_use.setdefault(e.details["content_id"], e)
    leaves = [e for e in entries if e.type == "binding"]
    bound_by = [e.index for e in leaves if e.artist_id == "sc:user:2"]
    assert store.content_artists(BOUND) == [("sc:user:2", bound_by[0])]
    assert store.bindings([BOUND, "sc:track:none", *first_use]) == {
        BOUND: frozenset({"sc:user:2"}), **{c: frozenset({e.artist_id}) for c, e in first_use.items()}}  # type: ignore[arg-type]
    assert sorted(store.iter_bindings()) == sorted(
        [(BOUND, "sc:user:2", bound_by[0]), *((c, e.artist_id, e.index) for c, e in first_use.items())])
    events = list(store.content_events(store.size()))
    assert events == [(e.index, e.details["content_id"], e.artist_id, e.details.get("change") if e.type == "binding" else None)
                      for e in entries if e.type in (*USE_TYPES, "binding")]
    assert list(store.content_events(leaves[0].index)) == [x for x in events if x[0] < leaves[0].index]
    some = sorted(first_use)[:2]
    assert store.content_uses(some, store.size()) == [e for e in entries if e.type in USE_TYPES
                                                     and e.details["content_id"] in some]


def test_an_erasure_deletes_the_private_data_and_keeps_every_proof(grown: Harness):
    store = grown.store
    artist = store.artist_state("sc:user:3")
    chain = [e for e in everything(store) if e.artist_id == "sc:user:3"]
    store.add_token("artist", "sc:user:3", digest("tok-3"), 1)
    store.add_token("artist", "sc:user:3 sc:user:2", digest("tok-label"), 1)
    store.add_feed_key("sc:user:3", digest("feed-3"), 1)
    version = store.tokens_version()
    erasure = grown.sequencer().erase("sc:user:3", "account deleted")
    assert erasure is not None
    leaf = store.entry(erasure.index)
    assert store.erasures() == store.erasures(artist.tag) == [  # type: ignore[union-attr]
        dataclasses.replace(store.erasures()[0], index=erasure.index, tag=artist.tag, reason="account deleted",  # type: ignore[union-attr]
                            logged_ms=leaf.logged_ms)]  # type: ignore[union-attr]
    assert store.erasures(b"\0" * 32) == []
    erased = list(store.entries(chain[0].index, chain[-1].index + 1))
    erased = [e for e in erased if e.tag == artist.tag]  # type: ignore[union-attr]
    assert [e.index for e in erased] == [e.index for e in chain]
    assert all(e.erased == erasure.index and e.artist_id is None for e in erased)
    assert not any("event_id" in e.details or "content_id" in e.details for e in erased)
    entry_leaves(store, erased)  # each public leaf still derives from what is left, and matches its hash
    assert store.artist_state("sc:user:3") is None
    gone = store.erased_artist(artist.tag)  # type: ignore[union-attr]
    assert gone is not None and gone.erased and (gone.aseq, gone.head) == (artist.aseq, artist.head)  # type: ignore[union-attr]
    assert store.chain_entries(gone, UseFilter(), MAX_ENTRIES) == erased
    assert store.heads()[artist.tag] == (gone.aseq, gone.head)  # type: ignore[union-attr]
    assert "sc:user:3" not in {a.artist_id for a in store.artists()}
    assert not any(a == "sc:user:3" for _, a, _ in store.iter_bindings())
    assert store.token_by_digest(digest("tok-3")) is None
    assert store.token_by_digest(digest("tok-label")).subject == "sc:user:2"  # type: ignore[union-attr]
    assert store.feed_key(digest("feed-3")) is None
    assert store.tokens_version() != version
    assert store.erased_artist(store.artist_state("sc:user:2").tag) is None  # type: ignore[union-attr]


def test_forget_artist_deletes_its_tokens_and_feed_keys_only(harness: Harness):
    store = harness.store
    store.add_token("artist", "sc:user:8", digest("a"), 1)
    store.add_token("artist", "sc:user:9", digest("b"), 1)
    store.add_feed_key("sc:user:8", digest("f8"), 1)
    store.add_feed_key("sc:user:9", digest("f9"), 1)
    assert store.forget_artist("sc:user:8") == 1
    assert store.token_by_digest(digest("a")) is None and store.feed_key(digest("f8")) is None
    assert store.token_by_digest(digest("b")) is not None and store.feed_key(digest("f9")) is not None
    assert store.forget_artist("sc:user:8") == 0


# --- statistics ------------------------------------------------------------------------------------


def _recount(entries: list[Entry], size: int, since: int | None, until: int | None) -> list[tuple[object, ...]]:
    tally = Tally()
    for e in entries[:size]:
        if (since is None or e.logged_ms >= since) and (until is None or e.logged_ms < until):
            tally.add_details(e.logged_ms, e.type, e.details)
    return tally.rows()


def test_statistics_are_the_recount_of_their_leaves(grown: Harness):
    store = grown.store
    entries = everything(store)
    size = len(entries)
    times = sorted({e.logged_ms for e in entries})
    assert len({t // 86_400_000 for t in times}) > 1  # the log spans days: whole days and parts of them
    cases = [(None, None, None), (size - 5, None, None), (None, times[2], None), (None, None, times[-2]),
             (size - 2, times[1] + 1, times[-1]), (None, times[-1] + 1, None), (3, times[0], times[0] + 1)]
    for n, since, until in cases:
        assert store.stats(n, since, until) == _recount(entries, n or size, since, until), (n, since, until)


# --- the notifier's cursor -------------------------------------------------------------------------


def test_notify_state_is_none_until_saved_and_keeps_every_policy_done(harness: Harness, store_factory):
    store = harness.store
    assert store.notify_state() is None
    store.save_notify_state(3, {1})
    store.save_notify_state(10, [5])
    assert store.notify_state() == (10, {1, 5})
    assert store_factory().notify_state() == (10, {1, 5})


# --- tokens and feed keys --------------------------------------------------------------------------


def test_tokens_are_added_found_listed_and_revoked(harness: Harness, store_factory):
    store, server = harness.store, store_factory()
    first = store.add_token("service", "recsys", digest("one"), 1000, rights=frozenset({"catalog", "issuer"}))
    second = store.add_token("artist", "sc:user:1 sc:user:2", digest("two"), 2000, expires_ms=9000)
    assert first != second
    one = server.token_by_digest(digest("one"))
    assert one is not None and (one.token_id, one.role, one.subject, one.created_ms, one.revoked_ms, one.digest,
                                one.rights, one.expires_ms) == (first, "service", "recsys", 1000, None, digest("one"),
                                                                frozenset({"catalog", "issuer"}), None)
    two = server.token_by_digest(digest("two"))
    assert two is not None and (two.subject, two.rights, two.expires_ms) == ("sc:user:1 sc:user:2", frozenset(), 9000)
    assert server.token_by_digest(digest("three")) is None
    assert server.tokens() == [one, two]
    version = server.tokens_version()
    assert store.revoke_token(first, 5000)
    assert server.tokens_version() != version  # a running server drops the revoked token from its cache
    assert server.token_by_digest(digest("one")).revoked_ms == 5000  # type: ignore[union-attr]
    assert not store.revoke_token(first, 6000) and not store.revoke_token(999, 6000)
    assert server.token_by_digest(digest("one")).revoked_ms == 5000  # type: ignore[union-attr]


def test_a_token_digest_is_stored_once(harness: Harness):
    store = harness.store
    store.add_token("service", "recsys", digest("same"), 1)
    with pytest.raises(StorageError):
        store.add_token("service", "other", digest("same"), 2)
    assert [t.subject for t in store.tokens()] == ["recsys"]


def test_feed_keys_are_found_until_their_artist_revokes_them(harness: Harness, store_factory):
    store, server = harness.store, store_factory()
    mine = store.add_feed_key("sc:user:1", digest("feed"), 1)
    other = store.add_feed_key("sc:user:2", digest("feed 2"), 1)
    assert server.feed_key(digest("feed")) == (mine, "sc:user:1")
    assert server.feed_key(digest("unknown")) is None
    assert not store.revoke_feed_key("sc:user:2", mine, 2)  # not its key
    assert server.feed_key(digest("feed")) == (mine, "sc:user:1")
    assert store.revoke_feed_key("sc:user:1", mine, 2)
    assert server.feed_key(digest("feed")) is None
    assert not store.revoke_feed_key("sc:user:1", mine, 3)
    assert server.feed_key(digest("feed 2")) == (other, "sc:user:2")
    with pytest.raises(StorageError):
        store.add_feed_key("sc:user:3", digest("feed 2"), 4)


# --- reads from another connection -----------------------------------------------------------------


def test_another_connection_reads_every_committed_batch(grown: Harness, store_factory):
    reader = store_factory()
    assert reader.size() == grown.store.size()
    append(grown.sequencer(), records(3, seed=21))
    assert everything(reader) == written_entries(grown)
    assert reader.latest_checkpoint() == grown.written[-1].checkpoint
    assert [leaf for _, leaf, _ in iter_leaves(reader, 0, 3)] == [leaf for _, leaf, _ in iter_leaves(grown.store, 0, 3)]


def test_the_sequencer_resumes_from_what_the_store_holds(grown: Harness, store_factory):
    """A new sequencer on another connection reads the head (size, frontier, chains, schedule) back and
    extends the log where the first left it: duplicates found, chains continued."""
    again = grown.sequencer(store_factory())
    assert again.size == grown.store.size()
    assert append(again, records(1, seed=1))[0].duplicate
    append(again, records(4, seed=22))
    assert everything(grown.store) == written_entries(grown)
    counts = Counter(e.artist_id for e in everything(grown.store) if e.artist_id)
    assert {a.artist_id: a.aseq for a in grown.store.artists()} == counts
