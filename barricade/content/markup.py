"""HTML to text and links, for the URI checks.

Why not ``html.parser``: it makes a Python-level call per tag and costs
about 35 ms per 100 KB of markup (and still 20 ms when fed only the tags
that carry links), several times what relaying the message costs.  What
the URI checks need from HTML is small: the values of link attributes
(``href``, ``src``, ``action``, ``background``, a meta refresh ...) and
the text a reader sees.  So tags, comments and ``script``/``style``
contents are found with regular expressions that follow HTML's syntax
(attribute values quoted either way or bare), and entities, in attribute
values and text alike, are undone by ``html.unescape``, the function
``html.parser`` itself uses.  Everything runs in C but the handful of link
tags.
"""

from __future__ import annotations

import html
import re

from barricade.content.uri import UriCollector

MAX_HTML_LOOKAHEAD = 65536  # an unclosed tag or comment longer than this is dropped
_LINK_ATTRS = frozenset(("href", "src", "action", "background", "formaction", "cite", "data",
                         "poster", "lowsrc", "dynsrc", "longdesc", "codebase"))
_REFRESH_URL = re.compile(r"(?i)url\s*=\s*['\"]?([^'\">\s]+)")


class HtmlText:
    """One HTML part, fed in blocks: links to the collector as found, text after each block.

    A tag, comment or script cut between two blocks is carried over to the
    next (up to ``MAX_HTML_LOOKAHEAD``).
    """

    def __init__(self, collector: UriCollector):
        self.collector = collector
        self.carry = ""

    def feed_block(self, text: str, final: bool = False) -> None:
        text = self.carry + text
        self.carry = ""
        if not final:
            cut = _cut_point(text)
            if cut < len(text) and len(text) - cut <= MAX_HTML_LOOKAHEAD:
                text, self.carry = text[:cut], text[cut:]
        text = _HIDDEN.sub(" ", text)
        for tag in _TAG.findall(text):
            if _LINK_NAME.search(tag):
                self._links(tag)
        body = _ANY_TAG.sub(" ", text)
        if body.strip():
            self.collector.feed_text(html.unescape(body) if "&" in body else body)


    def _links(self, tag: str) -> None:
        for name, value in _ATTR.findall(tag):
            name = name.lower()
            if value[:1] in "\"'":
                value = value[1:-1]
            if "&" in value:
                value = html.unescape(value)
            if name in _LINK_ATTRS:
                self.collector.add_link(value)
            elif name == "content" and "url" in value.lower():  # <meta http-equiv=refresh>
                m = _REFRESH_URL.search(value)
                if m:
                    self.collector.add_link(m.group(1))


#: An attribute with a value, as HTML writes them: quoted either way, or up to white space.
_ATTR = re.compile(r"""([^\s/>"'=]+)\s*=\s*("[^"]*"|'[^']*'|[^\s>"']+)""")
# Every pattern here that begins a construct (a comment, a script, a tag) also ends it
# at the end of the text when nothing closes it, as a browser does, so that a match
# once begun never fails.  A pattern that could fail after scanning to the end would
# be tried again from every later "<" of the block: hostile HTML of a few kilobytes
# ("<a href=x " repeated, or "<!--" repeated) then held the event loop for minutes.
#: Comments and what script and style elements hold: never shown, never scanned.
_HIDDEN = re.compile(r"<!--.*?(?:-->|\Z)|<(script|style)\b.*?(?:</\1\s*>|\Z)", re.DOTALL | re.IGNORECASE)
#: A start tag with its attributes (values quoted either way or bare), to its ">".
_TAG = re.compile(r"""<[A-Za-z][A-Za-z0-9:-]*+\s(?:[^>"']++|"[^"]*+"?|'[^']*+'?)*+(?:>|\Z)""")
#: Does a tag have an attribute that may hold a link?
_LINK_NAME = re.compile(r"\b(?:" + "|".join(sorted(_LINK_ATTRS)) + r"|content)\s*=", re.IGNORECASE)
_ANY_TAG = re.compile(r"</?[A-Za-z!?][^>]*+(?:>|\Z)")
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
