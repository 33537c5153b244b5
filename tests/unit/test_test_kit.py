"""The test kit's port picker: a daemon it names a port for must be able to bind it."""

import socket

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
