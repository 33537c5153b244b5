"""Carrying out the localhost admin commands in one process (see :mod:`barricade.admin`).

:class:`Admin` answers a session's admin command: it parses it, does the
work here (this process's sessions, counters, options, log levels, the
shared store) or, in a worker, asks the master to have every worker do
it (``barricade/net/control.py``), and renders the merged answers as one
catalogue reply.  :meth:`Admin.local` is the part every worker runs.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any

from twisted.logger import (
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

from barricade import __version__
from barricade.admin import (
    AdminError,
    Answers,
    Request,
    apply_option,
    counter_totals,
    option_lines,
    parse,
    render,
    verb_change,
)
from barricade.aio import aio
from barricade.decide.outcome import Outcome
from barricade.options import OptionError
from barricade.protocol import events as ev
from barricade.protocol.session import HELP_COMMANDS, SessionConfig
from barricade.replies import ReplyId

log = Logger()

#: Set by the master in each worker's environment: the control socket and the worker's slot.
CONTROL_ENV, SLOT_ENV = "BARRICADE_CONTROL", "BARRICADE_WORKER_SLOT"


def collector_counters() -> dict[str, float]:
    """Python's garbage collector in this process, as STAT counters: collections and the
    objects they freed, per generation, and the start-up objects frozen out of its walk.

    A session's objects are freed by reference counting when it ends; collections that
    keep rising with the messages, or ``gc_collected`` above zero, say something (a
    plugin, a new code path) leaves cycles behind, and every worker's sessions wait
    for each collection.
    """
    out: dict[str, float] = {}
    for generation, stats in enumerate(gc.get_stats()):
        out[f"gc_collections{{generation={generation}}}"] = stats["collections"]
        out[f"gc_collected{{generation={generation}}}"] = stats["collected"]
    out["gc_frozen"] = gc.get_freeze_count()
    return out


class LogLevels:
    """VERB: minimum log levels per namespace for Barricade's own loggers.

    The module loggers of ``barricade`` and ``plugins`` are pointed at a
    filter in front of the global log publisher, so a level change needs
    no change to how logging was set up (twistd's file, a worker's pipe).
    """

    def __init__(self, publisher: Any = globalLogPublisher) -> None:
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
        self.observer = _LevelFilter(self.predicate, publisher)
        self.levels: dict[str, str] = {"": "info"}

    def install(self) -> None:
        """Route every loaded Barricade module logger through the filter."""
        for name, module in list(sys.modules.items()):
            if not name.startswith(("barricade", "plugins")) or module is None:
                continue
            for value in list(vars(module).values()):
                if isinstance(value, Logger) and value.observer is globalLogPublisher:
                    value.observer = self.observer

    def set(self, words: tuple[str, ...]) -> None:
        for word in words:
            ns, level = verb_change(word)
            self.levels[ns] = level
            if ns:
                self.predicate.setLogLevelForNamespace(ns, LogLevel.levelWithName(level))
            else:
                self.predicate.setLogLevelForNamespace("", LogLevel.levelWithName(level))
        self.observer.forget()

    def listing(self) -> list[list[str]]:
        return [[ns, level] for ns, level in sorted(self.levels.items())]


#: LogLevel constants in their order, as numbers (comparing the constants is slow).
_RANK = {level: rank for rank, level in enumerate(LogLevel.iterconstants())}


class _LevelFilter:
    """Passes an event on when its level reaches its namespace's (VERB's levels, by
    dotted prefix, as Twisted's ``LogLevelFilterPredicate`` decides them).

    Twisted's ``FilteringLogObserver`` asked the predicate for every event, which
    split the namespace and compared level constants: 3.8 µs, for the line every
    session ends with.  Here each namespace's level is a number, found once (0.3 µs).
    """

    __slots__ = ("_predicate", "_observer", "_floor")

    def __init__(self, predicate: LogLevelFilterPredicate, observer: Any):
        self._predicate = predicate
        self._observer = observer
        self._floor: dict[str, int] = {}

    def forget(self) -> None:
        """The levels changed: find each namespace's again."""
        self._floor = {}

    def __call__(self, event: dict[str, Any]) -> None:
        namespace = event.get("log_namespace")
        rank = _RANK.get(event.get("log_level"))
        if not namespace or rank is None:
            return  # as the predicate: no namespace or no level, no line
        floor = self._floor.get(namespace)
        if floor is None:
            floor = self._floor[namespace] = _RANK[self._predicate.logLevelForNamespace(namespace)]
        if rank >= floor:
            self._observer(event)


