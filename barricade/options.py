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
    raise ValueError("expected +/-, 1/0, yes/no, true/false or on/off")


def _parse_int(text: str) -> int:
    text = text.strip()
    if text in ("+", "-"):  # smtpf lets levels be written as flags
        return 1 if text == "+" else 0
    return int(text, 0)


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

    def parse(self, text: str) -> Any:
        try:
            value = _PARSERS[self.kind](text)
        except ValueError as exc:
            raise OptionError(f"option {self.name}: bad value {text!r}: {exc}") from None
        if self.kind == "int" and self.minimum is not None and value < self.minimum:
            raise OptionError(f"option {self.name}: {value} is below the minimum {self.minimum}")
        if self.choices and value not in self.choices:
            raise OptionError(f"option {self.name}: {text!r} is not one of {', '.join(self.choices)}")
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

    def __init__(self, registry: Registry, values: dict[str, Any]):
        self.registry = registry
        self._values = values

    def __getitem__(self, name: str) -> Any:
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
        return Config(self.registry, values)


class Registry:
    """All options known to this process, in registration order."""

    def __init__(self) -> None:
        self._options: dict[str, Option] = {}

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
    ) -> Option:
        name = name.lower()
        if name in self._options:
            raise OptionError(f"option {name} registered twice")
        if kind is None:
            kind = {bool: "bool", int: "int", list: "list"}.get(type(default), "str")
        if kind not in _PARSERS:
            raise OptionError(f"option {name}: unknown kind {kind}")
        opt = Option(name, default, kind, " ".join(help.split()), section, minimum, tuple(choices))
        self._options[name] = opt
        return opt

    def __iter__(self) -> Iterator[Option]:
        return iter(self._options.values())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._options

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
            value = _unquote(value.strip())
            if append:
                if opt.kind != "list":
                    raise OptionError(f"option {opt.name} is not a list; += needs a list")
                values[opt.name] = list(values[opt.name]) + opt.parse(value)
            else:
                values[opt.name] = opt.parse(value)
        except OptionError as exc:
            raise OptionError(origin + str(exc)) from None

    def parse(self, args: Iterable[str] = (), config_file: str | Path | None = None) -> Config:
        """Defaults, then the file, then ``args``: later wins."""
        values = self.defaults()
        if config_file:
            path = Path(config_file)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise OptionError(f"cannot read config file {path}: {exc.strerror}") from None
            for lineno, line in enumerate(lines, 1):
                stripped = line.strip()
                if stripped and not stripped.startswith("#"):
                    self.apply(values, stripped, f"{path}:{lineno}")
        for arg in args:
            self.apply(values, arg)
        return Config(self, values)

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


def _unquote(value: str) -> str:
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
     /metrics HTTP endpoint. Empty disables it.""", section=S)
_add("reply-file", "", """File of reply text overrides, one 'NNN text' per line,
     where NNN is the reply number shown after '#' in every reply. Fields in
     braces, e.g. {rcpt}, must be ones the original text uses.""", section=S)
_add("workers", 0, """Worker processes sharing the listening sockets; 0 means one
     per CPU, 1 runs everything in one process. The master replaces a worker
     that dies and serves /metrics for all of them.""", section=S, minimum=0)
_add("shutdown-timeout", 30, """Seconds a stopping daemon lets sessions finish the
     transaction they are in before closing them with #909.""", section=S, minimum=0)
_add("save-dir", "/tmp", """Directory for spooled message bodies that outgrow
     memory (when a content scanner needs the whole message).""", section=S)
_add("spool-memory-limit", 1048576, """Octets of a spooled message kept in memory
     before it moves to a temp file in save-dir.""", section=S, minimum=0)
_add("plugins", [], """Plugins to run, by name (shipped: see the plugin sections
     below) or as package.module:Class. Scanners also run when their socket
     option is set, as in smtpf.""", section=S)

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

# --- SMTP protocol ------------------------------------------------------------
S = "smtp"
_add("smtp-command-timeout", 300, """Seconds to wait for a client command, and
     for a downstream reply to any command but the final dot.""", section=S, minimum=1)
_add("smtp-connect-timeout", 60, """Seconds to wait for a downstream
     connection and its 220 greeting.""", section=S, minimum=1)
