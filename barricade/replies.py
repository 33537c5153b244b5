"""The reply catalogue: every status line Barricade originates, as data.

Each entry carries smtpf's reply number where smtpf has one (``#NNN`` in
its reply list), the SMTP code, the RFC 3463 enhanced status, a text
template with named fields, and the SMTP event that emits it.  Entries
numbered 900 and up are Barricade's own: the Network Prevent originated
responses, the gateway limits (recipients, loops, size) and the protocol
replies smtpf never numbered.

Nothing else in the daemon writes a status line: code paths name an id and
fill fields, so operators can reword any reply by id (``reply-file``) and
metrics can label every reply with the id that produced it.

An entry whose code is 0 takes its code and enhanced status from the
downstream reply it relays (smtpf's #282, #299, #300 ...).
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ReplySpec:
    """One catalogue entry."""

    id: int
    code: int
    status: str
    template: str
    event: str
    doc: str = ""

    @property
    def fields(self) -> frozenset[str]:
        """The placeholder names the template uses."""
        return template_fields(self.template)


def R(id: int, code: int, status: str, template: str, event: str, doc: str = "") -> ReplySpec:
    return ReplySpec(id, code, status, template, event, doc)


def template_fields(template: str) -> frozenset[str]:
    """Named placeholders; raises CatalogueError for bad or positional ones."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise CatalogueError(f"bad template {template!r}: {exc}") from None
    names = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise CatalogueError(f"bad template {template!r}: fields must be named, like {{rcpt}}")
        if spec or conversion:  # {qid:d}, {rcpt!r}: would raise or run wild at send time
            raise CatalogueError(f"bad template {template!r}: write a field as {{{name}}}, "
                                 "without a format or conversion")
        names.add(name)
    return frozenset(names)


#: RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
LINE_MAX = 512
#: Room kept on a first line for " <session id>" (12 characters; a little more).
_SESSION_ROOM = 1 + 20
#: The longest first line (up to its reply id) that leaves room for the session id.
FIRST_MAX = LINE_MAX - 2 - _SESSION_ROOM


