"""The plugin interface: how scanners and third-party checks join Barricade.

A plugin is a :class:`Plugin` subclass.  It declares its options (they join
the option registry, ``help`` and ``conf/barricade.cf``) and any catalogue
replies of its own, overrides the hooks it needs, and returns verdicts.
Barricade finds plugins in three places, in this order:

* the modules of the ``barricade.plugins`` package (the shipped scanners);
* the ``barricade.plugins`` entry-point group (``pip install``-ed packages);
* ``module:Class`` names listed in the ``plugins`` option.

A plugin runs when its name is in ``plugins`` or when its :meth:`enabled`
says so (the shipped scanners, like smtpf's, switch on when their socket
option is set).  A plugin with ``before``/``after`` runs at that place in the
check order table (:mod:`barricade.policy.order`); the others run in
``order`` (then name) after the built-in checks.  Plugin authors import from
:mod:`barricade.api`; ``docs/plugins.md`` is their guide.
"""

from __future__ import annotations

import errno as errno_mod
import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
import time
from collections.abc import Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from twisted.internet import abstract, defer, error, protocol, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from barricade.address import parse_hostport
from barricade.aio import aio
from barricade.options import REGISTRY, Config, OptionError, Registry, config_line, unquote
from barricade.policy.pipeline import Check
from barricade.policy.verdict import Action, CheckError, Verdict
from barricade.replies import ENTRIES, ReplySpec, check_reply

log = Logger()

ENTRY_POINT_GROUP = "barricade.plugins"
UNIX_PATH_MAX = 108  # sun_path, NUL included
# Failures to create the socket itself: smtpf's "open error", not "connect error".
OPEN_ERRNOS = frozenset((errno_mod.EMFILE, errno_mod.ENFILE, errno_mod.ENOBUFS, errno_mod.ENOMEM))


@dataclass(frozen=True)
class PluginOption:
    """One option a plugin adds to the registry (smtpf syntax, like the core's)."""

    name: str
    default: Any
    help: str
    kind: str | None = None
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    maximum: int | None = None


@dataclass
class Services:
    """What Barricade hands every plugin instance."""

    reactor: Any
    metrics: Any
    save_dir: str = "/tmp"
    access_map: Any = None  # barricade.policy.access.AccessMap or None
    store: Any = None  # barricade.state.Store: shared state (memory or Redis)
    resolver: Any = None  # barricade.dns.Resolver: cached DNS (await aio(resolver.mx(domain)) ...)
    extra: dict[str, Any] = field(default_factory=dict)
    max_threads: int = 4  # the plugin-threads option: Plugin.blocking's pool
    _pool: Any = field(default=None, repr=False)

    def thread_pool(self) -> ThreadPool:
        """The bounded pool blocking plugin work runs in; started on first use, stopped at shutdown."""
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=max(1, self.max_threads),
                                    name="barricade-plugins")
            self._pool.start()
            add_trigger = getattr(self.reactor, "addSystemEventTrigger", None)
            if add_trigger is not None:
                add_trigger("during", "shutdown", self._pool.stop)
        return self._pool


class Direct:
    """A shared service whose coroutines a hook awaits directly: ``await self.dns.mx(domain)``.

    The resolver and the store are asyncio code; a hook runs under Twisted.
    Each call that returns a coroutine comes back as a Deferred (through
    :func:`barricade.aio.aio`), so plugins need not know which side a
    service lives on.
    """

    def __init__(self, target: Any):
        self._target = target

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kw: Any) -> Any:
            result = value(*args, **kw)
            return aio(result) if inspect.iscoroutine(result) else result

        return call


