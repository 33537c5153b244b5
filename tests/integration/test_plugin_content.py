"""The rfc2822 and attachment plugins over real SMTP sessions (Barricade in front of smtp-sink).

ZIP attachments are made here with ``zipfile``; a password-protected one
is made by setting the encryption flag of a member, which is all a lister
sees.
"""

from __future__ import annotations

import base64
import io
import struct
import zipfile

import pytest

from barricade.testing import Client, routes_to

pytestmark = pytest.mark.integration

SENDER = "a@sender.example"
HEAD = (f"From: {SENDER}\r\nTo: b@example.com\r\nDate: Tue, 1 Dec 2026 22:33:32 +0000\r\n"
        "Message-ID: <m1@sender.example>\r\nSubject: test\r\n")


def send(proxy, data: bytes, sender: str = SENDER):
    with Client(proxy.port, timeout=60) as c:
        c.ehlo()
        return c.message(sender, ["b@example.com"], data)


def expect(reply, code: int, status: str, rid: int, text: str) -> None:
    assert (reply.code, reply.status, reply.id) == (code, status, rid), reply
    assert reply.text.startswith(f"{status} {text} #{rid}"), reply


# --- rfc2822 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("option, head, rid, text", [
    ("+rfc2822-7bit-headers", HEAD + "X-Name: caf\xe9\r\n", 456,
     "message headers must be US-ASCII, found 0xE9; RFC 2822 section 2.2"),
    ("+rfc2822-min-headers", f"From: {SENDER}\r\nSubject: no date\r\n", 462, "missing RFC 2822 required headers"),
    ("+rfc2822-min-headers", HEAD.replace("<m1@sender.example>", "m1 at sender"), 971,
     "malformed Message-ID 'm1 at sender'; RFC 2822 section 3.6.4"),
    ("+rfc2822-missing-eoh", HEAD + "this line is body\r\n", 972,
     "missing blank line after the headers, found 'this line is body'; RFC 2822 section 2.1"),
    ("+rfc2822-strict-date", HEAD.replace("Tue, 1 Dec 2026 22:33:32 +0000", "2026-12-01 22:33"), 973,
     "malformed Date: date '2026-12-01 22:33'; RFC 2822 section 3.3"),
    ("+rfc2822-strict-date", HEAD + "Received: from x by y; yesterday\r\n", 973,
     "malformed Received: date 'yesterday'; RFC 2822 section 3.3"),
])
def test_rfc2822_checks(sink, make_proxy, option, head, rid, text):
    proxy = make_proxy(routes_to(sink), option)
    r = send(proxy, head.encode("latin-1") + b"\r\nbody\r\n")
    expect(r, 554, "5.6.0", rid, text)
    sink.assert_nothing_from(SENDER)
    good = "good@sender.example"
    assert send(proxy, HEAD.encode() + b"\r\nbody\r\n", sender=good).code == 250
    assert len(sink.bodies(sender=good)) == 1


def test_rfc2822_checks_are_off_by_default(sink, make_proxy):
    proxy = make_proxy(routes_to(sink))
    assert send(proxy, b"Subject: caf\xe9\r\nno blank line\r\n").code == 250


# --- attachments --------------------------------------------------------------------------------


def zip_bytes(*names: str, encrypt: bool = False) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        for name in names:
            zf.writestr(name, b"MZ payload")
    raw = bytearray(data.getvalue())
    if encrypt:  # set bit 0 of the general purpose flags in every local and central header
        for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            start = 0
            while (start := raw.find(sig, start)) >= 0:
                flags = struct.unpack_from("<H", raw, start + offset)[0]
                struct.pack_into("<H", raw, start + offset, flags | 1)
                start += 4
    return bytes(raw)


def with_attachment(name: str, data: bytes, ctype: str = "application/octet-stream") -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (HEAD.encode() + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
            + f'Content-Type: {ctype}; name="{name}"\r\nContent-Disposition: attachment; filename="{name}"\r\n'
              "Content-Transfer-Encoding: base64\r\n\r\n".encode() + encoded + b"--b--\r\n")


