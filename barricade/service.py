"""Build the running daemon from a resolved :class:`~barricade.options.Config`.

:func:`build_context` does every check that can fail on bad configuration
(maps, reply overrides, TLS files, interface syntax) so that start-up
stops with one clear line; :class:`BarricadeService` then binds the
listening sockets while still privileged and adopts them into the reactor,
which is the shape the multi-process master needs as well.
"""

from __future__ import annotations

import errno
import gc
import signal
import socket
from pathlib import Path
from typing import NoReturn

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from barricade.address import parse_hostport
from barricade.aio import aio
from barricade.descriptors import in_use, raise_file_limit
from barricade.dns import Resolver
from barricade.dns import hostname as host_name
from barricade.maps import MapError, RouteMap
from barricade.metrics import Metrics, metrics_root, metrics_site, scrape_registry
from barricade.net.admin import Admin
from barricade.net.capability_probe import CapabilityProbe
from barricade.net.conductor import ServerContext
from barricade.net.forward import Timeouts
from barricade.net.pool import DownstreamPool
from barricade.net.server import SmtpServerFactory
from barricade.net.tls_server import TlsSetupError, server_tls
from barricade.options import Config, OptionError, mask_password
from barricade.plugin import Plugin, Services, enabled_plugins, plugin_replies
from barricade.policy.access import AccessMap, access_maps
from barricade.policy.callahead import CallAhead
from barricade.policy.domains import TldFileError
from barricade.policy.limits import builtin_checks
from barricade.policy.order import ORDER, OrderError
from barricade.policy.order import validate as validate_order
from barricade.policy.pipeline import Pipeline
from barricade.protocol.proxy_protocol import parse_hosts
from barricade.protocol.session import SessionConfig
from barricade.replies import Catalogue, CatalogueError, check_catalogue
from barricade.report import Reporter
from barricade.state.metered import store_from_config

log = Logger()


DESCRIPTOR_SAMPLE = 5.0  # seconds between samples of barricade_descriptors_in_use
METRICS_FLUSH = 1.0  # seconds between applications of the metrics tally (barricade.metrics)


def log_file_limit() -> None:
    """Raise the soft file limit to the hard one and say what the process got."""
    before, soft, hard = raise_file_limit()
    if soft != before:
        log.info("barricade: file descriptor limit raised from {before} to {soft} (hard limit {hard})",
                 before=before, soft=soft, hard=hard)
    else:
        log.info("barricade: file descriptor limit {soft} (hard limit {hard})", soft=soft, hard=hard)


class StartupError(Exception):
    """Configuration that cannot work; the message is one line for the operator."""


def parse_address(item: str, default_port: int, option: str) -> tuple[str, int]:
    """A listening address; an empty host means every IPv4 address."""
    if item.count(":") > 1 and not item.startswith("["):
        raise StartupError(f"{option}: write IPv6 addresses as [addr]:port, got {item!r}")
    try:
        host, port = parse_hostport(item, default_port)
    except ValueError as exc:
        raise StartupError(f"{option}: {exc}") from None
    return host or "0.0.0.0", port


def tls_context(config: Config):
    """The STARTTLS connection creator (None: no certificate, no STARTTLS)."""
    try:
        return server_tls(config)
    except TlsSetupError as exc:
        raise StartupError(str(exc)) from None


