"""The option registry and smtpf's option syntax.

One registry holds every option (name, default, type, help, section); the
core registers its options here and plugins add theirs with
:meth:`Registry.add`.  Values come from a config file and then from
command-line arguments, both in smtpf's syntax::

    name=value     set
    +name / -name  boolean on / off (``name=1`` / ``name=0``)
    name+=value    append to a list

Unlike smtpf, an unknown option or a bad value is an error that names the
option: a typo in ``barricade.cf`` must stop start-up, not silently run
with the default.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class OptionError(ValueError):
    """A bad option name or value; the message is one line for the operator."""


_LIST_SPLIT = re.compile(r"[,;\s]+")
_TRUE = {"1", "+", "yes", "true", "on"}
_FALSE = {"0", "-", "no", "false", "off", ""}


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("is not +/-, 1/0, yes/no, true/false or on/off")


#: The largest number an option takes: 68 years in seconds, 24 days in milliseconds,
#: 2 GiB in octets.  Beyond it a number is a typing slip, and one too large for a float
#: (400 digits, set live with OPTN) failed every session that used it afterwards.
MAX_INT = 2**31 - 1


def _parse_int(text: str) -> int:
    text = text.strip()
    if text in ("+", "-"):  # smtpf lets levels be written as flags
        return 1 if text == "+" else 0
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError("is not a number") from None
    if abs(value) > MAX_INT:
        raise ValueError(f"is larger than {MAX_INT}")
    return value


def config_line(line: str) -> list[str]:
    """The settings on one line of a config file.

    As in smtpf, ``#`` starts a comment at the start of a line or after
    white space outside quotes (``dns-bl=zen.example # our list`` sets one
    list, not four), and a line may hold several flags (``+a -b``).  A value
    with white space or ``#`` in it is quoted, as ``help`` writes it.
    """
    quote = ""
    cut = len(line)
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            cut = i
            break
    text = line[:cut].strip()
    if not text:
        return []
    words = text.split()
    if len(words) > 1 and all(w[:1] in "+-" and "=" not in w for w in words):
        return words
    return [text]


def _parse_list(text: str) -> list[str]:
    return [item for item in _LIST_SPLIT.split(text.strip()) if item]


_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": _parse_bool,
    "int": _parse_int,
    "str": lambda t: t,
    "list": _parse_list,
}


@dataclass(frozen=True)
class Option:
    """One option's declaration."""

    name: str
    default: Any
    kind: str
    help: str
    section: str
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    #: May change while running (the admin command OPTN): the code reads it from the
    #: config at each use, or the session settings are rebuilt after a change.
    live: bool = False
    #: Never shown while running (OPTN's listing): a password.
    secret: bool = False
    #: The largest value of an int option (a level: 2 for 0, 1, 2).
    maximum: int | None = None

    def parse(self, text: str) -> Any:
        try:
            value = _PARSERS[self.kind](text)
        except ValueError as exc:
            # one line an operator reads: "option x: 'lots' is not a number"
            shown = text.strip()
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise OptionError(f"option {self.name}: {shown!r} {exc}") from None
        if self.kind == "int" and self.minimum is not None and value < self.minimum:
            raise OptionError(f"option {self.name}: {value} is below the minimum {self.minimum}")
        if self.kind == "int" and self.maximum is not None and value > self.maximum:
            raise OptionError(f"option {self.name}: {value} is above the maximum {self.maximum}")
        if self.choices:  # any case, as smtpf compares them; kept as declared
            known = {choice.lower(): choice for choice in self.choices}
            if self.kind == "list":
                bad = [item for item in value if item.lower() not in known]
                if bad:
                    raise OptionError(f"option {self.name}: {', '.join(bad)} not among {', '.join(self.choices)}")
                return [known[item.lower()] for item in value]
            if value.lower() not in known:
                raise OptionError(f"option {self.name}: {text!r} is not one of {', '.join(self.choices)}")
            return known[value.lower()]
        return value

    def format(self, value: Any) -> str:
        """The config-file line that sets ``value``."""
        if self.kind == "bool":
            return ("+" if value else "-") + self.name
        if self.kind == "list":
            text = "; ".join(value)
        else:
            text = str(value)
        if text and (" " in text or "#" in text or text[0] in "\"'") and self.kind != "list":
            text = f'"{text}"'  # the parser strips exactly one outer pair
        return f"{self.name}={text}"


class Config(Mapping[str, Any]):
    """Resolved option values: ``config["smtp-command-timeout"]``."""

    def __init__(self, registry: Registry, values: dict[str, Any], file_text: str | None = None):
        self.registry = registry
        self._values = values
        #: the config file's text as parsed (None: no file); a master's workers get it
        self.file_text = file_text

    def __getitem__(self, name: str) -> Any:
        try:  # names are kept lower-case, and nearly always asked for so
            return self._values[name]
        except KeyError:
            return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def replace(self, **changes: Any) -> Config:
        """A copy with values changed (keyword names use ``_`` for ``-``)."""
        values = dict(self._values)
        for key, value in changes.items():
            name = key.replace("_", "-")
            if name not in values:
                raise OptionError(f"unknown option {name!r}")
            values[name] = value
        return Config(self.registry, values, self.file_text)

    def update_live(self, name: str, value: Any) -> None:
        """Change a live option in place (OPTN): every holder of this config sees it."""
        if not self.registry.get(name).live:
            raise OptionError(f"option {name} cannot change while running")
        self._values[name.lower()] = value


