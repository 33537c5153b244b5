"""The keyword filter: every part of the plugin interface in one small plugin.

* options of its own (``keywords-*``), which join ``barricade.cf`` and ``help``;
* a reply of its own (#1000), which operators can reword like any other;
* the whole message (``needs_message``), read from the spool at the dot;
* a header added and the Subject tagged on mail that is delivered.
"""

from __future__ import annotations

from barricade.api import CONTINUE, Context, Plugin, PluginOption, ReplySpec, Verdict, reject
from barricade.options import Config

#: This plugin's own reply: named here, numbered once.
KEYWORD_FOUND = 1000


class KeywordFilter(Plugin):
    name = "keywords"
    order = 800  # after the built-in checks and the virus scanners
    needs_message = True
    options = (
        PluginOption("keywords-reject", [], """Words (case-insensitive) that get a
            message rejected with reply #1000 when its text contains them."""),
        PluginOption("keywords-tag", [], """Words that get the Subject tagged and an
            X-Keywords header listing them."""),
        PluginOption("keywords-subject-tag", "[KEYWORD]", "The Subject tag."),
        PluginOption("keywords-max-size", 1048576, "Octets of each message searched.", minimum=1),
    )
    replies = (
        ReplySpec(KEYWORD_FOUND, 550, "5.7.1", "message contains the word {word}", "dot",
                  "keywords plugin: the message contains a word listed in keywords-reject."),
    )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        """Installed and given words: on, without naming it in ``plugins``."""
        return bool(config["keywords-reject"] or config["keywords-tag"])

    def __init__(self, config, services):
        super().__init__(config, services)
        self.reject_words = [w.lower() for w in config["keywords-reject"]]
        self.tag_words = [w.lower() for w in config["keywords-tag"]]
        self.tag = config["keywords-subject-tag"]
        self.max_size = config["keywords-max-size"]

    async def end_of_data(self, ctx: Context) -> Verdict:
        text = ctx.spool.read(self.max_size).decode("utf-8", "replace").lower()
        for word in self.reject_words:
            if word in text:
                return reject(KEYWORD_FOUND, word=word)
        found = [w for w in self.tag_words if w in text]
        if found:
            ctx.tag_subject(self.tag)
            ctx.add_header("X-Keywords", ", ".join(found))
        return CONTINUE
