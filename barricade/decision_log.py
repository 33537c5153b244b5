"""The decision log: one record per decision that ends a recipient or a message.

A postmaster greps the log for the session id a bounce quotes (every reply
ends with ``#<reply id> <session id>``) and finds one line that says what
was decided, for whom, by which check and how fast, in the manner of
Postfix's ``smtpd``/``cleanup`` lines::

    session 1MGx3a: NOQUEUE: reject: RCPT from mx.example.net[192.0.2.7]: 550 5.7.1 ... #288;
        from=<a@example.org> to=<b@example.com> proto=ESMTP helo=<mx.example.net> check=route delay=0.001

(one line in the log).  :func:`decision` builds the record once: a dict
with the fixed keys of :data:`FIELDS`, which the JSON log writes as it is
(``log-format=json``) and :func:`text` renders as that line.  The builder
takes the envelope and the reply only, by name: nothing of a command's
other arguments, the checks' notes or an AUTH exchange has a way in, so
no secret can reach the log through it.  Sans-IO: no Twisted here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from barricade.replies import Reply, ReplyId

#: Where in the session a decision was taken (``stage`` in the record).
STAGES = ("connect", "helo", "mail", "rcpt", "data", "dot", "protocol")
#: What was decided (``action``): the client's fate for that recipient or message.
ACTIONS = ("accept", "reject", "tempfail", "discard", "drop")
#: The record's keys, in order; every record has all of them (None when unknown).
FIELDS = ("event", "sid", "qid", "action", "stage", "client_ip", "client_name", "helo", "proto",
          "sender", "rcpts", "nrcpt", "size", "reply_id", "code", "status", "reply", "check",
          "delay", "downstream")

#: Replies no check gives: the part of the proxy that decided, for the ``check`` field.
DECIDED_BY = {
    ReplyId.RELAYING_DENIED: "route",
    ReplyId.RECIPIENT_UNKNOWN: "call-ahead",
    ReplyId.NO_VALID_RECIPIENTS: "protocol",
    ReplyId.LOST_DOWNSTREAM: "downstream",
    ReplyId.LOST_DURING_DATA: "downstream",
    ReplyId.DOWNSTREAM_TIMEOUT: "downstream",
    ReplyId.NO_DESCRIPTORS_DOWNSTREAM: "downstream",
    ReplyId.ROUTE_UNAVAILABLE: "downstream",
    ReplyId.NO_FORWARDER: "downstream",
    ReplyId.RECIPIENT_REFUSED_DOWNSTREAM: "downstream",
    ReplyId.SENDER_REFUSED_DOWNSTREAM: "downstream",
    ReplyId.DOWNSTREAM_REPLY: "downstream",
    ReplyId.MESSAGE_ACCEPTED: "downstream",
    ReplyId.RECIPIENT_ACCEPTED: "downstream",
    ReplyId.RECIPIENT_ACCEPTED_DISCARD: "downstream",
}

#: The conductor's fates of a message that the downstreams' answers to the dot decided.
DOWNSTREAM_FATES = {"accept": "downstream", "downstream-fail": "downstream"}


class _Client(Protocol):
    ip: str
    name: str


class Envelope(Protocol):
    """What the builder reads of a session (the checks' Context has it)."""

    session_id: str
    client: _Client
    helo: str
    esmtp: bool
    tls: bool
    sender: str | None
    rcpts: list[str]
    qid: str


_FROM_ENV = object()


def action_of(reply: Reply | None, drop: bool = False, message: str = "") -> str:
    """The decision a reply stands for: ``message`` is the conductor's fate of a message."""
    if drop:
        return "drop"
    if message == "discard":
        return "discard"
    if reply is None or reply.code < 400:
        return "accept"
    return "tempfail" if reply.code < 500 else "reject"


def decision(stage: str, env: Envelope, reply: Reply | None, *, drop: bool = False,
             message: str = "", check: str = "", rcpts: list[str] | tuple[str, ...] = (),
             size: int | None = None, delay: float = 0.0, qid: str | None = None,
             downstream: str | None = None, sender: object = _FROM_ENV) -> dict[str, Any]:
    """The record of one decision (see the module docstring for what may go in).

    ``qid`` and ``sender`` default to the session's current ones.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown decision stage {stage!r}")
    client = env.client
    rid = reply.id if reply is not None else None
    proto = ("ESMTP" if env.esmtp else "SMTP") + ("S" if env.tls else "")
    return {
        "event": "decision",
        "sid": env.session_id,
        "qid": (env.qid if qid is None else qid) or None,
        "action": action_of(reply, drop, message),
        "stage": stage,
        "client_ip": client.ip,
        "client_name": client.name,
        "helo": env.helo or None,
        "proto": proto if env.helo else None,
        "sender": env.sender if sender is _FROM_ENV else sender,
        "rcpts": list(rcpts),
        "nrcpt": len(rcpts),
        "size": size,
        "reply_id": rid,
        "code": reply.code if reply is not None else None,
        "status": (reply.status or None) if reply is not None else None,
        "reply": reply.lines[0] if reply is not None and reply.lines else None,
        "check": check or DECIDED_BY.get(rid) or DOWNSTREAM_FATES.get(message),
        "delay": round(delay, 4),
        "downstream": downstream,
    }


@dataclass(frozen=True)
class _Unserved:
    """The envelope of a connection refused before its session began: only who it was."""

    session_id: str
    client: _Client
    helo: str = ""
    esmtp: bool = False
    tls: bool = False
    sender: str | None = None
    rcpts: tuple[str, ...] = ()
    qid: str = ""


def refused_connection(sid: str, client: _Client, reply: Reply, check: str) -> dict[str, Any]:
    """The record of a connection refused at admission (busy, too many from one
    client): a connect decision like any other, though no session began."""
    return decision("connect", _Unserved(sid, client), reply, drop=True, check=check)


def text(rec: dict[str, Any]) -> str:
    """The Postfix-style line of a decision record (one line, key=value after the ``;``)."""
    head = (f"session {rec['sid']}: {rec['qid'] or 'NOQUEUE'}: {rec['action']}: "
            f"{rec['stage'].upper()} from {rec['client_name']}[{rec['client_ip']}]")
    if rec["code"] is not None:
        status = f" {rec['status']}" if rec["status"] else ""
        head += f": {rec['code']}{status} {rec['reply']} #{rec['reply_id']}"
    parts = [head + ";"]
    if rec["sender"] is not None:
        parts.append(f"from=<{rec['sender']}>")
    if rec["rcpts"]:
        parts.append("to=" + ",".join(f"<{r}>" for r in rec["rcpts"]))
    if rec["stage"] == "dot":
        parts.append(f"nrcpt={rec['nrcpt']}")
    if rec["size"] is not None:
        parts.append(f"size={rec['size']}")
    if rec["proto"]:
        parts.append(f"proto={rec['proto']}")
    if rec["helo"] is not None:
        parts.append(f"helo=<{rec['helo']}>")
    parts.append(f"check={rec['check'] or '-'}")
    parts.append(f"delay={rec['delay']:.3f}")
    if rec["downstream"]:
        parts.append(f"downstream=({rec['downstream']})")
    return " ".join(parts)


#: The commands whose reply may end a recipient or a message, by event class name.
STAGE_OF = {"Helo": "helo", "Mail": "mail", "Rcpt": "rcpt", "Data": "data", "EndOfData": "dot"}


def ends(stage: str, reply: Reply | None, drop: bool) -> bool:
    """Whether this reply is a decision to log: the dot always, any other command when refused."""
    return stage == "dot" or drop or (reply is not None and reply.code >= 400)


class Pending:
    """A command's decision in the making: what the record needs from before its handler ran.

    The handler may reset the transaction (a refused MAIL or DATA, the
    dot), so the sender and recipients are taken first.
    """

    __slots__ = ("stage", "started", "sender", "rcpts", "qid", "size")

    def __init__(self, stage: str, env: Envelope, event: Any, now: float, in_message: bool = False):
        """``in_message``: the session's queue id is this decision's (a message under way)."""
        self.stage = stage
        self.started = now
        self.sender = env.sender
        self.rcpts: tuple[str, ...] = tuple(env.rcpts)
        self.qid = "" if in_message else env.qid
        self.size = None
        if stage == "mail":
            self.sender = event.path.address
        elif stage == "rcpt":
            self.rcpts = (event.path.address,)
        elif stage == "dot":
            self.size = event.size

    def record(self, env: Envelope, reply: Reply | None, now: float, *, drop: bool = False,
               message: str = "", check: str = "", downstream: str | None = None
               ) -> dict[str, Any] | None:
        """The decision's record, or None when the command ended nothing."""
        if not ends(self.stage, reply, drop):
            return None
        # A queue id belongs to the message DATA began (the dot's, or one DATA just named).
        qid = env.qid if self.stage == "dot" or env.qid != self.qid else ""
        return decision(self.stage, env, reply, drop=drop, message=message, check=check,
                        rcpts=self.rcpts, size=self.size, delay=now - self.started, qid=qid,
                        downstream=downstream, sender=self.sender)


class Line:
    """A decision's text line, built on first use and only once.

    The JSON log never needs it; the text log formats it exactly once.
    """

    __slots__ = ("_rec", "_text")

    def __init__(self, rec: dict[str, Any]):
        self._rec = rec
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            self._text = text(self._rec)
        return self._text

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def timestamp(seconds: float) -> str:
    """A record's ``time``: ISO 8601 in UTC, to the millisecond."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def json_line(rec: dict[str, Any]) -> str:
    """One JSON object on one line (UTF-8 kept as is, no spaces wasted).

    JSON leaves U+0085, U+2028 and U+2029 raw, and a reader that splits text into
    lines (Python's ``splitlines``, many log shippers) cuts a record at them: an
    SMTPUTF8 address holding one would break it in pieces.  They are escaped."""
    line = json.dumps(rec, ensure_ascii=False, separators=(",", ":"), default=str)
    if not line.isascii():
        line = line.translate(_JSON_BREAKS)
    return line + "\n"


_JSON_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}
