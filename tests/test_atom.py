"""Atom documents (tlog/atom.py): whatever the text, a real feed parser reads back exactly what was put in."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import feedparser
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tlog.atom import ATOM_NS, AtomEntry, AtomFeed, render, tag_uri

T = "2026-12-06T04:05:22.277Z"


def feed(*entries: AtomEntry, next_url: str | None = None) -> AtomFeed:
    return AtomFeed(id="tag:log.example,2026-12-06:feeds/policies", title="t & <b>", subtitle="s", updated=T,
                    self_url="http://log.example/feeds/policies.atom?key=a&b=c", entries=entries, next_url=next_url)


def test_tag_uris_are_minted_from_the_origins_host_and_first_day():
    assert tag_uri("demo.tlog.example/log", "2026-12-06", "policies", "2027-01") == \
        "tag:demo.tlog.example,2026-12-06:log/policies/2027-01"
    assert tag_uri("Log.Example:8443", "2026-12-06", "entries", "7") == "tag:log.example,2026-12-06:entries/7"
    assert tag_uri("log.example/a/b", "2026-12-06", "x y/z") == "tag:log.example,2026-12-06:a/b/x%20y%2Fz"


def test_a_feed_with_links_and_entries_parses_cleanly():
    e = AtomEntry(id="tag:log.example,2026-12-06:entries/1", title="<title> & \"more\"", updated=T,
                  content="line 1\nline 2 <b>not bold</b> & co", published=T)
    parsed = feedparser.parse(render(feed(e, next_url="http://log.example/feeds/a.atom?key=k&before=9")))
    assert parsed.bozo == 0 and parsed.version == "atom10"
    assert parsed.feed.title == "t & <b>"
    assert {link.rel: link.href for link in parsed.feed.links}["next"] == "http://log.example/feeds/a.atom?key=k&before=9"
    (got,) = parsed.entries
    assert got.id == e.id and got.title == e.title and got.content[0].value == e.content
    assert got.content[0].type == "text/plain" and got.updated == T


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=60))
@example("\xc2\xa1 looks double-encoded; \r\n a C1 \x85 and a C0 \x01 control", "")
@example("\n", "")
def test_any_text_is_escaped_and_characters_xml_forbids_are_replaced(content, title):
    """A feed reader finds nothing malformed, and an XML parser reads back exactly the text (feedparser
    itself strips it and "repairs" what looks like double-encoded UTF-8, so it is not the judge of that)."""
    body = render(feed(AtomEntry(id="tag:log.example,2026-12-06:entries/1", title=title or "x", updated=T,
                                 content=content)))
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    allowed = lambda c: c in "\t\n\r" or " " <= c <= "~" or "\xa0" <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"  # noqa: E731
    want = "".join(c if allowed(c) else "\ufffd" for c in content)
    got = ET.fromstring(body).find(f"{{{ATOM_NS}}}entry/{{{ATOM_NS}}}content")
    assert got is not None and (got.text or "") == want.replace("\r\n", "\n").replace("\r", "\n")  # XML's line ends
