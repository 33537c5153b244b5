"""``barricade-admin``: send one admin command to a Barricade and print the reply.

The admin commands (STAT, CONN, KILL, CACHE, OPTN, VERB, INFO, HELP) are
answered on the SMTP port to localhost clients only; this connects, reads
the banner, sends the command and QUIT, and prints the reply's lines.
Every wait is bounded by ``--timeout``; the exit status is 0 for a 2xx
reply, 1 for any other reply and 2 when no reply could be had.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys

from barricade.admin import ADMIN_VERBS

_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")
MAX_REPLY = 16 * 1024 * 1024  # a CONN listing of many sessions


class AdminClientError(Exception):
    """No usable reply; the message is one line for the operator."""


def _read_reply(sock: socket.socket, buf: bytearray) -> tuple[int, list[str]]:
    lines: list[str] = []
    while True:
        while b"\r\n" not in buf:
            if len(buf) > MAX_REPLY:
                raise AdminClientError("reply too long")
            chunk = sock.recv(65536)
            if not chunk:
                raise AdminClientError("connection closed by the server" + (f" after: {lines[-1]}" if lines else ""))
            buf += chunk
        raw, _, rest = bytes(buf).partition(b"\r\n")
        buf[:] = rest
        m = _LINE.match(raw)
        if m is None:
            raise AdminClientError(f"not an SMTP reply: {raw[:80]!r}")
        lines.append(m.group(3).decode("utf-8", "replace"))
        if m.group(2) == b" ":
            return int(m.group(1)), lines


def run(host: str, port: int, command: str, timeout: float) -> tuple[int, list[str]]:
    """The reply to ``command`` (code and text lines); raises :class:`AdminClientError`."""
    if "\r" in command or "\n" in command:
        raise AdminClientError("one command, on one line")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise AdminClientError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    buf = bytearray()
    try:
        code, banner = _read_reply(sock, buf)
        if code != 220:
            raise AdminClientError(f"not greeted: {code} {banner[0] if banner else ''}")
        sock.sendall(command.encode("ascii", "replace") + b"\r\n")
        reply = _read_reply(sock, buf)
        try:
            sock.sendall(b"QUIT\r\n")
            _read_reply(sock, buf)
        except (OSError, AdminClientError):
            pass  # KILL of itself, or the server closed: the reply is what matters
        return reply
    except TimeoutError:
        raise AdminClientError(f"no reply from {host}:{port} within {timeout:g}s") from None
    except OSError as exc:
        raise AdminClientError(f"{host}:{port}: {exc.strerror or exc}") from None
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="barricade-admin",
        description="Send one admin command to Barricade's SMTP port (answered to localhost clients "
                    f"only) and print the reply. Commands: {', '.join(sorted(ADMIN_VERBS))}.")
    ap.add_argument("--host", default="127.0.0.1", help="Barricade's address (default 127.0.0.1)")
    ap.add_argument("--port", "-p", type=int, default=25, help="its SMTP port (default 25)")
    ap.add_argument("--timeout", "-t", type=float, default=10.0, help="seconds to wait for each reply (default 10)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="e.g. STAT, CONN, KILL <session>, OPTN name=value")
    ns = ap.parse_args(argv)
    words = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not words:
        ap.error("give a command, e.g. barricade-admin STAT")
    if words[0].upper() not in ADMIN_VERBS:
        ap.error(f"unknown command {words[0]!r}; one of {', '.join(sorted(ADMIN_VERBS))}")
    try:
        code, lines = run(ns.host, ns.port, " ".join(words), ns.timeout)
    except AdminClientError as exc:
        print(f"barricade-admin: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(f"{code} {line}")
    return 0 if 200 <= code < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