class Registry:
    """All options known to this process, in registration order."""

    def __init__(self) -> None:
        self._options: dict[str, Option] = {}

    def copy(self) -> Registry:
        """A registry of its own with the same options: what is added to it (a plugin
        tested in process) stays out of this one."""
        other = Registry()
        other._options = dict(self._options)
        return other

    def add(
        self,
        name: str,
        default: Any,
        help: str,
        *,
        section: str = "general",
        kind: str | None = None,
        minimum: int | None = None,
        choices: Iterable[str] = (),
        live: bool = False,
        maximum: int | None = None,
    ) -> Option:
        name = name.lower()
        if name in self._options:
            raise OptionError(f"option {name} registered twice")
        if kind is None:
            kind = {bool: "bool", int: "int", list: "list"}.get(type(default), "str")
        if kind not in _PARSERS:
            raise OptionError(f"option {name}: unknown kind {kind}")
        opt = Option(name, default, kind, " ".join(help.split()), section, minimum, tuple(choices), live,
                     maximum=maximum)
        self._options[name] = opt
        return opt

    def __iter__(self) -> Iterator[Option]:
        return iter(self._options.values())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._options

    def set_live(self, *names: str) -> None:
        """Mark options as changeable while running (see :attr:`Option.live`)."""
        for name in names:
            opt = self.get(name)
            self._options[opt.name] = Option(**{**opt.__dict__, "live": True})

    def set_secret(self, *names: str) -> None:
        """Mark options whose value is a password (see :attr:`Option.secret`)."""
        for name in names:
            opt = self.get(name)
            self._options[opt.name] = Option(**{**opt.__dict__, "secret": True})

    def get(self, name: str) -> Option:
        try:
            return self._options[name.lower()]
        except KeyError:
            raise OptionError(f"unknown option {name!r}") from None

    def defaults(self) -> dict[str, Any]:
        return {o.name: (list(o.default) if o.kind == "list" else o.default) for o in self}

    def apply(self, values: dict[str, Any], arg: str, where: str = "") -> None:
        """Apply one smtpf-syntax assignment to ``values``."""
        text = arg.strip()
        origin = f"{where}: " if where else ""
        try:
            if text[:1] in "+-" and "=" not in text:
                opt = self.get(text[1:])
                if opt.kind == "bool":
                    values[opt.name] = text[0] == "+"
                elif opt.kind == "int":
                    values[opt.name] = opt.parse(text[0])
                else:
                    raise OptionError(f"option {opt.name} is not a flag; write {opt.name}=value")
                return
            name, sep, value = text.partition("=")
            if not sep:
                raise OptionError(f"expected name=value, +name or -name, got {text!r}")
            append = name.endswith("+")
            opt = self.get(name.rstrip("+").strip())
            value = unquote(value.strip())
            if append:
                if opt.kind != "list":
                    raise OptionError(f"option {opt.name} is not a list; += needs a list")
                values[opt.name] = list(values[opt.name]) + opt.parse(value)
            else:
                values[opt.name] = opt.parse(value)
        except OptionError as exc:
            raise OptionError(origin + str(exc)) from None

    def parse(self, args: Iterable[str] = (), config_file: str | Path | None = None) -> Config:
        """Defaults, then the file, then ``args``: later wins.

        Every bad line of the file is reported, one per line of the error, so a
        file brought over from smtpf is mended in one go, not one start-up a line.
        """
        values = self.defaults()
        text = None
        if config_file:
            path = Path(config_file)
            try:
                text = path.read_text(encoding="utf-8-sig")  # an editor's BOM is no option name
            except OSError as exc:
                raise OptionError(f"cannot read config file {path}: {exc.strerror}") from None
            except UnicodeDecodeError as exc:
                raise OptionError(f"config file {path} is not UTF-8: {exc}") from None
            problems = []
            for lineno, line in enumerate(text.splitlines(), 1):
                for setting in config_line(line):
                    try:
                        self.apply(values, setting, f"{path}:{lineno}")
                    except OptionError as exc:
                        problems.append(str(exc))
            if problems:
                raise OptionError("\n".join(problems))
        for arg in args:
            self.apply(values, arg)
        return Config(self, values, text)

    def render(self, config: Mapping[str, Any] | None = None) -> str:
        """A complete commented config file, smtpf ``-help`` style."""
        values = dict(config) if config is not None else self.defaults()
        out = [
            "# Barricade configuration: every option, with its help.",
            "# Syntax: name=value, +flag, -flag, name+=value (append to a list).",
            "# Command-line arguments after the subcommand override this file.",
        ]
        section = None
        for opt in self:
            if opt.section != section:
                section = opt.section
                out += ["", "#" * 72, f"# {section}", "#" * 72]
            out.append("")
            out += ["# " + line for line in textwrap.wrap(opt.help, 70)]
            current = values.get(opt.name, opt.default)
            if current != opt.default:
                out.append("# default: " + opt.format(opt.default))
            out.append(opt.format(current))
        return "\n".join(out) + "\n"


#: The registry's sections under the README's headings, in the README's order
#: (docs/options.md follows it; a plugin's section goes under the scanners).
README_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Running it for real and configuration", ("server",)),
    ("Route map and access map", ("maps",)),
    ("Shared state", ("state",)),
    ("Client, HELO, sender and recipient tests", ("envelope",)),
    ("Grey-listing and cached results", ("grey", "cache")),
    ("Call-back sender verification", ("call-back",)),
    ("Limits", ("limits",)),
    ("Protocol", ("smtp",)),
    ("Content scanners and plugins", ("plugin",)),
    ("DNS", ("dns",)),
    ("SPF", ("spf",)),
)


def render_markdown(registry: Registry) -> str:
    """``docs/options.md``: every option with its default and help, grouped as
    the README groups them (``scripts/regen`` writes it; a test keeps it current)."""
    def group_of(section: str) -> str:
        key = "plugin" if section.startswith("plugin") else section
        for title, sections in README_GROUPS:
            if key in sections:
                return title
        return "Other"

    groups: dict[str, list[Option]] = {title: [] for title, _ in README_GROUPS}
    for opt in registry:
        groups.setdefault(group_of(opt.section), []).append(opt)
    out = [
        "# Option reference",
        "",
        "Every option Barricade knows, with its default, grouped as the README groups them.",
        "Set them in the config file or after the subcommand in smtpf's syntax: `name=value`,",
        "`+name` / `-name` for a flag, `name+=value` to append to a list. A number is decimal,",
        "or hexadecimal after `0x`, and at most 2147483647.",
        "[`conf/barricade.cf`](../conf/barricade.cf) is the same list as a config file;",
        "[docs/smtpf.md](smtpf.md) says which smtpf options Barricade has.",
        "Generated by `scripts/regen` from the option registry; do not edit by hand.",
    ]
    for title, options in groups.items():
        if not options:
            continue
        out += ["", f"## {title}", "", "| option | default | meaning |", "|---|---|---|"]
        for opt in options:
            default = opt.format(opt.default).replace("|", "\\|")
            text = opt.help.replace("|", "\\|") + (" *Live: the admin command OPTN may change it.*" if opt.live else "")
            out.append(f"| `{opt.name}` | `{default}` | {text} |")
    return "\n".join(out) + "\n"


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]+@")


