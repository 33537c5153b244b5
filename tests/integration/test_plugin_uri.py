"""The uri plugin over real SMTP sessions: Barricade in front of smtp-sink, DNS lists from nsd.

The lists are the zones in ``tests/zones``: ``surbl.test`` (SURBL style,
registered domains and reversed IPs), ``dbl.test`` (DBL style, 127.0.1.x
answers and a wildcard), ``bl.test`` (IP list), ``nsbl.test`` (name
servers by name), and ``web.test`` / ``badns.test`` for the hosts the
messages name.  Each encoding a spammer hides a link with (quoted-printable,
base64, HTML entities, an IDN, percent-encoding) hides a listed domain in
one test here.
"""

from __future__ import annotations

import base64
import io
import zipfile

import pytest

from barricade.testing import Client, routes_to

pytestmark = pytest.mark.integration

SENDER = "a@sender.example"


def message(body: str | bytes, headers: str = "", ctype: str = "text/plain; charset=us-ascii",
            cte: str = "7bit") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    head = (f"From: {SENDER}\r\nTo: b@example.com\r\nSubject: links\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n{headers}").encode()
    return head + b"\r\n" + body.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") + b"\r\n"


def send(proxy, body: bytes, sender: str = SENDER):
    with Client(proxy.port, timeout=60) as c:
        c.ehlo()
        return c.message(sender, ["b@example.com"], body)


def start(make_proxy, sink, *options: str):
    return make_proxy(routes_to(sink), *options)


def refused(reply, rid: int, text: str) -> None:
    assert (reply.code, reply.status, reply.id) == (550, "5.7.1", rid), reply
    assert reply.text.startswith(f"5.7.1 {text} #{rid}"), reply


# --- uri-bl, domain-bl, uri-dns-bl ----------------------------------------------------------


def test_uri_bl_refuses_a_listed_registered_domain_and_passes_clean_mail(sink, make_proxy):
    proxy = start(make_proxy, sink, "uri-bl=surbl.test")
    r = send(proxy, message("Buy now at http://www.spammer.test/offer?id=7 today\n"))
    refused(r, 762, "black listed URL domain spammer.test by surbl.test")
    sink.assert_nothing_from(SENDER)
    clean = "clean@sender.example"
    r = send(proxy, message("See http://www.web.test/ and https://example.com/x\n"), sender=clean)
    assert r.code == 250, r
    assert len(sink.bodies(sender=clean)) == 1
    assert proxy.metric("barricade_content_hits_total", plugin="uri", test="uri-bl", list="surbl.test") == 1
    assert proxy.metric("barricade_content_uris_count") == 2
    log = proxy.log_text()
    assert "http://www.spammer.test/offer?id=7 (www.spammer.test): uri-bl surbl.test" in log


@pytest.mark.parametrize("name, body, ctype, cte", [
    ("qp", "Visit http://www.spam=\nmer.test/ now =3D fast\n", "text/plain", "quoted-printable"),
    ("base64", base64.encodebytes(b"Visit http://www.spammer.test/ now\n").decode(), "text/plain", "base64"),
    ("entities", '<p>Go <a href="http://&#115;pammer&#46;test/x">here</a></p>\n', "text/html", "7bit"),
    ("idn", "Visit http://www.sp\u00e4m.test/ now\n".encode("utf-8"), "text/plain; charset=utf-8", "8bit"),
    ("percent", "Visit http://www.%73pammer.test/ now\n", "text/plain", "7bit"),
    ("bare", "Write to nobody, just visit www.spammer.test today\n", "text/plain", "7bit"),
    ("latin1-html", "<html><body>caf\u00e9 <img src='https://img.spammer.test/p.gif'></body></html>\n"
     .encode("latin-1"), "text/html; charset=iso-8859-1", "8bit"),
])
def test_encodings_do_not_hide_a_listed_domain(sink, make_proxy, name, body, ctype, cte):
    proxy = start(make_proxy, sink, "uri-bl=surbl.test")
    r = send(proxy, message(body, ctype=ctype, cte=cte))
    assert (r.code, r.id) == (550, 762), (name, r)
    assert "by surbl.test" in r.text


