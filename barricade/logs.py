"""Log events in and out: decisions, the text and JSON logs, and the workers' log relay.

* :func:`emit_decision` puts a decision record (:mod:`barricade.decision_log`)
  on Twisted's log as a structured event: the text log formats its line once,
  the JSON log writes the record as it is.
* :func:`record` turns any log event into the JSON log's object;
  :func:`text_line` into twistd's classic text line.  :func:`twistd_observer`
  writes either (``log-format``) where twistd would have written its text
  (``--logfile``, stdout; ``--syslog`` keeps twistd's own text observer).
* A worker writes every event as one such JSON object per line on its
  stdout (:func:`worker_observer`); the master turns each line back into a
  structured event with the worker's slot and pid added
  (:func:`relayed_event`), so its own log, text or JSON, has every field.

Cheap on purpose (a line per message at least): the timestamp text is
made once a second, a decision's or a relayed event's text is built
without Twisted's format-string machinery, and a worker sends its lines
to the master in batches, not one write per line.
"""

from __future__ import annotations

import atexit
import json
import re
import sys
import time
from datetime import datetime
from typing import Any

from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
    timeFormatRFC3339,
)
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

from barricade.decision_log import Line, json_line, timestamp
from barricade.per_second import PerSecond

DECISION_NAMESPACE = "barricade.decision"
#: The event key that carries a ready record (decisions, and what workers relay).
RECORD = "barricade_record"
#: The event key of a ready message text (a decision's Line, a relayed event's text).
TEXT = "barricade_line"
_INFO = LogLevel.info
_SCALARS = frozenset((str, int, float, bool))
_LEVELS = {level.name: level for level in LogLevel.iterconstants()}


def emit_decision(rec: dict[str, Any]) -> None:
    """Log one decision record at info level (its text is built only if a text log asks)."""
    globalLogPublisher({
        "log_level": _INFO, "log_namespace": DECISION_NAMESPACE, "log_source": None,
        "log_time": time.time(), "log_format": "{barricade_line}", TEXT: Line(rec), RECORD: rec,
    })


def info_line(logger: Any, text: str, **fields: Any) -> None:
    """Log ``text`` at info level, made by the caller (an f-string): for lines written per
    session, which Twisted's format-string machinery would render at several times the
    cost.  ``fields`` still reach the JSON log."""
    # The event Logger.emit would build, without its check of the level (a sort of
    # every LogLevel, each time).
    logger.observer({**fields, "log_logger": logger, "log_level": _INFO, "log_namespace": logger.namespace,
                     "log_source": logger.source, "log_format": "{barricade_line}",
                     "log_time": time.time(), TEXT: text})


# --- formats ----------------------------------------------------------------------------


