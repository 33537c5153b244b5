"""Route-map RCPT: call-ahead (#292) through real SMTP: the proxy asks a
mailbox host (smtp-sink, made to accept, hard-reject or soft-reject RCPT)
before forwarding, caches the answer, and treats no answer as "forward it"."""

from __future__ import annotations

import pytest

from barricade.testing import Client, Sink, free_port, wait_for

pytestmark = pytest.mark.integration

SENDER = "someone@outside.example"
OUTSIDE = "XCLIENT ADDR=192.0.2.1 NAME=mail.outside.example"


@pytest.fixture
def mailboxes(tmp_path):
    """Three "mailbox servers": one accepts every RCPT, one 5xx-rejects, one 4xx-fails;
    and the downstream MTA the routes forward to."""
    made = {name: Sink(tmp_path, *args, verbose=True)
            for name, args in (("accept", ()), ("reject", ("-f", "rcpt")),
                               ("tempfail", ("-r", "rcpt")), ("downstream", ()))}
    yield made
    for sink in made.values():
        sink.stop()


@pytest.fixture
def proxy(mailboxes, make_proxy):
    def make(*args: str):
        dead = free_port()  # nothing listens here: connection refused
        mb = {name: f"127.0.0.1:{s.port}" for name, s in mailboxes.items()}
        fwd = f"FORWARD: 127.0.0.1:{mailboxes['downstream'].port}"
        routes = (
            f"route:local {fwd}\n"
            f"route:known.example {fwd}; RCPT: {mb['accept']}\n"
            f"route:unknown.example {fwd}; RCPT: {mb['reject']}\n"
            f"route:flaky.example {fwd}; RCPT: 127.0.0.1:{dead}, {mb['tempfail']}\n"
            f"route:ordered.example {fwd}; RCPT: 127.0.0.1:{dead} {mb['tempfail']} "
            f"{mb['reject']} {mb['accept']}\n"
            f"route:relay.example {fwd}; RCPT: {mb['reject']}\n"
            "route:127.0.0.1 RELAY\n"
        )
        return make_proxy(routes, "call-ahead-command-timeout=2", *args)
    return make


def rcpt_replies(port: int, rcpts: list[str], sender: str = SENDER) -> list:
    with Client(port) as c:
        assert c.cmd(OUTSIDE).code == 220
        c.ehlo("mail.outside.example")
        assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
        return [c.cmd(f"RCPT TO:<{r}>") for r in rcpts]


def test_unknown_recipient_gets_292_and_known_is_forwarded(proxy, mailboxes):
    p = proxy()
    unknown, known = rcpt_replies(p.port, ["nobody@unknown.example", "john@known.example"])
    assert (unknown.code, unknown.status, unknown.id) == (550, "5.1.1", 292)
    assert "recipient <nobody@unknown.example> unknown" in unknown.text
    assert known.code == 250
    # The call-ahead: HELO with our name, the null sender, one RCPT, nothing after it.
    wait_for(lambda: mailboxes["accept"].commands()[-1:] == ["QUIT"], what="QUIT at the mailbox")
    assert mailboxes["accept"].commands() == [
        "HELO barricade.test", "MAIL FROM:<>", "RCPT TO:<john@known.example>", "QUIT"]
    # The refused recipient never reached the downstream; the known one did.
    forwarded = mailboxes["downstream"].commands()
    assert "RCPT TO:<john@known.example>" in forwarded
    assert not any("nobody@" in c for c in forwarded)
    assert p.metric("barricade_call_aheads_total", result="reject") == 1
    assert p.metric("barricade_call_aheads_total", result="accept") == 1
    assert p.metric("barricade_replies_total", id="292") == 1


def test_answers_are_cached_rejects_and_accepts(proxy, mailboxes):
    p = proxy()
    assert rcpt_replies(p.port, ["x@unknown.example", "y@known.example"])[0].id == 292
    mailboxes["reject"].stop()  # the cache answers from now on
    mailboxes["accept"].stop()
    again = rcpt_replies(p.port, ["X@unknown.example", "y@known.example"])
    assert (again[0].code, again[0].id) == (550, 292)
    assert again[1].code == 250
    assert p.metric("barricade_call_aheads_total", result="cached-reject") == 1
    assert p.metric("barricade_call_aheads_total", result="cached-accept") == 1


def test_no_answer_means_forward_and_nothing_is_cached(proxy, mailboxes):
    """Refused connection, then 4xx: inconclusive; the downstream decides (250)."""
    p = proxy()
    assert rcpt_replies(p.port, ["a@flaky.example"])[0].code == 250
    assert rcpt_replies(p.port, ["a@flaky.example"])[0].code == 250
    assert p.metric("barricade_call_aheads_total", result="inconclusive") == 2
    assert len([c for c in mailboxes["tempfail"].commands() if c.startswith("RCPT")]) == 2


def test_hosts_are_asked_in_turn_until_one_answers_2xx_or_5xx(proxy, mailboxes):
    p = proxy()
    r = rcpt_replies(p.port, ["b@ordered.example"])[0]
    assert (r.code, r.id) == (550, 292)
    assert "RCPT TO:<b@ordered.example>" in mailboxes["tempfail"].commands()
    assert "RCPT TO:<b@ordered.example>" in mailboxes["reject"].commands()
    assert not any(c.startswith("RCPT") for c in mailboxes["accept"].commands())


def test_as_sender_and_relay_clients_are_not_asked(proxy, mailboxes):
    p = proxy("+call-ahead-as-sender")
    assert rcpt_replies(p.port, ["c@known.example"])[0].code == 250
    assert f"MAIL FROM:<{SENDER}>" in mailboxes["accept"].commands()
    with Client(p.port) as c:  # localhost is a RELAY client here: its mail goes out, unasked
        c.ehlo()
        assert c.cmd("MAIL FROM:<me@inside.example>").code == 250
        assert c.cmd("RCPT TO:<d@relay.example>").code == 250
    assert not any("d@relay.example" in c for c in mailboxes["reject"].commands())