def mask_password(text: str) -> str:
    """``redis://user:secret@host`` → ``redis://user:***@host``, wherever in ``text``:
    for anything shown (OPTN's listing, a start-up error) that may hold a URL."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


REGISTRY = Registry()
_add = REGISTRY.add

# --- server -----------------------------------------------------------------
S = "server"
_add("interfaces", ["[::0]:25", "0.0.0.0:25"], """Semicolon-separated list of
     host or IP[:port] to listen on; IPv6 as [addr]:port. An IPv6 wildcard
     listens for IPv6 only, so list 0.0.0.0:25 as well.""", section=S)
_add("interface-name", "", """Host name used in the banner, in our Received:
     header and in the EHLO we send downstream. Empty: the system's FQDN.""", section=S)
_add("metrics-interface", "127.0.0.1:9025", """host:port of the Prometheus
     /metrics HTTP endpoint. Empty disables it. At most 16 connections are
     served at once; an idle one is closed after 30 seconds.""", section=S)
_add("reply-file", "", """File of reply text overrides, one 'NNN text' per line,
     where NNN is the reply number shown after '#' in every reply (written
     without the '#': a line starting with '#' is a comment). Fields in
     braces, e.g. {rcpt}, must be ones the original text uses, written
     plainly; the text is printable ASCII. A reply line longer than 512
     octets (RFC 5321) is cut, ending in '...'.""", section=S)
_add("workers", 0, """Worker processes sharing the listening sockets; 0 means one
     per CPU, 1 runs everything in one process. The master replaces a worker
     that dies and serves /metrics for all of them.""", section=S, minimum=0)
_add("descriptor-reserve", 64, """File descriptors each process keeps spare
     beyond its sessions (Redis, DNS, scanners, logs, up to 16 /metrics
     connections, the socket of a refusal). The soft file limit is raised to the hard one at start-up
     (both are logged); a session is admitted only while it and every
     other session can still open their downstream connection (2
     descriptors each) with this reserve left. A single process answers a
     connection it cannot serve with 421 4.3.2 (#941); a full worker
     among several stops accepting, so the others take the connection.
     Metrics: barricade_descriptors_in_use, barricade_session_capacity,
     barricade_connections_refused_total.""", section=S, minimum=0)
_add("client-max-sessions", 20, """Sessions one client IP address may hold at
     once in each process; more get 421 4.3.2 (#943). The default is
     Postfix's default per-destination concurrency (20), so a normal
     sending MTA never meets it, while one address cannot take every
     session a process has room for. Localhost and route-map RELAY clients
     are exempt (a front-end MTA speaks for many). 0 disables.""",
     section=S, minimum=0)
_add("shutdown-timeout", 30, """Seconds a stopping daemon lets sessions finish the
     transaction they are in before closing them with #909.""", section=S, minimum=0)
_add("save-dir", "/tmp", """Directory for spooled message bodies that outgrow
     memory (when a content scanner needs the whole message), and for the
     copies the access map's SAVE word keeps.""", section=S)
_add("trap-dir", "/tmp", """Directory where the access map's TRAP word keeps the
     messages it blocks, one file <queue id>.msg each (TRAP:"/dir" names
     another). SAVE copies go to save-dir (SAVE:"/dir"). The default, as in
     smtpf, is /tmp: point both at a persistent directory to keep them.""",
     section=S)
_add("spool-memory-limit", 1048576, """Octets of a spooled message kept in memory
     before it moves to a temp file in save-dir.""", section=S, minimum=0)
_add("plugins", [], """Plugins to run, by name (shipped: see the plugin sections
     below) or as package.module:Class. Scanners also run when their socket
     option is set, as in smtpf.""", section=S)
_add("log-format", "text", """How the log is written: text (twistd's lines; a
     decision reads like Postfix's, "session S: QID: reject: RCPT from
     name[ip]: 550 ...; from=<a> to=<b> ... check=c delay=0.002") or json
     (one JSON object per line, the fields listed in docs/running.md). Either
     way it goes where twistd's --logfile or --syslog sends it.""", section=S,
     choices=("text", "json"))

# --- maps -------------------------------------------------------------------
S = "maps"
_add("route-map", "/etc/barricade/route-map", """Route map (smtpf format, text
     source): 'route:<domain|address|ip> FORWARD: host[:port], ...; RCPT: host;
     RELAY'. route:local is required. Reloaded on SIGHUP and when it
     changes.""", section=S)
_add("access-map", "", """Access map (smtpf format, text source): tags such as
     Connect:, From:, To: with OK, REJECT, ... Empty: no access map. Read and
     checked for syntax at start-up; reloaded on SIGHUP and when it changes (a
     bad line is logged with its number and the previous map stays).""", section=S)
_add("rfc2821-literal-plus", False, """Treat '+' in a local part literally. When
     off, the access map also tries an address without its +detail
     (From:user@dom for user+detail@dom) and its local-part key is user@.""",
     section=S)
_add("call-ahead-as-sender", False, """Call-ahead (route-map RCPT: hosts) with
     the client's sender instead of MAIL FROM:<>.""", section=S)
_add("call-ahead-command-timeout", 45, """Seconds a call-ahead (and a call-back)
     waits for the connection and for each reply; keep it below
     smtp-command-timeout. No answer: the recipient is accepted and forwarded
     (not cached).""", section=S, minimum=1)

# --- SMTP protocol ------------------------------------------------------------
S = "smtp"
_add("smtp-command-timeout", 300, """Seconds to wait for a client command, and
     for a downstream reply to any command but the final dot. A command must
     be complete within this time of its first byte: input that arrives bit
     by bit does not restart the clock (#905).""", section=S, minimum=1)
_add("smtp-connect-timeout", 60, """Seconds to wait for a downstream
     connection and its 220 greeting.""", section=S, minimum=1)
_add("downstream-pool-size", 32, """Idle downstream connections kept per
     destination, by each worker process, after a client session ends, for the next session to reuse
     (no connect, greeting or EHLO), as Postfix's SMTP connection cache.
     Set it to about the number of client sessions that reach this
     destination at once: below that, a busy gateway keeps closing
     connections it opens again a moment later; above it costs nothing, as
     only connections that were in use are kept, each at most
     downstream-pool-idle seconds (mind a downstream's limit of connections
     per client, Postfix's smtpd_client_connection_count_limit: the workers'
     pools add up). 0: every session opens its own and QUITs
     it. A connection that told the downstream who its client was
     (forward-xclient) is never kept.""", section=S, minimum=0)