def test_listed_link_deep_in_nested_multipart_and_attached_message(sink, make_proxy):
    inner = (b"From: x@y.example\r\nSubject: fwd\r\nContent-Type: text/html\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n"
             + base64.encodebytes(b'<a href="https://login.spammer.test/">x</a>').replace(b"\n", b"\r\n"))
    body = (b"--outer\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
            b"--alt\r\nContent-Type: text/plain\r\n\r\nhello http://www.web.test/\r\n"
            b"--alt--\r\n"
            b"--outer\r\nContent-Type: message/rfc822\r\n\r\n" + inner +
            b"--outer--\r\n")
    proxy = start(make_proxy, sink, "uri-bl=surbl.test")
    r = send(proxy, message(body, ctype='multipart/mixed; boundary="outer"'))
    assert (r.code, r.id) == (550, 762), r
    assert "spammer.test" in r.text


def test_uri_bl_ip_host_sub_domains_and_mask(sink, make_proxy):
    proxy = start(make_proxy, sink, "uri-bl=surbl.test/0x04", "+uri-sub-domains")
    r = send(proxy, message("go http://198.51.100.2/x\n"))
    assert r.code == 250, r  # 127.0.0.2 does not match mask 0x04
    proxy2 = start(make_proxy, sink, "uri-bl=surbl.test", "+uri-sub-domains")
    refused(send(proxy2, message("go http://198.51.100.2/x\n")),
            762, "black listed URL domain 198.51.100.2 by surbl.test")
    refused(send(proxy2, message("go http://deep.sub.web.test/page\n")),
            762, "black listed URL domain sub.web.test by surbl.test")
    proxy3 = start(make_proxy, sink, "uri-bl=surbl.test")  # without sub-domains: web.test is clean
    assert send(proxy3, message("go http://deep.sub.web.test/page\n")).code == 250


def test_domain_bl_dbl_style_answers_and_wildcards(sink, make_proxy):
    proxy = start(make_proxy, sink, "domain-bl=dbl.test", "-uri-cite-list")
    refused(send(proxy, message("login at https://phish.example.test/bank\n")),
            762, "black listed URL domain phish.example.test by a URI black list")
    refused(send(proxy, message("and https://a.b.wild.example.test/\n")),
            762, "black listed URL domain a.b.wild.example.test by a URI black list")
    assert send(proxy, message("ham at https://ham.example.test/\n")).code == 250


def test_uri_dns_bl_looks_up_host_addresses(sink, make_proxy):
    proxy = start(make_proxy, sink, "uri-dns-bl=bl.test")
    refused(send(proxy, message("see http://listedip.web.test/\n")),
            776, "black listed URL host listedip.web.test by bl.test")
    assert send(proxy, message("see http://www.web.test/\n")).code == 250


def test_ns_bl_and_ns_a_bl(sink, make_proxy):
    proxy = start(make_proxy, sink, "ns-bl=nsbl.test")
    refused(send(proxy, message("see http://www.badns.test/\n")),
            788, "rejected NS ns.badns.test, black listed by nsbl.test")
    proxy = start(make_proxy, sink, "ns-a-bl=bl.test")
    refused(send(proxy, message("see http://www.badns.test/\n")),
            788, "rejected NS ns.badns.test, address 198.51.100.2 black listed by bl.test")


# --- heuristics -------------------------------------------------------------------------------


