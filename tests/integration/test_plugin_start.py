"""A plugin's ``start()`` (its pools, its daemon checked) finishes before the first
session reaches its hooks: the listeners open after it, or after ``check-timeout``
when it hangs, so a plugin can neither be met unready nor keep the gateway shut."""

from __future__ import annotations

import os
import socket
import subprocess
import time

from barricade.testing import routes_to
from tests.daemons import REPO, free_port, stop, wait_for
from tests.integration.test_startup import TWISTD
from tests.smtpclient import Client

PLUGIN = '''
import os, time
from twisted.internet import reactor, task
from barricade.api import CONTINUE, Plugin

class SlowStart(Plugin):
    """Starts in START_SECONDS (or never, with "hang"); answers only once started."""
    name = "slowstart"

    def __init__(self, config, services):
        super().__init__(config, services)
        self.ready = False

    async def start(self):
        what = os.environ.get("SLOWSTART", "2")
        await task.deferLater(reactor, 3600 if what == "hang" else float(what))
        self.ready = True
        with open(os.environ["SLOWSTART_MARK"], "w") as f:
            f.write(repr(time.time()))

    async def connect(self, ctx):
        if not self.ready:
            raise RuntimeError("a session reached a plugin that had not started")
        return CONTINUE
'''


def _plugin(tmp_path, monkeypatch, what: str):
    (tmp_path / "slowstart_plugin.py").write_text(PLUGIN)
    mark = tmp_path / "started-at"
    monkeypatch.setenv("SLOWSTART", what)
    monkeypatch.setenv("SLOWSTART_MARK", str(mark))
    return mark


def test_the_listeners_open_once_a_plugins_start_has_finished(tmp_path, monkeypatch, sink, make_proxy):
    mark = _plugin(tmp_path, monkeypatch, "2")
    begun = time.time()
    proxy = make_proxy(routes_to(sink), "plugins=slowstart_plugin:SlowStart", pythonpath=[tmp_path])
    assert mark.exists(), "the banner came before the plugin had started"
    assert float(mark.read_text()) >= begun + 1.5
    log = proxy.log_text()
    assert log.index("plugin slowstart enabled") < log.index("listening on")
    with Client(proxy.port) as c:  # the first session finds the plugin ready: no #907
        assert c.banner.code == 220
        assert c.ehlo().code == 250
        assert c.cmd("MAIL FROM:<a@example.org>").code == 250
    assert "had not started" not in proxy.log_text()


def test_a_plugin_whose_start_hangs_cannot_keep_the_gateway_shut(tmp_path, monkeypatch, sink, nsd):
    mark = _plugin(tmp_path, monkeypatch, "hang")
    port = free_port()
    begun = time.monotonic()
    proc = subprocess.Popen(
        [*TWISTD, "--logfile", str(tmp_path / "log"), "barricade", f"interfaces=127.0.0.1:{port}",
         f"route-map={_routes(tmp_path, sink)}", "metrics-interface=", f"dns-servers={nsd.server}",
         "plugins=slowstart_plugin:SlowStart", "check-timeout=2", "workers=1"],
        cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)])),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Connected at once (the socket listens from start-up), greeted only once the
        # listener opens: check-timeout later.  The hooks then fail safe: the plugin's
        # error reply temp-fails the session, never passes it.
        wait_for(lambda: _connects(port), what="the listening socket")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            assert s.recv(512).startswith(b"451 ")
        assert time.monotonic() - begun >= 1.5
        assert not mark.exists()
        wait_for(lambda: "plugin slowstart has not started after 2s; listening anyway"
                 in (tmp_path / "log").read_text(), what="the log line")
    finally:
        stop(proc)


def _routes(tmp_path, sink):
    path = tmp_path / "routes"
    path.write_text(routes_to(sink))
    return path


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
