"""The keyword filter inside a real Barricade session, against a real downstream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from barricade.testing import PACKAGE_ROOT, Client, lf, routes_to

HERE = Path(__file__).resolve().parent.parent  # so the proxy can import barricade_keywords
PLUGIN = "plugins=barricade_keywords.plugin:KeywordFilter"


def send(proxy, body: bytes):
    with Client(proxy.port) as c:
        c.ehlo()
        return c.message("a@example.org", ["b@example.com"], body)


def test_clean_mail_is_delivered_unchanged(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), PLUGIN, "keywords-reject=viagra", pythonpath=[HERE])
    body = b"Subject: lunch\r\n\r\nSee you at noon.\r\n"
    assert send(proxy, body).code == 250
    assert sink.bodies()[0].endswith(lf(body))


def test_a_reject_word_gets_reply_1000(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), PLUGIN, "keywords-reject=viagra,casino", pythonpath=[HERE])
    reply = send(proxy, b"Subject: offer\r\n\r\nCheap VIAGRA here.\r\n")
    assert (reply.code, reply.status, reply.id) == (550, "5.7.1", 1000)
    assert "message contains the word viagra" in reply.text
    sink.assert_nothing_from()


def test_a_tag_word_tags_the_subject_and_adds_a_header(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), PLUGIN, "keywords-tag=invoice", pythonpath=[HERE])
    assert send(proxy, b"Subject: March\r\nFrom: a@example.org\r\n\r\nYour invoice.\r\n").code == 250
    delivered = sink.bodies()[0]
    assert b"\nX-Keywords: invoice\nSubject: [KEYWORD] March\nFrom: a@example.org\n\nYour invoice.\n" in delivered


def test_operators_can_reword_the_reply(sink, make_proxy, tmp_path):
    replies = tmp_path / "replies"
    replies.write_text("1000 we do not accept mail about {word}\n")
    proxy = make_proxy(routes_to(sink), PLUGIN, "keywords-reject=casino", f"reply-file={replies}",
                       pythonpath=[HERE])
    reply = send(proxy, b"Subject: x\r\n\r\ncasino night\r\n")
    assert reply.id == 1000 and "we do not accept mail about casino" in reply.text


def test_the_options_are_in_the_help_output():
    out = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "barricade",
         PLUGIN, "help"],
        capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": f"{PACKAGE_ROOT}:{HERE}", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "keywords-subject-tag=[KEYWORD]" in out.stdout and "# plugin keywords" in out.stdout