_add("smtp-data-line-timeout", 180, """Seconds to wait for more message data
     from the client inside DATA.""", section=S, minimum=1)
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
     pipelines without it is refused (#631) and dropped.""", section=S)
_add("rfc1652-8bitmime", False, """Advertise 8BITMIME and pass BODY=8BITMIME
     downstream; every forward host must support it.""", section=S)
_add("smtp-xclient-enable", True, """Accept Postfix's XCLIENT
     (ADDR, NAME, HELO, PROTO) from localhost and route-map RELAY clients;
     the session then restarts as if that client had connected.""", section=S)
_add("rfc2821-command-length", False, """Refuse command lines longer than 512
     octets (#640). Lines over 4096 octets always close the session.""", section=S)
_add("rfc2821-line-length", 0, """Message lines over 1000 octets: 0 pass them,
     1 reject the message (#321), 2 reject and drop the connection.""",
     section=S, minimum=0)
_add("rfc2821-strict-dot", False, """Refuse a message that contains a bare CR
     or LF (#921). Either way only CRLF.CRLF ends DATA, and bare CR/LF are
     forwarded as CRLF, so no message can be split in two downstream.""", section=S)
_add("rfc2821-angle-brackets", True, """MAIL and RCPT addresses must be in
     angle brackets.""", section=S)
_add("rfc2821-extra-spaces", False, """Refuse a space between FROM:/TO: and
     the address (#280/#285).""", section=S)
_add("rfc2821-local-length", False, "Refuse local parts longer than 64 octets.", section=S)
_add("rfc2821-domain-length", False, "Refuse domains longer than 255 octets.", section=S)
_add("smtp-delay-checks", False, """Hold policy refusals (flagged DELAY: access-map
     REJECT and TEMPFAIL, not IREJECT) from connect, HELO and MAIL until RCPT, where a
     white-listed recipient overrides them; MAIL then gets #507.""", section=S)
_add("smtp-drop-after", 5, """Close the connection after this many 4xx/5xx
     replies in one session (#922). 0 disables.""", section=S, minimum=0)
_add("smtp-drop-unknown", False, """Close the connection after an unknown
     command.""", section=S)
_add("smtp-helo-schizo", 1, """HELO/EHLO repeated with a different argument:
     0 allow, 1 reject (#252), 2 reject and drop (#255).""", section=S, minimum=0)
_add("relay-reply", False, """Relay the downstream RCPT/dot error text to the
     client (#299). Off: keep the downstream code and enhanced status with our
     own text (#300, #306, #307).""", section=S)
_add("tls-server-cert", "", """PEM certificate for STARTTLS; STARTTLS is offered
     only when it and tls-server-key are set.""", section=S)
_add("tls-server-key", "", "PEM private key for STARTTLS.", section=S)

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
# Rate, concurrency and message limits (smtpf.md 2.I; the access-map tags are in README "Limits").
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
     without a Message-ID are not tracked) when the client may not have seen our
     250 for it: it sent no further command before the session ended. A retry
     of that message is then answered 250 and not delivered a second time (it
     was delivered the first time). 0 disables duplicate tracking.""",
     section=S, minimum=0)
_add("dupmsg-track-all", False, """Remember every delivered message for dupmsg-ttl and
     reject a copy (same body, Message-ID, sender and first recipient) arriving
     again (550 5.3.4, #340); localhost, RELAY and white-listed clients are not
     tracked. Grows the shared store on busy systems.""", section=S)

# --- shared state -----------------------------------------------------------------
S = "state"
_add("redis-url", "", """Where rate, concurrency and (later) grey-list state
     lives: redis://host:port/db, rediss://... (TLS) or unix:///path?db=N.
     Empty: in this process's memory, which is right for workers=1 only; with
     several workers or gateways, point them all at one Redis.""", section=S)
_add("redis-prefix", "barricade:", """Prefix of every Redis key, so that two
     deployments can share one Redis. No braces.""", section=S)
_add("redis-timeout", 1, """Seconds one Redis operation may take in all
     (connection, retry, answer) before it counts as a store failure.""",
     section=S, minimum=1)
_add("state-failure", ["tempfail"], """What a check does when the store fails (Redis
     down or slow): tempfail or skip, for all families of checks, or per family
     as family:policy, e.g. 'skip, rate:tempfail' (a bare word sets the default
     for the families not named). Families: grey, rate, concurrent, msg-limit,
     null-rate, dupmsg. tempfail answers 421 4.3.0 (#549, the connection
     closes) at connect and 451 4.3.0 (#550) later; skip lets the client through
     that check. Either way a line is logged and barricade_state_failures_total
     counts it.""", section=S)
del S
