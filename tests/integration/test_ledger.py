"""The ledger: every message acknowledged with 250 is in a downstream's record.

A few hundred messages go through two workers to five downstreams, four of
them faulty (the dot's reply lost, 451 at the dot, a stall past
smtp-dot-timeout, a drop after RCPT), while a worker is killed with SIGKILL
and Redis (the shared state) is restarted.  Replies other than 250 are
allowed; a 250 for a message no downstream holds is the one thing that
must never happen.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from barricade.testing import Client, routes_to
from tests.state import RedisServer

MESSAGES = 300
ROUTES = {  # recipient domain by message number modulo 10
    **dict.fromkeys(range(6), "example0.net"),  # healthy
    6: "example1.net",  # the reply to the dot is lost (the sink hangs up)
    7: "example2.net",  # 451 at the dot
    8: "example3.net",  # stalls past smtp-dot-timeout
    9: "example4.net",  # drops the connection at DATA, after RCPT
}


def _send(port: int, n: int) -> bool:
    """One message in its own session; True only for a 250 to the dot."""
    try:
        with Client(port, timeout=15) as c:
            if c.banner.code != 220:
                return False
            c.cmd(f"XCLIENT ADDR=192.0.2.{n % 200 + 1} NAME=client{n}.example.org")
            if c.ehlo().code != 250 or c.cmd("MAIL FROM:<sender@example.org>").code != 250:
                return False
            if c.cmd(f"RCPT TO:<user{n}@{ROUTES[n % 10]}>").code != 250:
                return False
            if c.cmd("DATA").code != 354:
                return False
            c.send(f"Message-ID: <ledger-{n}@example.org>\r\nSubject: {n}\r\n\r\nmessage {n}\r\n.\r\n"
                   .encode())
            ok = c.read().code == 250
            try:
                c.cmd("QUIT")
            except (OSError, ConnectionError):
                pass
            return ok
    except (OSError, ConnectionError, AssertionError):
        return False


def test_every_acknowledged_message_is_delivered(make_sink, make_proxy, tmp_path):
    sinks = [make_sink(), make_sink("-q", "."), make_sink("-r", "."), make_sink("-W", ".:3"),
             make_sink("-q", "DATA")]
    redis = RedisServer(tmp_path / "redis")
    try:
        proxy = make_proxy(routes_to(*sinks), "workers=2", f"redis-url={redis.url}",
                           "smtp-dot-timeout=1", "smtp-command-timeout=5")
        acked: set[int] = set()
        lock = threading.Lock()

        def one(n: int) -> None:
            if _send(proxy.port, n):
                with lock:
                    acked.add(n)

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(one, n) for n in range(MESSAGES)]
            # The faults, while messages flow: a worker killed, then Redis restarted.
            while sum(f.done() for f in futures) < MESSAGES // 3:
                time.sleep(0.05)
            pids = [int(p) for p in re.findall(r"worker \d started, pid (\d+)", proxy.log_text())]
            os.kill(pids[0], signal.SIGKILL)
            while sum(f.done() for f in futures) < 2 * MESSAGES // 3:
                time.sleep(0.05)
            redis.stop()
            time.sleep(1)
            redis.start()
            for f in futures:
                f.result()
        record: set[int] = set()
        for sink in sinks:
            for raw in sink.messages():
                record.update(int(m) for m in re.findall(rb"Message-ID: <ledger-(\d+)@", raw))
        lost = sorted(acked - record)
        assert not lost, f"acknowledged with 250 but delivered nowhere: {lost}"
        assert len(acked) > MESSAGES // 3  # the run did deliver
        assert all(n % 10 < 6 or n % 10 == 8 for n in acked)  # no 250 from the failing routes
        assert "ended (" in proxy.log_text()  # the killed worker was noticed and replaced
    finally:
        redis.cleanup()