class Plugin(Check):
    """Base class of every plugin."""

    #: The name used in ``plugins=`` and in logs and metrics.
    name: ClassVar[str] = "plugin"
    #: Position among plugins (smaller runs first); ties go by name.
    order: ClassVar[int] = 500
    #: Options this plugin adds; by convention prefixed with its name.
    options: ClassVar[tuple[PluginOption, ...]] = ()
    #: Catalogue replies this plugin adds (ids 1000 and up for third parties).
    replies: ClassVar[tuple[ReplySpec, ...]] = ()

    def __init__(self, config: Config, services: Services):
        self.config = config
        self.services = services

    @classmethod
    def enabled(cls, config: Config) -> bool:
        """Run without being named in ``plugins``?  Scanners: when their socket is set."""
        return False

    async def start(self) -> None:
        """Called once when the service starts (open pools, check the daemon)."""

    async def stop(self) -> None:
        """Called once when the service stops."""

    @property
    def dns(self) -> Direct | None:
        """The cached resolver (``barricade.dns.Resolver``), awaited directly; None without DNS."""
        return Direct(self.services.resolver) if self.services.resolver is not None else None

    @property
    def state(self) -> Direct | None:
        """The shared store (``barricade.state.Store``), awaited directly; None without one."""
        return Direct(self.services.store) if self.services.store is not None else None

    def blocking(self, func: Any, *args: Any, **kw: Any) -> defer.Deferred:
        """Run blocking code (a library without async, a file scan) in the bounded thread pool.

        ``await self.blocking(func, *args)``.  A hook must never block the
        event loop: every session of the worker would wait.  The pool has
        ``plugin-threads`` threads; further calls queue for a free one, and
        the hook's timeout still applies to the wait.
        """
        return threads.deferToThreadPool(self.services.reactor, self.services.thread_pool(),
                                         func, *args, **kw)


# --- discovery -----------------------------------------------------------------------

_classes: dict[str, type[Plugin]] | None = None


def _plugin_classes_in(module) -> Iterable[type[Plugin]]:
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, Plugin) and value is not Plugin
                and value.__module__ == module.__name__ and not value.__name__.startswith("_")
                and "name" in vars(value)):
            yield value


#: The shipped plugins' package (they may use smtpf's reply numbers, under 1000).
SHIPPED_PACKAGE = "barricade.plugins"


