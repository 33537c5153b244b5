"""The streaming MIME decoder and URI extraction, without I/O.

Besides messages written here, every message of CPython's email test data
(Debian's libpython3.11-testsuite) and SpamAssassin's sample messages go
through the decoder, whole and in small chunks, without an exception and
with the same result; Hypothesis feeds it random and mutated MIME.
"""

from __future__ import annotations

import base64
import glob
import quopri
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barricade.content.mime import Limits, MimeDecoder, decode
from barricade.content.uri import (
    UriCollector,
    hosts_in,
    normalize_host,
    registered_domain,
    sub_domains,
)

CORPUS = sorted(glob.glob("/usr/lib/python3.11/test/test_email/data/msg_*.txt")
                + glob.glob("/usr/share/doc/spamassassin/examples/sample-*.txt"))


def scan(message: bytes, chunk: int = 0, **kwargs) -> tuple[MimeDecoder, UriCollector]:
    collector = UriCollector()
    decoder = MimeDecoder(collector=collector, **kwargs)
    if chunk:
        for i in range(0, len(message), chunk):
            decoder.feed(message[i:i + chunk])
    else:
        decoder.feed(message)
    decoder.close()
    return decoder, collector


def hosts(message: bytes, **kwargs) -> list[str]:
    return [f.host for f in scan(message, **kwargs)[1]]


# --- hosts and domains ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw, host", [
    ("WWW.Example.COM.", "www.example.com"),
    ("%77ww.example.com", "www.example.com"),
    ("user:pw@evil.example.net:8080", "evil.example.net"),
    ("3325256706", "198.51.100.2"),
    ("0xc6336402", "198.51.100.2"),
    ("0306.0063.0144.02", "198.51.100.2"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("b\u00fccher.example", "xn--bcher-kva.example"),
    ("b\u00fccher\u3002example", "xn--bcher-kva.example"),
    ("stra\u00dfe.example", "xn--strae-oqa.example"),  # UTS #46 non-transitional: not strasse
    ("localhost", None),
    ("bad_host!.example", None),
    ("1.-1", None),  # int() takes a sign: a negative number raised out of ipaddress
    ("1.2.3.-4", None),
    ("", None),
])
def test_normalize_host(raw, host):
    assert normalize_host(raw) == host


@pytest.mark.parametrize("host, domain", [
    ("www.spam.example.co.uk", "example.co.uk"),
    ("a.b.spammer.test", "spammer.test"),
    ("example.com", "example.com"),
    ("com", None),
    ("198.51.100.2", None),
])
def test_registered_domain(host, domain):
    assert registered_domain(host) == domain


def test_numeric_hosts_are_digits_only():
    assert normalize_host("1_0.0.0.1") != "10.0.0.1"  # int() reads "1_0" as 10; a browser does not
    assert normalize_host("+1.0.0.1") is None


def test_sub_domains_longest_first_down_to_the_registered_domain():
    assert sub_domains("a.b.web.test") == ["a.b.web.test", "b.web.test", "web.test"]
    assert sub_domains("198.51.100.2") == ["198.51.100.2"]


def test_text_hosts_urls_addresses_and_bare_names():
    found = hosts_in("see http://Www.One.example.com/a?b, mail bob@two.example.org, www.three.test\n"
                     "not file.txt nor e.g. this; but four.example.net. counts")
    assert [(f.host, f.kind) for f in found] == [
        ("www.one.example.com", "url"), ("two.example.org", "mail"), ("www.three.test", "host"),
        ("four.example.net", "host")]


def test_a_url_cut_between_two_pieces_of_text_is_found_whole():
    c = UriCollector()
    c.feed_text("start http://www.spl")
    c.feed_text("it.example.com/x end")
    c.flush()
    assert [f.host for f in c] == ["www.split.example.com"]


def test_hosts_are_bounded_and_counted():
    c = UriCollector(max_hosts=3)
    c.feed_text(" ".join(f"http://h{i}.example.com/" for i in range(10)) + " http://h0.example.com/")
    c.flush()
    assert len(c) == 3 and c.count == 11 and c.dropped == 7


# --- MIME ------------------------------------------------------------------------------------------