_add("downstream-pool-idle", 5, """Seconds an idle downstream connection is
     kept for reuse before it is closed with QUIT; keep it below the
     downstream's own idle timeout.""", section=S, minimum=1)
_add("smtp-data-line-timeout", 180, """Seconds to wait for the next line of
     message data inside DATA; only a complete line restarts the clock, so
     a trickle of bytes without line ends times out (#905).""", section=S, minimum=1)
_add("smtp-session-timeout", 3600, """Seconds one client session may last in all,
     whatever it does, so that a client feeding a line just often enough
     cannot hold a connection for ever (#940). The default leaves an hour
     for a cached connection delivering many messages or a large message
     on a slow link; a command in flight gets its reply first. 0
     disables.""", section=S, minimum=0)
_add("smtp-dot-timeout", 600, """Seconds to wait for the downstream reply to
     the final dot.""", section=S, minimum=1)
_add("smtp-welcome-file", "", """File whose lines form the 220 banner after the
     host name; empty gives the one-line built-in banner.""", section=S)
_add("smtp-greet-pause", 0, """Milliseconds to wait before the 220 banner; a
     client that talks first is an early talker and gets reply #420. 0
     disables.""", section=S, minimum=0)
_add("smtp-enable-esmtp", True, """Allow EHLO. When off, only RELAY and
     private-network clients may use EHLO; others get #253 and must use
     HELO.""", section=S)
_add("rfc2920-pipelining", True, """Advertise PIPELINING. A client that
     pipelines without it is refused (#631; #643 after a plain HELO) and
     dropped.""", section=S)
_add("rfc1652-8bitmime", 2, """8BITMIME: 2 advertise it (and pass BODY=8BITMIME
     on) when every route's downstream offers it in its EHLO; 1 (+rfc1652-8bitmime)
     always, the operator vouching for the downstreams; 0 (-rfc1652-8bitmime)
     never.""", section=S, minimum=0, maximum=2)
_add("rfc3030-chunking", True, """Offer CHUNKING (RFC 3030 BDAT). Chunks go
     through the same checks as DATA and are relayed as BDAT to a downstream
     that offers CHUNKING, else as DATA, dot-stuffed; BINARYMIME is not offered.""", section=S)
_add("forward-capabilities-ttl", 600, """Seconds a downstream's EHLO reply is
     believed. Each route's downstream is asked (EHLO, then QUIT) at start-up and
     when its answer is older than this; every relay connection refreshes it too.
     What we advertise follows: SIZE the smallest of message-size-limit and theirs,
     8BITMIME (see rfc1652-8bitmime), DSN and ETRN only when they offer them. A
     downstream not reached yet offers nothing.""", section=S, minimum=1)
_add("forward-tls", "may", """STARTTLS to the downstream, unless a route-map
     entry says otherwise with TLS: (same words): none never; may when offered,
     plaintext if it fails; encrypt (or require) STARTTLS or no relay through
     that host; verify as encrypt, with the certificate checked against
     forward-tls-ca-file and the host name (TLS: verify:name for an address).""",
     section=S, choices=("none", "may", "encrypt", "require", "verify"))
_add("forward-tls-ca-file", "", """PEM file of the CAs that forward-tls=verify
     (or TLS: verify) trusts; empty: the system's trust store.""", section=S)
_add("forward-xclient", False, """Tell the downstream who the client is with
     Postfix's XCLIENT (NAME, ADDR, PORT, PROTO, HELO, as far as it offers them)
     right after our EHLO, so it logs the client and applies its own restrictions
     to it. Postfix must list us in smtpd_authorized_xclient_hosts.""", section=S)
_add("forward-xforward", False, """Tell the downstream who the client is with
     Postfix's XFORWARD (NAME, ADDR, PORT, PROTO, HELO, SOURCE, IDENT = our queue
     id, as far as it offers them) before each MAIL, for its logs and queue
     files. Postfix must list us in smtpd_authorized_xforward_hosts.""", section=S)
_add("proxy-protocol-hosts", [], """Load balancers (addresses or prefixes, e.g.
     10.1.0.0/16; ::1) whose connections begin with a HAProxy PROXY protocol
     header (v1 or v2), read before the banner; the client is then the one the
     header names. A connection from a listed host without a valid header is
     dropped; from anyone else a PROXY line is an unknown command.""", section=S)
_add("smtp-xclient-enable", True, """Accept Postfix's XCLIENT
     (ADDR, NAME, HELO, PROTO) from localhost and route-map RELAY clients;
     the session then restarts as if that client had connected. An ADDR that is
     no address, or an IPv6 address with a zone (fe80::1%eth0), is refused
     (#917).""", section=S)
_add("rfc2821-command-length", False, """Refuse command lines longer than 512
     octets (#640). Lines over 4096 octets always close the session.""", section=S)
_add("rfc2821-line-length", 0, """Message lines over 1000 octets: 0 pass them,
     1 reject the message (#321), 2 reject and drop the connection.""",
     section=S, minimum=0, maximum=2)
_add("rfc2821-strict-dot", False, """Refuse a message that contains a bare CR
     or LF (#921). Either way only CRLF.CRLF ends DATA, and bare CR/LF are
     forwarded as CRLF, so no message can be split in two downstream.""", section=S)
_add("rfc2821-angle-brackets", True, """MAIL and RCPT addresses must be in
     angle brackets.""", section=S)
_add("rfc2821-extra-spaces", False, """Refuse a space between FROM:/TO: and
     the address (#280/#285).""", section=S)
_add("rfc2821-local-length", False, "Refuse local parts longer than 64 octets.", section=S)
_add("rfc2821-domain-length", False, "Refuse domains longer than 255 octets.", section=S)
_add("smtp-auth-enable", False, """Offer AUTH PLAIN and LOGIN in the EHLO and
     proxy the authentication (LOGIN converted to PLAIN) to the RCPT: host, else the
     FORWARD: host, of route:<domain of the user name>, else of the local route. That
     connection then carries the session's mail (RSET included); an authenticated
     session may relay and skips the tests route-map RELAY clients skip (README,
     "SMTP AUTH").""", section=S)
_add("smtp-auth-tls", True, """Offer and accept AUTH only after STARTTLS (#983
     before it), except from localhost. Turn off only where the clients' links are
     trusted: PLAIN and LOGIN send the password in clear.""", section=S)
_add("smtp-auth-white", False, """An authenticated session is white-listed (as an
     access-map OK): content filters (spamd, URI lists ...) are skipped too;
     anti-virus and protocol limits still apply.""", section=S)
