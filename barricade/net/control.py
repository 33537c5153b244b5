"""The control channel between the master and its workers, for the admin commands.

An admin command reaches whichever worker accepted the connection, but
``CONN`` must list every worker's sessions and ``KILL`` must reach the one
that holds the session.  So the master listens on a UNIX socket in a
directory only its user can enter (0700, made at start and removed at
stop); each worker connects, says which slot it is, and then

* asks the master (``ask``) when one of its sessions gives such a command;
* the master sends it (``do``) to every worker, the asker included, waits
  for each ``done`` at most :data:`WORKER_TIMEOUT` seconds, and answers the
  asker with every worker's result, ``None`` for a worker that was silent
  or not connected (the reply then says which one).

Messages are JSON objects, one per line.  Every wait has a timeout: the
asker gives up after :data:`ASK_TIMEOUT` (and replies #996), a partial
line longer than :data:`MAX_LINE` closes the connection.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from barricade.admin import Answers

log = Logger()

WORKER_TIMEOUT = 5.0  # the master's wait for each worker's answer
ASK_TIMEOUT = WORKER_TIMEOUT + 2.0  # a worker's wait for the master's merged answer
RECONNECT_DELAY = 1.0
MAX_LINE = 16 * 1024 * 1024  # a CONN listing of many sessions is one line


class _Lines(LineOnlyReceiver):
    """JSON objects, one per line, both ways."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def send(self, message: dict[str, Any]) -> None:
        self.sendLine(json.dumps(message, separators=(",", ":")).encode())

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            log.warn("control channel: malformed message dropped")
            return
        self.message(message)

    def lineLengthExceeded(self, line: bytes) -> None:
        log.warn("control channel: message over {n} bytes; connection closed", n=MAX_LINE)
        self.transport.loseConnection()

    def message(self, message: dict[str, Any]) -> None:
        raise NotImplementedError


class _Pending:
    """Calls waiting for an answer by id, each with its own deadline."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.calls: dict[int, defer.Deferred] = {}
        self.ids = itertools.count(1)

    def new(self, timeout: float) -> tuple[int, defer.Deferred]:
        """An id and a Deferred that fires with the answer, or None after ``timeout``."""
        call_id = next(self.ids)
        d: defer.Deferred = defer.Deferred()
        timer = self.reactor.callLater(timeout, self.answer, call_id, None)
        d.addBoth(lambda result: (timer.cancel() if timer.active() else None, result)[1])
        self.calls[call_id] = d
        return call_id, d

    def answer(self, call_id: Any, result: Any) -> None:
        d = self.calls.pop(call_id, None) if isinstance(call_id, int) else None
        if d is not None:
            d.callback(result)

    def fail_all(self) -> None:
        for call_id in list(self.calls):
            self.answer(call_id, None)


# --- the master's side ----------------------------------------------------------------

class _WorkerLink(_Lines):
    """The master's end of one worker's connection."""

    def __init__(self, server: ControlServer):
        self.server = server
        self.slot: str | None = None
        self.pending = _Pending(server.reactor)

    def message(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "hello" and isinstance(message.get("slot"), str):
            self.slot = message["slot"]
            self.server.joined(self)
        elif op == "done":
            self.pending.answer(message.get("id"), message.get("result"))
        elif op == "ask" and isinstance(message.get("request"), dict):
            defer.ensureDeferred(self._ask(message.get("id"), message["request"]))

    async def _ask(self, call_id: Any, request: dict[str, Any]) -> None:
        answers = await self.server.fan_out(request)
        if self.transport is not None and self.connected:
            self.send({"op": "answer", "id": call_id, "answers": answers.by_worker,
                       "timeout": answers.timeout})

    def do(self, request: dict[str, Any], timeout: float) -> defer.Deferred:
        call_id, d = self.pending.new(timeout)
        self.send({"op": "do", "id": call_id, "request": request})
        return d

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.pending.fail_all()
        self.server.left(self)


class ControlServer(protocol.Factory):
    """The master's control socket.

    ``expected`` names the worker slots that should answer (a running
    worker that is not connected counts as silent); ``answered`` sees every
    request with its answers (the master keeps OPTN and VERB changes, so a
    replacement worker starts with them).
    """

    noisy = False

    def __init__(self, reactor, expected: Callable[[], Iterable[str]],
                 answered: Callable[[dict[str, Any], Answers], None] | None = None,
                 timeout: float = WORKER_TIMEOUT):
        self.reactor = reactor
        self.expected = expected
        self.answered = answered
        self.timeout = timeout
        self.links: dict[str, _WorkerLink] = {}
        self.greeting: list[dict[str, Any]] = []  # requests a joining worker is sent first
        self.directory = ""
        self.path = ""
        self.port = None

    def start(self) -> str:
        """Listen; returns the socket's path (for the workers' environment)."""
        self.directory = tempfile.mkdtemp(prefix="barricade-control-")  # mode 0700
        os.chmod(self.directory, 0o700)
        self.path = os.path.join(self.directory, "control.sock")
        self.port = self.reactor.listenUNIX(self.path, self, mode=0o600)
        return self.path

    def stop(self) -> defer.Deferred:
        port, self.port = self.port, None
        d = defer.maybeDeferred(port.stopListening) if port is not None else defer.succeed(None)
        # Now, not when the port has closed: the reactor may stop before that.
        shutil.rmtree(self.directory, ignore_errors=True)
        return d

    def buildProtocol(self, addr) -> _WorkerLink:
        return _WorkerLink(self)

    def joined(self, link: _WorkerLink) -> None:
        old = self.links.get(link.slot)
        self.links[link.slot] = link
        log.info("control channel: worker {slot} joined", slot=link.slot)
        if old is not None and old is not link:
            old.transport.loseConnection()
        for request in self.greeting:  # e.g. the VERB changes made before it started
            link.do(request, self.timeout)

    def left(self, link: _WorkerLink) -> None:
        if link.slot is not None and self.links.get(link.slot) is link:
            del self.links[link.slot]

    async def fan_out(self, request: dict[str, Any]) -> Answers:
        """Every worker's answer to ``request``; None for each that did not answer in time."""
        slots = sorted(set(self.expected()) | set(self.links), key=lambda s: (len(s), s))
        calls = {slot: (self.links[slot].do(request, self.timeout) if slot in self.links
                        else defer.succeed(None)) for slot in slots}
        results = await defer.DeferredList(list(calls.values()), consumeErrors=True)
        answers = Answers({slot: (value if ok and isinstance(value, dict) else None)
                           for slot, (ok, value) in zip(calls, results, strict=True)}, self.timeout)
        if self.answered is not None:
            try:
                self.answered(request, answers)
            except Exception:
                log.failure("control channel: keeping an admin change")
        return answers


