"""Several worker processes behind one set of listening sockets.

The master binds every interface while still privileged, then starts
``workers`` processes that inherit the listening sockets (``childFDs``)
and accept from them: the kernel hands each new connection to one worker,
and a worker that stalls or dies loses no queued connection (unlike
SO_REUSEPORT, measured in the engineering notes).  The master

* replaces a worker that dies (with a short back-off when one keeps dying);
* forwards SIGHUP (reload maps) to every worker;
* on stop, sends SIGTERM to the workers (they close open sessions with
  #909) and waits for them, then SIGKILLs stragglers;
* serves ``/metrics`` for all workers (prometheus-client multiprocess
  mode), keeping the counters of workers that died;
* writes the workers' log events into its own log: each worker sends them
  as JSON lines on its stdout, relayed with their fields (``barricade.logs``);
* keeps what a replacement worker starts from: the config file's text as it
  was at start, and the last version of each map that loaded
  (``barricade/snapshot.py``);
* answers the admin commands for all workers through a control channel
  (``barricade/net/control.py``): a worker asks, the master asks every
  worker and merges, and keeps OPTN and VERB changes for replacements.

Each worker is ``python -m barricade.worker`` with the same option
arguments as the master (its ``--config`` the master's copy).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess
from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.logger import Logger

from barricade.admin import Answers, apply_option
from barricade.logs import relay, relayed_event
from barricade.metrics import metrics_root, metrics_site
from barricade.net.admin import CONTROL_ENV, SLOT_ENV
from barricade.net.control import ControlServer
from barricade.options import Config, OptionError
from barricade.service import (
    StartupError,
    bind_interfaces,
    bind_or_exit,
    exit_at_startup,
    load_maps,
    log_file_limit,
    parse_address,
)
from barricade.snapshot import SNAPSHOT_ENV, keep_collected, keep_config

log = Logger()

STOP_TIMEOUT = 15.0  # beyond shutdown-timeout, before a worker is killed
RESTART_DELAY_MAX = 10.0


class _WorkerProcess(protocol.ProcessProtocol):
    """One worker: its output goes to our log, its end to the master."""

    def __init__(self, master: WorkerMaster, slot: int):
        self.master = master
        self.slot = slot
        self.started = time.monotonic()
        self.pid: int | None = None  # kept: the transport forgets it at the end
        self.ended: defer.Deferred = defer.Deferred()
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, fd: int, data: bytes) -> None:
        # stdout: the worker's events as JSON lines, relayed with their fields
        # (no text parsed); stderr, or anything else: plain text lines.
        buf = self._partial.get(fd, b"") + data
        *lines, self._partial[fd] = buf.split(b"\n")
        for line in lines:
            if line:
                relay(relayed_event(line, self.slot, self.pid))


    def processEnded(self, reason) -> None:
        self.master.worker_ended(self, reason)
        self.ended.callback(None)


class WorkerMaster(service.Service):
    """Binds, spawns, supervises; serves the aggregated metrics."""

    name = "barricade-master"

    def __init__(self, config: Config, args: list[str], reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.args = args  # the option arguments, passed to every worker
        #: OPTN changes since start, by option: a replacement worker parses them last
        self.changes: dict[str, list[str]] = {}
        self.reactor = reactor
        self.count = config["workers"] or os.cpu_count() or 1
        self.sockets: list[socket.socket] = []
        self.workers: dict[int, _WorkerProcess] = {}
        self.delays: dict[int, float] = {}
        self.stopping = False
        self.metrics_dir = ""
        self.snapshot_dir = ""
        self.metrics_port = None
        self.restarts = 0
        self.control: ControlServer | None = None
        # The master's own series, served with the workers' sums: the workers'
        # files cannot count the workers themselves.
        self.registry = CollectorRegistry()
        self.restart_counter = Counter(
            "barricade_worker_restarts", "Worker processes that ended and were replaced",
            registry=self.registry)
        workers = Gauge("barricade_workers", "Worker processes running", registry=self.registry)
        workers.set_function(lambda: len(self.workers))

    def privilegedStartService(self) -> None:
        log_file_limit()  # the workers inherit the raised limit
        self.sockets = bind_interfaces(self.config)
        # /metrics is bound here too, before any worker starts: a port in use is then one
        # line and no worker at all (bound after them, it was a traceback, and the workers
        # went on serving SMTP without a master).
        self.metrics_socket = None
        if self.config["metrics-interface"]:
            host, port = parse_address(self.config["metrics-interface"], 9025, "metrics-interface")
            self.metrics_socket = bind_or_exit(host, port, self.sockets, "metrics-interface")
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        service.Service.startService(self)
        self._keep_startup_files()
        self.metrics_dir = tempfile.mkdtemp(prefix="barricade-metrics-")
        self._start_control()
        for slot in range(self.count):
            self.spawn(slot)
        if self.metrics_socket is not None:
            multiprocess.MultiProcessCollector(self.registry, path=self.metrics_dir)
            sock, self.metrics_socket = self.metrics_socket, None
            self.metrics_port = self.reactor.adoptStreamPort(sock.fileno(), sock.family,
                                                             metrics_site(metrics_root(self.registry)))
            sock.close()  # the reactor listens on a duplicate of it
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
        log.info("barricade: master {pid} started {n} workers", pid=os.getpid(), n=self.count)

    def _keep_startup_files(self) -> None:
        """What every worker starts from, whenever it starts (``barricade.snapshot``):
        the config file's text as parsed at start, the maps' first copies (as the
        options check loaded them; parsed again only when nothing collected them)."""
        self.snapshot_dir = tempfile.mkdtemp(prefix="barricade-master-")
        os.environ[SNAPSHOT_ENV] = self.snapshot_dir  # the workers' environment is ours
        if self.config.file_text is not None and self.args[:1] == ["--config"]:
            self.args[1] = str(keep_config(Path(self.snapshot_dir), self.config.file_text))
        if keep_collected(Path(self.snapshot_dir)):  # the maps as the options check loaded them
            return
        try:
            load_maps(self.config)  # loaded, each map leaves its copy
        except StartupError as exc:  # changed on disk since the options were checked
            shutil.rmtree(self.snapshot_dir, ignore_errors=True)
            exit_at_startup(str(exc))

    def spawn(self, slot: int) -> None:
        fds = [sock.fileno() for sock in self.sockets]
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        child_fds.update({fd: fd for fd in fds})
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self.metrics_dir,
                   PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        env[SLOT_ENV] = str(slot)  # the control channel (CONTROL_ENV) names it so
        argv = [sys.executable, "-m", "barricade.worker", "--fds", ",".join(map(str, fds)),
                "--slot", str(slot), "--", *self.args, *(c for cs in self.changes.values() for c in cs)]
        proc = _WorkerProcess(self, slot)
        transport = self.reactor.spawnProcess(proc, sys.executable, argv, env=env, childFDs=child_fds)
        proc.pid = transport.pid
        self.workers[slot] = proc
        log.info("barricade: worker {slot} started, pid {pid}", slot=slot, pid=proc.pid)

    def _start_control(self) -> None:
        """The admin commands' control channel; its path reaches the workers by environment."""
        self.control = ControlServer(self.reactor, lambda: [str(slot) for slot in self.workers],
                                     self._admin_answered)
        os.environ[CONTROL_ENV] = self.control.start()

    def _admin_answered(self, request: dict, answers: Answers) -> None:
        """Keep what an OPTN or VERB change changed, so a replacement worker starts with it."""
        if request.get("op") != "set":
            return
        if request.get("verb") == "OPTN" and any("setting" in a for _, a in answers.answered):
            change = request["args"][0]
            # A setting replaces the earlier ones of its option; name+=value adds to them.
            name, sep, _ = change.partition("=")
            if sep and name.endswith("+"):
                self.changes.setdefault(name[:-1].strip().lower(), []).append(change)
            else:
                key = (name if sep else change.lstrip("+-")).strip().lower()
                self.changes[key] = [change]
            try:
                apply_option(self.config, self.config.registry, change)  # e.g. shutdown-timeout
            except (KeyError, PermissionError, OptionError):
                pass
        elif request.get("verb") == "VERB":
            self.control.greeting.append(request)

    def worker_ended(self, proc: _WorkerProcess, reason) -> None:
        pid = proc.pid
        if pid is not None:
            multiprocess.mark_process_dead(pid, self.metrics_dir)
        if self.workers.get(proc.slot) is proc:
            del self.workers[proc.slot]
        if self.stopping:
            return
        status = reason.value.exitCode if isinstance(reason.value, error.ProcessTerminated) else 0
        # A worker that dies right after starting is probably broken: back off.
        lived = time.monotonic() - proc.started
        delay = 0.0 if lived > 10 else min(RESTART_DELAY_MAX, self.delays.get(proc.slot, 0.5) * 2)
        self.delays[proc.slot] = delay
        self.restarts += 1
        self.restart_counter.inc()
        log.warn("barricade: worker {slot} (pid {pid}) ended ({why}); restarting in {d:.1f}s",
                 slot=proc.slot, pid=pid, why=reason.getErrorMessage() or status, d=delay)
        self.reactor.callLater(delay, self._respawn, proc.slot)

    def _respawn(self, slot: int) -> None:
        if not self.stopping and slot not in self.workers:
            self.spawn(slot)

    def signal_workers(self, signum: int) -> None:
        for proc in list(self.workers.values()):
            try:
                proc.transport.signalProcess(signum)
            except (error.ProcessExitedAlready, OSError):
                pass

    def reload(self) -> None:
        log.info("barricade: SIGHUP, reloading every worker")
        self.signal_workers(signal.SIGHUP)

    def stopService(self):
        service.Service.stopService(self)
        self.stopping = True
        ended = [proc.ended for proc in self.workers.values()]
        self.signal_workers(signal.SIGTERM)
        grace = self.config["shutdown-timeout"] + STOP_TIMEOUT
        killer = self.reactor.callLater(grace, self.signal_workers, signal.SIGKILL)
        d = defer.DeferredList(ended)

        def done(_):
            if killer.active():
                killer.cancel()
            if self.control is not None:
                self.control.stop()
            for sock in self.sockets:
                sock.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            shutil.rmtree(self.snapshot_dir, ignore_errors=True)

        d.addBoth(done)
        if self.metrics_port is not None:
            d.addBoth(lambda _: self.metrics_port.stopListening())
        return d
