"""Log events in and out: decisions, the JSON log, and the workers' log relay.

* :func:`emit_decision` puts a decision record (:mod:`barricade.decision_log`)
  on Twisted's log as a structured event: the text log formats its line once,
  the JSON log writes the record as it is.
* :func:`record` turns any log event into the JSON log's object, and
  :func:`json_observer` writes those (``log-format=json``) where twistd would
  have written its text (``--logfile``, stdout, ``--syslog``).
* A worker writes every event as one such JSON object per line on its
  stdout (:func:`worker_observer`); the master turns each line back into a
  structured event with the worker's slot and pid added
  (:func:`relayed_event`), so its own log, text or JSON, has every field.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

from twisted.logger import FileLogObserver, ILogObserver, LogLevel, formatEvent, globalLogPublisher
from zope.interface import implementer

from barricade.decision_log import Line, json_line, timestamp

DECISION_NAMESPACE = "barricade.decision"
#: The event key that carries a ready record (decisions, and what workers relay).
RECORD = "barricade_record"
_INFO = LogLevel.info
_SCALARS = frozenset((str, int, float, bool))


def emit_decision(rec: dict[str, Any]) -> None:
    """Log one decision record at info level (its text is built only if a text log asks)."""
    globalLogPublisher({
        "log_level": _INFO, "log_namespace": DECISION_NAMESPACE, "log_source": None,
        "log_time": time.time(), "log_format": "{barricade_line}",
        "barricade_line": Line(rec), RECORD: rec,
    })


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
                      if type(v) in _SCALARS and not k.startswith("log_")}
    return head


def format_json(event: dict[str, Any]) -> str:
    return json_line(record(event))


def json_observer(out=None) -> FileLogObserver:
    """The JSON log: one object per line to ``out`` (default stdout), flushed per event."""
    return FileLogObserver(out if out is not None else sys.stdout, format_json)


def worker_observer(out=None) -> FileLogObserver:
    """A worker's log: JSON lines on stdout, which the master relays (:func:`relayed_event`)."""
    return json_observer(out)


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


def twistd_json_observer(twistd_options: Any) -> ILogObserver:
    """The JSON observer for where twistd's options send the log (as twistd chooses for text)."""
    opts = twistd_options if twistd_options is not None else {}

    def get(name: str, default: Any = None) -> Any:
        try:
            return opts[name]
        except (KeyError, TypeError):
            return default

    if get("syslog"):
        return SyslogJson(get("prefix") or "barricade")
    logfile = get("logfile")
    if logfile == "-" or (not logfile and get("nodaemon", True)):
        return json_observer(sys.stdout)
    import signal

    from twisted.python.logfile import LogFile

    out = LogFile.fromFullPath(logfile or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):  # as twistd does: SIGUSR1 rotates the file
        def rotate(_signum, _frame):
            from twisted.internet import reactor

            reactor.callFromThread(out.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return json_observer(out)


_LEVELS = {level.name: level for level in LogLevel.iterconstants()}


def relayed_event(line: bytes, slot: int, pid: int | None) -> dict[str, Any]:
    """A worker's log line as the master's structured event (the worker's slot and pid added).

    A line that is not one of the worker's JSON objects (a stray print, a
    crash on stderr) becomes a plain info event with its text.
    """
    try:
        rec = json.loads(line)
        if not isinstance(rec, dict):
            raise ValueError(line)
    except ValueError:
        return {"log_level": _INFO, "log_namespace": "barricade.worker", "log_source": None,
                "log_time": time.time(), "log_format": "worker {worker} [{pid}] {text}",
                "worker": slot, "pid": pid, "text": line.decode("utf-8", "replace")}
    rec["worker"] = slot
    rec["pid"] = pid
    try:
        when = datetime.fromisoformat(rec["time"]).timestamp()
    except (KeyError, TypeError, ValueError):
        when = time.time()
    text = Line(rec) if rec.get("event") == "decision" else rec.get("msg", "")
    return {"log_level": _LEVELS.get(rec.get("level"), _INFO),
            "log_namespace": rec.get("ns") or DECISION_NAMESPACE, "log_source": None,
            "log_time": when, "log_format": "worker {worker} [{pid}] {text}",
            "worker": slot, "pid": pid, "text": text, RECORD: rec}


def relay(event: dict[str, Any]) -> None:
    """Hand a relayed event to every observer of the master's log."""
    globalLogPublisher(event)
