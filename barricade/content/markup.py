"""HTML to text and links, for the URI checks.

Running all of a message through ``html.parser`` costs about 35 ms per
100 KB of markup (a Python-level call per tag), ten times the relay
itself; so tags are found with regular expressions, only those with a
link attribute (``href``, ``src``, ``action``, ``background``, a meta
refresh ...) go through ``html.parser``, which knows HTML's quoting and
entities, and the text between tags, with comments and ``script``/``style``
contents left out, has its entities undone by ``html.unescape``.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from barricade.content.uri import UriCollector

MAX_HTML_LOOKAHEAD = 65536  # an unclosed tag or comment longer than this is dropped
_LINK_ATTRS = frozenset(("href", "src", "action", "background", "formaction", "cite", "data",
                         "poster", "lowsrc", "dynsrc", "longdesc", "codebase"))
_REFRESH_URL = re.compile(r"(?i)url\s*=\s*['\"]?([^'\">\s]+)")


class _TagParser(HTMLParser):
    """html.parser for one tag at a time: its attributes (quoting, entities) to links."""

    def __init__(self, collector: UriCollector):
        super().__init__(convert_charrefs=True)
        self.collector = collector

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if not value:
                continue
            if name in _LINK_ATTRS:
                self.collector.add_link(value)
            elif name == "content" and "url" in value.lower():  # <meta http-equiv=refresh>
                m = _REFRESH_URL.search(value)
                if m:
                    self.collector.add_link(m.group(1))

    handle_startendtag = handle_starttag

    def tag(self, text: str) -> None:
        self.reset()
        self.feed(text)
        self.close()


class HtmlText:
    """One HTML part, fed in blocks: links to the collector as found, text after each block.

    A tag, comment or script cut between two blocks is carried over to the
    next (up to ``MAX_HTML_LOOKAHEAD``).
    """

    def __init__(self, collector: UriCollector):
        self.collector = collector
        self.tags = _TagParser(collector)
        self.carry = ""

    def feed_block(self, text: str, final: bool = False) -> None:
        text = self.carry + text
        self.carry = ""
        if not final:
            cut = _cut_point(text)
            if cut < len(text) and len(text) - cut <= MAX_HTML_LOOKAHEAD:
                text, self.carry = text[:cut], text[cut:]
        text = _HIDDEN.sub(" ", text)
        for tag in _LINK_TAG.findall(text):
            self.tags.tag(tag)
        body = _ANY_TAG.sub(" ", text)
        if body.strip():
            self.collector.feed_text(html.unescape(body) if "&" in body else body)


#: Comments and what script and style elements hold: never shown, never scanned.
_HIDDEN = re.compile(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
_ATTR_VALUE = r"""(?:[^>"']|"[^"]*"|'[^']*')*"""
_LINK_TAG = re.compile(r"<[A-Za-z][A-Za-z0-9:-]*\s" + _ATTR_VALUE + r"?\b(?:"
                       + "|".join(sorted(_LINK_ATTRS)) + r"|content)\s*=" + _ATTR_VALUE + ">", re.IGNORECASE)
_ANY_TAG = re.compile(r"</?[A-Za-z!?][^>]*>")
_OPENERS = ("<!--", "<script", "<style")
_CLOSERS = ("-->", "</script", "</style")


def _cut_point(text: str) -> int:
    """Where the complete part of an HTML block ends: before an unclosed tag, comment or script."""
    low = text[-MAX_HTML_LOOKAHEAD:].lower()
    offset = len(text) - len(low)
    cut = len(text)
    for opener, closer in zip(_OPENERS, _CLOSERS, strict=True):
        i = low.rfind(opener)
        if i >= 0 and low.find(closer, i + len(opener)) < 0:
            cut = min(cut, offset + i)
    i = low.rfind("<")
    if i >= 0 and low.find(">", i) < 0:
        cut = min(cut, offset + i)
    return cut