def read_banner(config: Config) -> tuple[str, ...]:
    path = config["smtp-welcome-file"]
    if not path:
        return ()
    try:
        lines = [x.rstrip() for x in Path(path).read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise StartupError(f"smtp-welcome-file: cannot read {path}: {exc.strerror}") from None
    return tuple(x for x in lines if x) or ()


def load_maps(config: Config) -> tuple[RouteMap, AccessMap | None]:
    """The route map and the access map (None: no ``access-map``); raises
    :class:`StartupError`."""
    if not config["route-map"].strip():
        raise StartupError("route-map: no file named; Barricade needs one, with route:local")
    try:
        routes = RouteMap(config["route-map"])
        access = None
        if config["access-map"]:
            access = AccessMap(config["access-map"], literal_plus=config["rfc2821-literal-plus"])
    except MapError as exc:
        raise StartupError(str(exc)) from None
    return routes, access


def check_error_reply(plugin: Plugin, catalogue: Catalogue) -> None:
    """A plugin's ``error_reply`` (what a client hears when the plugin fails) is a 4xx
    the catalogue has: a 5xx would refuse mail for good because a daemon was down, and
    an unknown id would only show, as #907, when the plugin first failed."""
    rid = plugin.error_reply
    if rid not in catalogue:
        raise StartupError(f"plugin {plugin.name}: error_reply #{rid} is not in the catalogue")
    code = catalogue.spec(rid).code
    if not 400 <= code < 500:
        raise StartupError(f"plugin {plugin.name}: error_reply #{rid} is a {code}; a failure is "
                           "answered with a 4xx, so the sender tries again")


def build_context(config: Config, reactor=None) -> ServerContext:
    """Everything the sessions share; raises :class:`StartupError`."""
    if reactor is None:
        from twisted.internet import reactor
    try:
        catalogue = Catalogue.from_file(config["reply-file"] or None, extra=plugin_replies(config))
    except (CatalogueError, OSError) as exc:
        raise StartupError(f"reply-file: {exc}") from None
    except OptionError as exc:
        raise StartupError(str(exc)) from None
    try:
        check_catalogue(catalogue)
    except CatalogueError as exc:
        raise StartupError(str(exc)) from None
    routes, access = load_maps(config)
    if not config["interfaces"]:
        raise StartupError("interfaces: no address to listen on")
    for item in config["interfaces"]:
        parse_address(item, 25, "interfaces")
    if config["interface-name"] and host_name(config["interface-name"]) is None:
        raise StartupError(f"interface-name: {config['interface-name'][:80]!r} is not a host name "
                           "(it names us in the banner, the EHLO reply and Received:)")
    try:
        parse_hosts(config["proxy-protocol-hosts"])
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    if config["metrics-interface"]:
        parse_address(config["metrics-interface"], 9025, "metrics-interface")
    tls = tls_context(config)
    hostname = config["interface-name"] or socket.getfqdn()
    metrics = Metrics(catalogue)
    try:
        store = store_from_config(config, metrics)  # one per process: workers build their own
    except ValueError as exc:
        raise StartupError(mask_password(f"redis-url/redis-prefix: {exc}")) from None
    try:
        resolver = Resolver.from_config(config, metrics)  # one per process, like the store
    except OptionError as exc:
        raise StartupError(str(exc)) from None
    services = Services(reactor=reactor, metrics=metrics, save_dir=config["save-dir"], access_map=access,
                        store=store, resolver=resolver, max_threads=config["plugin-threads"])
    try:
        plugins = enabled_plugins(config, services)
    except OptionError as exc:
        raise StartupError(str(exc)) from None
    for plugin in plugins:
        check_error_reply(plugin, catalogue)
    try:
        checks = builtin_checks(config, access, store, metrics, reactor, routes, hostname, resolver,
                                reporter=Reporter(config, routes, reactor))
    except (TldFileError, OptionError) as exc:
        raise StartupError(str(exc)) from None
    try:
        validate_order([*checks, *plugins])
    except OrderError as exc:
        raise StartupError(str(exc)) from None
    pipeline = Pipeline([*checks, *plugins], reactor, config["check-timeout"], metrics, order=ORDER,
                        stall=config["event-loop-stall"] / 1000)
    context = ServerContext(
        config=config,
        catalogue=catalogue,
        routes=routes,
        pipeline=pipeline,
        metrics=metrics,
        reactor=reactor,
        hostname=hostname,
        session_config=SessionConfig.from_config(config, hostname, tls is not None),
        timeouts=Timeouts(
            connect=config["smtp-connect-timeout"],
            command=config["smtp-command-timeout"],
            dot=config["smtp-dot-timeout"],
        ),
        banner=read_banner(config),
        tls_context=tls,
        store=store,
        call_ahead=CallAhead(config, store, hostname, metrics),
        resolver=resolver,
        downstreams=DownstreamPool(reactor, config["downstream-pool-size"],
                                   config["downstream-pool-idle"]),
    )
    context.capabilities = CapabilityProbe(reactor, routes, hostname, context.timeouts,
                                           config["forward-capabilities-ttl"])
    return context


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening, non-blocking socket (adoptable by any worker process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # One socket per family: [::]:25 must not also grab 0.0.0.0:25.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        why = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise StartupError(f"cannot listen on {host}:{port}: {why}") from None
    sock.setblocking(False)
    return sock


def bind_interfaces(config: Config) -> list[socket.socket]:
    """Every ``interfaces`` socket, or SystemExit with one line naming the problem."""
    sockets: list[socket.socket] = []
    for item in config["interfaces"]:
        host, port = parse_address(item, 25, "interfaces")
        sockets.append(bind_or_exit(host, port, sockets))
    return sockets


def bind_or_exit(host: str, port: int, opened: list[socket.socket], what: str = "") -> socket.socket:
    """:func:`bind`, or SystemExit with one line naming the problem (``what``: the
    option, when it is not ``interfaces``), the sockets ``opened`` so far closed."""
    try:
        return bind(host, port)
    except StartupError as exc:
        for sock in opened:
            sock.close()
        exit_at_startup(f"{what}: {exc}" if what else str(exc))


def exit_at_startup(why: str) -> NoReturn:
    """Stop a start-up that cannot go on: one critical line in the log, and the same
    line as the exit message (twistd prints it)."""
    log.critical("barricade: {why}", why=why)
    raise SystemExit(f"barricade: {why}") from None


def freeze_startup() -> None:
    """Put what start-up made (modules, Twisted, the options, maps and catalogue:
    some 65,000 objects) out of the garbage collector's reach; at the end of
    ``startService``, before the first connection is served.

    They live as long as the process, yet a full collection walked every one
    of them: about 35 ms during which no session of the worker was served.
    Frozen, they are still freed by reference counting (a map's old contents
    after a reload are: they hold no cycles); only a cycle among them would
    never be.  Sessions, made later, are collected as before.
    """
    gc.collect()
    gc.freeze()


class BarricadeService(service.Service):
    name = "barricade"

    def __init__(self, context: ServerContext, inherited_fds: list[int] = (),
                 serve_metrics: bool = True):
        self.context = context
        self.inherited_fds = list(inherited_fds)  # a worker: the master bound them
        self.serve_metrics = serve_metrics
        self.sockets: list[socket.socket] = []
        self.ports: list = []
        self.metrics_port = None
        self.factory: SmtpServerFactory | None = None
        self.descriptor_gauges: task.LoopingCall | None = None
        self.metrics_flush: task.LoopingCall | None = None
        self._starting: list[defer.Deferred] = []  # plugin start()s the listeners wait for

    @property
    def config(self) -> Config:
        return self.context.config

    def privilegedStartService(self) -> None:
        log_file_limit()
        if self.inherited_fds:
            self.sockets = [socket.socket(fileno=fd) for fd in self.inherited_fds]
        else:
            self.sockets = bind_interfaces(self.config)
        service.Service.privilegedStartService(self)

    def _fail(self, why: str) -> None:
        for sock in self.sockets:
            sock.close()
        exit_at_startup(why)

    def startService(self) -> None:
        """Start everything a session needs, the plugins last, and open the
        listeners once every plugin's ``start()`` has finished (see :meth:`_plugins_started`)."""
        service.Service.startService(self)
        reactor = self.context.reactor
        self.factory = factory = SmtpServerFactory(self.context)
        self.context.admin = Admin(self.context, factory)
        self.context.admin.start()  # a worker joins the master's control channel here
        self.descriptor_gauges = task.LoopingCall(factory.update_metrics)
        self.descriptor_gauges.clock = reactor
        self.metrics_flush = task.LoopingCall(self.context.metrics.flush)  # see barricade.metrics
        self.metrics_flush.clock = reactor
        self.metrics_flush.start(METRICS_FLUSH, now=False)
        if self.context.capabilities is not None:
            self.context.capabilities.start()  # what the downstreams offer, before the first EHLO
        if self.config["metrics-interface"] and self.serve_metrics:
            host, port = parse_address(self.config["metrics-interface"], 9025, "metrics-interface")
            site = metrics_site(metrics_root(scrape_registry(self.context.metrics.registry)))
            try:
                self.metrics_port = reactor.listenTCP(port, site, interface=host)
            except Exception as exc:
                self._fail(f"metrics-interface {host}:{port}: {exc}")
        store = self.context.store
        if store is not None:
            log.info("barricade: shared state in {kind}", kind=getattr(store, "kind", "memory"))
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(self.reload))
        started = self._plugins_started()
        if started.called:  # nothing to wait for: a failure to listen stops start-up here
            self._listen()
        else:
            started.addCallback(lambda _: self._listen()).addErrback(self._cannot_listen)

    def _plugins_started(self) -> defer.Deferred:
        """Every plugin's ``start()``, finished: its pools open and its daemon checked
        before the first session can reach its hooks.  One that raises is logged (its
        hooks then answer their ``error_reply``); one still running after
        ``check-timeout`` seconds is logged and left to finish, and the listeners open
        anyway: a plugin cannot keep the gateway shut.  Meanwhile the kernel queues
        the clients that connect (the sockets listen from start-up on)."""
        reactor = self.context.reactor
        limit = self.config["check-timeout"]
        waits = []
        for check in self.context.pipeline.checks:
            if not isinstance(check, Plugin):
                continue
            log.info("barricade: plugin {name} enabled", name=check.name)
            started = defer.ensureDeferred(check.start()).addErrback(
                lambda f, n=check.name: log.failure("plugin {n} failed to start", f, n=n))
            if started.called:
                continue
            waited: defer.Deferred = defer.Deferred()
            started.chainDeferred(waited)
            waited.addTimeout(limit, reactor, onTimeoutCancel=lambda _r, _t, n=check.name: log.warn(
                "barricade: plugin {n} has not started after {t}s; listening anyway", n=n, t=limit))
            waits.append(waited)
        self._starting = waits  # a stop meanwhile gives up on them (and their timeouts)
        return defer.DeferredList(waits, consumeErrors=True) if waits else defer.succeed(None)

    def _cannot_listen(self, failure) -> None:
        """Listening failed after the plugins' wait, outside ``startService``: the
        process stops (a worker is replaced by its master) instead of running on
        with no listener."""
        log.failure("barricade: cannot listen; stopping", failure)
        self.context.reactor.stop()

    def _listen(self) -> None:
        if not self.running:  # stopped while the plugins started
            return
        factory = self.factory
        for sock in self.sockets:
            self.ports.append(self.context.reactor.adoptStreamPort(sock.fileno(), sock.family, factory))
            factory.add_port(self.ports[-1])
            host, port = sock.getsockname()[:2]
            log.info("barricade: listening on {host}:{port} as {name}", host=host, port=port,
                     name=self.context.hostname)
            sock.close()
        self.sockets = []
        adm = factory.admission
        log.info("barricade: room for {n} sessions: file limit {limit}, {base} descriptors in use, "
                 "descriptor-reserve={reserve}, client-max-sessions={per}", n=adm.capacity,
                 limit=adm.limit, base=in_use(), reserve=self.config["descriptor-reserve"],
                 per=adm.per_client)
        self.descriptor_gauges.start(DESCRIPTOR_SAMPLE, now=True)
        freeze_startup()  # last: everything start-up made exists now

    def reload(self) -> None:
        log.info("barricade: SIGHUP, reloading maps")
        self.context.routes.reload()
        for access in access_maps(self.context.pipeline.checks):
            access.reload()

    def stopService(self):
        """Stop accepting; let transactions in progress finish; then close the rest."""
        service.Service.stopService(self)
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        for loop in (self.descriptor_gauges, self.metrics_flush):
            if loop is not None and loop.running:
                loop.stop()
        starting, self._starting = self._starting, []
        for waited in starting:  # stopped while the plugins started
            waited.cancel()
        for sock in self.sockets:  # stopped before the listeners opened
            sock.close()
        self.sockets = []
        ports, self.ports = self.ports, []
        if self.context.admin is not None:
            self.context.admin.stop()
        await defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports])
        if self.factory is not None:
            self.factory.shutdown(graceful=True)
            left = await self.factory.drained(self.config["shutdown-timeout"])
            if left:
                log.info("barricade: closing {n} sessions still open", n=left)
            self.factory.shutdown()
        ds = [defer.ensureDeferred(c.stop()) for c in self.context.pipeline.checks
              if isinstance(c, Plugin)]
        if self.metrics_port is not None:
            ds.append(defer.maybeDeferred(self.metrics_port.stopListening))
        await defer.DeferredList(ds)
        if self.context.downstreams is not None:
            self.context.downstreams.close()
        await self._close_store()
        self.context.metrics.flush()

    async def _close_store(self) -> None:
        """Give the store's connections back; sessions are closed by now."""
        store = self.context.store
        if store is None:
            return
        try:
            await aio(store.close())
        except Exception as exc:  # stopping anyway; a log line is all that is left to do
            log.warn("barricade: closing the state store: {err}", err=repr(exc))
