"""Atom feeds (RFC 4287), written with the standard library's XML tools so that every text is escaped.
Pure: the server hands in the entries. Entry ids are tag URIs (RFC 4151) minted from the log's origin
and the day of its first leaf, so they never change for the life of the log."""

from __future__ import annotations

import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

ATOM_NS: Final = "http://www.w3.org/2005/Atom"
CONTENT_TYPE: Final = "application/atom+xml"
# Characters XML 1.0 does not allow, even escaped (a service's free-text `detail` could hold one), and the
# C1 controls it discourages, which feed readers take for Windows-1252 letters.
_NOT_XML: Final = re.compile("[^\u0009\u000a\u000d\u0020-\u007e\u00a0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class AtomEntry:
    id: str
    title: str
    updated: str  # RFC 3339
    content: str  # plain text
    published: str | None = None


@dataclass(frozen=True, slots=True)
class AtomFeed:
    id: str
    title: str
    subtitle: str
    updated: str  # RFC 3339
    self_url: str
    entries: Sequence[AtomEntry]
    next_url: str | None = None  # the next (older) page, RFC 5005 paging
    alternate_url: str | None = None


def tag_uri(origin: str, first_day: str, *parts: str) -> str:
    """`tag:<host>,<YYYY-MM-DD>:<path of the origin>/<parts…>`: the host of the log's origin (its first
    path segment) owns the name on the day the log began."""
    host, _, path = origin.partition("/")
    specific = "/".join(urllib.parse.quote(p, safe="") for p in [*filter(None, path.split("/")), *parts])
    return f"tag:{host.split(':')[0].lower()},{first_day}:{specific}"


def render(feed: AtomFeed) -> bytes:
    """The feed document, UTF-8, with an XML declaration."""
    root = ET.Element("feed", {"xmlns": ATOM_NS})
    _text(root, "id", feed.id)
    _text(root, "title", feed.title)
    _text(root, "subtitle", feed.subtitle)
    _text(root, "updated", feed.updated)
    author = ET.SubElement(root, "author")
    _text(author, "name", "tlog")
    ET.SubElement(root, "link", {"rel": "self", "type": CONTENT_TYPE, "href": feed.self_url})
    if feed.alternate_url:
        ET.SubElement(root, "link", {"rel": "alternate", "type": "text/html", "href": feed.alternate_url})
    if feed.next_url:
        ET.SubElement(root, "link", {"rel": "next", "type": CONTENT_TYPE, "href": feed.next_url})
    _text(root, "generator", "tlog")
    for e in feed.entries:
        entry = ET.SubElement(root, "entry")
        _text(entry, "id", e.id)
        _text(entry, "title", e.title)
        _text(entry, "updated", e.updated)
        if e.published:
            _text(entry, "published", e.published)
        content = _text(entry, "content", e.content)
        content.set("type", "text")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = _NOT_XML.sub("\ufffd", text)
    return el
