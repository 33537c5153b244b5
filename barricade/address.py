"""``host[:port]`` as written in options and maps: one parser for all of them."""

from __future__ import annotations


def parse_hostport(item: str, default_port: int) -> tuple[str, int]:
    """``[::1]:25``, ``[::1]``, ``127.0.0.1:2525``, ``mx.example``, ``:25`` → ``(host, port)``.

    IPv6 addresses must be bracketed when a port follows; a bare IPv6
    address without brackets is taken whole.  Raises ValueError with a
    short reason, which callers prefix with the option or map line.
    """
    host, port = item, default_port
    if item.startswith("["):
        end = item.find("]")
        if end < 0:
            raise ValueError(f"bad address {item!r}")
        host, rest = item[1:end], item[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad address {item!r}")
            port = _port(rest[1:], item)
    elif item.count(":") == 1:
        host, _, text = item.partition(":")
        port = _port(text, item)
    return host, port


def _port(text: str, item: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {item!r}")
    return int(text)