_add("auth-delay-checks", False, """With smtp-auth-enable: run the connect and HELO
     checks at the first MAIL instead, and not at all once the client has
     authenticated, so that a roaming user whose address is black-listed can
     authenticate first. The access map's Tls-Connect: is not put off: it is a
     protocol rule, for an authenticated client too.""", section=S)
_add("smtp-auth-max-failures", 5, """Failed AUTH attempts (the downstream said 535)
     a client address may make within smtp-auth-failure-window seconds, counted in
     the shared store (all workers and gateways on one Redis); the attempt that
     reaches it, and any AUTH after it, get #986 and the connection is closed. 0
     disables the guard.""", section=S, minimum=0)
_add("smtp-auth-failure-window", 900, """Seconds of the smtp-auth-max-failures
     window; it starts at a client's first failure.""", section=S, minimum=1)
_add("smtp-delay-checks", False, """Hold policy refusals (flagged DELAY: access-map
     REJECT and TEMPFAIL, not IREJECT) from connect, HELO and MAIL until RCPT, where a
     white-listed recipient overrides them; MAIL then gets #507.""", section=S)
_add("smtp-drop-after", 5, """Close the connection after this many 4xx/5xx
     replies in one session (#922). 0 disables.""", section=S, minimum=0)
_add("smtp-drop-unknown", False, """Close the connection after an unknown
     command.""", section=S)
_add("smtp-helo-schizo", 1, """HELO/EHLO repeated with a different argument:
     0 allow, 1 reject, 2 reject and drop (as smtpf: #255 when the first
     was HELO, #252 when it was EHLO).""", section=S, minimum=0)
_add("relay-reply", False, """Relay the downstream RCPT/dot error text to the
     client (#299). Off: keep the downstream code and enhanced status with our
     own text (#300, #306, #307).""", section=S)
_add("tls-server-cert", "", """PEM certificate for STARTTLS, optionally followed by
     the intermediate CA certificates to send with it; STARTTLS is offered only
     when it and tls-server-key are set.""", section=S)
_add("tls-server-key", "", """PEM private key for STARTTLS (encrypted: see
     tls-server-key-pass).""", section=S)
_add("tls-server-key-pass", "", """Password of an encrypted tls-server-key (keep
     the file that holds it unreadable to others).""", section=S)
_add("tls-server-dh", "", """PEM Diffie-Hellman parameters (openssl dhparam) for
     the DHE ciphers of TLS 1.2; empty: those ciphers are not used (ECDHE and
     TLS 1.3 need none).""", section=S)
_add("tls-cert-chain-file", "", """PEM file of the CA certificates that client
     certificates must chain to. With it or tls-cert-dir set, STARTTLS asks every
     client for a certificate (none, or a bad one, still gets TLS) and the access
     map's Tls-Connect:/Tls-From:/Tls-To: VERIFY can be met; empty and no
     tls-cert-dir: no certificate is asked for and VERIFY always refuses.""", section=S)
_add("tls-cert-dir", "", """Directory of CA certificates for client certificates,
     hashed with openssl rehash (or c_rehash): each CA as <subject hash>.0; used
     with or instead of tls-cert-chain-file.""", section=S)
_add("tls-handshake-timeout", 30, """Seconds the TLS handshake after STARTTLS may
     take. A client that sends nothing, plaintext or a slow ClientHello is
     disconnected at once when it runs out (no reply can reach it
     mid-handshake). 0 disables (smtp-command-timeout still applies).""",
     section=S, minimum=0)

# --- client, HELO, MAIL and RCPT tests (barricade.policy.client/helo/mail/rcpt) ----
S = "envelope"
_add("rfc2606-special-domains", True, """Refuse reserved names: .test, .example,
     .invalid, .localhost, .localdomain, example.<tld>, and .local and .lan
     (except in HELO), as the client's PTR name (#121, dropped), HELO (#427,
     dropped), sender (#128) or recipient (#140) domain. LAN, localhost and
     RELAY clients, white-listed sessions and names with an access-map entry
     are exempt.""", section=S)
_add("reject-unknown-tld", True, """Refuse a client PTR name (#122, dropped),
     sender (#129) or recipient (#141) domain whose top-level domain is not in
     IANA's list (the ICANN section of the Public Suffix List from the
     publicsuffixlist package: pip install -U publicsuffixlist refreshes it;
     see tld-level-one-file). Address
     literals and <postmaster@...> are exempt, and the same clients and
     access-map entries as for rfc2606-special-domains.""", section=S)
_add("tld-level-one-file", "", """File of white-space separated top-level
     domains (without a leading dot; # starts a comment) that replaces the
     publicsuffixlist package's list for reject-unknown-tld. Read at start-up.""", section=S)
_add("rfc2821-strict-helo", True, """The HELO/EHLO argument must be a FQDN (a
     dot, not only at the end) or an address literal such as [192.0.2.1]; a
     bare IP or a single label is refused (#428) and the client dropped.""",
     section=S)
_add("helo-claims-us", True, """Drop a client (#430) that says HELO with a
     domain of the route map (a route:<domain> FORWARD: entry), our
     interface-name, or the address of one of our interfaces, unless its own
     PTR name is in a route-map domain. LAN, localhost and RELAY clients are
     exempt.""", section=S)
_add("reject-percent-relay", True, """Refuse a recipient with a '%' (#131):
     the user%other@our.domain routing hack, for every client.""", section=S)
_add("reject-uucp-route", True, """Refuse a recipient with a '!' (#132), a
     UUCP path; Barricade does nothing special with them.""", section=S)
_add("reject-quoted-at-sign", True, """Refuse a recipient whose quoted local
     part contains '@' (#133), e.g. <"user@other"@our.domain>.""", section=S)
_add("one-rcpt-per-null", True, """A null sender (MAIL FROM:<>, a DSN or MDN)
     may have only one recipient; more are refused (#441).""", section=S)
# ... the ones that need DNS (barricade.policy.client/helo/mail, ip_in_ptr, mx)
_add("client-ptr-required", False, """The client's address must have a PTR
     record: without one the client gets 554 5.7.1 (#416) and is dropped; when
     the PTR lookup fails (timeout, SERVFAIL) 421 4.4.3 (#415). A PTR that does
     not resolve back passes. localhost, LAN, RELAY and white-listed clients are
     exempt. See client-is-mx.""", section=S)
