"""Tagging a message instead of refusing it (smtpf's TAG).

SPF's ``*-tag`` policy words and the access map's ``TAG`` word both deliver
a message they would have refused, marked: the Subject gets the
``spamd-subject-tag`` prefix and the headers ``X-Spam-Flag: YES`` and
``X-Spam-Reason: <the refusal's text>`` are added.  Checks call
:func:`tag_message` from their ``headers`` hook, which runs before any of
the message goes downstream, so tagging works in cut-through mode as well
as in spool mode.  The first reason wins: a message is tagged once, with
one ``X-Spam-Reason``, however many checks wanted to tag it.
"""

from __future__ import annotations

from barricade.options import Config
from barricade.policy.pipeline import Context

#: Transaction note: set once the message has been tagged.
TAGGED = "tag.done"


def subject_tag(config: Config) -> str:
    """The Subject prefix of a tagged message (``spamd-subject-tag``, as in smtpf)."""
    return config.get("spamd-subject-tag", "[SPAM]") or "[SPAM]"


def tag_message(ctx: Context, tag: str, reason: str) -> bool:
    """Tag the Subject and add X-Spam-Flag/X-Spam-Reason; False if already tagged."""
    if ctx.notes.get(TAGGED):
        return False
    ctx.notes[TAGGED] = True
    ctx.tag_subject(tag)
    ctx.add_header("X-Spam-Flag", "YES")
    ctx.add_header("X-Spam-Reason", reason)
    return True
