"""``twistd barricade``: command-line options and the service maker.

Importing this module (twistd does so only when the ``barricade``
subcommand is chosen) installs Twisted's asyncio reactor unless another
reactor was asked for with ``--reactor``, so checks can await asyncio
libraries (redis.asyncio, dns.asyncresolver) directly.
"""

from __future__ import annotations

import sys

if "twisted.internet.reactor" not in sys.modules:  # pragma: no branch
    import asyncio

    from twisted.internet import asyncioreactor

    _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)  # install(loop) alone does not make it current
    asyncioreactor.install(_loop)

from twisted.python import usage  # noqa: E402

from barricade import plugin  # noqa: E402
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

    def parseArgs(self, *args: str) -> None:
        self.args = args

    def postOptions(self) -> None:
        actions = [a for a in self.args if a.lower() == "help"]
        settings = [a for a in self.args if a.lower() != "help"]
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

        try:
            self.context = build_context(self.config)
        except StartupError as exc:
            raise usage.UsageError(str(exc)) from None


def makeService(options: Options):
    from twisted.application import service as tservice

    top = tservice.MultiService()
    if options.config["workers"] == 1:
        from barricade.service import BarricadeService

        BarricadeService(options.context).setServiceParent(top)
    else:
        from barricade.workers import WorkerMaster

        args = (["--config", options["config"]] if options["config"] else []) + [
            a for a in options.args if a.lower() != "help"]
        WorkerMaster(options.config, args).setServiceParent(top)
    return top