def test_nested_multipart_rfc822_qp_base64_and_html():
    html = b'<p>A &amp; B <a href="http://&#104;tml.example.com/">x</a> <img src="//img.example.com/i">' \
           b'<form action="https://form.example.com/post"></form> text www.bare.example.com</p>'
    inner = (b"Subject: inner\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + base64.encodebytes(html).replace(b"\n", b"\r\n"))
    msg = (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\npreamble http://pre.example.com/\r\n"
           b"--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n"
           b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           + quopri.encodestring(b"caf\xe9 http://qp.example.com/" + b"x" * 80 + b"\r\n") +
           b"--i--\r\nepilogue\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n" + inner +
           b"--o\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(b"%PDF http://pdf.example.com/").replace(b"\n", b"\r\n") + b"--o--\r\n")
    for chunk in (0, 1, 7, 64):
        decoder, collector = scan(msg, chunk=chunk, want_md5=True)
        assert [f.host for f in collector] == [
            "qp.example.com", "html.example.com", "img.example.com", "form.example.com",
            "www.bare.example.com"], chunk
        types = [(p.depth, p.content_type, p.filename) for p in decoder.parts]
        assert types == [(0, "multipart/mixed", ""), (1, "multipart/alternative", ""), (2, "text/plain", ""),
                         (1, "message/rfc822", ""), (2, "text/html", ""), (1, "application/pdf", "r.pdf")]
        assert decoder.parts[-1].size == len(b"%PDF http://pdf.example.com/")
        assert decoder.errors == [] and decoder.limited == ""


def test_rfc2231_and_encoded_word_filenames():
    msg = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.exe\r\n\r\nx\r\n--b\r\n"
           b"Content-Type: application/octet-stream; name=\"=?UTF-8?B?aW52b2ljZS5zY3I=?=\"\r\n\r\nx\r\n--b--\r\n")
    decoder = decode(msg)
    assert [p.filename for p in decoder.parts[1:]] == ["r\u00e9sum\u00e9.exe", "invoice.scr"]


def test_a_broken_encoded_word_keeps_the_file_name_and_the_part():
    """decode_header's HeaderParseError once made the part plain text without a name:
    deny-content-name and deny-content-type never saw the .exe."""
    msg = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: application/x-msdownload; name=\"evil.exe\"\r\n"
           b"Content-Disposition: attachment; filename=\"=?utf-8?b?ZXZpbC5leGU=?= =?utf-8?b?a?=\"\r\n"
           b"\r\nTVqQ\r\n--b--\r\n")
    part = decode(msg).parts[1]
    assert part.content_type == "application/x-msdownload"
    assert part.filename == "=?utf-8?b?ZXZpbC5leGU=?= =?utf-8?b?a?="


def test_an_8bit_boundary_still_delimits_the_parts():
    """The parser gives 8-bit octets of a header back as U+FFFD, which matched no
    delimiter line: the whole body was preamble, its links and attachments unseen."""
    msg = (b'Content-Type: multipart/mixed; boundary="\xe9t\xe9"\r\n\r\n--\xe9t\xe9\r\n'
           b"Content-Type: text/plain\r\n\r\nsee http://inside.example.com/\r\n--\xe9t\xe9\r\n"
           b'Content-Type: application/octet-stream; name="x.exe"\r\n\r\nx\r\n--\xe9t\xe9--\r\n')
    decoder, collector = scan(msg)
    assert [(p.content_type, p.filename) for p in decoder.parts] == [
        ("multipart/mixed", ""), ("text/plain", ""), ("application/octet-stream", "x.exe")]
    assert [f.host for f in collector] == ["inside.example.com"]


@pytest.mark.parametrize("charset, error", [
    ("utf-16", ""), ("utf-32", ""), ("base64", "not a text charset"), ("zlib", "not a text charset"),
    ("rot13", "not a text charset"), ("idna", "failed"), ("undefined", "failed"),
    ("utf-8\x00", "unknown charset"),
])
def test_any_charset_is_read_without_an_exception(charset, error):
    """Codecs that are not text encodings, or refuse "replace", or (UTF-16 and UTF-32
    without a BOM, which RFC 2781 reads as big-endian) refuse the stream, raised out of
    the decoder: a 451 (#907) for every retry of the message."""
    text = "see http://cs.example.com/ now\n"
    if charset in ("utf-16", "utf-32"):
        bodies = [text.encode(f"{charset}-be"), text.encode(charset)]  # without a BOM, with one
    else:
        bodies = [text.encode("latin-1")]
    for body in bodies:
        head = f"Content-Type: text/plain; charset=\"{charset}\"\r\n\r\n".encode("latin-1")
        for chunk in (0, 3):
            decoder, collector = scan(head + body, chunk=chunk)
            assert [f.host for f in collector] == ["cs.example.com"], (body, chunk)
            assert len(decoder.errors) == (1 if error else 0) and error in "".join(decoder.errors)