def _shipped_package():
    """``barricade.plugins``: installed, or ``plugins/`` beside ``barricade/`` in a checkout."""
    try:
        return importlib.import_module(SHIPPED_PACKAGE)
    except ImportError:
        init = Path(__file__).resolve().parent.parent / "plugins" / "__init__.py"
        if not init.exists():
            raise
        spec = importlib.util.spec_from_file_location(
            SHIPPED_PACKAGE, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


def discover() -> dict[str, type[Plugin]]:
    """Every plugin class that can be found, by name (cached)."""
    global _classes
    if _classes is not None:
        return _classes
    found: dict[str, type[Plugin]] = {}
    try:
        shipped = _shipped_package()
        for info in pkgutil.iter_modules(shipped.__path__, shipped.__name__ + "."):
            try:
                module = importlib.import_module(info.name)
            except Exception:
                log.failure("cannot import plugin module {m}", m=info.name)
                continue
            for cls in _plugin_classes_in(module):
                found.setdefault(cls.name, cls)
    except ImportError:
        pass
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception:
            log.failure("cannot load plugin entry point {ep}", ep=str(ep))
            continue
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            log.error("plugin entry point {ep} is not a barricade.plugin.Plugin subclass", ep=str(ep))
            continue
        taken = found.get(cls.name)
        if taken is not None and taken is not cls:
            # The first (a shipped plugin) stays: another package must not replace it
            # unseen.  plugins=module:Class still chooses the other one by path.
            log.error("plugin entry point {ep}: the name {name} is taken by {other}; not loaded",
                      ep=str(ep), name=cls.name, other=f"{taken.__module__}.{taken.__qualname__}")
            continue
        found[cls.name] = cls
        if ep.name != cls.name:
            _aliases[ep.name] = cls.name  # plugins= may name the entry point too
    _classes = found
    return found


def _is_shipped(cls: type) -> bool:
    """Is ``cls`` one of the shipped plugins (by its file: a checkout may load them as
    ``plugins.cli`` too)?"""
    try:
        home = Path(_shipped_package().__file__).resolve().parent
        return Path(inspect.getfile(cls)).resolve().parent == home
    except (ImportError, TypeError, OSError):
        return False


#: Entry point names that differ from their class's ``name``.
_aliases: dict[str, str] = {}


def load_class(spec: str) -> type[Plugin]:
    """``name`` (discovered) or ``package.module:Class``."""
    classes = discover()
    spec = _aliases.get(spec, spec)
    if spec in classes:
        return classes[spec]
    if ":" not in spec:
        raise OptionError(f"plugins: unknown plugin {spec!r} (known: {', '.join(sorted(classes)) or 'none'})")
    module_name, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise OptionError(f"plugins: cannot load {spec!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise OptionError(f"plugins: {spec!r} is not a barricade.plugin.Plugin subclass")
    return cls


def register_options(classes: Iterable[type[Plugin]], registry: Registry = REGISTRY) -> None:
    """Add the plugins' options to the registry (once per name).

    An option a plugin declares that the core or another plugin already has is an
    error: the plugin would read the other one's value without a word."""
    for cls in classes:
        section = f"plugin {cls.name}"
        for opt in cls.options:
            if opt.name in registry:
                if registry.get(opt.name).section != section:
                    raise OptionError(f"plugin {cls.name}: option {opt.name} is already "
                                      f"{registry.get(opt.name).section}'s; prefix it with the plugin's name")
                continue
            registry.add(opt.name, opt.default, opt.help, section=section,
                         kind=opt.kind, minimum=opt.minimum, choices=opt.choices, maximum=opt.maximum)


def prepare(args: Iterable[str], config_file: str | None = None) -> None:
    """Before options are parsed: register every plugin's options.

    ``module:Class`` plugins named in the config file or on the command
    line are loaded here too, so their options can be set alongside.
    """
    classes = list(discover().values())
    lines = list(args)
    if config_file:
        try:
            with open(config_file, encoding="utf-8-sig") as f:
                lines = [setting for line in f for setting in config_line(line)] + lines
        except (OSError, UnicodeDecodeError):
            pass  # the option parser reports the unreadable file
    for arg in lines:
        name, sep, value = arg.partition("=")
        if sep and name.strip().rstrip("+").lower() == "plugins":
            for spec in REGISTRY.get("plugins").parse(unquote(value.strip())):  # as the parser reads it
                if ":" in spec:
                    classes.append(load_class(spec))
    register_options(classes)


def enabled_plugins(config: Config, services: Services) -> list[Plugin]:
    """Instances of the plugins this configuration runs, in order."""
    chosen = {cls.name: cls for cls in discover().values() if cls.enabled(config)}
    for spec in config["plugins"]:  # named ones win; one instance per plugin name
        cls = load_class(spec)
        chosen[cls.name] = cls
    classes = sorted(chosen.values(), key=lambda c: (c.order, c.name))
    register_options(classes)
    return [cls(config, services) for cls in classes]


def plugin_replies(config: Config | None = None) -> list[ReplySpec]:
    """Replies declared by discovered plugins and those ``config`` names.

    Raises OptionError (a one-line start-up error) when two plugins declare
    one id differently, a plugin reuses a core id, or an entry's code and
    enhanced status do not fit together.
    """
    classes = list(discover().values())
    running: set[type[Plugin]] = set(classes)
    if config is not None:
        named = [load_class(spec) for spec in config["plugins"]]
        running = {cls for cls in classes if cls.enabled(config)} | set(named)
        # The plugins this configuration runs first: a clash among plugins that are
        # only installed keeps the running one's entry instead of stopping start-up.
        classes = sorted({*classes, *named}, key=lambda c: c not in running)
    core = {spec.id for spec in ENTRIES}
    events = {spec.event for spec in ENTRIES}
    # The shipped plugins' own entries (smtpf's numbers), also where a subclass inherits them.
    shipped = {spec for cls in classes if _is_shipped(cls) for spec in cls.replies}
    out: dict[int, tuple[ReplySpec, str]] = {}
    for cls in classes:
        for spec in cls.replies:
            problem = check_reply(spec)
            if problem:
                raise OptionError(f"plugin {cls.name}: {problem}")
            if spec.id in core:
                raise OptionError(f"plugin {cls.name}: reply #{spec.id} is already the core catalogue's")
            if spec.id < 1000 and spec not in shipped:
                raise OptionError(f"plugin {cls.name}: reply #{spec.id}: ids under 1000 are Barricade's "
                                  "own; a plugin's start at 1000")
            if spec.event not in events:
                raise OptionError(f"plugin {cls.name}: reply #{spec.id}: event {spec.event!r} is not "
                                  f"one of {', '.join(sorted(events))}")
            seen = out.get(spec.id)
            if seen is None:
                out[spec.id] = (spec, cls.name)
            elif seen[0] != spec and cls in running:
                raise OptionError(f"plugins {seen[1]} and {cls.name} both declare reply #{spec.id}")
            elif seen[0] != spec:
                log.warn("plugin {name} (not running) declares reply #{rid} as {other} does; "
                         "{other}'s stands", name=cls.name, rid=spec.id, other=seen[1])
    return [spec for spec, _ in out.values()]


# --- scanner helpers -------------------------------------------------------------------


class ScannerError(CheckError):
    """A scanner I/O failure; ``reply_id`` is the plugin's numbered 451 (fields error, errno)."""

    def __init__(self, reply_id: int, error: str, errno: int = 0):
        super().__init__(reply_id, f"{error} ({errno})", error=error, errno=errno)
        self.error = error
        self.errno = errno


class _Stream(protocol.Protocol):
    """A byte stream with awaitable reads, for request/response scanner protocols."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False
        self._waiter: defer.Deferred | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def wait(self) -> defer.Deferred:
        self._waiter = defer.Deferred()
        return self._waiter


class ScannerConnection:
    """One connection to a scanner daemon, every wait under the plugin's timeout."""

    def __init__(self, stream: _Stream, reactor, timeout: float, errors: dict[str, int]):
        self.stream = stream
        self.reactor = reactor
        self.timeout = timeout
        self.errors = errors

    def write(self, data: bytes) -> None:
        if self.stream.closed:
            raise ScannerError(self.errors["write"], "connection closed", errno_mod.EPIPE)
        self.stream.transport.write(data)

    def close_write(self) -> None:
        try:
            self.stream.transport.loseWriteConnection()
        except AttributeError:
            pass

    async def _more(self) -> bool:
        if self.stream.closed:
            return False
        try:
            await self.stream.wait().addTimeout(self.timeout, self.reactor)
        except defer.TimeoutError:
            raise ScannerError(self.errors["read"], "timed out", errno_mod.ETIMEDOUT) from None
        return True

    async def read_until(self, terminator: bytes, limit: int = 65536) -> bytes:
        """Up to and without ``terminator``; EOF first returns what there is."""
        while True:
            i = self.stream.buffer.find(terminator)
            if i >= 0:
                out = bytes(self.stream.buffer[:i])
                del self.stream.buffer[: i + len(terminator)]
                return out
            if len(self.stream.buffer) > limit:
                raise ScannerError(self.errors["read"], "answer too long", errno_mod.EMSGSIZE)
            if not await self._more():
                out = bytes(self.stream.buffer)
                self.stream.buffer.clear()
                if not out:
                    raise ScannerError(self.errors["read"], "connection closed", errno_mod.ECONNRESET)
                return out

    async def read_to_eof(self, limit: int = 1 << 20) -> bytes:
        while await self._more():
            if len(self.stream.buffer) > limit:
                raise ScannerError(self.errors["read"], "answer too long", errno_mod.EMSGSIZE)
        out = bytes(self.stream.buffer)
        self.stream.buffer.clear()
        return out

    async def finish(self, last: bytes = b"") -> None:
        """Send ``last`` (a QUIT), close once written, and wait for the close."""
        if self.stream.closed:
            return
        if last:
            self.write(last)
        self.stream.transport.loseConnection()  # unlike close(), flushes first
        try:
            await self.read_to_eof()
        except ScannerError:
            pass

    def close(self) -> None:
        if not self.stream.closed and self.stream.transport is not None:
            self.stream.transport.abortConnection()


def parse_socket(value: str, default_port: int) -> tuple[str, str, int]:
    """``/path`` (unix), ``host[:port]`` or ``[v6]:port`` → ``(kind, host_or_path, port)``."""
    if value.startswith("/"):
        return "unix", value, 0
    host, port = parse_hostport(value, default_port)
    return ("tcp6" if ":" in host else "tcp"), host, port


def scanner_options(name: str, socket_help: str, *, policy: bool = True, max_size: int | None = None,
                    connections: int = 8, timeout: int = 120) -> tuple[PluginOption, ...]:
    """The options every scanner daemon plugin has, worded once.

    ``<name>-socket`` (described by ``socket_help``), ``-timeout``,
    ``-policy`` (unless ``policy`` is False), ``-max-size`` (when a default
    is given) and ``-connections``.
    """
    opts = [
        PluginOption(f"{name}-socket", "", socket_help),
        PluginOption(f"{name}-timeout", timeout, f"""Seconds to wait for {name}: the connect and
            each wait for its answer.""", minimum=1),
    ]
    if policy:
        opts.append(PluginOption(f"{name}-policy", "reject", """What to do with an infected
            message: none (log it and deliver), reject (550) or discard (accept and drop).""",
                                 choices=("none", "reject", "discard")))
    if max_size is not None:
        opts.append(PluginOption(f"{name}-max-size", max_size, f"""Messages larger than this many
            kilobytes are not passed to {name} and pass; 0 for no limit.""", minimum=0))
    opts.append(PluginOption(f"{name}-connections", connections, f"""Most {name} scans at once
        (per worker); further scans wait (up to {name}-timeout) for a free connection.""",
                             minimum=1))
    return tuple(opts)


class ScannerPlugin(Plugin):
    """Base for scanner daemons: socket option, timeout, capacity, metrics.

    Subclasses set ``socket_option``, ``default_port``, ``errors`` (the
    plugin's numbered 451 replies for ``address``, ``connect``, ``write``
    and ``read`` failures) and implement the protocol with
    :meth:`connection`.
    """

    socket_option: ClassVar[str] = ""
    default_port: ClassVar[int] = 0
    errors: ClassVar[dict[str, int]] = {}

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return bool(cls.socket_option and config.get(cls.socket_option))

    def __init__(self, config: Config, services: Services):
        super().__init__(config, services)
        # smtpf bounds each wait on the daemon by <name>-timeout; a whole hook
        # (connect, send, several reads) gets three of those before it is cut.
        self.io_timeout = float(config.get(f"{self.name}-timeout", 120))
        self.timeout = 3 * self.io_timeout
        tokens = int(config.get(f"{self.name}-connections", 8) or 8)
        self.capacity = defer.DeferredSemaphore(tokens)
        try:
            self.address = parse_socket(config[self.socket_option], self.default_port)
        except (ValueError, IndexError):
            raise OptionError(f"{self.socket_option}: bad socket {config[self.socket_option]!r}") from None

    @asynccontextmanager
    async def connection(self):
        """Wait for capacity, connect, and always release both."""
        metrics = self.services.metrics
        started = time.monotonic()
        try:
            await self.capacity.acquire().addTimeout(self.io_timeout, self.services.reactor)
        except defer.TimeoutError:
            raise ScannerError(self.errors["connect"], "too many scans waiting", errno_mod.EAGAIN) from None
        finally:  # the waits that ran out are the longest: observed too
            if metrics is not None:
                metrics.scanner_wait(self.name, time.monotonic() - started)
        conn = None
        try:
            conn = await self._connect()
            yield conn
        finally:
            if conn is not None:
                conn.close()
            self.capacity.release()

    def apply_policy(self, ctx, reply_id: int, virus: str, text: str | None = None,
                     log_id: int | None = None) -> Verdict:
        """``<name>-policy`` for an infected message: reject, discard or none.

        ``text`` is the reply text (default: the virus name) and the log line;
        the log line carries smtpf's number ``log_id`` when it has one, since
        with discard and none no reply tells anybody.
        """
        policy = self.config.get(f"{self.name}-policy", "reject")
        said = text if text is not None else f"message {ctx.qid} is INFECTED with {virus}"
        tag = f"#{log_id} " if log_id else ""
        log.warn("session {sid}: {name}: {tag}{said} ({name}-policy={policy})",
                 sid=ctx.session_id, name=self.name, tag=tag, said=said, policy=policy)
        reply = {"text": text if text is not None else virus}
        if policy == "reject":
            return Verdict(Action.REJECT, reply_id, reply)
        if policy == "discard":
            return Verdict(Action.DISCARD, reply_id, reply)
        return Verdict()

    async def _check_address(self) -> None:
        """smtpf's address error: a unix path too long, or a host name that does not resolve.

        The name is checked before Twisted sees it: a label that IDNA cannot
        encode makes its resolver's Deferred never fire.
        """
        kind, host, _ = self.address
        address_error = self.errors.get("address", self.errors["connect"])
        if kind == "unix":
            if len(os.fsencode(host)) >= UNIX_PATH_MAX:
                raise ScannerError(address_error, os.strerror(errno_mod.ENAMETOOLONG),
                                   errno_mod.ENAMETOOLONG)
            return
        if kind != "tcp" or abstract.isIPAddress(host):
            return
        reactor = self.services.reactor
        try:
            host.encode("idna")
            await reactor.resolve(host).addTimeout(self.io_timeout, reactor)
        except (UnicodeError, error.DNSLookupError):
            raise ScannerError(address_error, "host not found", 0) from None
        except defer.TimeoutError:
            raise ScannerError(address_error, "host lookup timed out", errno_mod.ETIMEDOUT) from None

    async def _connect(self) -> ScannerConnection:
        """Connect, telling smtpf's address, open and connect errors apart."""
        await self._check_address()
        try:
            return await self._open_socket()
        except ScannerError as exc:
            if exc.errno in OPEN_ERRNOS and "open" in self.errors:
                raise ScannerError(self.errors["open"], os.strerror(exc.errno), exc.errno) from None
            raise

    async def _open_socket(self) -> ScannerConnection:
        kind, host, port = self.address
        reactor = self.services.reactor
        timeout = self.io_timeout
        if kind == "unix":
            endpoint = UNIXClientEndpoint(reactor, host, timeout=timeout)
        elif kind == "tcp6":
            endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
        else:
            endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
        try:
            factory = protocol.Factory.forProtocol(_Stream)
            factory.noisy = False  # one connection per scan: no start/stop log lines
            stream = await endpoint.connect(factory).addTimeout(timeout, reactor)
        except defer.TimeoutError:
            raise ScannerError(self.errors["connect"], "connect timed out", errno_mod.ETIMEDOUT) from None
        except error.ConnectionRefusedError:
            raise ScannerError(self.errors["connect"], "Connection refused", errno_mod.ECONNREFUSED) from None
        except (error.ConnectError, OSError) as exc:
            code = getattr(exc, "osError", None) or getattr(exc, "errno", None) or errno_mod.EIO
            raise ScannerError(self.errors["connect"], os.strerror(code), code) from None
        return ScannerConnection(stream, reactor, timeout, self.errors)

    def result(self, outcome: str, seconds: float) -> None:
        if self.services.metrics is not None:
            self.services.metrics.scanner(self.name, outcome, seconds)
