"""Admin commands over SMTP, from localhost only: parsing and replies (sans-IO).

smtpf answers a handful of operator commands on its SMTP port when the
client is on the loopback network (after a PROXY header or XCLIENT, the
real client counts); from anywhere else they are unknown commands.  This
module parses them into a :class:`Request`, which travels as a plain dict
to every worker when the answer needs all of them (see
``barricade/net/control.py``), and turns the workers' answers (dicts
again) into one catalogue reply.  Doing the work is ``barricade/net/admin.py``.

The commands (``HELP`` lists them to a localhost client):

* ``STAT`` - counters since start, summed over the workers;
* ``CONN`` - every open session of every worker;
* ``KILL <session>`` - close a session (#324, #326; the client gets #325);
* ``CACHE GET|PUT|DELETE <key> [<value>]`` - the shared store's cache entries;
* ``OPTN`` - list the options; ``OPTN +name``, ``-name``, ``name=value`` changes
  one that can change while running (#323 for those that need a restart);
* ``VERB`` - the log levels; ``VERB level``, ``+ns``, ``-ns``, ``ns=level`` change them;
* ``INFO`` - version, process and store.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from barricade.options import Config, OptionError, Registry, mask_password
from barricade.replies import Catalogue, Reply, ReplyId

#: The commands a localhost client may use (HELP lists the SMTP ones too).
ADMIN_VERBS = frozenset(("STAT", "CONN", "KILL", "CACHE", "OPTN", "VERB", "INFO", "HELP"))
#: The commands whose answer needs every worker.
FANOUT = frozenset(("STAT", "CONN", "KILL"))
CACHE_OPS = ("GET", "PUT", "DELETE")
LEVELS = ("debug", "info", "warn", "error", "critical")

MAX_KEY = 200  # a cache key: printable ASCII, no space
MAX_VALUE = 1000  # a cache value or an option value
MAX_VERB_WORDS = 16

USAGE = {
    "STAT": "STAT",
    "CONN": "CONN",
    "KILL": "KILL <session-id>",
    "CACHE": "CACHE GET <key> | CACHE PUT <key> <value> | CACHE DELETE <key>",
    "OPTN": "OPTN | OPTN +name | OPTN -name | OPTN name=value",
    "VERB": "VERB | VERB <level> | VERB +namespace | VERB -namespace | VERB namespace=<level>",
    "INFO": "INFO",
    "HELP": "HELP",
}
HELP_LINES = (
    "STAT: counters since start, summed over the workers",
    "CONN: the open sessions of every worker",
    "KILL <session-id>: close that session",
    "CACHE GET <key> | PUT <key> <value> | DELETE <key>: the shared store's cache",
    "OPTN: list the options (live: may change while running)",
    "OPTN +name | -name | name=value: change a live option in every worker",
    "VERB: the log levels; VERB <level> | +ns | -ns | ns=<level>: change them",
    "INFO: version, processes and store",
)

_SESSION_ID = re.compile(r"^[A-Za-z0-9]{1,40}$")
_KEY = re.compile(r"^[\x21-\x7e]+$")
_VALUE = re.compile(r"^[\x20-\x7e]*$")
_OPTION = re.compile(r"^([+-])?([a-z0-9_][a-z0-9_-]{0,63})(\+?=(.*))?$", re.IGNORECASE | re.DOTALL)
_NAMESPACE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")


class AdminError(ValueError):
    """A malformed admin command; the message is the reply's problem text."""


