"""DNS test kit: a real nsd serving the zones in ``tests/zones``, and a silent server.

:class:`Nsd` starts nsd in the foreground on a free loopback port with one
zone per ``tests/zones/<zone>.zone`` file (add a file to add a zone; every
file is checked with ``nsd-checkzone`` first, so a typo fails loudly
instead of turning into SERVFAIL).  ``servfail.test`` is configured without
a zone file: nsd answers SERVFAIL for every name under it, which is how the
tests get a temporary failure for one domain while everything else
answers (``0.65.100.in-addr.arpa`` likewise for the PTRs of 100.65.0.x).  nsd is stopped by its pid.

:class:`Blackhole` is a bound UDP socket and a listening TCP socket that
never answer: a name server that times out.  (nsd cannot time out one zone
and answer the others, and a stub resolver does not follow a delegation to
a dead server, so timeouts are tested by pointing ``dns-servers`` here.)

What the zones hold (the address plan is in ``100.51.198.in-addr.arpa.zone``):
client PTRs that are confirmed, forged, missing, multiple or failing;
127.0.0.x and 2001:db8:: reverse names; sender domains with MX, without,
implicit, null, pointing at loopback or LAN addresses; SPF records (pass,
fail, softfail, include chains, redirect, errors); IP lists ``bl.test``,
``wl.test``, ``gl.test`` (127.0.0.x answers with bit masks, TXT reasons)
a domain list ``dbl.test`` (also DBL style: 127.0.1.x answers, a wildcard);
for the content plugins the URI list ``surbl.test`` (SURBL style), the hosts
URIs name (``web.test``, ``badns.test``), a name-server list ``nsbl.test``
and the MD5 list ``hash.test``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from barricade.testing import free_port, stop, wait_started

ZONES = Path(__file__).resolve().parent / "zones"
#: Zones declared without a file: nsd answers SERVFAIL for them (100.65.0.x:
#: client PTR lookups that fail).
SERVFAIL_ZONES = ("servfail.test", "0.65.100.in-addr.arpa")


def zone_names(zones: Path = ZONES) -> list[str]:
    return sorted(p.name[: -len(".zone")] for p in zones.glob("*.zone"))


class Nsd:
    """nsd on 127.0.0.1:``port`` (UDP and TCP) with the test zones."""

    def __init__(self, tmp: Path | None = None, zones: Path = ZONES, port: int | None = None):
        if shutil.which("nsd") is None and not Path("/usr/sbin/nsd").exists():
            raise RuntimeError("nsd not installed (apt-get install nsd)")
        self.port = port or free_port()
        self.dir = Path(tmp or tempfile.mkdtemp(prefix=f"barricade-nsd-{self.port}-"))
        self.zones = zones
        self.names = zone_names(zones)
        self._check_zones()
        self.conf = self.dir / "nsd.conf"
        self.log = self.dir / "nsd.log"
        self.conf.write_text(self._config())
        nsd = shutil.which("nsd") or "/usr/sbin/nsd"
        self.proc = subprocess.Popen([nsd, "-d", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_started(self.proc, self.ready, what="nsd"):
            raise RuntimeError(f"nsd failed: {self.proc.stderr.read().decode()} {self.log_text()}")

    def _check_zones(self) -> None:
        check = shutil.which("nsd-checkzone") or "/usr/sbin/nsd-checkzone"
        for name in self.names:
            out = subprocess.run([check, name, str(self.zones / f"{name}.zone")],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                raise RuntimeError(f"zone {name}: {out.stdout}{out.stderr}")

    def _config(self) -> str:
        d = self.dir
        lines = [
            "server:",
            "    ip-address: 127.0.0.1",
            f"    port: {self.port}",
            '    username: ""',
            '    chroot: ""',
            f'    zonesdir: "{self.zones}"',
            '    database: ""',
            f'    zonelistfile: "{d}/zone.list"',
            f'    xfrdfile: "{d}/xfrd.state"',
            f'    xfrdir: "{d}"',
            f'    pidfile: "{d}/nsd.pid"',
            f'    logfile: "{self.log}"',
            "    server-count: 1",
            "    verbosity: 1",
            # nsd rate-limits answers (200 qps) by default: tests ask faster than that
            "    rrl-ratelimit: 0",
            "    rrl-whitelist-ratelimit: 0",
            "remote-control:",
            "    control-enable: no",
        ]
        for name in self.names:
            lines += ["zone:", f'    name: "{name}"', f'    zonefile: "{name}.zone"']
        for name in SERVFAIL_ZONES:
            lines += ["zone:", f'    name: "{name}"', f'    zonefile: "{d}/{name}.absent"']
        return "\n".join(lines) + "\n"

    def ready(self) -> bool:
        query = dns.message.make_query("clients.test", "SOA")
        try:
            answer = dns.query.udp(query, "127.0.0.1", timeout=0.5, port=self.port)
        except (dns.exception.DNSException, OSError):
            return False
        return bool(answer.answer)

    @property
    def server(self) -> str:
        """The ``dns-servers`` value that points at this nsd."""
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        stop(self.proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Blackhole:
    """A DNS server that never answers: UDP bound but never read, TCP accepted but never read."""

    def __init__(self) -> None:
        self.port = free_port()  # free for TCP and UDP alike
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()