_add("client-ip-in-ptr", False, """Refuse (#418, 550 5.7.1, dropped) a client
     whose PTR name looks built from its IPv4 address (dynamic address space,
     e.g. adsl-198-51-100-7.example or c6336407.pool.example), by smtpf's
     pattern heuristic. Exempt and softened as for client-ptr-required.""", section=S)
_add("client-is-mx", False, """Soften client-ptr-required, client-ip-in-ptr and
     helo-is-ptr: instead of at connect (HELO), test them at MAIL (RCPT for
     helo-is-ptr), and let the client through when it is an MX of the sender's
     domain (for MAIL FROM:<>, of its HELO domain) or passes the sender's
     SPF.""", section=S)
_add("helo-ip-mismatch", False, """Drop a client (#424) whose HELO is an IP
     address ([192.0.2.1], a bare IP, or a number as C reads it) other than its
     own. HELO addresses in LAN space or 0.0.0.0/8 are allowed; LAN, localhost
     and RELAY clients are exempt.""", section=S)
_add("helo-is-ptr", False, """Drop a client (#432) whose HELO is its own PTR name
     when that name looks built from its address (see client-ip-in-ptr). See
     client-is-mx.""", section=S)
_add("mail-require-mx", True, """The sender's domain must be able to take a
     bounce: a domain that does not exist or has neither MX nor address is
     refused (#434, 553 5.1.8), as is one whose exchangers are all unusable
     (#439: a null MX, hosts without address or only loopback, LAN or reserved
     ones); a failed lookup is 451 4.4.3 (#436). Not for MAIL FROM:<>, route-map
     domains, address literals, or localhost, LAN, RELAY and white-listed
     clients.""", section=S)

# --- limits -------------------------------------------------------------------
S = "limits"
_add("message-size-limit", 52428800, """Largest message in octets, advertised
     with SIZE and enforced at MAIL and at the dot (#912). 0 disables.""",
     section=S, minimum=0)
_add("message-rcpt-limit", 100, """Most recipients in one transaction (#910,
     452 4.5.3).""", section=S, minimum=1)
_add("message-hop-limit", 25, """A message with more Received: headers than
     this is a mail loop (#911, 554 5.4.6).""", section=S, minimum=1)
_add("check-timeout", 30, """Seconds a single policy check or plugin hook may
     take before it counts as failed (#907).""", section=S, minimum=1)
_add("plugin-threads", 4, """Threads (per worker process) of the pool in which plugins
     run blocking work (Plugin.blocking); further calls wait for a free thread.""",
     section=S, minimum=1)
_add("event-loop-stall", 500, """Milliseconds a check or plugin hook may keep the event
     loop busy in one step (between two awaits) before it is logged with its name,
     hook and session: blocking code there stalls every session of the worker.
     0: never logged.""", section=S, minimum=0)
# Rate, concurrency and message limits (the access-map tags are in README "Limits").
_add("rate-throttle", 20, """Connections per second, all clients together, at which
     accepting pauses for one second (counted per worker process; metric
     barricade_limit_hits_total{limit="rate-throttle"}). 0 disables.""", section=S, minimum=0)
_add("rate-drop", True, """A client over its Rate-Connect: limit gets 421 (#522) and is
     dropped. When off, the connection stays open in the sink state: NOOP and
     QUIT are answered, any other command gets #251 and the connection
     closes.""", section=S)
_add("rate-421-delay", 15, """Seconds to wait before the Rate-Connect: 421, to deter
     clients that reconnect at once ("woodpeckers"). The wait does not hold up
     other sessions; it is capped below smtp-command-timeout.""", section=S, minimum=0)
_add("concurrent-drop", True, """As rate-drop, for a client over its Concurrent-Connect:
     limit (#329).""", section=S)
_add("concurrent-421-delay", 15, """As rate-421-delay, before the Concurrent-Connect:
     421.""", section=S, minimum=0)
_add("msg-limit-report", "tempfail", """What a Msg-Limit-Connect:/-From:/-To: hit does:
     tempfail (451 4.7.1, #475), tempfail-report (the same, and a report to
     report-to the first time the limit is exceeded in its window),
     report-only (the recipient is accepted; report once) or report-discard
     (the recipient is accepted, the message is discarded at the dot and
     never delivered; report once).""", section=S,
     choices=("tempfail", "tempfail-report", "report-only", "report-discard"))
_add("report-to", ["postmaster"], """Recipients of limit reports: addresses, or
     'postmaster@' for the postmaster of the sender's domain. An address without
     a domain goes to route:local. Reports are sent from <> through the route
     map.""", section=S)
_add("dupmsg-ttl", 90000, """Seconds a delivered message is remembered (by the MD5 of
     its body, its Message-ID and its sender, with its first recipient; messages
     without a Message-ID are not tracked) when the client provably never saw
     our 250 for it: it left while the final dot was downstream, and the
     downstream then accepted the message. A retry of that message is answered
     250 and not delivered a second time (it was delivered the first time). A
     client that read our 250 is never answered so: closing without QUIT
     proves nothing, and a copy sent again is delivered again. 0 disables
     duplicate tracking.""",
     section=S, minimum=0)
_add("dupmsg-track-all", False, """Remember every delivered message for dupmsg-ttl and
     reject a copy (same body, Message-ID, sender and first recipient) arriving
     again (550 5.3.4, #340); localhost, RELAY and white-listed clients are not
     tracked. Grows the shared store on busy systems.""", section=S)

# --- shared state -----------------------------------------------------------------
S = "state"
_add("redis-url", "", """Where grey-list, rate, concurrency and message-limit
     state lives: redis://host:port/db, rediss://... (TLS), unix:///path?db=N,
     redis+sentinel://host:26379[,host:port...]/master-name[/db] (the master
     Sentinel names, followed through fail-overs) or
     redis+cluster://host:port[,host:port...] (a Redis Cluster; the hosts are
     seeds). TLS options are query parameters (?ssl_ca_certs=/path/ca.pem).
     Empty: in this process's memory, which is right for workers=1 only; with
     several workers or gateways, point them all at one Redis.""", section=S)
_add("redis-prefix", "barricade:", """Prefix of every Redis key, so that two
     deployments can share one Redis. No braces.""", section=S)
_add("redis-timeout", 1, """Seconds one Redis operation may take in all
     (connection, retry, answer) before it counts as a store failure.""",
     section=S, minimum=1)
