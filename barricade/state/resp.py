"""A small multiplexed Redis client for the store's hot path.

Why not redis-py here: measured on this code base, one ``EVALSHA`` through
``redis.asyncio`` (with hiredis) costs about 150 µs of CPU, and a session
makes three store calls (rate, lease, release) before grey-listing adds a
fourth; that was 20 % of the relay's throughput.  Everything the store
needs from one server is ``EVALSHA``/``SCRIPT LOAD``, ``GET``/``SET``/``DEL``,
``ZREM`` and ``PING``, over ONE connection that pipelines every caller's commands
(replies come back in order, so a FIFO of futures pairs them), parsed by
hiredis: a fraction of the CPU, and no pool to run dry.  Sentinel and
Cluster deployments keep redis-py (:mod:`barricade.state.clients`), which
knows their topology protocols.

Writes: every command sent in one turn of the event loop, by every session
of the worker, leaves in one write at the end of that turn, before the
loop polls again (:mod:`barricade.net.loop`; on another loop, at the start
of the next turn).  Under load the sessions a turn
handles each send a command or two: one ``send`` here and one read in
Redis for all of them, instead of one each, took about a third off
redis-server's CPU per message, a server every worker and gateway shares
(the proxy's own CPU barely moved; bench/README.md).  The price: a command
waits for the rest of the turn it was made in.

A command nobody awaits (a lease's release, dupmsg's settling) gets no
future: its callback (:data:`Heard`) takes its place in the FIFO and hears
the reply, or the error that failed it, directly.  A future's making,
resolving and callback cost about as much as the rest of such a write.

Failure handling is deliberately blunt: a lost connection fails every
command in flight with :class:`RespConnectionError`, and the next command
connects again; a command that times out closes the connection too,
because a Redis that does not answer one command will not answer the ones
queued behind it either.

Deadlines: with a ``timeout``, the connection itself times every command
(one timer for the connection, due when its oldest command in flight is,
moved on lazily), so that a caller can await the future that
:meth:`RespClient.start` returns as it is, without a timeout of its own;
past it, every command in flight fails with :class:`RespTimeout`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload
from urllib.parse import parse_qsl, unquote, urlsplit

import hiredis

from barricade.net.loop import turn_end

PLAIN_SCHEMES = ("redis", "rediss", "unix")

_pack = getattr(hiredis, "pack_command", None) or (lambda args: _encode(args))  # hiredis >= 2.1


class RespError(Exception):
    """Redis answered with an error (``-ERR …``)."""


class RespConnectionError(ConnectionError):
    """No connection, or it was lost with the command in flight."""


class RespTimeout(RespConnectionError):
    """The oldest command in flight had no answer within the connection's timeout."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect, from a ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str | None = None
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in PLAIN_SCHEMES:
            raise ValueError(f"not a single-server Redis URL: {url!r}")
        query = dict(parse_qsl(parts.query))
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            db = query.get("db", "0")
            if not db.isdigit():
                raise ValueError(f"bad database in {url!r}")
            return cls(path=parts.path, db=int(db), username=username, password=password)
        path = parts.path.strip("/") or query.get("db", "0")
        if not path.isdigit():
            raise ValueError(f"bad database in {url!r}")
        tls = None
        if parts.scheme == "rediss":
            tls = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
            if query.get("ssl_certfile"):
                tls.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile"))
            if query.get("ssl_cert_reqs", "required") == "none":
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        return cls(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=int(path),
                   username=username, password=password, tls=tls)


def encode(args: Sequence[str | int | bytes]) -> bytes:
    """One command as a RESP array of bulk strings: hiredis's packer (C), or
    this module's own for what it refuses (text with surrogate escapes)."""
    try:
        return _pack(args)
    except (UnicodeEncodeError, TypeError):
        return _encode(args)