# --- a worker's side ------------------------------------------------------------------

class _MasterLink(_Lines):
    def __init__(self, client: ControlClient):
        self.client = client

    def connectionMade(self) -> None:
        self.send({"op": "hello", "slot": self.client.slot, "pid": os.getpid()})
        self.client.connected(self)

    def message(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "do" and isinstance(message.get("request"), dict):
            defer.ensureDeferred(self._do(message.get("id"), message["request"]))
        elif op == "answer":
            self.client.pending.answer(message.get("id"), message)

    async def _do(self, call_id: Any, request: dict[str, Any]) -> None:
        result = await self.client.serve(request)
        if self.connected:
            self.send({"op": "done", "id": call_id, "result": result})

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.client.lost(self)


class ControlClient(protocol.ClientFactory):
    """A worker's connection to the master, kept open (re-made after a loss)."""

    noisy = False

    def __init__(self, reactor, path: str, slot: str,
                 serve: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]):
        self.reactor = reactor
        self.path = path
        self.slot = slot
        self.serve = serve
        self.link: _MasterLink | None = None
        self.pending = _Pending(reactor)
        self.stopping = False
        self._retry = None
        self._warned = False  # one warning per outage, not one per retry

    def start(self) -> None:
        self.reactor.connectUNIX(self.path, self, timeout=5)

    def stop(self) -> None:
        self.stopping = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.link is not None:
            self.link.transport.loseConnection()

    def buildProtocol(self, addr) -> _MasterLink:
        return _MasterLink(self)

    def connected(self, link: _MasterLink) -> None:
        self.link = link
        self._warned = False

    def lost(self, link: _MasterLink) -> None:
        if self.link is link:
            self.link = None
            self.pending.fail_all()
            self._again()

    def clientConnectionFailed(self, connector, reason) -> None:
        if not self._warned:
            self._warned = True
            log.warn("control channel: cannot reach the master at {path}: {why}; retrying every {s:g}s",
                     path=self.path, why=reason.getErrorMessage(), s=RECONNECT_DELAY)
        self._again()

    def _again(self) -> None:
        if not self.stopping:
            self._retry = self.reactor.callLater(RECONNECT_DELAY, self.start)

    async def ask(self, request: dict[str, Any], timeout: float = ASK_TIMEOUT) -> Answers:
        """The master's merged answers; empty when the master does not answer in time."""
        if self.link is None:
            return Answers({}, timeout)
        call_id, d = self.pending.new(timeout)
        self.link.send({"op": "ask", "id": call_id, "request": request})
        message = await d
        if not isinstance(message, dict) or not isinstance(message.get("answers"), dict):
            return Answers({}, timeout)
        by_worker = {str(k): (v if isinstance(v, dict) else None) for k, v in message["answers"].items()}
        return Answers(by_worker, float(message.get("timeout") or WORKER_TIMEOUT))