_add("redis-grey-known-ttl", 60, """Seconds a worker remembers a grey-list
     tuple Redis reported passed, and lets it through again without asking
     Redis (one round trip less for mail from known correspondents). Redis
     extends the record's cache-accept-ttl only when a worker asks, at the
     tuple's first use after the worker's memory of it ends, so the record may
     expire up to this much sooner than cache-accept-ttl after the tuple's
     last use. A reject record or deletion made in Redis by hand reaches a
     worker that remembers the tuple up to this much later, and while Redis
     is unreachable a remembered tuple still passes. 0 asks Redis every time.
     Without redis-url the state is in the process already and nothing is
     remembered twice.""", section=S, minimum=0)
_add("state-failure", ["tempfail"], """What a check does when the store fails (Redis
     down or slow): tempfail or skip, for all families of checks, or per family
     as family:policy, e.g. 'skip, rate:tempfail' (a bare word sets the default
     for the families not named). Families: grey, rate, concurrent, msg-limit,
     null-rate, dupmsg. tempfail answers 421 4.3.0 (#944, the connection
     closes) at connect and 451 4.3.0 (#945) later, before the message body
     (rate and concurrent at connect, msg-limit and null-rate at RCPT, grey
     at DATA), naming the family; skip lets the client through that check.
     dupmsg skips unless named (dupmsg:tempfail answers #960): it only saves a
     duplicate and must not cost every message of an outage. Either way a line is logged and barricade_state_failures_total
     counts it.""", section=S)

# --- grey-listing (barricade/policy/grey.py) ----------------------------------------------
S = "grey"
_add("grey-key", ["ptr", "mail", "rcpt"], """What makes up the grey-list tuple,
     a list of: ip; ptr (the client's PTR name minus its first label, or the
     IP when it has none); ptrn (the PTR with each run of digits before its
     domain turned into #); helo; helos (the HELO argument minus its first
     label); mail and rcpt (local-part@domain, +detail removed). p0f is
     accepted and adds nothing. The tuple is built in that order, whatever
     the order here. Empty disables grey-listing. With rcpt, each recipient
     has its tuple and the first one that passes lets the message through.
     With ip, ptr or ptrn a first pass also white-lists the host for
     cache-accept-ttl, and a temp-failed client is disconnected.""",
     section=S, choices=("ip", "ptr", "ptrn", "p0f", "helo", "helos", "mail", "rcpt"))
_add("grey-temp-fail-period", 600, """Seconds a new tuple is temp-failed at
     DATA (421 4.7.0, #552, and the connection is closed) before a retry passes. Access-map Grey-Connect:
     (client) replaces it, then the smallest Grey-To: of the recipients wins;
     0 exempts.""", section=S, minimum=0)
_add("grey-temp-fail-ttl", 90000, """Seconds a tuple that has not passed yet is
     remembered: a retry later than this starts over.""", section=S, minimum=1)
_add("grey-report-header", "X-Grey-Report", """Header added to a message that
     passes grey-listing for the first time: age=seconds (hh:mm:ss), the key
     and when the tuple was first seen. Empty adds none.""", section=S)
_add("grey-content", False, """Content grey-listing (smtpf compiles it out by
     default): the tuple's period starts with a message, and after it only a
     retry of that message (the MD5 of its decoded text, white space and HTML
     <!...> constructs left out) passes; another one gets 450 4.4.5 (#553)
     and is remembered as the last message, which passes too when it comes
     back. Decided at the final dot: a refused message has been sent, but its
     dot never goes downstream.""",
     section=S)
del S

# --- cached results -----------------------------------------------------------------
S = "cache"
_add("cache-accept-ttl", 604800, """Seconds a positive cached result is kept,
     extended each time it is used: a grey-list pass and the host short-cut a
     first pass writes, call-ahead accepts. With Redis a grey-list pass is
     extended when a worker asks about it (see redis-grey-known-ttl).""",
     section=S, minimum=1)
_add("cache-reject-ttl", 604800, """Seconds a negative cached result is kept
     (call-ahead rejects, call-back rejects).""", section=S, minimum=1)
_add("cache-temp-fail-ttl", 7200, """Seconds a temporary result is kept
     (call-back temp-fails: the sender's MX answered 4xx).""", section=S, minimum=1)

# --- DNS and DNS lists (barricade/dns.py, barricade/policy/dnsbl.py) --------------
S = "dns"
_add("dns-servers", [], """Name servers to ask, as ip[:port] (IPv6 as [addr]:port),
     in order. Empty: the nameserver lines of /etc/resolv.conf. Every check and
     the client PTR lookup use them; answers are cached for their TTL. Host
     names this configuration gives (route-map FORWARD: hosts, scanner sockets
     such as clamd-socket=av.lan:3310) are the system's to resolve, /etc/hosts
     included, as for any other daemon of the host.""", section=S)
_add("dns-max-timeout", 45, """Seconds one DNS lookup may take in all (smtpf's
     per-query maximum). A lookup that runs out is a temporary failure: the
     client name stays unknown and a DNS list that does not answer is
     skipped.""", section=S, minimum=1)
_add("dns-round-robin", False, """Spread queries over the dns-servers instead of
     asking the first one first (the others are asked when it fails).""",
     section=S)
_add("dns-cache-size", 10000, """Most answers (positive and negative) kept in each
     process's DNS cache; 0 disables the cache.""", section=S, minimum=0)
_add("dns-bl", [], """IP DNS black lists checked at connect, in order, e.g.
     zen.spamhaus.org. A listed client gets 550 5.7.0 '... black listed by
     <list>' (#525) and is dropped; with +smtp-delay-checks the refusal waits
     for RCPT. Aggregate lists: suffix/mask ANDs the low 24 bits of the
     127.x.y.z answer with mask; without /mask, suffix/0x00FFFFFE (any answer
     but 127.0.0.0 and 127.0.0.1). localhost, route-map RELAY and white-listed
     clients are not looked up; a list that times out is skipped.""", section=S)
_add("dns-wl", [], """IP DNS white lists (suffix[/mask], as dns-bl), checked at
     connect after the access map: a listed client skips every remaining test
     except anti-virus, like Connect: OK.""", section=S)
_add("dns-gl", [], """IP DNS 'grey' (partial white) lists (suffix[/mask]): a
     listed client skips the tests before DATA, the content filters still run,
     like Connect: CONTENT.""", section=S)
