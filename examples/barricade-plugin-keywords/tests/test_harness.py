"""The keyword filter in process, with Barricade's plugin harness: no daemon, no Postfix.

These are what a plugin's own tests usually look like; ``test_keywords.py``
adds the end-to-end checks against a real proxy and a real downstream.
"""

from __future__ import annotations

import pytest_twisted
from barricade_keywords.plugin import KeywordFilter

from barricade.api import PluginHarness


@pytest_twisted.ensureDeferred
async def test_a_reject_word_gets_reply_1000():
    result = await PluginHarness(KeywordFilter, "keywords-reject=viagra").message(
        b"Subject: offer\r\n\r\nCheap VIAGRA here.\r\n")
    assert (result.reply.code, result.reply.status, result.reply.id) == (550, "5.7.1", 1000)
    assert result.reply.text == "message contains the word viagra"
    assert result.delivered is None


@pytest_twisted.ensureDeferred
async def test_a_tag_word_tags_the_subject_and_adds_a_header():
    result = await PluginHarness(KeywordFilter, "keywords-tag=invoice").message(
        b"Subject: March\r\nFrom: a@example.org\r\n\r\nYour invoice.\r\n")
    assert result.reply.code == 250
    assert result.headers[:2] == [("X-Keywords", "invoice"), ("Subject", "[KEYWORD] March")]
    assert [v.action.value for _, v in result.verdicts("keywords")] == ["continue"]


@pytest_twisted.ensureDeferred
async def test_clean_mail_passes_every_phase():
    result = await PluginHarness(KeywordFilter, "keywords-reject=casino").message(
        b"Subject: lunch\r\n\r\nSee you at noon.\r\n")
    assert [event for event, _ in result.replies] == [
        "connect", "helo", "mail", "rcpt rcpt@example.com", "data", "dot"]
    assert result.delivered == b"Subject: lunch\r\n\r\nSee you at noon.\r\n"
