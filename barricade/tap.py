"""``twistd barricade``: command-line options and the service maker.

Importing this module (twistd does so only when the ``barricade``
subcommand is chosen) installs Twisted's asyncio reactor (as
:mod:`barricade.net.reactor` adapts it) on :class:`barricade.net.loop.Loop`, so checks can
await asyncio libraries (redis.asyncio, dns.asyncresolver) directly.  Any
other reactor (``twistd --reactor=epoll``) is refused at start-up: the
checks would wait forever for an asyncio loop that never runs.

A configuration error is one line on stderr and exit status 1, without
twistd's usage text: the operator needs the option and the value, not the
list of twistd's own switches.
"""

from __future__ import annotations

import sys

if "twisted.internet.reactor" not in sys.modules:  # pragma: no branch
    import asyncio

    from barricade.net import reactor as _reactor
    from barricade.net.loop import Loop

    _loop = Loop()
    asyncio.set_event_loop(_loop)  # install(loop) alone does not make it current
    _reactor.install(_loop)

from twisted.application.service import MultiService  # noqa: E402
from twisted.python import usage  # noqa: E402

from barricade import plugin, snapshot  # noqa: E402
from barricade.options import REGISTRY, OptionError  # noqa: E402


class Options(usage.Options):
    synopsis = "[--config FILE] [name=value | +name | -name | name+=value | help] ..."
    longdesc = (
        "Barricade, an SMTP filtering proxy. Options use smtpf's syntax and "
        "override the config file; 'help' prints a complete commented config "
        "file with the current values and exits."
    )
    optParameters = [["config", "c", None, "Config file in smtpf syntax (name=value per line)."]]

    def __init__(self) -> None:
        super().__init__()
        self.args: tuple[str, ...] = ()
        self.config = None
        self.context = None

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Only ``--config``/``-c`` (and ``--help``, ``--version``) are switches; every
        other argument is a setting.  Twisted's parser would read smtpf's ``-flag``
        as its own short options (``-relay-reply``: "option -r not recognized";
        ``-call-back``: the config file "all-back")."""
        args = list(sys.argv[1:] if options is None else options)
        settings: list[str] = []
        while args:
            arg = args.pop(0)
            if arg in ("--config", "-c"):
                if not args:
                    raise SystemExit(f"twistd barricade: {arg} needs a file name")
                self["config"] = args.pop(0)
            elif arg.startswith("--config="):
                self["config"] = arg.partition("=")[2]
            elif arg == "--help":
                self.opt_help()
            elif arg == "--version":
                self.opt_version()
            elif arg != "--":
                settings.append(arg)
        self.parseArgs(*settings)
        self.postOptions()

    def parseArgs(self, *args: str) -> None:
        self.args = args

    def postOptions(self) -> None:
        try:
            self._configure()
        except usage.UsageError as exc:
            raise SystemExit(f"twistd barricade: {exc}") from None

    def _configure(self) -> None:
        check_reactor()
        actions = [a for a in self.args if is_help(a)]
        settings = [a for a in self.args if not is_help(a)]
        try:
            plugin.prepare(settings, self["config"])  # plugin options join the registry
            self.config = REGISTRY.parse(settings, self["config"])
        except OptionError as exc:
            raise usage.UsageError(str(exc)) from None
        if actions:
            sys.stdout.write(REGISTRY.render(self.config))
            sys.stdout.flush()
            raise SystemExit(0)
        from barricade.service import StartupError, build_context

        if self.config["workers"] != 1:  # the master: its maps' texts become the first copies
            snapshot.collect()
        try:
            self.context = build_context(self.config)
        except StartupError as exc:
            raise usage.UsageError(str(exc)) from None


def is_help(arg: str) -> bool:
    """``help``, or smtpf's ``-help`` / ``+help`` (``smtpf -help > smtpf.cf``)."""
    return arg.lower().lstrip("+-") == "help"


def check_reactor() -> None:
    """Refuse any reactor but Twisted's asyncio reactor (see the module docstring)."""
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        name = type(reactor).__name__
        raise usage.UsageError(
            f"Barricade needs the asyncio reactor, not {name}: leave out twistd's --reactor "
            "option (or give --reactor=asyncio)")


def makeService(options: Options):
    from twisted.application import service as tservice

    top = tservice.MultiService()
    from barricade.logs import twistd_observer

    observer = twistd_observer(options.config["log-format"], getattr(options, "parent", None))
    if observer is not None:
        top = _Logged(observer)
    if options.config["workers"] == 1:
        from barricade.service import BarricadeService

        BarricadeService(options.context).setServiceParent(top)
    else:
        from barricade.workers import WorkerMaster

        args = (["--config", options["config"]] if options["config"] else []) + [
            a for a in options.args if not is_help(a)]
        WorkerMaster(options.config, args).setServiceParent(top)
    return top


class _Logged(MultiService):
    """The top service that gives twistd's application Barricade's log observer
    (``log-format``): twistd asks the application for one before it makes its
    own text observer from --logfile or --syslog."""

    def __init__(self, observer) -> None:
        super().__init__()
        self.observer = observer

    def setServiceParent(self, parent) -> None:
        super().setServiceParent(parent)
        if hasattr(parent, "setComponent"):
            from twisted.logger import ILogObserver

            parent.setComponent(ILogObserver, self.observer)
