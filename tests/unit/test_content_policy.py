"""RFC 2822 header checks, attachment patterns and archive listing: pure functions."""

from __future__ import annotations

import io
import zipfile

import pytest

from barricade.content.archive import is_archive, list_names
from barricade.content.attachments import base_name, denied, parse_patterns
from barricade.content.headers import (
    bad_date,
    bad_message_id,
    first_8bit,
    missing_eoh,
    missing_required,
    valid_date,
)


@pytest.mark.parametrize("value, ok", [
    ("Tue, 1 Dec 2026 22:33:32 +0000", True),
    ("1 Dec 2026 22:33 -0500", True),
    ("Tue, 01 Dec 26 22:33:32 GMT", True),
    ("Tue, 1 Dec 2026 22:33:32 EST (Eastern)", True),
    ("Tue, 1 Dec 2026 22:33:32 Z", True),
    ("Tue Dec  1 22:33:32 2026", False),
    ("2026-12-01T22:33:32Z", False),
    ("Tue, 1 Dec 2026 22:33:32", False),
    ("", False),
])
def test_valid_date(value, ok):
    assert valid_date(value) is ok


def test_header_checks():
    assert first_8bit(b"Subject: ok\r\n") is None
    assert first_8bit(b"Subject: caf\xe9\r\n") == 0xE9
    assert missing_eoh(b"From: a\r\n folded\r\nX: y\r\n") is None
    assert missing_eoh(b"From: a\r\nhello there\r\n") == "hello there"
    assert missing_required([("From", "a"), ("Subject", "s")]) == ["date"]
    assert bad_message_id([("Message-Id", "<a.b@c.example>")]) is None
    assert bad_message_id([("Message-Id", "<a.b@[192.0.2.1]>")]) is None
    assert bad_message_id([("Message-Id", "<no-at-sign>")]) == "<no-at-sign>"
    assert bad_date([("Received", "from a by b; Tue, 1 Dec 2026 22:33:32 +0000")]) is None
    assert bad_date([("Received", "from a by b")]) == ("Received", "no date")
    assert bad_date([("Resent-Date", "soon")]) == ("Resent-Date", "soon")


@pytest.mark.parametrize("value, patterns, hit", [
    ("Setup.EXE", "*.exe; *.scr", "*.exe"),
    ("notes.txt", "*.exe", None),
    ("application/x-msdos-program", "application/*msdos-program", "application/*msdos-program"),
    ("application/pdf", "!application/pdf, application/*", None),
    ("application/zip", "!application/pdf, application/*", "application/*"),
    ("text/javascript", "text/*script", "text/*script"),
    ("", "*", None),
])
def test_denied(value, patterns, hit):
    assert denied(value, parse_patterns(patterns)) == hit


def test_base_name_and_archives():
    assert base_name("dir\\sub/evil.exe") == "evil.exe"
    assert is_archive("A.ZIP") and is_archive("x", "application/zip") and not is_archive("a.rar")
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("a/b.exe", "x")
        zf.writestr("c.txt", "y")
    listing = list_names(data.getvalue())
    assert listing.names == ("a/b.exe", "c.txt") and not listing.encrypted and not listing.corrupt
    assert list_names(b"PK\x03\x04garbage").corrupt
    assert list_names(data.getvalue()[:-30]).corrupt  # cut short: no central directory


def test_shared_decoding_decodes_each_chunk_once_whoever_passes_it():
    from types import SimpleNamespace

    from barricade.content import shared

    ctx = SimpleNamespace(notes={}, header_block=b"Subject: x\r\n")
    shared.want(ctx, uris=True)
    shared.want(ctx, md5=True)
    chunks = [b"\r\n", b"h", b"h", b"ttp://one.example.com/ ", b"\n", b"\n"]  # 1-byte bytes are shared objects
    for chunk in chunks:
        for plugin in ("uri", "attachment", "digest"):
            shared.feed(ctx, {}, chunk, plugin)
    scan = shared.finish(ctx, {})
    assert [f.host for f in scan.collector] == []  # "hhttp://" is no URL: nothing was decoded twice or lost
    assert scan.decoder.octets == sum(map(len, chunks)) + len(ctx.header_block)
    assert scan.decoder.parts[0].size == len(b"hhttp://one.example.com/ \n\n")
    assert shared.finish(ctx, {}) is scan
