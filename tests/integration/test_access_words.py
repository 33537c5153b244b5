"""The access map's message words SAVE, TRAP and TAG, end to end through smtp-sink.

Tests connect from 127.0.0.1; client entries are tested as an outside
client through XCLIENT (allowed from localhost).
"""

from __future__ import annotations

from barricade.testing import Client, lf, wait_for

BODY = b"Subject: words\r\nX-Test: 1\r\n\r\nhello\r\n..dot line\r\n"
AS_RECEIVED = b"Subject: words\r\nX-Test: 1\r\n\r\nhello\r\n.dot line\r\n"  # unstuffed
OUTSIDE = "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example HELO=outside.example"


def saved(directory) -> dict[str, bytes]:
    """The finished copies in a directory, by file name (temp files are hidden)."""
    return {p.name: p.read_bytes() for p in directory.iterdir() if not p.name.startswith(".")}


def test_save_on_from_keeps_a_copy_in_save_dir_and_delivers(access, sink, tmp_path):
    save = tmp_path / "save"
    save.mkdir()
    proxy = access("from:keep@example.org SAVE\n", f"save-dir={save}")
    with Client(proxy.port) as c:
        c.ehlo()
        r = c.message("keep@example.org", ["b@example.com"], BODY)
        assert r.code == 250, r
        qid = r.text.split()[2]  # "2.0.0 message <qid> accepted #554"
        assert c.message("other@example.org", ["b@example.com"], BODY).code == 250
    wait_for(lambda: len(sink.messages()) >= 2, what="both messages")
    files = saved(save)
    assert len(files) == 1, files  # only the SAVE sender's message
    assert files == {f"{qid}.msg": AS_RECEIVED}
    assert all(body.endswith(lf(AS_RECEIVED)) for body in sink.bodies())


def test_trap_on_to_refuses_932_delivers_nothing_and_keeps_the_message(access, sink, tmp_path):
    trap = tmp_path / "trap"
    trap.mkdir()
    proxy = access("to:honeypot@example.com TRAP\n", f"trap-dir={trap}")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<spammer@example.org>").code == 250
        assert c.cmd("RCPT TO:<b@example.com>").code == 250
        assert c.cmd("RCPT TO:<honeypot@example.com>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(BODY + b".\r\n")
        r = c.read()
        assert (r.code, r.status, r.id) == (550, "5.7.0", 932), r
        assert r.text.startswith("5.7.0 this message was blocked #932")
        # the session goes on: the next message is delivered
        assert c.message("good@example.org", ["b@example.com"], BODY).code == 250
    wait_for(lambda: len(sink.bodies("good@example.org")) == 1, what="the good message")
    sink.assert_nothing_from("spammer@example.org")
    assert len(sink.messages()) == 1
    files = saved(trap)
    assert len(files) == 1, files
    assert list(files.values()) == [AS_RECEIVED]
    assert len(list(trap.iterdir())) == 1  # no temp file left behind


def test_custom_directories_for_save_and_trap(access, sink, tmp_path):
    mine, theirs, default = tmp_path / "mine", tmp_path / "theirs", tmp_path / "default"
    for d in (mine, theirs, default):
        d.mkdir()
    proxy = access(f'from:keep@example.org SAVE:"{mine}"\nto:trap@example.com TRAP:"{theirs}"\n',
                   f"save-dir={default}", f"trap-dir={default}")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.message("keep@example.org", ["b@example.com"], BODY).code == 250
        c.cmd("MAIL FROM:<x@example.org>")
        c.cmd("RCPT TO:<trap@example.com>")
        assert c.cmd("DATA").code == 354
        c.send(BODY + b".\r\n")
        r = c.read()
        assert (r.code, r.status, r.id) == (550, "5.7.0", 932), r
    wait_for(lambda: len(sink.messages()) >= 1, what="the saved message")
    assert list(saved(mine).values()) == [AS_RECEIVED]
    assert list(saved(theirs).values()) == [AS_RECEIVED]
    assert saved(default) == {}
    assert len(sink.messages()) == 1


def test_tag_on_connect_delivers_what_reject_would_refuse_tagged(access, sink):
    proxy = access("connect:192.0.2 TAG\n")
    with Client(proxy.port) as c:
        assert c.cmd(OUTSIDE).code == 220  # REJECT would have dropped the connection (#120)
        c.ehlo("outside.example")
        assert c.message("a@example.org", ["b@example.com"], BODY).code == 250
        assert c.message("a@example.org", ["c@example.com"], b"X-No-Subject: 1\r\n\r\nhi\r\n").code == 250
    wait_for(lambda: len(sink.messages()) >= 2, what="both messages")
    bodies = sorted(sink.bodies(), key=len)
    for body in bodies:  # every message of the session is tagged
        assert body.count(b"X-Spam-Flag: YES\n") == 1, body
        assert b"X-Spam-Reason: host mail.outside.example [192.0.2.1] black listed\n" in body
    assert b"Subject: [SPAM] words\n" in bodies[1]
    assert b"Subject: [SPAM]" in bodies[0]  # a message without a Subject gets one


def test_tag_on_from_tags_only_that_transaction(access, sink):
    proxy = access("from:spam@example.org TAG\n", "spamd-subject-tag=[JUNK]")
    with Client(proxy.port) as c:
        c.ehlo()
        assert c.message("spam@example.org", ["b@example.com"], BODY).code == 250
        assert c.message("good@example.org", ["b@example.com"], BODY).code == 250
    wait_for(lambda: len(sink.messages()) >= 2, what="both messages")
    tagged, = sink.bodies("spam@example.org")
    plain, = sink.bodies("good@example.org")
    assert b"Subject: [JUNK] words\n" in tagged
    assert b"X-Spam-Reason: sender <spam@example.org> black listed\n" in tagged
    assert b"X-Spam" not in plain and b"Subject: words\n" in plain