@dataclass(frozen=True)
class Request:
    """One parsed admin command: ``verb``, an operation (CACHE's GET/PUT/DELETE,
    ``set`` for an OPTN or VERB change, else empty) and its arguments."""

    verb: str
    op: str = ""
    args: tuple[str, ...] = ()

    @property
    def fanout(self) -> bool:
        """Must every worker answer (and not just the one the client reached)?"""
        return self.verb in FANOUT or (self.verb in ("OPTN", "VERB") and self.op == "set")

    def to_dict(self) -> dict[str, Any]:
        return {"verb": self.verb, "op": self.op, "args": list(self.args)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        """A request from the control channel (it was parsed once already; re-checked anyway)."""
        verb, op, args = data.get("verb"), data.get("op", ""), data.get("args", [])
        if (not isinstance(verb, str) or verb not in ADMIN_VERBS or not isinstance(op, str)
                or not isinstance(args, list) or not all(isinstance(a, str) for a in args)):
            raise AdminError("malformed request")
        return cls(verb, op, tuple(args))


def parse(verb: str, argument: str) -> Request:
    """The request in ``VERB argument``; raises :class:`AdminError` with the problem."""
    verb = verb.upper()
    arg = argument.strip()
    words = arg.split()
    if verb not in ADMIN_VERBS:
        raise AdminError("unknown admin command")
    if verb == "HELP":
        return Request("HELP")
    if verb in ("STAT", "CONN", "INFO"):
        if words:
            raise AdminError(f"takes no argument; usage: {USAGE[verb]}")
        return Request(verb)
    if verb == "KILL":
        if len(words) != 1 or not _SESSION_ID.match(words[0]):
            raise AdminError(f"needs one session id (letters and digits); usage: {USAGE[verb]}")
        return Request("KILL", "", (words[0],))
    if verb == "CACHE":
        return _parse_cache(arg)
    if verb == "OPTN":
        if not words:
            return Request("OPTN")
        if len(arg) > MAX_VALUE + 70 or not _VALUE.match(arg):
            raise AdminError("argument too long or not printable ASCII")
        m = _OPTION.match(arg)
        if m is None or (m.group(1) and m.group(3)) or not (m.group(1) or m.group(3)):
            raise AdminError(f"expected +name, -name or name=value; usage: {USAGE[verb]}")
        return Request("OPTN", "set", (arg,))
    # VERB
    if not words:
        return Request("VERB")
    if len(words) > MAX_VERB_WORDS:
        raise AdminError(f"at most {MAX_VERB_WORDS} changes at once")
    for word in words:
        verb_change(word)
    return Request("VERB", "set", tuple(words))


def _parse_cache(arg: str) -> Request:
    op, _, rest = arg.partition(" ")
    op = op.upper()
    if op not in CACHE_OPS:
        raise AdminError(f"expected GET, PUT or DELETE; usage: {USAGE['CACHE']}")
    key, _, value = rest.strip().partition(" ")
    if not key:
        raise AdminError(f"needs a key; usage: {USAGE['CACHE']}")
    if len(key) > MAX_KEY or not _KEY.match(key):
        raise AdminError(f"key longer than {MAX_KEY} characters or not printable ASCII")
    value = value.strip()
    if op == "PUT":
        if not value:
            raise AdminError(f"PUT needs a value; usage: {USAGE['CACHE']}")
        if len(value) > MAX_VALUE or not _VALUE.match(value):
            raise AdminError(f"value longer than {MAX_VALUE} characters or not printable ASCII")
        return Request("CACHE", "PUT", (key, value))
    if value:
        raise AdminError(f"{op} takes one key; usage: {USAGE['CACHE']}")
    return Request("CACHE", op, (key,))


def verb_change(word: str) -> tuple[str, str]:
    """One VERB word as (namespace, level); the namespace "" is the default level.

    ``+ns`` is ``ns=debug``, ``-ns`` is ``ns=warn`` (info lines off); a
    namespace not under ``barricade`` or ``plugins`` is taken as under
    ``barricade`` (``-net.server`` is ``barricade.net.server``).
    """
    low = word.lower()
    if low in LEVELS:
        return "", low
    if word[:1] in "+-":
        ns, level = word[1:], "debug" if word[0] == "+" else "warn"
    else:
        ns, sep, level = word.partition("=")
        level = level.lower()
        if not sep or level not in LEVELS:
            raise AdminError(f"{word[:80]!r}: expected a level ({', '.join(LEVELS)}), +ns, -ns or ns=level")
    if not _NAMESPACE.match(ns):
        raise AdminError(f"{word[:80]!r}: a namespace is a dotted module name")
    if not ns.startswith(("barricade", "plugins")):
        ns = "barricade." + ns
    return ns, level


# --- options ------------------------------------------------------------------------

def option_name(change: str) -> str:
    """The option an OPTN change names (``+name``, ``-name``, ``name=value``, ``name+=value``)."""
    m = _OPTION.match(change)
    if m is None:
        raise AdminError("expected +name, -name or name=value")
    return m.group(2).lower()


def apply_option(config: Config, registry: Registry, change: str) -> str:
    """Apply an OPTN change to ``config`` in place and return the option's new setting.

    Raises :class:`KeyError` (unknown option), :class:`PermissionError`
    (not live: a restart is needed) or :class:`OptionError` (bad value); the
    config is left as it was on any of them.
    """
    name = option_name(change)
    if name not in registry:
        raise KeyError(name)
    opt = registry.get(name)
    if not opt.live:
        raise PermissionError(name)
    values = dict(config)
    registry.apply(values, change)  # raises OptionError before anything changes
    config.update_live(name, values[name])
    return opt.format(values[name])


def option_lines(config: Config, registry: Registry) -> list[list[Any]]:
    """Every option as [setting, live] for OPTN's listing."""
    out = []
    for opt in registry:
        value = config[opt.name] if opt.name in config else opt.default
        setting = opt.format(value)
        if opt.secret and value:
            setting = f"{opt.name}=(set, not shown)"
        else:  # a URL's password (redis://:password@host)
            setting = mask_password(setting)
        out.append([setting, opt.live])
    return out


# --- merging the workers' answers into one reply ---------------------------------

@dataclass
class Answers:
    """What each worker (or the one process) said; None: no answer in time."""

    by_worker: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    timeout: float = 0.0

    @property
    def answered(self) -> list[tuple[str, dict[str, Any]]]:
        return [(w, a) for w, a in sorted(self.by_worker.items()) if a is not None]

    @property
    def silent(self) -> list[str]:
        return sorted(w for w, a in self.by_worker.items() if a is None)

    def silent_lines(self) -> list[str]:
        return [f"worker {w}: no answer within {self.timeout:g}s" for w in self.silent]

    @property
    def several(self) -> bool:
        return len(self.by_worker) > 1

    @classmethod
    def single(cls, result: dict[str, Any]) -> Answers:
        return cls({"0": result})


def render(request: Request, answers: Answers, catalogue: Catalogue, *,
           smtp_commands: str = "") -> tuple[Reply, bool]:
    """The reply to ``request`` given the workers' answers, and whether the
    session closes after it (it does when it killed itself)."""
    def reply(rid: int, **fields: object) -> Reply:
        return catalogue.reply(rid, **fields)

    def unavailable(problem: str) -> tuple[Reply, bool]:
        return reply(ReplyId.ADMIN_UNAVAILABLE, command=request.verb, problem=problem), False

    got = answers.answered
    errors = [a["error"] for _, a in got if "error" in a]
    if not got:
        return unavailable("no worker answered" if answers.by_worker else "the master did not answer")
    verb = request.verb
    if verb == "HELP":
        return catalogue.reply(ReplyId.HELP, commands=smtp_commands + " " + " ".join(sorted(ADMIN_VERBS - {"HELP"})),
                               lines=HELP_LINES), False
    if verb == "KILL":
        sid = request.args[0]
        if any(a.get("killed") for _, a in got):
            return reply(ReplyId.ADMIN_KILLING, session=sid), any(a.get("self") for _, a in got)
        if answers.silent:
            return unavailable(f"session {sid} not found in the workers that answered; "
                               f"no answer from {', '.join(answers.silent)}")
        return reply(ReplyId.ADMIN_NO_SESSION, session=sid), False
    if errors:
        return unavailable(errors[0])
    if verb == "STAT":
        return reply(ReplyId.ADMIN_LISTING, title="statistics",
                     lines=stat_lines(answers) + answers.silent_lines()), False
    if verb == "CONN":
        return reply(ReplyId.ADMIN_LISTING, title="connections",
                     lines=conn_lines(answers) + answers.silent_lines()), False
    first = got[0][1]
    if verb == "CACHE":
        key = request.args[0]
        if first.get("missing"):
            return reply(ReplyId.ADMIN_NOT_FOUND, what=f"key {key}"), False
        if request.op == "GET":
            return reply(ReplyId.ADMIN_LISTING, title=f"CACHE {key}", lines=[first["value"]]), False
        done = "stored" if request.op == "PUT" else "deleted"
        return reply(ReplyId.ADMIN_DONE, text=f"CACHE {key} {done}"), False
    if verb == "OPTN" and request.op == "set":
        problem = first.get("refused")
        if problem == "unknown":
            return reply(ReplyId.ADMIN_NOT_FOUND, what=f"option {first['option']}"), False
        if problem == "restart":
            return reply(ReplyId.ADMIN_RESTART_NEEDED, option=first["option"]), False
        if problem:
            return reply(ReplyId.ADMIN_USAGE, command="OPTN", problem=problem), False
        if answers.silent:
            return unavailable(f"{first['setting']} set in worker(s) {', '.join(w for w, _ in got)}; "
                               f"no answer from {', '.join(answers.silent)}")
        return reply(ReplyId.ADMIN_DONE, text=f"OPTN {first['setting']}" + _in_workers(answers)), False
    if verb == "OPTN":
        lines = [setting + (" (live)" if live else "") for setting, live in first["options"]]
        return reply(ReplyId.ADMIN_LISTING, title="options; (live) ones may change with OPTN",
                     lines=lines), False
    if verb == "VERB":
        levels = [f"{ns or 'default'}={level}" for ns, level in first["levels"]]
        if request.op == "set":
            if answers.silent:
                return unavailable(f"changed in worker(s) {', '.join(w for w, _ in got)}; "
                                   f"no answer from {', '.join(answers.silent)}")
            return reply(ReplyId.ADMIN_DONE, text="VERB " + " ".join(levels) + _in_workers(answers)), False
        return reply(ReplyId.ADMIN_LISTING, title="log levels", lines=levels), False
    # INFO
    return reply(ReplyId.ADMIN_LISTING, title="information", lines=first["lines"]), False


def _in_workers(answers: Answers) -> str:
    return f" in {len(answers.answered)} workers" if answers.several else ""


def stat_lines(answers: Answers) -> list[str]:
    """STAT's listing: the process header, then every counter summed over the workers."""
    got = [a for _, a in answers.answered]
    now = max(a["now"] for a in got)
    start = min(a["start"] for a in got)
    counters: dict[str, float] = {}
    for a in got:
        for name, value in a["counters"].items():
            counters[name] = counters.get(name, 0) + value
    lines = [
        f"start-time={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(start))}",
        f"age={int(now - start)}",
        f"workers={len(got)}",
        f"active-connections={sum(a['active'] for a in got)}",
    ]
    lines += [f"{name}={_number(value)}" for name, value in sorted(counters.items())]
    return lines


def conn_lines(answers: Answers) -> list[str]:
    """CONN's listing: a count, then one line per session (with its worker, when several)."""
    rows = [(w, s) for w, a in answers.answered for s in a["sessions"]]
    lines = [f"sessions={len(rows)}"]
    for worker, s in sorted(rows, key=lambda r: (-r[1]["age"], r[1]["id"])):
        where = f" worker={worker}" if answers.several else ""
        lines.append(f"{s['id']} {s['state']} {s['name']} [{s['ip']}]:{s['port']} age={int(s['age'])}s "
                     f"idle={int(s['idle'])}s octets={s['octets']}{where}")
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def counter_totals(families: Iterable[Any]) -> dict[str, float]:
    """Counter samples of a Prometheus registry's ``collect()`` as STAT names:
    ``barricade_replies_total{id="288",...}`` becomes ``replies{id=288,...}``."""
    out: dict[str, float] = {}
    for family in families:
        if family.type != "counter":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            name = sample.name.removeprefix("barricade_").removesuffix("_total")
            if sample.labels:
                name += "{" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) + "}"
            out[name] = out.get(name, 0) + sample.value
    return out


__all__ = [
    "ADMIN_VERBS", "AdminError", "Answers", "OptionError", "Request", "apply_option", "counter_totals",
    "option_lines", "parse", "render", "verb_change",
]