def test_deny_content_name_and_type(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+deny-content")
    expect(send(proxy, with_attachment("Invoice.PDF.exe", b"MZ")), 550, "5.7.1", 974,
           "attachment name Invoice.PDF.exe denied")
    expect(send(proxy, with_attachment("tool.bin", b"MZ", "application/x-msdownload")), 550, "5.7.1", 975,
           "attachment type application/x-msdownload denied")
    ok = "ok@sender.example"
    assert send(proxy, with_attachment("report.pdf", b"%PDF", "application/pdf"), sender=ok).code == 250
    assert proxy.metric("barricade_content_hits_total", plugin="attachment", test="deny-content-name",
                        list="-") == 1


def test_deny_top_content_type_with_exemption(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+deny-content")
    head = HEAD.encode() + b"MIME-Version: 1.0\r\n"
    expect(send(proxy, head + b"Content-Type: image/jpeg\r\n\r\nxx\r\n"), 550, "5.7.1", 976,
           "message content type image/jpeg denied")
    assert send(proxy, head + b"Content-Type: application/pdf\r\n\r\nxx\r\n").code == 250
    assert send(proxy, head + b"Content-Type: text/plain\r\n\r\nxx\r\n").code == 250


def test_deny_compressed_name_encrypted_and_corrupt_zip(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "+deny-content")
    expect(send(proxy, with_attachment("photos.zip", zip_bytes("a.jpg", "dir/setup.EXE"))), 550, "5.7.1", 977,
           "attachment photos.zip contains setup.EXE, denied")
    assert send(proxy, with_attachment("photos.zip", zip_bytes("a.jpg", "b.txt"))).code == 250
    # a password-protected or corrupt archive passes unless the postmaster says otherwise
    assert send(proxy, with_attachment("locked.zip", zip_bytes("a.txt", encrypt=True))).code == 250
    assert send(proxy, with_attachment("broken.zip", b"PK\x03\x04 not really")).code == 250
    strict = make_proxy(routes_to(sink), "+deny-content", "+deny-compressed-encrypted", "+deny-compressed-corrupt")
    expect(send(strict, with_attachment("locked.zip", zip_bytes("a.txt", encrypt=True))), 550, "5.7.1", 978,
           "attachment locked.zip is password protected")
    expect(send(strict, with_attachment("broken.zip", b"PK\x03\x04 not really")), 550, "5.7.1", 979,
           "attachment broken.zip cannot be read: File is not a zip file")


def test_access_map_overrides_per_recipient_sender_and_client(access):
    proxy = access("filename-to:b@example.com *.txt\n"
                   "archname-from:sender.example *.js\n"
                   "top-mimetype-connect:127.0.0.1 !image/* application/*\n", "+deny-content")
    expect(send(proxy, with_attachment("notes.txt", b"hi", "text/plain")), 550, "5.7.1", 974,
           "attachment name notes.txt denied")
    assert send(proxy, with_attachment("run.exe", b"MZ", "application/octet-stream")).code == 250
    expect(send(proxy, with_attachment("a.zip", zip_bytes("x.js"))), 550, "5.7.1", 977,
           "attachment a.zip contains x.js, denied")
    head = HEAD.encode() + b"MIME-Version: 1.0\r\n"
    assert send(proxy, head + b"Content-Type: image/png\r\n\r\nxx\r\n").code == 250
    expect(send(proxy, head + b"Content-Type: application/pdf\r\n\r\nxx\r\n"), 550, "5.7.1", 976,
           "message content type application/pdf denied")


# --- hash lists ---------------------------------------------------------------------------------


def test_digest_bl_refuses_a_listed_mime_part(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "digest-bl=hash.test")
    expect(send(proxy, with_attachment("a.bin", b"EVIL PAYLOAD")), 550, "5.7.0", 980,
           "message contains blocked MIME part")
    assert send(proxy, with_attachment("a.bin", b"GOOD PAYLOAD")).code == 250
    assert proxy.metric("barricade_content_hits_total", plugin="digest", test="digest-bl", list="hash.test") == 1


def test_mail_bl_sender_headers_and_text(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "mail-bl=hash.test")
    with Client(proxy.port, timeout=60) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<Spammer@Gmail.com>")
        expect(r, 550, "5.7.1", 982, "sender <spammer@gmail.com> black listed by hash.test")
    reply_to = HEAD.encode() + b"Reply-To: Win <spammer@gmail.com>\r\n\r\nhi\r\n"
    expect(send(proxy, reply_to), 550, "5.7.1", 981, "mail address <spammer@gmail.com> black listed by hash.test")
    in_text = HEAD.encode() + b"\r\nwrite to BAD@hotmail.com today\r\n"
    expect(send(proxy, in_text), 550, "5.7.1", 981, "mail address <bad@hotmail.com> black listed by hash.test")
    clean = HEAD.encode() + b"Reply-To: <friend@gmail.com>\r\n\r\nwrite to bad@example.org\r\n"
    assert send(proxy, clean).code == 250
    other = make_proxy(routes_to(sink), "mail-bl=hash.test", "mail-bl-domains=example.org")
    assert send(other, in_text).code == 250  # hotmail.com is not among the domains looked up


def test_all_content_plugins_together_deliver_clean_mail_unchanged(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "uri-bl=surbl.test", "domain-bl=dbl.test", "+deny-content",
                       "digest-bl=hash.test", "mail-bl=hash.test", "+rfc2822-min-headers", "+rfc2822-strict-date")
    data = with_attachment("photos.zip", zip_bytes("a.jpg")).replace(
        b"see attached", b"see http://www.web.test/ and write to friend@gmail.com")
    clean = "clean@sender.example"
    assert send(proxy, data, sender=clean).code == 250
    delivered = sink.bodies(sender=clean)[0]
    assert delivered.endswith(data.replace(b"\r\n", b"\n")) or delivered.endswith(data), delivered[-300:]
    bad = data.replace(b"www.web.test", b"www.spammer.test")
    assert send(proxy, bad).id == 762
    assert send(proxy, with_attachment("a.bin", b"EVIL PAYLOAD")).id == 980


# --- EMEW -----------------------------------------------------------------------------------------


def emew_proxy(make_proxy, sink, *options: str):
    # 127.0.0.1 may relay: what it sends is "outbound"; XCLIENT makes another client inbound
    return make_proxy(routes_to(sink) + "route:127.0.0.1 RELAY\n", "emew-secret=s3cret", *options)


def inbound(proxy, sender: str, data: bytes, rcpt: str = "b@example.com"):
    with Client(proxy.port, timeout=60) as c:
        c.ehlo()
        assert c.cmd("XCLIENT ADDR=198.51.100.10").code == 220
        c.ehlo("mail.clients.test")
        return c.message(sender, [rcpt], data)


def test_emew_watermarks_outbound_and_checks_bounces(sink, make_proxy):
    import re

    proxy = emew_proxy(make_proxy, sink, "emew-dsn-policy=reject")
    out = "b@example.com"  # our user, sending out (and getting the bounce back)
    assert send(proxy, HEAD.encode() + b"\r\nhello\r\n", sender=out).code == 250
    delivered = sink.bodies(sender=out)[0]
    msgid = re.search(rb"Message-ID: (<EMEW3\|[^>]+>)", delivered).group(1)
    assert msgid.endswith(b"|m1@sender.example>")
    assert b"References: <m1@sender.example>" in delivered
    bounce = (b"From: MAILER-DAEMON@elsewhere.example\r\nDate: Tue, 1 Dec 2026 22:40:00 +0000\r\n"
              b"Subject: Undelivered\r\n\r\nsorry\r\n\r\nMessage-ID: " + msgid + b"\r\n")
    assert inbound(proxy, "", bounce, rcpt=out).code == 250
    forged = bounce.replace(msgid, b"<m1@sender.example>")
    expect(inbound(proxy, "", forged, rcpt=out), 550, "5.7.1", 358,
           "DSN or MDN for message that did not originate here")
    assert inbound(proxy, "", bounce, rcpt="c@example.com").id == 358  # ours, but not for this user
    lenient = emew_proxy(make_proxy, sink)
    assert inbound(lenient, "", forged, rcpt=out).code == 250


def test_emew_expired_bounce_357_and_white_washed_reply(sink, make_proxy):
    from barricade.content import emew

    old = emew.make("s3cret", "b@example.com", "m0@sender.example", 1_000_000_000)
    proxy = emew_proxy(make_proxy, sink, "+deny-content")
    bounce = HEAD.encode() + b"\r\nreturned\r\nMessage-Id: " + old.encode() + b"\r\n"
    expect(inbound(proxy, "", bounce), 550, "5.7.1", 357, "DSN or MDN in response to an old message")
    fresh = emew.make("s3cret", "b@example.com", "m2@sender.example", __import__("time").time())
    reply = (HEAD + f"In-Reply-To: {fresh}\r\nMIME-Version: 1.0\r\nContent-Type: image/png\r\n").encode() + b"\r\nx\r\n"
    assert inbound(proxy, "friend@elsewhere.example", reply).code == 250  # deny-top-content-type skipped
    stranger = reply.replace(fresh.encode(), b"<m3@sender.example>")
    assert inbound(proxy, "friend@elsewhere.example", stranger).id == 976