def test_base64_of_many_padded_segments_is_decoded_whole():
    """Concatenated base64 streams, each with its padding: walked with an index (a slice
    per segment made a body of "AA==" repeated cost its length squared)."""
    segments = b"".join(base64.b64encode(bytes([i])) for i in range(256)) * 40
    msg = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    for chunk in (0, 7, 4096):
        decoder, _ = scan(msg + segments + b"\r\n", chunk=chunk, want_md5=True)
        assert decoder.parts[0].size == 256 * 40, chunk


def test_depth_limit_skips_and_says_so():
    msg = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for i in range(1, 6):
        msg += f"--b{i - 1}\r\nContent-Type: multipart/mixed; boundary=b{i}\r\n\r\n".encode()
    msg += b"--b5\r\nContent-Type: text/plain\r\n\r\nhttp://deep.example.com/\r\n"
    decoder, collector = scan(msg, limits=Limits(max_depth=3))
    assert "deeper than 3" in decoder.limited and len(collector) == 0
    decoder, collector = scan(msg, limits=Limits(max_depth=10))
    assert decoder.limited == "" and [f.host for f in collector] == ["deep.example.com"]


def test_parts_limit_and_endless_lines_stay_bounded():
    msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 50 + b"--b--\r\n"
    assert "more than 10 MIME parts" in decode(msg, limits=Limits(max_parts=10)).limited
    decoder = MimeDecoder()
    decoder.feed(b"Subject: x\r\n\r\n")
    for _ in range(40):
        decoder.feed(b"A" * 10000)
        assert len(decoder._buffer) <= 70000
    decoder.close()


def test_bad_base64_unknown_charset_and_missing_blank_line_are_errors_not_exceptions():
    msg = (b"Content-Type: text/plain; charset=x-no-such\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"!!!!aGVsbG8gaHR0cDovL2NzLmV4YW1wbGUuY29tLw=\r\n")
    decoder, collector = scan(msg)
    assert any("unknown charset" in e for e in decoder.errors)
    assert [f.host for f in collector] == ["cs.example.com"]
    decoder, _ = scan(b"Subject: x\r\nthis is body\r\n")
    assert decoder.errors == ["missing blank line after a header section"]


def test_kept_octets_are_bounded():
    data = b"z" * 5000
    msg = (b"Content-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(data).replace(b"\n", b"\r\n"))
    decoder = decode(msg, keep=lambda p: True, limits=Limits(keep_bytes=1000))
    part = decoder.parts[0]
    assert part.data == data[:1000] and part.truncated and part.size == 5000


# --- messages nobody here wrote ------------------------------------------------------------------


def test_corpus_is_there():
    assert len(CORPUS) > 40, "install libpython3.11-testsuite and spamassassin (scripts/setup-env)"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: Path(p).name)
def test_corpus_messages_decode_the_same_whole_and_in_chunks(path):
    data = Path(path).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    whole, c1 = scan(data, want_md5=True)
    pieces, c2 = scan(data, chunk=97, want_md5=True)
    assert [f.host for f in c1] == [f.host for f in c2]
    assert [(p.content_type, p.size, p.md5) for p in whole.parts] == \
           [(p.content_type, p.size, p.md5) for p in pieces.parts]
    assert whole.parts, path


# --- fuzzing --------------------------------------------------------------------------------------

_PIECES = [b"--b\r\n", b"--b--\r\n", b"--c\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n",
           b"Content-Type: multipart/alternative; boundary=c\r\n", b"Content-Type: message/rfc822\r\n",
           b"Content-Type: text/html; charset=utf-8\r\n", b"Content-Transfer-Encoding: base64\r\n",
           b"Content-Transfer-Encoding: quoted-printable\r\n", b"\r\n", b"<a href='http://x.example.com/'>",
           b"=3D=\r\n", b"aHR0cDovL3kuZXhhbXBsZS5jb20v\r\n", b"<!--", b"&#x68;", b"\xff\xfe", b"http://",
           b"Content-Type: text/plain; charset=iso-2022-jp\r\n", b"\x1b$B", b"=?utf-8?b?", b"\r"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=40)), max_size=60),
       st.integers(min_value=1, max_value=50))
def test_fuzz_mime_never_raises_and_chunking_does_not_matter(pieces, chunk):
    msg = b"".join(pieces)
    whole, c1 = scan(msg, want_md5=True, limits=Limits(max_depth=4, max_parts=20))
    split, c2 = scan(msg, chunk=chunk, want_md5=True, limits=Limits(max_depth=4, max_parts=20))
    assert [(p.content_type, p.md5) for p in whole.parts] == [(p.content_type, p.md5) for p in split.parts]
    assert len(whole.parts) <= 20


# --- HTML ----------------------------------------------------------------------------------------