class Admin:
    """The admin commands of one process (a worker, or the only process)."""

    def __init__(self, context, factory, levels: LogLevels | None = None):
        self.context = context
        self.factory = factory  # SmtpServerFactory: this process's sessions
        self.levels = levels or LogLevels()
        self.started = time.time()
        self.control = None  # barricade.net.control.ControlClient in a worker
        self.slot = os.environ.get(SLOT_ENV, "")

    def start(self) -> None:
        """Install the log filter; in a worker, join the master's control channel."""
        self.levels.install()
        path = os.environ.get(CONTROL_ENV)
        if path:
            from barricade.net.control import ControlClient

            self.control = ControlClient(self.context.reactor, path, self.slot, self._serve)
            self.control.start()

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()

    # --- a session's command ---------------------------------------------------------

    async def handle(self, event: ev.Admin, session_id: str) -> Outcome:
        catalogue = self.context.catalogue
        try:
            request = parse(event.verb, event.argument)
        except AdminError as exc:
            return Outcome(catalogue.reply(ReplyId.ADMIN_USAGE, command=event.verb, problem=str(exc)))
        what = " ".join(w for w in (request.verb, request.op, *request.args[:1]) if w and w != "set")
        log.info("session {sid}: admin {what}", sid=session_id, what=what)  # no CACHE value: may be private
        if request.fanout and self.control is not None:
            answers = await self.control.ask({**request.to_dict(), "asker": session_id})
        else:
            answers = Answers.single(await self.local(request, session_id))
        reply, drop = render(request, answers, catalogue, smtp_commands=HELP_COMMANDS)
        return Outcome(reply, drop=drop)

    async def _serve(self, data: dict[str, Any]) -> dict[str, Any]:
        """A request from the master (the control channel)."""
        try:
            request = Request.from_dict(data)
        except AdminError as exc:
            return {"error": str(exc)}
        asker = data.get("asker")
        return await self.local(request, asker if isinstance(asker, str) else "")

    # --- the work, in this process ---------------------------------------------------

    async def local(self, request: Request, asker: str = "") -> dict[str, Any]:
        """This process's answer to ``request`` (a JSON-able dict)."""
        try:
            return await getattr(self, "_" + request.verb.lower())(request, asker)
        except Exception:
            log.failure("admin {verb}: internal error", verb=request.verb)
            return {"error": "internal error (see the log)"}

    async def _help(self, request: Request, asker: str) -> dict[str, Any]:
        return {"ok": True}

    async def _stat(self, request: Request, asker: str) -> dict[str, Any]:
        return {
            "start": self.started,
            "now": time.time(),
            "active": len(self.factory.sessions),
            "counters": {**counter_totals(self.context.metrics.registry.collect()), **collector_counters()},
        }

    async def _conn(self, request: Request, asker: str) -> dict[str, Any]:
        now = self.context.reactor.seconds()
        rows = []
        for proto in list(self.factory.sessions):
            s = proto.session
            if s is None:
                continue
            state = "mail" if s.in_transaction and s.state == "command" else s.state
            rows.append({"id": s.id, "state": state, "name": s.client.name, "ip": s.client.ip,
                         "port": s.client.port, "age": now - proto.started,
                         "idle": now - (proto.last_input or proto.started), "octets": proto.octets})
        return {"sessions": rows}

    async def _kill(self, request: Request, asker: str) -> dict[str, Any]:
        sid = request.args[0]
        for proto in list(self.factory.sessions):
            if proto.session is not None and proto.session.id == sid:
                if sid == asker:  # the asking session: its reply closes it
                    return {"killed": True, "self": True}
                log.info("session {sid}: killed by admin command from session {asker}", sid=sid, asker=asker)
                proto.kill(self.context.catalogue.reply(ReplyId.ADMIN_KILLED, session=sid))
                return {"killed": True}
        return {"killed": False}

    async def _cache(self, request: Request, asker: str) -> dict[str, Any]:
        store = self.context.store
        if store is None:
            return {"error": "no shared store"}
        key = request.args[0]
        try:
            if request.op == "PUT":
                await aio(store.set(key, request.args[1], ttl=self.context.config["cache-accept-ttl"]))
                return {"ok": True}
            value = await aio(store.get(key))
            if value is None:
                return {"missing": True}
            if request.op == "DELETE":
                await aio(store.delete(key))
                return {"ok": True}
            return {"value": value}
        except Exception as exc:  # StoreError, a connection error: the operator retries
            log.warn("admin CACHE {op}: shared store: {err}", op=request.op, err=repr(exc))
            return {"error": "shared store unavailable"}

    async def _optn(self, request: Request, asker: str) -> dict[str, Any]:
        config = self.context.config
        if request.op != "set":
            return {"options": option_lines(config, config.registry)}
        change = request.args[0]
        try:
            setting = apply_option(config, config.registry, change)
        except KeyError as exc:
            return {"refused": "unknown", "option": exc.args[0]}
        except PermissionError as exc:
            return {"refused": "restart", "option": exc.args[0]}
        except (OptionError, AdminError) as exc:
            return {"refused": str(exc)}
        ctx = self.context
        # New sessions take the protocol settings from here; sessions open now keep theirs.
        ctx.session_config = SessionConfig.from_config(config, ctx.hostname, ctx.tls_context is not None)
        log.info("admin: option changed: {setting}", setting=setting)
        return {"setting": setting}

    async def _verb(self, request: Request, asker: str) -> dict[str, Any]:
        if request.op == "set":
            self.levels.set(request.args)
            log.warn("admin: log levels now {levels}", levels=self.levels.listing())
        return {"levels": self.levels.listing()}

    async def _info(self, request: Request, asker: str) -> dict[str, Any]:
        import twisted

        ctx = self.context
        workers = ctx.config["workers"] or os.cpu_count() or 1
        store = ctx.store
        return {"lines": [
            f"barricade/{__version__}",
            f"python {sys.version.split()[0]}, twisted {twisted.__version__}",
            f"hostname {ctx.hostname}",
            f"pid {os.getpid()}" + (f", worker {self.slot} of {workers}" if self.slot else ", one process"),
            f"started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.started))}",
            f"store {getattr(store, 'kind', 'memory') if store is not None else 'none'}",
            f"sessions {len(self.factory.sessions)}",
        ]}