@pytest.mark.parametrize("option, url, rid, text", [
    ("+uri-require-domain", "http://198.51.100.10/x", 765, "host is an IP in URL http://198.51.100.10/x"),
    ("+uri-reject-unknown", "http://nothere.web.test/", 757, "URI domain nothere.web.test does not exist"),
    ("+uri-reject-on-timeout", "http://x.servfail.test/", 756, "URI domain x.servfail.test lookup timeout"),
    ("+uri-ip-in-name", "http://host-198-51-100-16.web.test/", 754,
     "URI host host-198-51-100-16.web.test contains IP 198.51.100.16 in name"),
    ("uri-ip-in-ptr=1", "http://dynptr.web.test/", 758,
     "URL host dynptr.web.test resolves to IP 198.51.100.16 in PTR adsl-198-51-100-16.clients.test"),
    ("uri-require-ptr=1", "http://noptr.web.test/", 760, "URL host noptr.web.test is missing a PTR"),
])
def test_heuristics(sink, make_proxy, option, url, rid, text):
    proxy = start(make_proxy, sink, option)
    refused(send(proxy, message(f"click {url} now\n")), rid, text)
    assert send(proxy, message("click http://www.web.test/ now\n")).code == 250
    assert proxy.metric("barricade_content_hits_total", plugin="uri", test=option.strip("+").split("=")[0],
                        list="-") == 1


# --- policy, max-test, headers, Body: ---------------------------------------------------------------


def test_policy_discard_and_none(sink, make_proxy):
    proxy = start(make_proxy, sink, "uri-bl=surbl.test", "uri-bl-policy=discard")
    r = send(proxy, message("http://www.spammer.test/\n"))
    assert r.code == 250, r  # accepted and dropped: never delivered
    sink.assert_nothing_from(SENDER)
    proxy = start(make_proxy, sink, "uri-bl=surbl.test", "uri-bl-policy=none")
    tagged = "none@sender.example"
    assert send(proxy, message("http://www.spammer.test/\n"), sender=tagged).code == 250
    assert len(sink.bodies(sender=tagged)) == 1
    assert "uri-bl-policy=none" in proxy.log_text()


def test_uri_max_test_bounds_the_domains_tested(sink, make_proxy):
    links = "".join(f"http://www.clean{i}.com/\n" for i in range(5)) + "http://www.spammer.test/\n"
    proxy = start(make_proxy, sink, "uri-bl=surbl.test", "uri-max-test=5")
    assert send(proxy, message(links)).code == 250  # the sixth domain is not tested
    proxy = start(make_proxy, sink, "uri-bl=surbl.test", "uri-max-test=0")
    assert send(proxy, message(links)).id == 762


def test_uri_bl_headers(sink, make_proxy):
    proxy = start(make_proxy, sink, "uri-bl=surbl.test", "uri-bl-headers=Reply-To")
    r = send(proxy, message("nothing here\n", headers="Reply-To: <win@spammer.test>\r\n"))
    assert r.id == 762, r
    proxy = start(make_proxy, sink, "uri-bl=surbl.test")
    assert send(proxy, message("nothing here\n", headers="Reply-To: <win@spammer.test>\r\n")).code == 250


def test_access_map_body_tag(access):
    proxy = access("body:spammer.test OK\nbody:web.test REJECT\n", "uri-bl=surbl.test")
    assert send(proxy, message("http://www.spammer.test/ is white-listed\n")).code == 250
    refused(send(proxy, message("http://www.web.test/ is black-listed\n")), 763, "rejected URL host www.web.test")


