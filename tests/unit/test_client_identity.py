"""XCLIENT and XFORWARD lines for the downstream."""

from __future__ import annotations

from barricade.protocol import events as ev
from barricade.protocol.client_identity import (
    COMMAND_LIMIT,
    identity,
    xclient_commands,
    xforward_commands,
    xtext,
)

ALL = frozenset(("NAME", "ADDR", "PORT", "PROTO", "HELO", "SOURCE", "IDENT", "LOGIN"))


def test_xtext():
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext("caf\u00e9") == "caf+C3+A9"


def test_identity_of_an_outside_client():
    client = ev.ClientInfo("192.0.2.7", 4000, "mail.example.org")
    values = identity(client, "helo.example.org", True, "QID01")
    assert xforward_commands(ALL, values) == [
        "XFORWARD NAME=mail.example.org ADDR=192.0.2.7 PORT=4000 PROTO=ESMTP HELO=helo.example.org "
        "SOURCE=REMOTE IDENT=QID01"]
    assert xclient_commands(ALL, values) == [
        "XCLIENT NAME=mail.example.org ADDR=192.0.2.7 PORT=4000 PROTO=ESMTP HELO=helo.example.org"]


def test_only_offered_attributes_and_unknowns():
    client = ev.ClientInfo("2001:db8::1", 0, "unknown", relay=True)
    values = identity(client, "", False)
    assert xclient_commands(frozenset(("NAME", "HELO")), values) == [
        "XCLIENT NAME=[UNAVAILABLE] HELO=[UNAVAILABLE]"]
    assert xforward_commands(frozenset(("ADDR", "PROTO", "SOURCE", "IDENT")), values) == [
        "XFORWARD ADDR=IPV6:2001:db8::1 PROTO=SMTP SOURCE=LOCAL IDENT=[UNAVAILABLE]"]
    assert xclient_commands(frozenset(), values) == []


def test_long_values_are_split_over_lines_within_the_limit():
    client = ev.ClientInfo("192.0.2.7", 4000, "n" * 300)
    lines = xforward_commands(ALL, identity(client, "h" * 300, True, "Q"))
    assert len(lines) >= 2 and all(len(line) + 2 <= COMMAND_LIMIT for line in lines)
    assert all(line.startswith("XFORWARD ") for line in lines)
    assert "".join(lines).count("IDENT=Q") == 1


def test_a_value_too_long_for_a_line_is_unavailable_never_cut():
    """A 500-octet HELO passes the grammar; cut to fit XCLIENT's line, it named another
    host (or split an xtext escape)."""
    client = ev.ClientInfo("192.0.2.7", 4000, "client.example")
    helo = "h" * 249 + "." + "e" * 250
    lines = xclient_commands(ALL, identity(client, helo, True, "Q"))
    assert all(len(line) + 2 <= COMMAND_LIMIT for line in lines)
    assert "HELO=[UNAVAILABLE]" in " ".join(lines) and "hhh" not in " ".join(lines)