def html_hosts(*blocks: str) -> list[str]:
    from barricade.content.markup import HtmlText

    collector = UriCollector()
    html = HtmlText(collector)
    for block in blocks:
        html.feed_block(block)
    html.feed_block("", final=True)
    collector.flush()
    return [f.host for f in collector]


def test_html_links_text_entities_and_hidden_parts():
    assert html_hosts(
        '<!-- http://comment.example.com/ --><script>var u="http://script.example.com/"</script>'
        '<style>a{background:url(http://style.example.com/)}</style>'
        "<meta http-equiv=refresh content='0; URL=http://refresh.example.com/'>"
        '<a HREF = "http://a.example.com/?x=1&amp;y=2">see www&#46;text.example.com</a>'
        "<form action=https://form.example.com/><img src=//img.example.com/i.png>") == [
        "refresh.example.com", "a.example.com", "form.example.com", "img.example.com", "www.text.example.com"]


def test_html_tags_and_comments_cut_between_blocks():
    assert html_hosts('<p>go <a hr', 'ef="http://cut.example.com/">x</a> <!-- http://hid', 'den.example.com/ -->',
                      "<scr", "ipt>http://js.example.com/</script> end www.after.example.com") == [
        "cut.example.com", "www.after.example.com"]


def test_html_a_quoted_gt_and_an_unclosed_last_tag():
    assert html_hosts('<a title="a>b" href="http://quoted.example.com/">x</a>',
                      "<a href=http://last.example.com/ ") == ["quoted.example.com", "last.example.com"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="<>!-/=\"' \nabhrefscript", max_size=80))
def test_html_constructs_once_begun_always_match(text):
    """The reason hostile HTML costs linear time: a tag, comment or script that begins
    ends at the end of the text if nothing closes it, so a match once begun never fails,
    and no later "<" is tried against the same text again ("<a href=x " repeated took
    49 s for 8 KB when the link tag's pattern could fail after scanning to the end)."""
    from barricade.content import markup

    for pattern, opens in ((markup._TAG, r"<[A-Za-z][A-Za-z0-9:-]*\s"), (markup._ANY_TAG, r"</?[A-Za-z!?]"),
                           (markup._HIDDEN, r"<!--|<(?:script|style)\b")):
        for start in re.finditer(f"(?i)(?={opens})", text):
            assert pattern.match(text, start.start()), (pattern.pattern, text, start.start())


def test_hostile_html_and_addresses_are_read_whole():
    """Inputs that took seconds to minutes (see the test above); each must still give
    what it holds."""
    assert html_hosts("<a href=x " * 800 + "<a href=http://end.example.com/>") == ["end.example.com"]
    assert html_hosts("<!--" * 4000) == [] and html_hosts('<a "' * 4000) == []
    collector = UriCollector()
    collector.feed_text("x.y @ " + "a" * 20000 + " mail me: " + "b" * 70 + "@list.example.com\n")
    collector.flush()
    assert [(f.host, f.kind) for f in collector] == [("list.example.com", "mail")]
    # A local part is read back 64 characters at most (RFC 5321), so a word is never
    # scanned from each of its characters to its end.
    from barricade.content.uri import _MAIL
    assert _MAIL.search("a" * 100 + "@x.example.com").group(0) == "a" * 64 + "@x.example.com"


def test_an_endless_line_is_never_taken_for_a_boundary():
    msg = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
           + b"x" * 70000 + b"--b\r\nhttp://after.example.com/\r\n--b--\r\n")
    for chunk in (0, 4096, 65536):
        decoder, collector = scan(msg, chunk=chunk)
        assert [p.content_type for p in decoder.parts] == ["multipart/mixed", "text/plain"], chunk
        assert [f.host for f in collector] == ["after.example.com"], chunk


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS or ["/dev/null"]),
       st.lists(st.tuples(st.floats(0, 1), st.sampled_from(["flip", "cut", "dup"]), st.binary(max_size=8)),
                max_size=8),
       st.integers(min_value=1, max_value=500))
def test_fuzz_mutated_corpus_messages(path, mutations, chunk):
    msg = bytearray(Path(path).read_bytes())
    for where, how, data in mutations:
        i = int(where * len(msg))
        if how == "flip":
            msg[i:i + len(data)] = data
        elif how == "cut":
            del msg[i:i + 1 + len(data) * 50]
        else:
            msg[i:i] = msg[i:i + 200]
    whole, c1 = scan(bytes(msg), want_md5=True)
    split, c2 = scan(bytes(msg), chunk=chunk, want_md5=True)
    assert [(p.content_type, p.md5) for p in whole.parts] == [(p.content_type, p.md5) for p in split.parts]
    assert [f.host for f in c1] == [f.host for f in c2]