def record(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON log's object for a log event: a decision's record, or time, level and text."""
    rec = event.get(RECORD)
    if rec is not None and "time" in rec:  # relayed from a worker: complete already
        return rec
    level = event.get("log_level")
    head = {"time": timestamp(event.get("log_time") or time.time()),
            "level": level.name if level is not None else "info"}
    if rec is not None:
        head.update(rec)
        return head
    msg = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            msg = f"{msg}\n{failure.getTraceback()}"
        except Exception:  # a broken failure must not lose the line
            pass
    head.update(event="log", ns=event.get("log_namespace"), msg=msg)
    sid = event.get("sid")
    if isinstance(sid, str):
        head["sid"] = sid
    head["fields"] = {k: v for k, v in event.items()
                      if type(v) in _SCALARS and not k.startswith("log_") and k != TEXT}
    return head


def format_json(event: dict[str, Any]) -> str:
    return json_line(record(event))


_stamp_text = PerSecond(lambda second: formatTime(second, timeFormatRFC3339))


def _stamp(when: float | None) -> str:
    """twistd's timestamp (RFC 3339, to the second, local time)."""
    return "-" if when is None else _stamp_text(when)


def text_line(event: dict[str, Any]) -> str:
    """twistd's classic line (``time [namespace#level] text``), built directly when the
    event carries its text (a decision, a relayed event)."""
    text = event.get(TEXT)
    if text is None:
        line = formatEventAsClassicLogText(event, formatTime=_stamp)
        # twistd's own formatter has indented the line breaks already
        return safe_text(line[:-1] if line.endswith("\n") else line, breaks=False) if line else ""
    worker = event.get("worker")
    msg = str(text) if worker is None else f"worker {worker} [{event.get('pid')}] {text}"
    level = event.get("log_level")
    line = (f"{_stamp(event.get('log_time'))} [{event.get('log_namespace', '-')}#"
            f"{level.name if level is not None else '-'}] {msg}")
    return safe_text(line)


#: What a text log line must not carry raw: controls (a CR lets a viewer show a forged
#: line over the real one, ESC drives the terminal), the Unicode line and paragraph
#: separators and the bidirectional overrides that reorder what a reader sees.
_UNSAFE_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe_text(line: str, breaks: bool = True) -> str:
    """``line`` for a text log: client text (a file name, a call-back MX's reply, a
    downstream's) is shown escaped, ``\\r`` or ``\\u2028``, and a line break
    continues the line, indented (``breaks``: not done yet)."""
    if not line.isprintable():
        line = _UNSAFE_TEXT.sub(_escape, line)
        if breaks:
            line = line.replace("\n", "\n\t")
    return line + "\n"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# --- observers --------------------------------------------------------------------------


class LineWriter:
    """Writes lines to a file: at once (``delay`` None: a decision's line is in the
    log in the same turn of the event loop as the reply it explains, just after
    it), or collected for ``delay`` seconds (a worker's pipe to the master:
    fewer, fuller reads there).

    Without a running reactor (start-up, shutdown, tests), or from another
    thread, a line is written at once (with what waits before it); what
    waits at exit is written then.
    """

    def __init__(self, out: Any, reactor: Any = None, delay: float | None = None):
        self.out = out
        self.reactor = reactor
        self.delay = delay
        self.pending: list[str] = []
        self.scheduled = False
        atexit.register(self.flush)

    def write(self, line: str) -> None:
        if self.delay is None:
            try:
                self.out.write(line)
                self.out.flush()
            except (OSError, ValueError):  # a closed or full log must not break a session
                pass
            return
        self.pending.append(line)
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        if getattr(reactor, "running", False) and isInIOThread():
            if not self.scheduled:
                self.scheduled = True
                reactor.callLater(self.delay, self.flush)
        else:
            self.flush()

    def flush(self) -> None:
        self.scheduled = False
        if not self.pending:
            return
        data = "".join(self.pending)
        self.pending.clear()
        try:
            self.out.write(data)
            self.out.flush()
        except (OSError, ValueError):  # a closed or full log must not break a session
            pass


@implementer(ILogObserver)
class LineObserver:
    """An observer that writes ``fmt(event)`` through a :class:`LineWriter`."""

    def __init__(self, out: Any, fmt, reactor: Any = None, delay: float | None = None):
        self.writer = LineWriter(out, reactor, delay)
        self.fmt = fmt

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            line = self.fmt(event)
        except Exception as exc:  # an event that cannot be formatted still leaves a trace
            line = f"unable to format log event {event.get('log_format')!r}: {exc!r}\n"
        if line:
            self.writer.write(line)


def json_observer(out=None, reactor: Any = None) -> LineObserver:
    """The JSON log: one object per line to ``out`` (default stdout)."""
    return LineObserver(out if out is not None else sys.stdout, format_json, reactor)


def text_observer(out=None, reactor: Any = None) -> LineObserver:
    """The text log: twistd's classic lines to ``out`` (default stdout)."""
    return LineObserver(out if out is not None else sys.stdout, text_line, reactor)


#: Seconds a worker collects log lines before it writes them to the master.
WORKER_LOG_DELAY = 0.05


def worker_observer(out=None, reactor: Any = None) -> LineObserver:
    """A worker's log: JSON lines on stdout, which the master relays (:func:`relayed_event`).

    Written every :data:`WORKER_LOG_DELAY` seconds, not per line: the
    master then wakes up once for many lines.
    """
    return LineObserver(out if out is not None else sys.stdout, format_json, reactor,
                        WORKER_LOG_DELAY)


@implementer(ILogObserver)
class SyslogJson:
    """``log-format=json`` with twistd's ``--syslog``: each object is one syslog message."""

    PRIORITY = {"debug": 7, "info": 6, "warn": 4, "error": 3, "critical": 2}

    def __init__(self, prefix: str):
        import syslog

        self._syslog = syslog
        syslog.openlog(prefix, syslog.LOG_PID, syslog.LOG_MAIL)

    def __call__(self, event: dict[str, Any]) -> None:
        rec = record(event)
        self._syslog.syslog(self.PRIORITY.get(rec["level"], 6), json_line(rec).rstrip("\n"))


def twistd_observer(log_format: str, twistd_options: Any) -> ILogObserver | None:
    """The observer for ``log-format``, writing where twistd's options send the log.

    None leaves the log to twistd (text to syslog).  The file is chosen
    as twistd chooses it: ``--logfile`` (``-`` is stdout), stdout in the
    foreground, ``twistd.log`` for a daemon; SIGUSR1 rotates it.
    """
    opts = twistd_options if twistd_options is not None else {}

    def get(name: str, default: Any = None) -> Any:
        try:
            return opts[name]
        except (KeyError, TypeError):
            return default

    make = json_observer if log_format == "json" else text_observer
    if get("syslog"):
        return SyslogJson(get("prefix") or "barricade") if log_format == "json" else None
    logfile = get("logfile")
    if logfile == "-" or (not logfile and get("nodaemon", True)):
        return make(sys.stdout)
    import signal

    from twisted.python.logfile import LogFile

    out = LogFile.fromFullPath(logfile or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):  # as twistd does: SIGUSR1 rotates the file
        def rotate(_signum, _frame):
            from twisted.internet import reactor

            reactor.callFromThread(out.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return make(out)


# --- the workers' relay -----------------------------------------------------------------


def relayed_event(line: bytes, slot: int, pid: int | None) -> dict[str, Any]:
    """A worker's log line as the master's structured event (the worker's slot and pid added).

    A line that is not one of the worker's JSON objects (a stray print, a
    crash on stderr) becomes a plain warning with its text.
    """
    try:
        rec = json.loads(line)
        if not isinstance(rec, dict):
            raise ValueError(line)
    except ValueError:
        # Not the worker's log: a traceback on stderr, a start-up failure's reason. A
        # postmaster who watches warnings must see it beside "worker ... ended".
        return {"log_level": LogLevel.warn, "log_namespace": "barricade.worker", "log_source": None,
                "log_time": time.time(), "log_format": "worker {worker} [{pid}] {barricade_line}",
                "worker": slot, "pid": pid, TEXT: line.decode("utf-8", "replace")}
    rec["worker"] = slot
    rec["pid"] = pid
    try:
        when = datetime.fromisoformat(rec["time"]).timestamp()
    except (KeyError, TypeError, ValueError):
        when = time.time()
    text = Line(rec) if rec.get("event") == "decision" else rec.get("msg", "")
    return {"log_level": _LEVELS.get(rec.get("level"), _INFO),
            "log_namespace": rec.get("ns") or DECISION_NAMESPACE, "log_source": None,
            "log_time": when, "log_format": "worker {worker} [{pid}] {barricade_line}",
            "worker": slot, "pid": pid, TEXT: text, RECORD: rec}


def relay(event: dict[str, Any]) -> None:
    """Hand a relayed event to every observer of the master's log."""
    globalLogPublisher(event)
