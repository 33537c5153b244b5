"""Several worker processes on one set of sockets, supervised by the master."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.conftest import routes_to
from tests.daemons import children, wait_for
from tests.smtpclient import Client


def send_one(port: int, n: int) -> int:
    with Client(port) as c:
        c.ehlo()
        return c.message("a@example.org", ["b@example.com"], b"Subject: %d\r\n\r\nx\r\n" % n).code


def test_workers_share_the_socket_replace_the_dead_and_report_together(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "workers=3")
    wait_for(lambda: len(children(proxy.proc.pid)) == 3, what="3 workers")
    first = children(proxy.proc.pid)
    assert all(send_one(proxy.port, i) == 250 for i in range(12))
    wait_for(lambda: len(sink.messages()) == 12, what="12 deliveries")

    victim = sorted(first)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(children(proxy.proc.pid)) == 3 and victim not in children(proxy.proc.pid),
             timeout=15, what="a replacement worker")
    assert all(send_one(proxy.port, i) == 250 for i in range(12, 24))
    wait_for(lambda: len(sink.messages()) == 24, what="24 deliveries")

    # The master's /metrics adds up every worker, the killed one included.
    accepted = proxy.metric("barricade_messages_total", outcome="accept")
    assert accepted == 24
    assert proxy.metric("barricade_replies_total", id="554") == 24
    assert proxy.metric("barricade_worker_restarts_total") == 1
    assert proxy.metric("barricade_workers") == 3
    assert "worker 0" in proxy.log_text() and "ended" in proxy.log_text()


def test_sighup_reaches_every_worker_and_sigterm_stops_them_all(sink, make_proxy):
    proxy = make_proxy(routes_to(sink), "workers=2")
    wait_for(lambda: proxy.log_text().count("barricade: listening on") == 2, what="2 workers serving")
    workers = children(proxy.proc.pid)
    with Client(proxy.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        assert c.cmd("RCPT TO:<x@new.example>").id == 288
    proxy.route_map.write_text(routes_to(sink) + f"route:new.example FORWARD: 127.0.0.1:{sink.port}\n")
    os.kill(proxy.proc.pid, signal.SIGHUP)
    wait_for(lambda: proxy.log_text().count("map ") >= 2, timeout=10, what="both workers reloading")
    for _ in range(4):  # whichever worker answers knows the new route
        with Client(proxy.port) as c:
            c.ehlo()
            c.cmd("MAIL FROM:<a@example.org>")
            assert c.cmd("RCPT TO:<x@new.example>").id == 297
    proxy.proc.terminate()
    assert proxy.proc.wait(20) in (0, -15)
    time.sleep(0.2)
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_replacement_worker_starts_from_what_the_master_started_with(sink, make_proxy, tmp_path):
    """Not from the files as they are now: a config file edited since start, a map a
    reload refused (read from disk, the replacements could not start at all)."""
    conf = tmp_path / "barricade.cf"
    conf.write_text("message-size-limit=1000000\n")
    proxy = make_proxy(routes_to(sink), "workers=2", config_file=conf)
    wait_for(lambda: proxy.log_text().count("barricade: listening on") == 2, what="2 workers serving")

    conf.write_text("message-size-limit=2000000\n")
    proxy.route_map.write_text(routes_to(sink) + "route:new.example FORWARD: 127.0.0.1:0\n")
    os.kill(proxy.proc.pid, signal.SIGHUP)
    wait_for(lambda: proxy.log_text().count("map reload failed") == 2, timeout=10,
             what="both workers refusing the map")
    first = children(proxy.proc.pid)
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: proxy.log_text().count("barricade: listening on") == 4, timeout=30,
             what="2 replacement workers serving")
    assert not first & children(proxy.proc.pid)
    assert proxy.log_text().count("serving the last version of") == 2

    for n in range(4):  # whichever worker answers
        with Client(proxy.port) as c:
            assert "SIZE 1000000" in c.ehlo().lines
            assert c.message("a@example.org", ["b@example.com"], b"Subject: %d\r\n\r\nx\r\n" % n).code == 250
    wait_for(lambda: len(sink.messages()) == 4, what="4 deliveries")
