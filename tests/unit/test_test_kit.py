"""The test kit's port picker: a daemon it names a port for must be able to bind it."""

import os
import socket
import subprocess
import sys
import time

from barricade import testing


def test_ports_lie_below_the_ephemeral_range_and_are_never_repeated():
    low = testing._ephemeral_low()
    ports = [testing.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(testing._LOWEST <= p < low for p in ports)


def test_a_port_something_listens_on_is_not_handed_out(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        taken.listen()
        first = [busy]  # the picker's first draw is the busy port, then it draws as usual
        draw = testing.random.randrange
        monkeypatch.setattr(testing, "_ephemeral_low", lambda: 65536)
        monkeypatch.setattr(testing.random, "randrange", lambda a, b: first.pop() if first else draw(a, b))
        monkeypatch.setattr(testing, "_HANDED_OUT", set())
        assert testing._bindable(busy) is False
        port = testing.free_port()
    assert port != busy


def test_a_port_taken_for_udp_only_is_not_bindable():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        assert testing._bindable(udp.getsockname()[1]) is False


def test_a_cluster_port_has_its_bus_port_free_too():
    port = testing.free_port(bus_offset=10000)
    assert port + 10000 < testing._ephemeral_low()
    assert testing._bindable(port + 10000)
    assert port + 10000 in testing._HANDED_OUT


def test_a_master_killed_for_not_stopping_takes_its_children_with_it(tmp_path):
    """A master deaf to SIGTERM is SIGKILLed, and its worker with it."""
    ready = tmp_path / "child"
    code = ("import signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
            f"open({str(ready)!r}, 'w').write(str(c.pid))\n"
            "time.sleep(60)\n")
    master = subprocess.Popen([sys.executable, "-c", code])
    testing.wait_for(lambda: ready.exists() and ready.read_text(), timeout=20, what="the child")
    child = int(ready.read_text())
    testing.stop(master, timeout=0.5)
    assert master.returncode is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        try:
            state = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":  # killed, waiting for its new parent to reap it
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the child outlived its SIGKILLed master")


def test_a_proxys_log_includes_what_it_rotated_away(tmp_path):
    proxy = object.__new__(testing.Proxy)  # the log reader alone: no daemon
    proxy.log = tmp_path / "barricade-2525.log"
    (tmp_path / "barricade-2525.log.2").write_text("oldest\n")
    (tmp_path / "barricade-2525.log.1").write_text("older\n")
    proxy.log.write_text("newest\n")
    (tmp_path / "barricade-2525.log.bak").write_text("not a rotation\n")
    assert proxy.log_text() == "oldest\nolder\nnewest\n"