def test_attachments_are_not_searched_for_links(sink, make_proxy):
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("readme.txt", "http://www.spammer.test/")
    attachment = base64.encodebytes(data.getvalue()).decode()
    body = ("--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
            "Content-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"{attachment}\r\n--b--\r\n")
    proxy = start(make_proxy, sink, "uri-bl=surbl.test")
    assert send(proxy, message(body, ctype="multipart/mixed; boundary=b")).code == 250


# --- the envelope ------------------------------------------------------------------------------


def arrive(proxy, ip: str, helo: str):
    c = Client(proxy.port, timeout=30)
    c.ehlo()
    r = c.cmd(f"XCLIENT ADDR={ip}")
    if r.code == 220:
        r = c.ehlo(helo)
    return c, r


def test_uri_bl_helo_and_mail_drop_the_session(sink, make_proxy):
    proxy = start(make_proxy, sink, "uri-bl=surbl.test", "+uri-bl-helo", "+uri-bl-mail")
    c, r = arrive(proxy, "198.51.100.10", "mx.spammer.test")
    with c:
        assert (r.code, r.id) == (550, 792), r
        assert r.text.startswith("5.7.1 rejected HELO, spammer.test black listed by surbl.test #792")
        assert c.closed()
    c, r = arrive(proxy, "198.51.100.10", "mail.clients.test")
    with c:
        assert r.code == 250, r
        r = c.cmd("MAIL FROM:<x@news.spammer.test>")
        assert (r.code, r.id) == (550, 794), r
        assert "rejected MAIL FROM, spammer.test black listed by surbl.test" in r.text
        assert c.closed()
    assert proxy.metric("barricade_content_hits_total", plugin="uri", test="uri-bl-helo", list="surbl.test") == 1
    assert proxy.metric("barricade_content_hits_total", plugin="uri", test="uri-bl-mail", list="surbl.test") == 1


def test_uri_bl_ptr_drops_a_listed_client_name(sink, make_proxy):
    proxy = start(make_proxy, sink, "domain-bl=dbl.test", "+uri-bl-ptr")
    c, r = arrive(proxy, "198.51.100.10", "mail.clients.test")  # PTR mail.clients.test: not listed
    with c:
        assert r.code == 250, r
    with Client(proxy.port, timeout=30) as c:
        c.ehlo()
        r = c.cmd("XCLIENT ADDR=198.51.100.2")  # PTR listed.clients.test, in dbl.test
        assert (r.code, r.id) == (550, 790), r
        assert r.text.startswith("5.7.1 rejected client listed.clients.test [198.51.100.2], "
                                 "listed.clients.test black listed by dbl.test #790")
        assert c.closed()
    assert send(proxy, message("hello\n")).code == 250  # localhost is never looked up


def test_mime_limit_policy(sink, make_proxy):
    body = b"--b0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n" \
           b"Content-Type: multipart/mixed; boundary=b2\r\n\r\n--b2\r\nContent-Type: text/plain\r\n\r\n" \
           b"http://www.spammer.test/\r\n--b2--\r\n--b1--\r\n--b0--\r\n"
    data = message(body, ctype="multipart/mixed; boundary=b0")
    skip = start(make_proxy, sink, "uri-bl=surbl.test", "mime-max-depth=2")
    assert send(skip, data).code == 250  # the deep part is not scanned: logged and counted
    assert skip.metric("barricade_content_decode_errors_total", kind="limit") == 1
    strict = start(make_proxy, sink, "uri-bl=surbl.test", "mime-max-depth=2", "mime-limit-policy=reject")
    r = send(strict, data)
    assert (r.code, r.status, r.id) == (554, "5.6.0", 970), r
    assert r.text.startswith("5.6.0 message too complex to scan: MIME nesting deeper than 2 #970")
    assert send(start(make_proxy, sink, "uri-bl=surbl.test"), data).id == 762


def test_corpus_messages_make_no_false_hits(nsd):
    """Every host in CPython's email test data and SpamAssassin's samples, judged by the real
    lists of the test nsd: none is listed (and a listed host among them still is found)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from barricade.content.mime import decode
    from barricade.content.uri import Found, UriCollector
    from barricade.content.uribl import Asker, Judge, Settings
    from barricade.dns import DnsList, Resolver
    from tests.unit.test_content_mime import CORPUS

    found: dict[str, Found] = {}
    for path in CORPUS:
        collector = UriCollector()
        decode(open(path, "rb").read().replace(b"\n", b"\r\n"), collector=collector)
        found.update((f.host, f) for f in collector)
    assert len(found) > 15
    settings = Settings(uri_bl=(DnsList("surbl.test"),), domain_bl=(DnsList("dbl.test"),), max_test=0)

    async def judge(hosts: list[Found]):
        resolver = Resolver([("127.0.0.1", nsd.port)], max_timeout=10)
        return await Judge(settings, Asker(resolver)).first_hit(hosts)

    with ThreadPoolExecutor(1) as pool:  # the test run's loop is Twisted's: use another
        assert pool.submit(asyncio.run, judge(list(found.values()))).result() is None
        listed = Found("www.spammer.test", "http://www.spammer.test/", "url")
        hit = pool.submit(asyncio.run, judge([*found.values(), listed])).result()
    assert hit is not None and hit.found is listed
