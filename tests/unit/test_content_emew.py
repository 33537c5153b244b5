"""EMEW Message-IDs: made, checked, aged."""

from __future__ import annotations

from barricade.content import emew
from barricade.content.headers import bad_message_id

NOW = 1_800_000_000


def test_made_ids_are_valid_rfc5322_and_check_for_their_sender_only():
    msgid = emew.make("s3cret", "Alice@Example.org", "abc.123@mail.example.org", NOW)
    assert msgid.startswith("<EMEW3|") and msgid.endswith("|abc.123@mail.example.org>")
    assert bad_message_id([("Message-ID", msgid)]) is None
    assert emew.check("s3cret", "alice@example.org", msgid, NOW + 10, 604800) == "valid"
    assert emew.check("other", "alice@example.org", msgid, NOW, 604800) == "invalid"
    assert emew.check("s3cret", "bob@example.org", msgid, NOW, 604800) == "invalid"
    assert emew.check("s3cret", "alice@example.org", msgid, NOW + 604801, 604800) == "expired"
    assert emew.check("s3cret", "alice@example.org", msgid, NOW + 10**7, 0) == "valid"
    assert emew.check("s3cret", "alice@example.org", "<plain@example.org>", NOW, 60) == "none"
    tampered = msgid.replace("abc.123", "abc.124")
    assert emew.check("s3cret", "alice@example.org", tampered, NOW, 604800) == "invalid"


def test_time62_round_trip_and_quoted_ids():
    assert emew.untime62(emew.time62(NOW)) == NOW and len(emew.time62(NOW)) == 6
    msgid = emew.make("k", "a@b.example", "x@y.example", NOW)
    dsn = b"This is a bounce.\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-Id: " \
        + msgid.encode() + b"\r\n"
    assert emew.QUOTED_ID.search(dsn).group(1).decode() == msgid.strip("<>")
    indented = b"\r\n\r\n \tOriginal-Message-ID:\r\n " + msgid.encode() + b"\r\n"
    assert emew.QUOTED_ID.search(indented).group(1).decode() == msgid.strip("<>")
    # Blanks before the name, not line ends: "\s*" from every empty line's start made
    # 64 KB of empty lines cost 128 s.
    assert emew.QUOTED_ID.search(b"\n" * 20000) is None
    assert emew.QUOTED_ID.search(b"\n\n" + msgid.encode() + b"\r\n") is None
    assert emew.ids_in("<a@b> <c@d>") == ["c@d", "a@b"]