_add("dns-bl-headers", [], """Message headers (e.g. Received; X-Originating-IP)
     whose IP addresses are checked against dns-bl at the end of the headers;
     a listed one rejects the message with 550 5.7.0 'IP [x] in header black
     listed by <list>' (#873). Nothing is added to the message. LAN and
     loopback addresses and clients exempt from dns-bl are not checked; at
     most 20 distinct addresses per message.""", section=S)

# --- call-back sender verification (barricade/policy/callback.py) ---
S = "call-back"
_add("call-back", False, """At DATA, before the 354, ask the sender's MX whether
     the sender exists: HELO interface-name, MAIL FROM:<postmaster@interface-name>,
     RCPT TO:<sender>, then a made-up address of the same domain to find MXes
     that accept everything. A 5xx refuses the message (550 5.7.0 #572), a 4xx
     temp-fails it (451 4.7.0 #572); MX trouble has its own replies (#488
     #489 #491 #493 #498 #499). Results are cached as sav:<sender> (and
     sav:<domain> for accept-all MXes) for cache-accept-ttl,
     cache-temp-fail-ttl or cache-reject-ttl. localhost, LAN, RELAY and
     white-listed clients, CONTENT, the null sender and postmaster@ are not
     verified. Large mail services dislike call-backs and may black-list
     hosts that make many: use with care.""", section=S)
_add("call-back-pass-grey", False, """A sender the call-back verified skips
     grey-listing (discouraged: spammers use real senders too). A sender of
     an MX that accepts everything is not verified and is grey-listed.""",
     section=S)
_add("call-back-strict-greeting", False, """The first word of the MX's 220
     greeting must be a FQDN or an address literal (RFC 5321 4.2), else the
     call-back fails with 550 5.7.0 #572.""", section=S)
_add("call-back-uri-greeting", False, """Look the host name the MX greets with
     (the first word of its 220) up in the URI black lists uri-bl and
     domain-bl; a listed one fails the call-back with 550 5.7.0 #572.""",
     section=S)
_add("call-back-timeout", 60, """Seconds a whole call-back may take: the MX
     lookup and every MX tried, each step also bounded by
     call-ahead-command-timeout. Past it the MX counts as not answering: 451
     4.4.4 #488, not cached. Clients wait 2 minutes for the reply to DATA
     (RFC 5321 4.5.3.2).""", section=S, minimum=1)
_add("call-back-port", 25, """TCP port of the sender's MX hosts. Other than 25
     only for tests, or to verify through a proxy that forwards to port 25.""",
     section=S, minimum=1)
_add("call-back-allow-networks", [], """Networks (CIDR, e.g. 10.0.0.0/8) an MX
     address may be in and still be called. As in smtpf, MX addresses that
     are loopback, LAN, link-local or reserved (documentation, benchmarking,
     multicast ...) are left out, and a domain left with none gets 550 5.4.4
     #493; list internal networks here when internal senders' MX have private
     addresses (split-horizon DNS).""", section=S)
del S

# --- SPF (barricade/spf.py, barricade/policy/spf.py) ---------------
S = "spf"
_SPF_WORDS = ("softfail-reject", "softfail-tag", "fail-reject", "fail-tag")
_add("spf-helo-policy", [], """Check the HELO/EHLO name with SPF (RFC 7208, as
     postmaster@helo) and act on a comma list of softfail-reject, softfail-tag,
     fail-reject, fail-tag. A reject refuses every recipient with 550 5.7.1 'HELO
     ... SPF result Fail; ...' (#701); a tag (it wins over reject) delivers with
     the Subject tagged (spamd-subject-tag) and X-Spam-Flag/X-Spam-Reason added.
     A HELO that passes lets a null sender through without the MAIL check. Empty:
     the HELO is not checked.""", section=S, choices=_SPF_WORDS)
_add("spf-mail-policy", ["fail-reject"], """Check the MAIL FROM domain with SPF (the
     null sender: postmaster@helo) and act on a comma list of softfail-reject,
     softfail-tag, fail-reject, fail-tag: 550 5.7.1 'sender <...> via helo (...)
     SPF result Fail; ...' (#702), or a tagged Subject. Computed at MAIL, enforced
     at RCPT, after the access map's recipient entries (a white-listed recipient
     still gets the mail). None, Neutral and PermError pass. Localhost, route-map
     RELAY and white-listed clients are not checked. Empty: MAIL FROM is checked
     only when an access-map SPF-PASS, POLICY-PASS or POLICY-OK entry needs
     it.""", section=S, choices=_SPF_WORDS)
_add("spf-best-guess-txt", "", """When a domain's own SPF result is not Pass,
     evaluate this record for it too (e.g. v=spf1 a/24 mx/24 ptr) and use Pass if
     it gives one; otherwise keep the original result. Empty: no best guess.""",
     section=S)
_add("spf-received-spf-headers", True, """Add a Received-SPF header (RFC 7208 9.1)
     for each identity checked (helo, mailfrom) to delivered messages.""", section=S)
_add("spf-temp-error-dns", True, """A DNS failure (timeout, SERVFAIL) while
     evaluating SPF gives TempError, as RFC 7208 says; a policy with a -reject
     word then temp-fails the recipient with 451 4.4.3 (#701/#702). Off: such
     failures are skipped and evaluation goes on (a broken include does not
     match, a domain whose record cannot be fetched is Neutral), so TempError
     never happens.""", section=S)
del S, _SPF_WORDS

#: The options OPTN may change while running: each is read from the config where it
#: is used, or goes into the session settings the admin code rebuilds after a change
#: (barricade/net/admin.py).  Any other option is built into something at start-up
#: (maps, store, checks, listeners) and needs a restart (#323).
REGISTRY.set_live(
    "smtp-session-timeout", "smtp-greet-pause", "tls-handshake-timeout", "smtp-data-line-timeout",
    "smtp-delay-checks", "relay-reply", "forward-xclient", "forward-xforward", "message-size-limit",
    "smtp-enable-esmtp", "rfc2920-pipelining", "rfc1652-8bitmime", "smtp-xclient-enable",
    "rfc2821-command-length", "rfc2821-line-length", "rfc2821-strict-dot", "rfc2821-angle-brackets",
    "rfc2821-extra-spaces", "rfc2821-local-length", "rfc2821-domain-length", "smtp-drop-after",
    "smtp-drop-unknown", "smtp-helo-schizo", "rfc3030-chunking", "shutdown-timeout",
)

#: Options whose value is a password: OPTN lists them without it.
REGISTRY.set_secret("tls-server-key-pass")
