"""Tagging a message instead of refusing it (smtpf's TAG).

SPF's ``*-tag`` policy words, the access map's ``TAG`` word and any check
that returns a TAG verdict (:func:`barricade.policy.verdict.tag`) deliver a
message they would have refused, marked: the Subject gets the
``spamd-subject-tag`` prefix and the headers ``X-Spam-Flag: YES`` and
``X-Spam-Reason: <the refusal's text>`` are added.  A TAG verdict from any
phase up to ``headers`` is applied when the header block is complete,
before any of the message goes downstream, so it works in cut-through mode
as well as in spool mode; from ``body`` or ``end_of_data`` it needs a
spooled message.  The first reason wins: a message is tagged once, with
one ``X-Spam-Reason``, however many checks wanted to tag it.
"""

from __future__ import annotations

from barricade.options import Config
from barricade.policy.pipeline import TAGGED, Context

__all__ = ["TAGGED", "subject_tag", "tag_message"]


def subject_tag(config: Config) -> str:
    """The Subject prefix of a tagged message (``spamd-subject-tag``, as in smtpf)."""
    return config.get("spamd-subject-tag", "[SPAM]") or "[SPAM]"


def tag_message(ctx: Context, tag: str, reason: str) -> bool:
    """Tag the Subject and add X-Spam-Flag/X-Spam-Reason; False if already tagged."""
    return ctx.tag(tag, reason)
