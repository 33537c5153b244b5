"""A raw SMTP client for tests that need exact control over the bytes."""

from __future__ import annotations

import re
import socket

REPLY = re.compile(r"^(\d{3})([ -])(.*)$")


class Reply:
    def __init__(self, code: int, lines: list[str]):
        self.code = code
        self.lines = lines

    @property
    def text(self) -> str:
        return self.lines[0] if self.lines else ""

    @property
    def status(self) -> str:
        return self.text.split(" ", 1)[0]

    @property
    def id(self) -> int | None:
        m = re.search(r"#(\d+)", self.text)
        return int(m.group(1)) if m else None

    def __repr__(self) -> str:
        return f"<Reply {self.code} {self.lines}>"


class Client:
    def __init__(self, port: int, timeout: float = 10.0, greet: bool = True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.banner = self.read() if greet else None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Reply:
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed by server after {lines!r} (buffer {self.buf!r})")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\r\n", 1)
            m = REPLY.match(raw.decode("utf-8", "replace"))
            assert m, f"malformed reply line {raw!r}"
            lines.append(m.group(3))
            if m.group(2) == " ":
                return Reply(int(m.group(1)), lines)

    def cmd(self, line: str | bytes) -> Reply:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read()

    def ehlo(self, name: str = "client.example.org") -> Reply:
        return self.cmd(f"EHLO {name}")

    def message(self, sender: str, rcpts: list[str], body: bytes) -> Reply:
        """MAIL, RCPTs, DATA and the body; returns the reply to the dot."""
        assert self.cmd(f"MAIL FROM:<{sender}>").code == 250
        for r in rcpts:
            reply = self.cmd(f"RCPT TO:<{r}>")
            assert reply.code == 250, reply
        assert self.cmd("DATA").code == 354
        self.send(body + b".\r\n")
        return self.read()

    def closed(self) -> bool:
        """True once the server has closed the connection (pending bytes are read)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
