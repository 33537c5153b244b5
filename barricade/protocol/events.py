"""Events the sans-IO session emits, and what it knows about its client.

Events are small immutable values (h11 style).  Command events wait for
exactly one reply; :class:`DataChunk` needs none; :class:`Violation` is a
refusal the session decided on its own (syntax, sequence, limits) and only
has to be sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from barricade.client import ClientInfo  # noqa: F401 - re-exported: its old home
from barricade.protocol.auth import Credentials
from barricade.protocol.grammar import Path
from barricade.replies import Reply


class Event:
    """Base class of everything :meth:`Session.next_event` returns."""


class Command(Event):
    """An event that must be answered with exactly one reply."""


@dataclass(frozen=True)
class Helo(Command):
    verb: str  # "HELO" or "EHLO"
    domain: str


@dataclass(frozen=True)
class Mail(Command):
    path: Path


@dataclass(frozen=True)
class Rcpt(Command):
    path: Path


@dataclass(frozen=True)
class Data(Command):
    """DATA, or the first BDAT of a transaction (``chunking``: no 354 is sent)."""

    chunking: bool = False


@dataclass(frozen=True)
class ChunkReceived(Command):
    """A BDAT chunk other than the last was read whole (RFC 3030: answer 250)."""

    size: int


@dataclass(frozen=True)
class Rset(Command):
    pass


@dataclass(frozen=True)
class Noop(Command):
    pass


@dataclass(frozen=True)
class Quit(Command):
    pass


@dataclass(frozen=True)
class Help(Command):
    topic: str = ""


@dataclass(frozen=True)
class Admin(Command):
    """An admin command (STAT, CONN, KILL, ...) from localhost; see :mod:`barricade.admin`."""

    verb: str
    argument: str = ""


@dataclass(frozen=True)
class Vrfy(Command):
    argument: str


@dataclass(frozen=True)
class Etrn(Command):
    """RFC 1985: ask the local route's MTA to flush its queue for ``argument``."""

    argument: str


@dataclass(frozen=True)
class StartTls(Command):
    pass


@dataclass(frozen=True)
class Xclient(Command):
    attrs: dict[str, str | None] = field(hash=False)


@dataclass(frozen=True)
class Auth(Command):
    """RFC 4954 AUTH: the client's credentials, collected; the downstream decides."""

    mechanism: str
    credentials: Credentials = field(repr=False)


@dataclass(frozen=True)
class EndOfData(Command):
    """The client's final dot.

    ``violation`` is set when the message broke a protocol rule the session
    enforces (oversize, over-long line, bare CR/LF with strict dot): the
    message must not be delivered and that reply is the answer.
    """

    size: int
    bare_newlines: int = 0
    longest_line: int = 0
    violation: Reply | None = None
    drop: bool = False


@dataclass(frozen=True)
class Violation(Command):
    """The session refuses on its own; send ``reply`` (and close if ``drop``)."""

    reply: Reply
    drop: bool = False


@dataclass(frozen=True)
class DataChunk(Event):
    """Message bytes: CRLF line ends, dot-unstuffed, never the final dot."""

    data: bytes


@dataclass(frozen=True)
class AuthChallenge(Violation):
    """A 334 SASL challenge the session sends on its own; the next line is the response."""