def _fit(line: bytes, room: int) -> bytes:
    """``line`` cut to ``room`` octets (``...`` marking the cut), never inside a
    UTF-8 sequence.  Fields echo what clients and DNS say, at any length."""
    if len(line) <= room:
        return line
    return line[: room - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."


@dataclass(frozen=True)
class Reply:
    """A rendered reply, ready to be encoded for one session."""

    code: int
    status: str
    lines: tuple[str, ...]
    id: int
    extra: tuple[str, ...] = field(default=())
    # Once encoded: the first line up to the session id, and the lines after it.
    # A rendered reply is cached and sent again and again, to every session.
    _parts: tuple[bytes, bytes] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def positive(self) -> bool:
        return self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def text(self) -> str:
        """The first line's text, as logs and tests like to see it."""
        return self.lines[0]

    def encode(self, session_id: str = "") -> bytes:
        """Format as wire bytes.

        The reply id (and the session id, so a sender quoting the reply
        gives the postmaster something to grep for) goes on the first line:
        the last line of an EHLO reply is an extension keyword and must
        stay one.  Extra lines (EHLO keywords, HELP text) carry no status.
        """
        parts = self._parts
        if parts is None:
            if self.code == 334:  # RFC 4954: a SASL challenge is base64 and nothing else
                return "".join(line + "\r\n" for line in self._lines()).encode("utf-8", "replace")
            prefix = f"{self.status} " if self.status else ""
            if len(self.lines) == 1 and not self.extra:  # most replies: one line
                parts = (f"{self.code} {prefix}{self.lines[0]} #{self.id}".encode("utf-8", "replace"), b"")
            else:
                first, *rest = self._lines()
                parts = (f"{first} #{self.id}".encode("utf-8", "replace"),
                         "".join(line + "\r\n" for line in rest).encode("utf-8", "replace"))
            if len(parts[0]) > FIRST_MAX or len(parts[1]) > LINE_MAX - 2:  # rare: cut to fit
                parts = self._fitted()
            object.__setattr__(self, "_parts", parts)
        first, rest = parts
        if session_id:
            return b"%s %s\r\n%s" % (first, session_id.encode("utf-8", "replace"), rest)
        return b"%s\r\n%s" % (first, rest)

    def _fitted(self) -> tuple[bytes, bytes]:
        """The encoded parts with every line cut to RFC 5321's 512 octets (the first
        leaving room for the session id), the reply id kept."""
        head, *others = self._lines()
        rest = b"".join(_fit(line.encode("utf-8", "replace"), LINE_MAX - 2) + b"\r\n" for line in others)
        tail = b" #%d" % self.id
        return _fit(head.encode("utf-8", "replace"), FIRST_MAX - len(tail)) + tail, rest

    def _lines(self) -> list[str]:
        """Every line with its code and separator, without the id or the line break."""
        prefix = f"{self.status} " if self.status else ""
        texts = [prefix + line for line in self.lines]
        texts.extend(self.extra)
        last = len(texts) - 1
        return [f"{self.code}{' ' if i == last else '-'}{text}" for i, text in enumerate(texts)]


class _Fields(dict):
    """Format mapping that never raises: a missing field shows as '?'."""

    def __missing__(self, key: str) -> str:
        return "?"


_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_NOT_TEXT = re.compile(r"[^\t\x20-\x7e]")


def _clean(value: object) -> str:
    """Fields often echo client input: never let CR/LF or controls through."""
    text = str(value)
    if text.isprintable():  # the usual case, tested in C: no control character in it
        return text
    return _UNSAFE.sub("?", text)


#: Replies kept by their field values; past this many the memory starts again.
RENDERED = 1024


class CatalogueError(ValueError):
    """A reply override file names an unknown id or unknown fields."""


class Catalogue:
    """The catalogue with the operator's text overrides applied."""

    def __init__(self, entries: Iterable[ReplySpec] = (), overrides: Mapping[int, str] | None = None):
        self._specs: dict[int, ReplySpec] = {}
        for spec in entries or ENTRIES:
            if spec.id in self._specs:
                raise CatalogueError(f"reply #{spec.id} defined twice")
            self._specs[spec.id] = spec
        self._texts: dict[int, str] = {}
        # Rendering caches: the placeholders of each entry's text in force, and
        # the replies whose text has none (the same Reply every time).
        self._names: dict[int, frozenset[str]] = {}
        self._plain: dict[tuple[int, int, str], Reply] = {}
        # ... and the last replies rendered from text fields only, by those values
        # (the banner and the closing reply repeat for every session).
        self._rendered: dict[tuple, Reply] = {}
        for rid, text in (overrides or {}).items():
            self.override(rid, text)

    def override(self, rid: int, text: str) -> None:
        spec = self._specs.get(rid)
        if spec is None:
            raise CatalogueError(f"reply #{rid} is not in the catalogue")
        if not text.strip():
            raise CatalogueError(f"reply #{rid}: no text")
        bad = _NOT_TEXT.search(text)
        if bad:  # RFC 5321 textstring: TAB and printable ASCII
            raise CatalogueError(f"reply #{rid}: character {bad.group()!r} cannot go in a reply "
                                 "(printable ASCII and tabs only)")
        unknown = template_fields(text) - spec.fields
        if unknown:
            raise CatalogueError(
                f"reply #{rid}: unknown field(s) {', '.join(sorted(unknown))}; "
                f"this reply knows {', '.join(sorted(spec.fields)) or 'none'}"
            )
        self._texts[rid] = text
        self._names.pop(rid, None)
        self._plain.clear()
        self._rendered.clear()

    def names(self, rid: int) -> frozenset[str]:
        """The placeholders of entry ``rid``'s text in force (an override's, if any).

        A caller that fills fields from a session asks first, so that it
        looks up only the values the text shows.
        """
        names = self._names.get(rid)
        if names is None:
            names = self._names[rid] = template_fields(self._texts.get(rid, self._specs[rid].template))
        return names

    @classmethod
    def from_file(cls, path: str | Path | None, extra: Iterable[ReplySpec] = ()) -> Catalogue:
        """The catalogue (plus plugins' ``extra`` entries) with the file's overrides.

        The file has one ``NNN text`` per line and ``#`` comments.  Lines end at
        LF only: ``str.splitlines`` would also end one at a form feed or a
        U+2028 inside a text, and the rest would be read as another override.
        """
        cat = cls((*ENTRIES, *extra))
        if not path:
            return cat
        for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
            raw = raw.removesuffix("\r")
            line = raw.strip(" \t")
            if not line or line.startswith("#"):
                continue
            num, _, text = line.partition(" ")
            try:
                rid = int(num.lstrip("#"))
            except ValueError:
                raise CatalogueError(f"{path}:{lineno}: expected 'NNN text', got {raw!r}") from None
            try:
                cat.override(rid, text.strip())
            except CatalogueError as exc:
                raise CatalogueError(f"{path}:{lineno}: {exc}") from None
        return cat

    def __contains__(self, rid: int) -> bool:
        return rid in self._specs

    def __iter__(self):
        return iter(sorted(self._specs.values(), key=lambda s: s.id))

    def spec(self, rid: int) -> ReplySpec:
        return self._specs[rid]

    def reply(
        self,
        rid: int,
        *,
        code: int | None = None,
        status: str | None = None,
        lines: Iterable[str] = (),
        extra: Iterable[str] = (),
        custom_text: str | None = None,
        **fields: object,
    ) -> Reply:
        """Render entry ``rid``.

        ``code``/``status`` are required for relayed entries (code 0) and
        may override a fixed entry's enhanced status only when a check
        needs a more specific one.  ``lines`` adds continuation lines
        that share the status (multi-line banners).  ``custom_text`` is the
        operator's own wording for this one reply (an access-map
        ``REJECT:"..."``): it replaces the template, while the code, the
        enhanced status and the id stay the entry's.
        """
        spec = self._specs[rid]
        rcode = code if code is not None else spec.code
        if not rcode:
            raise ValueError(f"reply #{rid} relays a code: pass code=")
        rstatus = status if status is not None else spec.status
        if custom_text is not None:
            text = _clean(custom_text)
        else:
            template = self._texts.get(rid, spec.template)
            names = self.names(rid)
            if not names and not lines and not extra:
                key = (rid, rcode, rstatus)
                found = self._plain.get(key)
                if found is None:
                    found = self._plain[key] = Reply(rcode, rstatus, (template.format_map(_Fields()),), rid)
                return found
            used = {k: fields[k] for k in names if k in fields}
            if lines or extra:
                lines, extra = tuple(lines), tuple(extra)
                values = (*used.values(), *lines, *extra)
            else:
                lines = extra = ()  # an empty list given is no line
                values = used.values()
            texts = True
            for v in values:
                if type(v) is not str:
                    texts = False
                    break
            if texts:
                # The banner, the EHLO reply and the closing reply repeat for every session
                # (the fields in the order of names, fixed per entry).
                key = (rid, rcode, rstatus, lines, extra, *used.items())
                found = self._rendered.get(key)
                if found is None:
                    if len(self._rendered) >= RENDERED:
                        self._rendered.clear()
                    text = template.format_map(_Fields({k: _clean(v) for k, v in used.items()}))
                    found = self._rendered[key] = Reply(
                        rcode, rstatus, (text, *(_clean(x) for x in lines)), int(rid),
                        tuple(_clean(x) for x in extra))
                return found
            # Only the fields the text uses are cleaned (callers pass the standard set).
            text = template.format_map(_Fields({k: _clean(v) for k, v in used.items()}))
        return Reply(
            rcode,
            rstatus,
            (text, *(_clean(x) for x in lines)) if lines else (text,),
            int(rid),  # a plain number in logs and metrics, whatever names it
            tuple(_clean(x) for x in extra) if extra else (),
        )


ENTRIES: tuple[ReplySpec, ...] = (
    R(120, 550, '5.7.1', 'host {client_name} [{client_ip}] black listed', 'connect',
      'There is a Connect: tag entry for either the client name or IP address with a right-hand-side value of REJECT. See access-map.'),
    R(121, 550, '5.7.1', 'host {client_name} [{client_ip}] from RFC2606 reserved domain', 'connect',
      'See rfc2606-special-domains.'),
    R(122, 550, '5.7.1', 'host {client_name} [{client_ip}] from unknown TLD', 'connect',
      'See reject-unknown-tld.'),
    R(125, 550, '5.7.1', 'host {client_name} [{client_ip}] sender <{sender}> black listed', 'mail',
      'There is a Connect:From: combo tag entry for either the client name and sender pair or client IP address and sender pair with a right-hand-side value of REJECT. See access-map.'),
    R(127, 550, '5.7.1', 'sender <{sender}> black listed', 'mail',
      'There is a From: tag entry for the sender address or their domain with a right-hand-side value of REJECT. See access-map.'),
    R(128, 550, '5.7.1', 'sender <{sender}> from RFC2606 reserved domain', 'mail',
      'See rfc2606-special-domains.'),
    R(129, 550, '5.7.1', 'sender <{sender}> from unknown TLD', 'mail',
      'See reject-unknown-tld.'),
    R(131, 550, '5.7.1', 'routed address relaying denied', 'rcpt',
      'See reject-percent-relay.'),
    R(132, 550, '5.7.1', 'UUCP addressing denied', 'rcpt',
      'See reject-uucp-route. smtpf currently does nothing special with UUCP paths, so disabling this option will have undefined results.'),
    R(133, 550, '5.7.1', 'special case of at-sign in local-part denied', 'rcpt',
      'See reject-quoted-at-sign.'),
    R(135, 550, '5.7.1', 'host {client_name} [{client_ip}] recipient <{rcpt}> black listed', 'rcpt',
      'There is a Connect:To: combo tag entry for either the client name and recipient pair or client IP address and recipient pair with a right-hand-side value of REJECT. See access-map.'),
    R(137, 550, '5.7.1', 'sender <{sender}> recipient <{rcpt}> black listed', 'rcpt',
      'There is a From:To: combo tag entry for a sender and recipient pair with a right-hand-side value of REJECT. See access-map.'),
    R(139, 550, '5.7.1', 'recipient <{rcpt}> black listed', 'rcpt',
      "There is a To: tag entry for sender's address with a right-hand-side value of REJECT. See access-map."),
    R(140, 550, '5.7.1', 'recipient <{rcpt}> from RFC2606 reserved domain', 'rcpt',
      'See rfc2606-special-domains.'),
    R(141, 550, '5.7.1', 'recipient <{rcpt}> from unknown TLD', 'rcpt',
      'See reject-unknown-tld.'),
    R(244, 550, '5.7.1', 'recipient <{rcpt}> expired', 'rcpt',
      ''),
    R(245, 550, '5.7.1', 'recipient <{rcpt}> invalid', 'rcpt',
      ''),
    R(247, 221, '2.0.0', '{hostname} closing connection', 'any',
      'The connected client sent an SMTP QUIT command. The server will now close the connection.'),
    R(248, 500, '5.5.1', '{command} command unknown', 'any',
      'An unknown command was sent.'),
    R(249, 501, '5.5.2', '{command} missing argument', 'any',
      'The specified command requires one or more arguments.'),
    R(250, 502, '5.5.1', '{command} not implemented', 'any',
      'The given command is specified in a known RFC, but not supported.'),
    R(251, 503, '5.5.1', '{command} out of sequence', 'any',
      'The specified command was sent out of order with respect to other commands expected before this command. For example HELO or EHLO must be issued and accepted before the first MAIL FROM:; a successful MAIL FROM: must be sent before any RCPT TO: commands; and there must be at least one successful RCPT TO: before the DATA command will be accepted. See RFC 2821 for details. Other SMTP command extensions may impose similar sequence restrictions, such as AUTH (RFC 2554) after EHLO and before MAIL FROM:.'),
    R(252, 550, '5.7.1', 'client {client_name} [{client_ip}] is schizophrenic', 'helo',
      'The client has sent HELO or EHLO more than once with different arguments each time.'),
    R(253, 502, '5.5.1', 'EHLO not supported', 'helo',
      'When the smtp-enable-esmtp option is off, we force the client to down grade to the older HELO command per RFC 2821.'),
    R(254, 250, '', '{hostname} Hello {helo} [{client_ip}]', 'helo',
      ''),
    R(255, 550, '5.7.1', 'client {client_name} [{client_ip}] is schizophrenic', 'helo',
      'The client has sent HELO or EHLO more than once with different arguments each time.'),
    R(256, 250, '', '{hostname} Hello {helo} [{client_ip}]', 'helo',
      ''),
    R(259, 501, '5.5.1', 'AUTH cancelled', 'auth',
      ''),
    R(264, 501, '5.5.1', 'AUTH cancelled', 'auth',
      ''),
    R(267, 503, '5.5.1', 'already authenticated', 'auth',
      'RFC 2554 states that once a client successfully authenticates, additional AUTH commands are rejected.'),
    R(269, 504, '5.5.4', 'unknown AUTH mechanism', 'auth',
      'smtpf only supports AUTH PLAIN and AUTH LOGIN mechanisms.'),
    R(274, 235, '2.0.0', 'authenticated', 'auth',
      'The client has successfully authenticated and their messages will be queued by the local route. See route-map documentation.'),
    R(275, 535, '5.7.0', 'authentication failed', 'auth',
      ''),
    R(276, 458, '4.4.0', 'unable to queue messages for {domain}', 'etrn',
      'SMTP ETRN commands are sent to the local route, which is responsible for queuing. See route-map documentation.'),
    R(277, 0, '', '{text}', 'etrn',
      'After an SMTP ETRN command, this is the response relayed from the one of local route servers.'),
    R(279, 553, '5.1.0', 'rejected sender {sender} {reason}', 'mail',
      'The SMTP MAIL FROM: address could not be correctly parsed according to the strict application of one or more RFC 2821 grammar rules. See rfc2821-line-length, rfc2821-local-length, rfc2821-domain-length, rfc2821-literal-plus, rfc2821-strict-dot.'),
    R(280, 501, '5.5.2', 'syntax error', 'mail',
      'The RFC 2821 grammar for the MAIL FROM: command does not allow for white space between the FROM: and the <address> argument. When they appear it is typically a virus or spamware sign. See rfc2821-extra-spaces.'),
    R(282, 0, '', 'sender <{sender}> denied', 'mail',
      'The forward host rejected or temporarily failed the sender.'),
    R(283, 250, '2.1.0', 'sender <{sender}> accepted', 'mail',
      ''),
    R(284, 553, '5.1.0', 'rejected recipient {rcpt} {reason}', 'rcpt',
      'The SMTP RCPT TO: address could not be correctly parsed according to the strict application of one or more RFC 2821 grammar rules. See rfc2821-line-length, rfc2821-local-length, rfc2821-domain-length, rfc2821-literal-plus, rfc2821-strict-dot.'),
    R(285, 501, '5.5.2', 'syntax error', 'rcpt',
      'The RFC 2821 grammar for the RCPT TO: command does not allow for white space between the TO: and the <address> argument. When they appear it is typically a virus or spamware sign. See rfc2821-extra-spaces.'),
    R(286, 550, '5.7.1', 'null recipient invalid', 'rcpt',
      'The SMTP client specified RCPT TO:<>'),
    R(287, 451, '4.0.0', 'cannot forward mail for <{rcpt}> at this time', 'dot',
      ''),
    R(288, 550, '5.7.1', 'recipient <{rcpt}> relaying denied', 'rcpt',
      'The SMTP client is attempting to relay mail for an unknown recipient domain. Domains that smtpf is responsible for is specified in the route-map. Either the domain has not yet been added, was removed, or the SMTP client is hoping that the server is an open relay.'),
    R(290, 250, '2.1.5', 'recipient <{rcpt}> accepted', 'rcpt',
      'The recipient was accepted, but an access-map DISCARD entry for the client, HELO, sender or this recipient means the message will be discarded at the dot, as in smtpf.'),
    R(292, 550, '5.1.1', 'recipient <{rcpt}> unknown', 'rcpt',
      'A call-ahead to a down stream host rejected the recipient. See route-map about RCPT: attribute. (smtpf: 5.7.1; RFC 3463 names 5.1.1 for a mailbox that does not exist, which is what a sender needs to stop mailing it.)'),
    R(293, 550, '5.7.1', 'recipient <{rcpt}> relaying denied', 'rcpt',
      'The SMTP client is attempting to relay mail for an unknown recipient domain. Domains that smtpf is responsible for is specified in the route-map. Either the domain has not yet been added, was removed, or the SMTP client is hoping that the server is an open relay.'),
    R(295, 451, '4.0.0', 'cannot forward mail for <{rcpt}> at this time', 'rcpt',
      'We are responsible for this domain, but had a connection error with the forward host.'),
    R(296, 550, '5.7.1', 'recipient <{rcpt}> relaying denied', 'rcpt',
      'The SMTP client is attempting to relay mail for an unknown recipient domain. Domains that smtpf is responsible for is specified in the route-map. Either the domain has not yet been added, was removed, or the SMTP client is hoping that the server is an open relay.'),
    R(297, 250, '2.1.5', 'recipient <{rcpt}> accepted', 'rcpt',
      'The down stream host accepted the recipient.'),
    R(299, 0, '', '{text}', 'dot',
      'See relay-reply option. The whole reply from the forward host is relayed to the client.'),
    R(300, 0, '', 'recipient <{rcpt}> denied', 'rcpt',
      'See relay-reply option. Only the reply codes from the forward host are relayed to the client with a standardise reason.'),
    R(306, 554, '5.7.0', 'transaction failed', 'dot',
      ''),
    R(307, 451, '4.4.0', 'transaction aborted', 'dot',
      ''),
    R(321, 554, '5.5.2', 'content line too long ({length}); RFC 2821 section 4.5.3.1', 'dot',
      'See rfc2821-line-length.'),
    R(323, 501, '5.5.4', '{option} requires restart', 'admin',
      'Some options cannot be changed during runtime (docs/options.md marks the ones OPTN can change). Change the config file, then restart Barricade.'),
    R(324, 214, '2.0.0', 'killing session {session}', 'admin',
      ''),
    R(325, 550, '5.0.0', 'session {session} killed', 'admin',
      ''),
    R(326, 504, '5.5.4', 'session {session} not found', 'admin',
      'The session given to KILL was not found. It probably terminated before this command was entered or there is a typo in the session ID given.'),
    R(329, 421, '4.7.1', 'client {client_name} [{client_ip}] too many concurrent connections, max={limit}', 'connect',
      'See the access-map concerning the Concurrent-Connect: tag.'),
    R(340, 550, '5.3.4', 'duplicate message rejected', 'dot',
      'With +dupmsg-track-all, a message already delivered within dupmsg-ttl (same body, Message-ID, sender and first recipient).'),
    R(357, 550, '5.7.1', 'DSN or MDN in response to an old message', 'dot',
      'See the emew-ttl option.'),
    R(358, 550, '5.7.1', 'DSN or MDN for message that did not originate here', 'dot',
      'See the emew-secret and emew-dsn-policy options.'),
    R(363, 421, '4.4.0', 'client {client_name} [{client_ip}] unknown', 'connect',
      'The Four21 module is experimental and is only present at select test sites. See four21-unknown-ip option. This is a RFC 2821 conformance test. Check if the connecting client IP that has never been seen before. If it has not, then 421 the connection and observe if they send a clean QUIT (as specified in RFC 2821), pipeline, or disconnect. If the latter two occur, then the IP is auto-blacklisted.'),
    R(364, 554, '5.4.0', 'client {client_name} [{client_ip}] "No soup for you!"', 'connect',
      'The Four21 module is experimental and only present at select test sites. This response (a reference to the Sienfeld Soup Nazi episode) is the reply given if the client IP failed the 421 test and was subsequently auto-blacklisted. See four21-unknown-ip option.'),
    R(388, 550, '5.7.1', '{client_name} [{client_ip}] failed grey listing', 'data',
      'The grey-list record of the client (or of the tuple) was set to reject by the postmaster. See grey-key.'),
    R(415, 421, '4.4.3', 'PTR record lookup error for [{client_ip}]', 'connect',
      'The PTR lookup of the client address failed (timeout, SERVFAIL). See client-ptr-required.'),
    R(416, 554, '5.7.1', 'reject [{client_ip}] missing PTR record', 'connect',
      'See client-is-mx and client-ptr-required options.'),
    R(418, 550, '5.7.1', 'reject IP in client name {client_name} [{client_ip}] (1)', 'connect',
      'See client-is-mx and client-ip-in-ptr options.'),
    R(420, 550, '5.7.1', '{client_name} [{client_ip}] sent pre-greeting traffic', 'any',
      'See the access-map concerning the GreetPause: tag.'),
    R(423, 501, '5.5.4', 'invalid HELO {helo}', 'helo',
      'The HELO or EHLO argument contains include characters in the string. The set of valid characters are alpha-numerics, hyphen, underscore, square brackets, and dot. There is no option to turn this test off.'),
    R(424, 550, '5.7.0', 'HELO {helo} does not match client {client_name} [{client_ip}]', 'helo',
      'See helo-ip-mismatch option.'),
    R(427, 550, '5.7.0', 'HELO {helo} from RFC2606 reserved domain', 'helo',
      'See rfc2606-special-domains option.'),
    R(428, 550, '5.7.0', 'HELO {helo} argument must be a FQDN or IP-domain literal', 'helo',
      'See rfc2821-strict-helo option.'),
    R(430, 550, '5.7.0', '{client_name} [{client_ip}] claims to be us "{helo}"', 'helo',
      'See helo-claims-us option.'),
    R(432, 550, '5.7.0', 'HELO {helo} equivalent to client IP-in-PTR', 'helo',
      'See helo-is-ptr option.'),
    R(434, 553, '5.1.8', 'sender <{sender}> from {domain} has no MX record', 'mail',
      'See mail-require-mx option.'),
    R(436, 451, '4.4.3', 'sender <{sender}> from {domain} MX lookup error', 'mail',
      'See mail-require-mx option.'),
    R(439, 553, '5.1.8', 'sender <{sender}> from {domain} MX invalid', 'mail',
      'The MX list gathered from DNS is pruned to remove hosts that resolve to localhost, RFC 3330 reserved IP addresses that cannot be reached from the Internet, or have no A/AAAA record. This message is reported if the MX list is empty after pruning.'),
    R(441, 550, '5.7.1', 'too many recipients for DSN or MDN', 'rcpt',
      'See one-rcpt-per-null option.'),
    R(443, 553, '5.1.8', 'sender <{sender}> from {domain} has no MX record', 'mail',
      'See mail-require-mx option.'),
    R(445, 553, '5.1.8', 'sender <{sender}> from {domain} MX invalid', 'mail',
      'The MX list gathered from DNS is pruned to remove hosts that resolve to localhost, RFC 3330 reserved IP addresses that cannot be reached from the Internet, or have no A/AAAA record. This message is reported if the MX list is empty after pruning.'),
    R(447, 451, '4.4.3', 'sender <{sender}> from {domain} MX lookup error', 'mail',
      'See mail-require-mx option.'),
    R(449, 550, '5.7.1', 'reject [{client_ip}] missing PTR record (2)', 'dot',
      'See client-is-mx and client-ptr-required options.'),
    R(450, 550, '5.7.1', 'reject IP in client name {client_name} [{client_ip}] (2)', 'dot',
      'See client-is-mx and client-ip-in-ptr options.'),
    R(452, 550, '5.7.1', 'too many recipients for DSN or MDN', 'rcpt',
      'See one-rcpt-per-null option.'),
    R(456, 554, '5.6.0', 'message headers must be US-ASCII, found 0x{octet}; RFC 2822 section 2.2', 'dot',
      'See rfc2822-7bit-headers option.'),
    R(462, 554, '5.6.0', 'missing RFC 2822 required headers', 'dot',
      'See rfc2822-min-headers option.'),
    R(475, 451, '4.7.1', '{who} has exceeded {limit} message{s} per {period}', 'rcpt',
      'See the access-map concerning the Msg-Limit-Connect:, Msg-Limit-From:, Msg-Limit-To: tags.'),
    R(481, 451, '4.4.2', 'internal network error for {host}', 'dot',
      'An error occurred while sending an SMTP command to a forward host.'),
    R(485, 451, '4.4.2', 'internal network error for {host}', 'dot',
      'An error occurred while reading an SMTP reply from a forward host.'),
    R(488, 451, '4.4.4', 'no answer from {domain} MX', 'data',
      "While attempting to perform a call-back, there was no answer from any of the MX servers tried (refused, silent, garbled, or call-back-timeout ran out). Not cached. See call-back option."),
    R(489, 553, '5.4.4', '{domain} does not exist', 'data',
      "A call-back found that the sender's domain does not exist (NXDOMAIN). See call-back option."),
    R(491, 451, '4.4.3', '{domain} MX lookup error', 'data',
      "While attempting to perform a call-back, there was an error looking up the MX records of the sender's domain. See call-back option."),
    R(493, 550, '5.4.4', 'no acceptable MX for {domain}', 'data',
      'While attempting to perform a call-back, the MX list gathered from DNS was pruned to remove hosts that resolve to localhost, RFC 3330 reserved IP addresses that cannot be reached from the Internet, or have no A/AAAA record. This message is reported if the MX list is empty after pruning (or the domain has neither MX nor address). See call-back and call-back-allow-networks options.'),
    R(496, 451, '4.4.4', 'no answer from {domain} MX', 'data',
      "The same call-back event as #488, numbered twice in smtpf 2.1.2's reply list (smtpf 2.6's MX code has only #488); Barricade answers #488."),
    R(498, 451, '4.4.3', '{domain} {reason}', 'data',
      "While attempting to perform a call-back, the addresses of the sender domain's MX hosts could not be looked up (a temporary DNS failure) and no MX was left to call. See call-back option."),
    R(499, 553, '5.4.4', '{domain} {reason}', 'data',
      'A call-back found that the sender\'s domain accepts no mail: it publishes a null MX (RFC 7505), so nothing can be returned to the sender. See call-back option.'),
    R(501, 550, '5.4.4', 'no acceptable MX for {domain}', 'data',
      "The same call-back event as #493, numbered twice in smtpf 2.1.2's reply list (smtpf 2.6's MX code has only #493); Barricade answers #493."),
    R(505, 550, '5.7.1', 'null-sender messages {count} for <{rcpt}> exceed {limit}/60s', 'rcpt',
      'See the access-map concerning the Null-Rate-To: tag.'),
    R(522, 421, '4.4.5', 'client {client_name} [{client_ip}] connections {count} exceed {limit}/60s', 'connect',
      'See the access-map concerning the Rate-Connect: tag.'),
    R(525, 550, '5.7.0', '{client_name} [{client_ip}] black listed by {list}', 'connect',
      'The client IP is listed in a dns-bl DNS list (the answer matched the list mask); the connection is closed. With smtp-delay-checks the refusal waits for RCPT. See dns-bl.'),
    R(530, 550, '5.7.0', '{client_name} [{client_ip}] black listed by {list}', 'connect',
      'The same dns-bl refusal in smtpf builds without its parallel resolver; Barricade answers #525. See dns-bl.'),
    R(547, 250, '2.0.0', 'OK', 'any',
      'Generic response that indicates the command was accepted.'),
    R(548, 214, '2.0.0', 'end', 'any',
      'Generic end of a multiline response.'),
    R(507, 250, '2.0.0', 'proceed', 'mail',
      'There is is a delayed rejection/drop response that will be reported when the RCPT TO: is sent. See smtp-delay-checks.'),
    R(549, 421, '4.3.0', 'internal server error', 'any',
      ''),
    R(550, 451, '4.3.0', 'internal server error', 'any',
      'An internal error the client may retry; the session goes on (a content scanner that lost its spool file; the store-backed checks answer #944/#945, dupmsg #960).'),
    R(551, 421, '4.3.2', 'system resources exceeded', 'any',
      'Some serious condition such as out-of-memory, no more disk space, or similar resource related issue has occured. The connected client will be dropped as it is not possible to proceed until the condition has been resolved by the destination postmaster.'),
    R(552, 451, '4.7.0', 'try again later', 'any',
      'This is a generic response, typicall issued by grey-listing during the grey-temp-fail-period, however other tests such as SIQ support may also issue this response.'),
    R(553, 450, '4.4.5', 'try again later', 'data',
      'This is an alternate response issued by grey-content after the grey-temp-fail-period when the hashed message content does not match previously saved message hash.'),
    R(554, 250, '2.0.0', 'message {qid} accepted', 'dot',
      'The message transaction has reached the final dot to end the message and was accepted for delivery.'),
    R(555, 550, '5.7.1', 'message {qid} rejected', 'dot',
      'The message transaction has reached the final dot to end the message and was NOT accepted for delivery.'),
    R(572, 0, '', 'sender <{sender}> verification failed', 'data',
      "A call-back to the sender's MX failed to validate their address: 451 4.7.0 when the MX answered 4xx (to the greeting, MAIL or RCPT, or to the made-up address after accepting the sender), 550 5.7.0 when it answered 5xx or its greeting broke call-back-strict-greeting. See call-back option."),
    R(617, 550, '5.7.1', 'message rejected, SIQ score {score} too low', 'dot',
      'See siq-score-reject option.'),
    R(625, 550, '5.3.4', '{client_name} [{client_ip}] ({size} bytes) exceeded max. message size of {limit} bytes', 'dot',
      'See the access-map concerning the Length-Connect:, Length-From:, Length-To: tags.'),
    R(631, 550, '5.3.3', 'pipelining not allowed', 'any',
      'See the access-map concerning the CommandPause: tag.'),
    R(632, 220, '', '{hostname} {esmtp}SMTP', 'connect',
      'A stripped down single line welcome banner sent to only localhost, LAN, and relays.'),
    R(633, 220, '', '{hostname} {esmtp}SMTP {banner}', 'connect',
      'The first line of possible a multiline welcome banner.'),
    R(640, 500, '5.5.2', 'RFC 2821 max. command line length exceeded ({length})', 'any',
      'See rfc2821-command-length.'),
    R(641, 500, '5.5.2', '{client_name} [{client_ip}] sent non-printable characters in SMTP command', 'any',
      'SMTP commands and their arguments can only consist of printable ASCII characters.'),
    R(643, 550, '5.3.3', 'pipelining not allowed', 'any',
      'See the access-map concerning the Connect: tag.'),
    R(701, 0, '', 'HELO {helo} from {client_name} [{client_ip}] SPF result {result}; {explanation}', 'rcpt',
      "The HELO name's SPF result is one spf-helo-policy refuses: 550 5.7.1 for Fail or SoftFail (the explanation is the domain's exp= text or why), 451 4.4.3 for TempError (a DNS failure, with +spf-temp-error-dns and a -reject word). Given at RCPT. See spf-helo-policy option."),
    R(702, 0, '', 'sender <{sender}> via {helo} ({client_name} [{client_ip}]) SPF result {result}; {explanation}', 'rcpt',
      "The MAIL FROM domain's SPF result is one spf-mail-policy refuses: 550 5.7.1 for Fail or SoftFail, 451 4.4.3 for TempError (with +spf-temp-error-dns and a -reject word). Computed at MAIL, given at RCPT, so a white-listed recipient still gets the mail. See spf-mail-policy option."),
    R(740, 550, '5.7.1', 'URI host {host} in non-existant domain', 'dot',
      ''),
    R(741, 550, '5.7.1', 'URI domain {domain} where NS {ns} contains IP {ip} in name', 'dot',
      'See uri-ip-in-ns and uri-bl-policy options.'),
    R(743, 550, '5.7.1', 'URI domain {domain} where NS {ns} in non-existant domain', 'dot',
      'See uri-ns-nxdomain and uri-bl-policy options.'),
    R(744, 550, '5.7.1', 'URI domain {domain} lookup timeout', 'dot',
      'See uri-reject-on-timeout and uri-bl-policy options.'),
    R(745, 550, '5.7.1', 'URI domain {domain} does not exist ({reason})', 'dot',
      'Barricade gives it for a URI domain without an SOA record (uri-valid-soa). See uri-bl-policy option.'),
    R(746, 550, '5.7.1', 'URI host {host} contains IP {ip} in {name}', 'dot',
      'See uri-ip-in-name and uri-bl-policy options.'),
    R(748, 550, '5.7.1', 'URL host {host} is missing a PTR', 'dot',
      'See uri-require-ptr and uri-bl-policy options.'),
    R(750, 550, '5.7.1', 'URI host {host} in non-existant domain', 'dot',
      ''),
    R(751, 550, '5.7.1', 'URI domain {domain} where NS {ns} contains IP {ip} in name', 'dot',
      'See uri-ip-in-ns and uri-bl-policy options.'),
    R(753, 550, '5.7.1', 'URI domain {domain} where NS {ns} in non-existant domain', 'dot',
      'See uri-ns-nxdomain and uri-bl-policy options.'),
    R(754, 550, '5.7.1', 'URI host {host} contains IP {ip} in name', 'dot',
      'See uri-ip-in-name and uri-bl-policy options.'),
    R(756, 550, '5.7.1', 'URI domain {domain} lookup timeout', 'dot',
      'See uri-reject-on-timeout and uri-bl-policy options.'),
    R(757, 550, '5.7.1', 'URI domain {domain} does not exist', 'dot',
      'See uri-reject-unknown and uri-bl-policy options.'),
    R(758, 550, '5.7.1', 'URL host {host} resolves to IP {ip} in PTR {ptr}', 'dot',
      'See uri-ip-in-ptr and uri-bl-policy options.'),
    R(760, 550, '5.7.1', 'URL host {host} is missing a PTR', 'dot',
      'See uri-require-ptr and uri-bl-policy options.'),
    R(762, 550, '5.7.1', 'black listed URL domain {domain} by {list}', 'dot',
      'See uri-bl, domain-bl, and uri-bl-policy options.'),
    R(763, 550, '5.7.1', 'rejected URL host {host}', 'dot',
      'See the access-map concerning the Body: tag.'),
    R(765, 550, '5.7.1', 'host is an IP in URL {url}', 'dot',
      'See uri-require-domain and uri-bl-policy options.'),
    R(766, 550, '5.7.1', 'broken URL "{url}": {reason}', 'dot',
      'See uri-links-policy option.'),
    R(768, 550, '5.7.1', 'rejected URL host {host}', 'dot',
      'See the access-map concerning the Body: tag.'),
    R(770, 550, '5.7.1', 'host is an IP in URL {url}', 'dot',
      'See uri-require-domain and uri-bl-policy options.'),
    R(771, 550, '5.7.1', 'broken URL "{url}": {reason}', 'dot',
      'See uri-links-policy option.'),
    R(773, 550, '5.7.1', 'black listed URL domain {domain} by {list}', 'dot',
      ''),
    R(774, 550, '5.7.1', 'black listed URL domain {domain} by {list}', 'dot',
      'See uri-bl and uri-bl-policy options.'),
    R(776, 550, '5.7.1', 'black listed URL host {host} by {list}', 'dot',
      'An address of the URI host is in a uri-dns-bl list. See uri-bl-policy option.'),
    R(777, 550, '5.7.1', 'black listed URL host {host} by {list}', 'dot',
      'See uri-dns-bl and uri-bl-policy options.'),
    R(781, 550, '5.7.1', 'max. URI per message limit exceeded', 'dot',
      'See uri-max-limit option.'),
    R(788, 550, '5.7.1', 'rejected NS {ns}, {reason}', 'dot',
      'See uri-bl-ns option. This option is experimental.'),
    R(790, 550, '5.7.1', 'rejected client {client_name} [{client_ip}], {reason}', 'helo',
      'See uri-bl-ptr option.'),
    R(792, 550, '5.7.1', 'rejected HELO, {reason}', 'helo',
      'See uri-bl-helo option.'),
    R(794, 550, '5.7.1', 'rejected MAIL FROM, {reason}', 'mail',
      'See uri-bl-mail option.'),
    # ---- Barricade's own replies (900 and up) ----
    R(814, 450, '4.7.1', 'host {client_name} [{client_ip}] sender <{sender}> temporary failure', 'mail',
      'A Connect:From: combo tag entry for the client and sender pair has a right-hand-side value of TEMPFAIL. See access-map.'),
    R(815, 450, '4.7.1', 'sender <{sender}> temporary failure', 'mail',
      'A From: tag entry for the sender address or their domain has a right-hand-side value of TEMPFAIL. See access-map.'),
    R(816, 450, '4.7.1', 'host {client_name} [{client_ip}] recipient <{rcpt}> temporary failure', 'rcpt',
      'A Connect:To: combo tag entry for the client and recipient pair has a right-hand-side value of TEMPFAIL. See access-map.'),
    R(817, 450, '4.7.1', 'sender <{sender}> recipient <{rcpt}> temporary failure', 'rcpt',
      'A From:To: combo tag entry for the sender and recipient pair has a right-hand-side value of TEMPFAIL. See access-map.'),
    R(818, 450, '4.7.1', 'recipient <{rcpt}> temporary failure', 'rcpt',
      'A To: tag entry for the recipient address or their domain has a right-hand-side value of TEMPFAIL. See access-map.'),
    R(853, 450, '4.7.1', 'host {client_name} [{client_ip}] temporary failure', 'connect',
      'A Connect: tag entry for the client name or IP address has a right-hand-side value of TEMPFAIL; the connection is closed. See access-map.'),
    R(854, 550, '5.7.1', 'host {client_name} [{client_ip}] black listed', 'connect',
      'A Connect: tag entry for the client name or IP address has a right-hand-side value of IREJECT (a reject smtp-delay-checks does not postpone); the connection is closed. See access-map.'),
    R(855, 550, '5.7.1', 'host {client_name} [{client_ip}] sender <{sender}> black listed', 'mail',
      'A Connect:From: combo tag entry for the client and sender pair has a right-hand-side value of IREJECT. See access-map.'),
    R(856, 550, '5.7.1', 'sender <{sender}> black listed', 'mail',
      'A From: tag entry for the sender address or their domain has a right-hand-side value of IREJECT. See access-map.'),
    R(873, 550, '5.7.0', 'IP [{ip}] in header black listed by {list}', 'dot',
      'An IP address in one of the dns-bl-headers headers is listed in a dns-bl DNS list; the message is refused. See dns-bl-headers.'),
    R(900, 354, '', 'enter mail, end with "." on a line by itself', 'data',
      'Intermediate reply to DATA, sent only after every downstream host answered 354.'),
    R(901, 421, '4.4.1', 'forwarding agent unavailable', 'rcpt',
      'No forward host of the route answered with a 220 greeting (Network Prevent). The connection is closed.'),
    R(902, 421, '4.4.2', 'connection lost to forwarding agent', 'data',
      'A downstream connection was lost while the message was being transferred; the transaction cannot be completed, so the connection is closed (Network Prevent).'),
    R(903, 451, '4.4.2', 'connection lost to forwarding agent', 'rcpt',
      'A downstream connection was lost before DATA; the client may retry the recipients (Network Prevent).'),
    R(904, 421, '4.4.7', 'request timeout exceeded', 'any',
      'A downstream host did not answer within smtp-command-timeout, smtp-connect-timeout or smtp-dot-timeout (Network Prevent). The connection is closed.'),
    R(905, 421, '4.4.7', 'connection timeout exceeded', 'any',
      'The client did not complete a command within smtp-command-timeout of its first byte (or sent nothing for that long), or inside DATA completed no line for smtp-data-line-timeout; input that trickles in does not restart these clocks. The connection is closed.'),
    R(906, 501, '5.5.2', 'invalid transmission request', 'any',
      'A command line longer than any extension allows (4096 octets). The connection is closed (Network Prevent).'),
    R(907, 451, '4.3.0', 'processing error', 'any',
      'A check or plugin failed unexpectedly or timed out; the error is logged (Network Prevent).'),
    R(908, 421, '4.3.0', 'processing error, closing connection', 'any',
      'An unrecoverable internal error (Network Prevent).'),
    R(909, 421, '4.3.2', '{hostname} service shutting down, try again later', 'any',
      'The daemon is stopping; sessions still open are closed.'),
    R(910, 452, '4.5.3', 'too many recipients, max={limit}', 'rcpt',
      'More RCPTs than message-rcpt-limit in one transaction; clients send the rest in a new transaction.'),
    R(911, 554, '5.4.6', 'mail loop detected, {count} Received headers', 'dot',
      'The message carries more than message-hop-limit Received: headers.'),
    R(912, 552, '5.3.4', 'message too big, max. {limit} bytes', 'mail',
      'The SIZE= parameter or the message exceeds message-size-limit.'),
    R(913, 220, '2.0.0', 'ready to start TLS', 'starttls', ''),
    R(914, 454, '4.7.0', 'TLS not available', 'starttls',
      'STARTTLS when no certificate is configured, or the TLS layer failed to start.'),
    R(915, 252, '2.5.0', 'cannot VRFY user; try RCPT to attempt delivery', 'vrfy',
      'RFC 5321 section 3.5.3: a proxy cannot verify mailboxes without a transaction.'),
    R(916, 214, '2.0.0', 'commands: {commands}', 'help', ''),
    R(917, 501, '5.5.4', 'XCLIENT bad attribute {name}', 'xclient', ''),
    R(918, 550, '5.7.0', 'XCLIENT not permitted', 'xclient',
      'XCLIENT is allowed only with +smtp-xclient-enable, from localhost or a route-map RELAY client.'),
    R(919, 555, '5.5.4', 'unsupported parameter {param}', 'mail',
      'An ESMTP parameter of MAIL or RCPT that was not advertised.'),
    R(920, 501, '5.5.4', 'invalid parameter {param}', 'mail', ''),
    R(921, 554, '5.6.0', 'message contains bare CR or LF; RFC 5321 section 2.3.8', 'dot',
      'With +rfc2821-strict-dot a message with a CR or LF outside CRLF is refused.'),
    R(922, 421, '4.7.0', 'too many errors, closing connection', 'any',
      'smtp-drop-after error replies were given in this session.'),
    R(923, 554, '5.5.1', 'no valid recipients', 'data', ''),
    R(924, 550, '5.7.1', 'HELO {helo} black listed', 'helo',
      'A Helo: tag entry for the HELO/EHLO argument has a right-hand-side value of REJECT or IREJECT; the connection is closed. smtpf 2.6 numbers this reply 924 in its source (its 2.1 reply list has no entry for it). See access-map.'),
    R(931, 450, '4.7.1', 'HELO {helo} temporary failure', 'helo',
      'A Helo: tag entry for the HELO/EHLO argument has a right-hand-side value of TEMPFAIL; the connection is closed. See access-map.'),
    R(932, 550, '5.7.0', 'this message was blocked', 'dot',
      'An access-map entry for the client, HELO, sender or a recipient has a right-hand-side value of TRAP: the message is kept in trap-dir and not delivered. smtpf gives this reply without a number. See access-map.'),
    R(940, 421, '4.4.7', 'session time limit exceeded, max={limit}s', 'any',
      'The session lasted smtp-session-timeout seconds; a command in flight got its reply first. The connection is closed; a transaction without its final reply is abandoned (the client sends it again).'),
    R(941, 421, '4.3.2', '{hostname} busy, try again later', 'connect',
      'This process has no file descriptors to spare for another session and its downstream connection (see descriptor-reserve); the connection is closed before the banner. Counted in barricade_connections_refused_total{reason="descriptors"}.'),
    R(942, 421, '4.3.2', 'local resources exhausted, try again later', 'rcpt',
      'The downstream connection could not be opened because this process ran out of file descriptors (EMFILE/ENFILE); the forward host itself was not tried. The connection is closed so that its descriptors are freed.'),
    R(943, 421, '4.3.2', 'too many connections from [{client_ip}], max={limit}', 'connect',
      'The client address already holds client-max-sessions sessions in this process; the connection is closed before the banner. Counted in barricade_connections_refused_total{reason="per-client"}.'),
    R(944, 421, '4.3.0', 'shared state unavailable ({check}), try again later', 'connect',
      'A connect-time limit (Rate-Connect:, Concurrent-Connect:) could not reach the shared-state store (Redis) and state-failure is tempfail for its family; the connection is closed. Decided before any mail is sent; the store is retried on the next connection.'),
    R(945, 451, '4.3.0', 'shared state unavailable ({check}), try again later', 'any',
      'A store-backed check (grey-listing at DATA, Msg-Limit: and Null-Rate-To: at RCPT, grey-content) could not reach the shared-state store (Redis) and state-failure is tempfail for its family; the session goes on. Each of them answers before the client sends the message body (grey-content also at the dot, if the store fails during the message).'),
    R(950, 552, '5.3.4', '<{rcpt}> ({size} bytes) exceeded max. message size of {limit} bytes', 'rcpt',
      'MAIL SIZE= is larger than the Length-Connect:, Length-From: or Length-To: limit for this recipient (smtpf numbers this reply 901). See the access-map.'),
    R(960, 451, '4.3.0', 'duplicate-message store unavailable, try again later', 'dot',
      'state-failure=dupmsg:tempfail and the shared-state store could not be asked whether the message was delivered before. By default dupmsg skips instead (the message is delivered untracked).'),
    R(961, 553, '5.6.7', 'non-ASCII address {address} not permitted without SMTPUTF8', 'mail',
      'RFC 6531 3.5: an internationalised sender or recipient address in a transaction whose MAIL '
      'did not ask for SMTPUTF8 (or when the downstreams do not offer SMTPUTF8, so neither do we).'),
    R(962, 250, '2.0.0', '{size} octets received', 'bdat',
      'RFC 3030: a BDAT chunk other than the last was read (size: the message so far). The reply '
      'to BDAT LAST is the reply to the message, as for the final dot of DATA.'),
    R(983, 538, '5.7.11', 'encryption required for requested authentication mechanism', 'auth',
      'RFC 4954 4: AUTH before STARTTLS while +smtp-auth-tls (the default for clients other '
      'than localhost); AUTH is offered in the EHLO only once the session is encrypted.'),
    R(984, 334, '', '{challenge}', 'auth',
      'RFC 4954 4: the SASL continuation (base64 "Username:", "Password:", or empty for PLAIN). '
      'Its text is the challenge alone, so it carries neither the reply id nor the session id.'),
    R(985, 454, '4.7.0', 'temporary authentication failure', 'auth',
      'RFC 4954 6: the downstream that authenticates (route:<auth domain>, else the local route) '
      'could not be reached, did not answer in time, does not offer AUTH PLAIN, answered 4xx, or '
      'refused AUTH for a reason other than the credentials (534, 538, a syntax error: its setup, '
      'which the log names; smtpf answers 535).'),
    R(986, 421, '4.7.0', 'too many failed authentication attempts from [{client_ip}], try again later', 'auth',
      'The client address failed AUTH smtp-auth-max-failures times within '
      'smtp-auth-failure-window seconds (counted in the shared store); the connection is closed.'),
    R(987, 501, '5.5.2', 'cannot decode AUTH response', 'auth',
      'RFC 4954 4: the SASL response is not valid base64, or not a PLAIN response '
      '([authzid] NUL authcid NUL password); the exchange is over.'),
    R(963, 530, '5.7.0', 'Must issue a STARTTLS command first', 'mail',
      'RFC 3207 4: the access map requires TLS (REQUIRE or VERIFY) of this client '
      '(Tls-Connect:), sender (Tls-From:) or recipient (Tls-To:), and the session is not '
      'encrypted.'),
    R(988, 550, '5.7.1', 'a client certificate is required', 'mail',
      'The access map asks for a verified client certificate (Tls-Connect:, Tls-From: or Tls-To: '
      'VERIFY) and the client used STARTTLS without presenting one (or was not asked for one: '
      'neither tls-cert-chain-file nor tls-cert-dir is set).'),
    R(989, 550, '5.7.1', 'client certificate not verified: {why}', 'mail',
      'The access map asks for a verified client certificate (VERIFY) and the one presented did '
      'not verify against tls-cert-chain-file / tls-cert-dir (why: OpenSSL\'s reason, e.g. '
      '"certificate has expired").'),
    R(990, 550, '5.7.1', 'client certificate does not name {name}', 'mail',
      'Tls-Connect: VERIFY:CN=name and the verified client certificate has neither that subject '
      'CN nor that subjectAltName DNS name.'),
    R(993, 214, '2.0.0', '{title}', 'admin',
      'The answer to an admin command from localhost (STAT, CONN, OPTN, VERB, INFO, CACHE GET): '
      'the title on the first line, the listing on the lines after it.'),
    R(994, 250, '2.0.0', '{text}', 'admin',
      'An admin command from localhost was carried out (CACHE PUT or DELETE, an OPTN or VERB change); '
      'with workers, by every worker.'),
    R(995, 501, '5.5.4', '{command}: {problem}', 'admin',
      'An admin command from localhost with a missing, malformed or unknown argument; '
      'HELP lists the commands and their arguments.'),
    R(996, 451, '4.3.0', '{command}: {problem}, try again later', 'admin',
      'An admin command could not be carried out now: the master or a worker did not answer in '
      'time, or the shared store is unavailable.'),
    R(997, 504, '5.5.4', '{what} not found', 'admin',
      'CACHE GET or DELETE of a key the shared store does not hold, or OPTN of an unknown option.'),
)


def render_markdown(catalogue: Catalogue | None = None) -> str:
    """The catalogue as the reference table in ``docs/replies.md``."""
    cat = catalogue or Catalogue()
    out = [
        "# Reply catalogue",
        "",
        "Every status line Barricade originates. The number after `#` in a reply is the id",
        "below; ids under 900 are smtpf's, 900 and up are Barricade's own. Code 0 means the",
        "code and enhanced status are the downstream host's. Reword any reply with",
        "`reply-file` (`NNN text`, using only the fields in braces that the text below uses).",
        "A temporary refusal after which Barricade closes the connection (grey-listing's #552,",
        "access-map TEMPFAIL on `Connect:` and `Helo:`) goes out as a 421 with the entry's status",
        "and text (RFC 5321 3.8).",
        "Generated by `scripts/regen`; do not edit by hand.",
        "",
        "| id | code | status | event | text | meaning |",
        "|---:|---:|---|---|---|---|",
    ]
    for spec in cat:
        doc = spec.doc.replace("|", "\\|")
        text = spec.template.replace("|", "\\|")
        out.append(f"| {spec.id} | {spec.code or 'relayed'} | {spec.status or '-'} | {spec.event} "
                   f"| `{text}` | {doc} |")
    return "\n".join(out) + "\n"



class ReplyId(enum.IntEnum):
    """Catalogue entries by name, for code: ``ReplyId.MESSAGE_ACCEPTED`` is #554.

    The number stays the entry's id (in the reply text, ``reply-file`` and
    metrics); the name says what the reply is where code chooses it.  Every
    name is checked against the catalogue at start-up.
    """

    GREETING = 633
    GREETING_SHORT = 632  # localhost, RELAY and white-listed clients
    EHLO = 254
    HELO = 256
    CLOSING = 247
    OK = 547
    SENDER_ACCEPTED = 283
    SENDER_REFUSED_DOWNSTREAM = 282
    HELD_PROCEED = 507
    RELAYING_DENIED = 288
    RECIPIENT_UNKNOWN = 292
    RECIPIENT_ACCEPTED = 297
    RECIPIENT_ACCEPTED_DISCARD = 290  # an access-map DISCARD will drop the message
    RECIPIENT_REFUSED_DOWNSTREAM = 300
    ROUTE_UNAVAILABLE = 295
    DOWNSTREAM_REPLY = 299
    ALL_ROUTES_REFUSED = 306
    ROUTES_DISAGREE = 307
    MESSAGE_ACCEPTED = 554
    ENTER_MAIL = 900
    NO_FORWARDER = 901
    NO_DESCRIPTORS_DOWNSTREAM = 942
    LOST_DURING_DATA = 902
    LOST_DOWNSTREAM = 903
    DOWNSTREAM_TIMEOUT = 904
    CLIENT_TIMEOUT = 905
    PROCESSING_ERROR = 907
    INTERNAL_ERROR = 908
    SHUTTING_DOWN = 909
    START_TLS = 913
    VRFY = 915
    HELP = 916
    NO_VALID_RECIPIENTS = 923
    # --- the checks' replies: access map ---
    CLIENT_BLACK_LISTED = 120
    CLIENT_BLACK_LISTED_CLOSE = 854  # IREJECT: never held by smtp-delay-checks
    CLIENT_TEMPFAIL = 853
    HELO_BLACK_LISTED = 924
    HELO_TEMPFAIL = 931
    CLIENT_SENDER_BLACK_LISTED = 125
    CLIENT_SENDER_BLACK_LISTED_NOW = 855
    CLIENT_SENDER_TEMPFAIL = 814
    SENDER_BLACK_LISTED = 127
    SENDER_BLACK_LISTED_NOW = 856
    SENDER_TEMPFAIL = 815
    CLIENT_RECIPIENT_BLACK_LISTED = 135
    CLIENT_RECIPIENT_TEMPFAIL = 816
    SENDER_RECIPIENT_BLACK_LISTED = 137
    SENDER_RECIPIENT_TEMPFAIL = 817
    RECIPIENT_BLACK_LISTED = 139
    RECIPIENT_TEMPFAIL = 818
    MESSAGE_TRAPPED = 932
    # --- client, HELO, sender and recipient tests ---
    CLIENT_RESERVED_DOMAIN = 121
    CLIENT_UNKNOWN_TLD = 122
    PTR_LOOKUP_ERROR = 415
    PTR_MISSING = 416
    IP_IN_PTR = 418
    HELO_INVALID = 423
    HELO_NOT_CLIENT_IP = 424
    HELO_RESERVED_DOMAIN = 427
    HELO_NOT_FQDN = 428
    HELO_CLAIMS_US = 430
    HELO_IS_IP_IN_PTR = 432
    SENDER_RESERVED_DOMAIN = 128
    SENDER_UNKNOWN_TLD = 129
    SENDER_NO_MX = 434
    SENDER_MX_ERROR = 436
    SENDER_MX_INVALID = 439
    RECIPIENT_ROUTED_ADDRESS = 131
    RECIPIENT_UUCP_ADDRESS = 132
    RECIPIENT_QUOTED_AT = 133
    RECIPIENT_RESERVED_DOMAIN = 140
    RECIPIENT_UNKNOWN_TLD = 141
    NULL_SENDER_RECIPIENTS = 441
    DNS_BL_LISTED = 525
    HEADER_IP_BLACK_LISTED = 873
    SPF_HELO = 701
    SPF_MAIL = 702
    # --- call-back sender verification ---
    CALLBACK_FAILED = 572
    CALLBACK_NO_ANSWER = 488
    CALLBACK_NO_DOMAIN = 489
    CALLBACK_MX_ERROR = 491
    CALLBACK_NO_ACCEPTABLE_MX = 493
    CALLBACK_MX_TEMPORARY = 498
    CALLBACK_MX_REFUSED = 499
    # --- limits and shared state ---
    TOO_MANY_RECIPIENTS = 910
    MAIL_LOOP = 911
    MESSAGE_TOO_BIG = 912
    MESSAGE_LIMIT_EXCEEDED = 475
    NULL_RATE_EXCEEDED = 505
    SIZE_OVER_LENGTH_LIMIT = 950
    MESSAGE_OVER_LENGTH_LIMIT = 625
    CONNECT_RATE_EXCEEDED = 522
    TOO_MANY_CONCURRENT = 329
    STATE_UNAVAILABLE_CLOSE = 944
    STATE_UNAVAILABLE = 945
    GREY_LISTED = 552  # 451 4.7.0 try again later
    GREY_CONTENT_MISMATCH = 553
    GREY_REJECTED = 388
    DUPLICATE_MESSAGE = 340
    DUPMSG_STORE_UNAVAILABLE = 960
    UTF8_ADDRESS_WITHOUT_SMTPUTF8 = 961
    CHUNK_RECEIVED = 962
    TLS_REQUIRED = 963
    CLIENT_CERT_REQUIRED = 988
    CLIENT_CERT_NOT_VERIFIED = 989
    CLIENT_CERT_WRONG_NAME = 990
    AUTH_CANCELLED = 259  # "*" during AUTH PLAIN
    AUTH_CANCELLED_LOGIN = 264  # "*" during AUTH LOGIN
    ALREADY_AUTHENTICATED = 267
    AUTH_UNKNOWN_MECHANISM = 269
    AUTHENTICATED = 274
    AUTH_FAILED = 275
    AUTH_NEEDS_TLS = 983
    AUTH_CHALLENGE = 984  # 334: the text is the SASL challenge alone
    AUTH_TEMPORARY = 985
    AUTH_TOO_MANY_FAILURES = 986
    AUTH_BAD_RESPONSE = 987
    ETRN_UNAVAILABLE = 276
    ETRN_RELAYED = 277
    SESSION_TIME_LIMIT = 940
    BUSY = 941
    TOO_MANY_FROM_CLIENT = 943
    # --- URI black lists (the uri plugin) ---
    URI_BODY_REJECTED = 763
    URI_IP_HOST = 765
    URI_DOMAIN_LISTED = 762
    URI_HOST_LISTED = 776
    URI_DOMAIN_UNKNOWN = 757
    URI_DOMAIN_TIMEOUT = 756
    URI_IP_IN_NAME = 754
    URI_IP_IN_PTR = 758
    URI_NO_PTR = 760
    URI_NO_SOA = 745
    URI_NS_REJECTED = 788
    URI_BL_CLIENT = 790
    URI_BL_HELO = 792
    URI_BL_MAIL = 794
    # --- protocol ---
    COMMAND_UNKNOWN = 248
    MISSING_ARGUMENT = 249
    NOT_IMPLEMENTED = 250
    OUT_OF_SEQUENCE = 251
    SCHIZOPHRENIC_AFTER_EHLO = 252
    EHLO_NOT_SUPPORTED = 253
    SCHIZOPHRENIC_AFTER_HELO = 255
    SENDER_SYNTAX = 279
    SENDER_EXTRA_SPACES = 280
    RECIPIENT_SYNTAX = 284
    RECIPIENT_EXTRA_SPACES = 285
    NULL_RECIPIENT = 286
    CONTENT_LINE_TOO_LONG = 321
    PRE_GREETING_TRAFFIC = 420
    PIPELINING_NOT_ALLOWED = 631
    PIPELINING_AFTER_HELO = 643
    COMMAND_TOO_LONG = 640
    NON_PRINTABLE = 641
    INVALID_TRANSMISSION = 906
    TLS_NOT_AVAILABLE = 914
    XCLIENT_BAD_ATTRIBUTE = 917
    XCLIENT_NOT_PERMITTED = 918
    UNSUPPORTED_PARAMETER = 919
    INVALID_PARAMETER = 920
    BARE_CR_OR_LF = 921
    TOO_MANY_ERRORS = 922
    SERVER_ERROR = 550  # 451 4.3.0 internal server error: the session goes on
    # --- admin commands (localhost only) ---
    ADMIN_RESTART_NEEDED = 323  # OPTN of an option that cannot change live
    ADMIN_KILLING = 324  # KILL: the session is being closed
    ADMIN_KILLED = 325  # what the killed session's client is told
    ADMIN_NO_SESSION = 326  # KILL: no worker holds that session
    ADMIN_LISTING = 993
    ADMIN_DONE = 994
    ADMIN_USAGE = 995
    ADMIN_UNAVAILABLE = 996
    ADMIN_NOT_FOUND = 997


def _by_action(**actions: tuple[ReplyId, ...]) -> dict[ReplyId, frozenset[str]]:
    out: dict[ReplyId, set[str]] = {}
    for action, rids in actions.items():
        for rid in rids:
            out.setdefault(rid, set()).add(action)
    return {rid: frozenset(acts) for rid, acts in out.items()}


_R = ReplyId
#: The verdict actions (``Action`` values) that carry each named refusal, so
#: that start-up can refuse a REJECT with a 2xx or 4xx reply, or a TEMPFAIL
#: with a 5xx, before any client hears one.  A test walks the checks' source
#: and keeps this table in step with the verdicts the code builds.
USES: dict[ReplyId, frozenset[str]] = _by_action(
    reject=(
        _R.CLIENT_BLACK_LISTED, _R.CLIENT_BLACK_LISTED_CLOSE, _R.HELO_BLACK_LISTED,
        _R.CLIENT_SENDER_BLACK_LISTED, _R.CLIENT_SENDER_BLACK_LISTED_NOW, _R.SENDER_BLACK_LISTED,
        _R.SENDER_BLACK_LISTED_NOW, _R.CLIENT_RECIPIENT_BLACK_LISTED, _R.SENDER_RECIPIENT_BLACK_LISTED,
        _R.RECIPIENT_BLACK_LISTED, _R.MESSAGE_TRAPPED,
        _R.SENDER_RESERVED_DOMAIN, _R.SENDER_UNKNOWN_TLD, _R.SENDER_NO_MX, _R.SENDER_MX_INVALID,
        _R.RECIPIENT_ROUTED_ADDRESS, _R.RECIPIENT_UUCP_ADDRESS, _R.RECIPIENT_QUOTED_AT,
        _R.RECIPIENT_RESERVED_DOMAIN, _R.RECIPIENT_UNKNOWN_TLD, _R.NULL_SENDER_RECIPIENTS,
        _R.HEADER_IP_BLACK_LISTED, _R.SPF_HELO, _R.SPF_MAIL,
        _R.CALLBACK_FAILED, _R.CALLBACK_NO_DOMAIN, _R.CALLBACK_NO_ACCEPTABLE_MX, _R.CALLBACK_MX_REFUSED,
        _R.MAIL_LOOP, _R.NULL_RATE_EXCEEDED, _R.SIZE_OVER_LENGTH_LIMIT, _R.MESSAGE_OVER_LENGTH_LIMIT,
        _R.GREY_REJECTED, _R.DUPLICATE_MESSAGE, _R.TLS_REQUIRED,
        _R.CLIENT_CERT_REQUIRED, _R.CLIENT_CERT_NOT_VERIFIED, _R.CLIENT_CERT_WRONG_NAME,
        _R.URI_BODY_REJECTED, _R.URI_IP_HOST, _R.URI_DOMAIN_LISTED, _R.URI_HOST_LISTED,
        _R.URI_DOMAIN_UNKNOWN, _R.URI_DOMAIN_TIMEOUT, _R.URI_IP_IN_NAME, _R.URI_IP_IN_PTR, _R.URI_NO_PTR,
        _R.URI_NO_SOA, _R.URI_NS_REJECTED,
        _R.AUTH_FAILED, _R.AUTH_NEEDS_TLS, _R.AUTH_UNKNOWN_MECHANISM, _R.ALREADY_AUTHENTICATED,
        _R.AUTH_BAD_RESPONSE, _R.AUTH_CANCELLED, _R.AUTH_CANCELLED_LOGIN,
    ),
    tempfail=(
        _R.CLIENT_TEMPFAIL, _R.HELO_TEMPFAIL, _R.CLIENT_SENDER_TEMPFAIL, _R.SENDER_TEMPFAIL,
        _R.CLIENT_RECIPIENT_TEMPFAIL, _R.SENDER_RECIPIENT_TEMPFAIL, _R.RECIPIENT_TEMPFAIL,
        _R.PTR_LOOKUP_ERROR, _R.SENDER_MX_ERROR, _R.SPF_HELO, _R.SPF_MAIL,
        _R.CALLBACK_FAILED, _R.CALLBACK_NO_ANSWER, _R.CALLBACK_MX_ERROR, _R.CALLBACK_MX_TEMPORARY,
        _R.TOO_MANY_RECIPIENTS, _R.MESSAGE_LIMIT_EXCEEDED, _R.CONNECT_RATE_EXCEEDED,
        _R.TOO_MANY_CONCURRENT, _R.STATE_UNAVAILABLE_CLOSE, _R.STATE_UNAVAILABLE,
        _R.DUPMSG_STORE_UNAVAILABLE, _R.GREY_LISTED, _R.GREY_CONTENT_MISMATCH,
        _R.PROCESSING_ERROR, _R.SERVER_ERROR, _R.AUTH_TEMPORARY,
    ),
    drop=(
        _R.CLIENT_BLACK_LISTED, _R.CLIENT_BLACK_LISTED_CLOSE, _R.CLIENT_TEMPFAIL, _R.HELO_BLACK_LISTED,
        _R.HELO_TEMPFAIL, _R.CLIENT_RESERVED_DOMAIN, _R.CLIENT_UNKNOWN_TLD, _R.PTR_MISSING, _R.IP_IN_PTR,
        _R.HELO_NOT_CLIENT_IP, _R.HELO_RESERVED_DOMAIN, _R.HELO_NOT_FQDN, _R.HELO_CLAIMS_US,
        _R.HELO_IS_IP_IN_PTR, _R.DNS_BL_LISTED, _R.CONNECT_RATE_EXCEEDED, _R.TOO_MANY_CONCURRENT,
        _R.STATE_UNAVAILABLE_CLOSE, _R.STATE_UNAVAILABLE, _R.DUPMSG_STORE_UNAVAILABLE, _R.GREY_LISTED,
        _R.URI_BL_CLIENT, _R.URI_BL_HELO, _R.URI_BL_MAIL, _R.AUTH_TOO_MANY_FAILURES,
    ),
    # Not a verdict: the admin commands' answers (barricade.admin), listed so that
    # every reply a localhost operator can get is named in one table.
    admin=(
        _R.ADMIN_RESTART_NEEDED, _R.ADMIN_KILLING, _R.ADMIN_NO_SESSION, _R.ADMIN_LISTING,
        _R.ADMIN_DONE, _R.ADMIN_USAGE, _R.ADMIN_UNAVAILABLE, _R.ADMIN_NOT_FOUND, _R.HELP,
    ),
    killed=(_R.ADMIN_KILLED,),
)
del _R

#: The code classes each action may carry; a relayed entry (code 0) fits any.
FITS = {"reject": "5", "tempfail": "4", "drop": "45"}


def check_use(spec: ReplySpec, action: str) -> str | None:
    """Whether ``action`` may carry entry ``spec`` (None: it may)."""
    allowed = FITS.get(action)
    if not spec.code or allowed is None or str(spec.code)[0] in allowed:
        return None
    return f"reply #{spec.id} is a {spec.code}: a {action.upper()} verdict cannot carry it"


def check_reply(spec: ReplySpec) -> str | None:
    """What is wrong with an entry's code and enhanced status (None: nothing).

    The code is 0 (relayed) or 2xx-5xx, and an enhanced status, when given,
    is of the code's class (no 550 with 4.7.1).
    """
    if spec.code and not 200 <= spec.code < 600:
        return f"reply #{spec.id}: code {spec.code} is not an SMTP reply code"
    if spec.code and spec.status and spec.status[0] != str(spec.code)[0]:
        return f"reply #{spec.id}: enhanced status {spec.status} does not fit code {spec.code}"
    return None


def check_catalogue(catalogue: Catalogue) -> None:
    """Start-up: every named reply exists, every entry is well formed, and its code class
    fits the verdicts that carry it (:data:`USES`, which an operator's reply-file cannot
    change); raises CatalogueError."""
    for rid in ReplyId:
        if rid not in catalogue:
            raise CatalogueError(f"reply #{int(rid)} ({rid.name}) is not in the catalogue")
    for spec in catalogue:
        problem = check_reply(spec)
        if problem:
            raise CatalogueError(problem)
    for rid, actions in USES.items():
        for action in sorted(actions):
            problem = check_use(catalogue.spec(rid), action)
            if problem:
                raise CatalogueError(f"{problem} ({rid.name})")