def _encode(args: Sequence[str | int | bytes]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8", "surrogateescape")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


#: Hears the outcome of a command nobody awaits: None, or what failed it.
Heard = Callable[[Exception | None], None]


class Reply(asyncio.Future):
    """The future of one command's reply, which can resume its awaiter at once.

    An asyncio future runs its done-callbacks at the event loop's next turn;
    a store operation awaited by a check (resumed by the pipeline's driver,
    :mod:`barricade.drive`, or by :func:`barricade.aio.aio`) would wait that
    extra turn, about a fifth of a round trip's cost, for every
    Redis reply.  The callback given to :meth:`add_direct_callback` (the
    awaiter's: a reply has one) runs as soon as the reply is parsed, the
    command fails or is cancelled, instead.  Everything else (tasks,
    ``asyncio.timeout``) sees an ordinary future.
    """

    _direct = None  # the awaiter's callback, once it is given

    def add_direct_callback(self, fn) -> None:
        """Call ``fn(self)`` the moment this future is done (at once if it is)."""
        if self.done():
            fn(self)
        elif self._direct is None:
            self._direct = fn
        else:  # a second awaiter: the ordinary way
            self.add_done_callback(fn)

    def resolve(self, reply: object) -> None:
        if isinstance(reply, hiredis.ReplyError):
            self.set_exception(RespError(str(reply)))
        else:
            self.set_result(reply)
        if self._direct is not None:
            self._run_direct()

    def fail(self, error: Exception) -> None:
        self.set_exception(error)
        self._run_direct()

    def cancel(self, msg: object = None) -> bool:
        cancelled = super().cancel(msg)
        if cancelled:
            self._run_direct()
        return cancelled

    def _run_direct(self) -> None:
        fn = self._direct
        if fn is not None:
            self._direct = None
            try:
                fn(self)
            except Exception as exc:  # noqa: BLE001 - the replies after this one must still be read
                self.get_loop().call_exception_handler(
                    {"message": "exception in a Redis reply's callback", "exception": exc, "future": self})


class _Protocol(asyncio.Protocol):
    """Replies in, futures resolved in the order their commands were sent."""

    def __init__(self, timeout: float | None = None) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        self.waiting: collections.deque[Reply | Heard] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()  # one per waiting entry
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.held: list[bytes] | None = None  # this turn's commands, written at its end
        self.at_turn_end = turn_end(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.transport.close()
                return
            future = self.waiting.popleft()
            if self.timeout is not None:
                self.deadlines.popleft()
            if type(future) is not Reply:  # a Heard: a command nobody awaits
                self._hear(future, RespError(str(reply)) if isinstance(reply, hiredis.ReplyError) else None)
            elif not future.done():  # done: its caller gave up (cancelled); the reply is still consumed
                future.resolve(reply)

    def _hear(self, heard: Heard, error: Exception | None) -> None:
        try:
            heard(error)
        except Exception as exc:  # noqa: BLE001 - the replies after this one must still be read
            self.loop.call_exception_handler(
                {"message": "exception in a Redis reply's callback", "exception": exc})

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = RespConnectionError(f"connection lost: {exc or 'closed'}")
        self._fail(self.lost)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fail(self, error: Exception) -> None:
        self.deadlines.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if type(future) is not Reply:
                self._hear(future, error)
            elif not future.done():
                future.fail(error)

    def _expire(self) -> None:
        """The connection's timer: fail everything once the oldest command is overdue."""
        self.timer = None
        if not self.deadlines:
            return
        due = self.deadlines[0]
        if due > self.loop.time():  # answered meanwhile: wait for the next oldest
            self.timer = self.loop.call_at(due, self._expire)
            return
        self.lost = RespTimeout(f"no answer within {self.timeout:g}s")
        self._fail(self.lost)
        if self.transport is not None:
            self.transport.abort()

    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()

    @overload
    def send(self, payload: bytes) -> Reply: ...

    @overload
    def send(self, payload: bytes, heard: Heard) -> None: ...

    def send(self, payload: bytes, heard: Heard | None = None) -> Reply | None:
        """One command, held for this turn's write: the future of its reply, timed
        by the connection; or, with ``heard``, no future (nobody awaits the
        reply): ``heard`` gets None, the error reply as a RespError, or the
        connection's error.  Every store call on one server comes here, so it
        calls no helper."""
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            raise RespConnectionError("not connected")
        future = Reply(loop=self.loop) if heard is None else None
        self.waiting.append(future if heard is None else heard)
        if self.timeout is not None:
            due = self.loop.time() + self.timeout
            self.deadlines.append(due)
            if self.timer is None:
                self.timer = self.loop.call_at(due, self._expire)
        held = self.held
        if held is None:
            self.held = [payload]
            self.at_turn_end(self.send_held)
        else:
            held.append(payload)
        return future

    def send_held(self) -> None:
        """Write the commands of the turn that is ending, in one piece."""
        held, self.held = self.held, None
        if held and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(held))  # one command: join returns it as it is


class RespClient:
    """Commands to one Redis server over one pipelined connection.

    ``connect_timeout`` bounds connecting (and AUTH/SELECT); ``timeout``,
    if given, each command on the connection (see the module docstring).
    A caller may bound a command with its own deadline too, and calls
    :meth:`abort` when it passes.
    """

    def __init__(self, url: str, *, connect_timeout: float = 0.5, timeout: float | None = None):
        self.endpoint = Endpoint.from_url(url)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    async def _connection(self) -> _Protocol:
        proto = self._protocol
        if proto is not None and proto.usable():
            return proto
        if self._connecting is None:  # one connect attempt shared by every waiting caller
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        proto: _Protocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                def factory() -> _Protocol:
                    return _Protocol(self.timeout)

                if ep.path is not None:
                    _, proto = await loop.create_unix_connection(factory, ep.path)
                else:
                    _, proto = await loop.create_connection(factory, ep.host, ep.port, ssl=ep.tls)
                setup = []
                if ep.password is not None:
                    setup.append(["AUTH", ep.username, ep.password] if ep.username
                                 else ["AUTH", ep.password])
                if ep.db:
                    setup.append(["SELECT", ep.db])
                if setup:
                    futures = [proto.send(encode(c)) for c in setup]  # written in one piece
                    await asyncio.gather(*futures)
        except BaseException as exc:
            if proto is not None and proto.transport is not None:
                proto.transport.abort()  # half set up (AUTH refused, timeout): never reused
            if isinstance(exc, TimeoutError):
                raise RespConnectionError(f"no connection within {self.connect_timeout:g}s") from None
            if isinstance(exc, OSError):
                raise RespConnectionError(str(exc)) from None
            raise
        self._protocol = proto
        return proto

    def start(self, *args: str | int | bytes) -> asyncio.Future | None:
        """Send one command on the open connection (this turn): the future of its reply
        (bounded by the connection's timeout), or None when not connected."""
        proto = self._protocol
        if proto is None:
            return None
        try:  # send() refuses a connection not made, lost or closing
            return proto.send(encode(args))
        except RespConnectionError:
            return None

    def start_heard(self, heard: Heard, *args: str | int | bytes) -> bool:
        """:meth:`start` for a command nobody awaits: ``heard`` gets its outcome
        (see :meth:`_Protocol.send`), with no future made for it; False when not
        connected (``heard`` is then never called)."""
        proto = self._protocol
        if proto is None:
            return False
        try:
            proto.send(encode(args), heard)
        except RespConnectionError:
            return False
        return True

    async def execute(self, *args: str | int | bytes):
        """One command's reply; RespError for ``-ERR``, RespConnectionError when cut off."""
        proto = await self._connection()
        return await proto.send(encode(args))

    async def evalsha(self, sha: str, script: str, keys: Sequence[str], args: Sequence[str | int]):
        """Run a script by its SHA-1, loading it first if Redis lost it (restart, flush)."""
        command = [len(keys), *keys, *args]
        try:
            return await self.execute("EVALSHA", sha, *command)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.execute("SCRIPT", "LOAD", script)
        return await self.execute("EVALSHA", sha, *command)

    def abort(self) -> None:
        """Drop the connection (after a timeout): everything in flight fails, the next command reconnects."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()
        self._protocol = None

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.send_held()  # this turn's commands first: close() sends what it has
            self._protocol.transport.close()
        self._protocol = None
