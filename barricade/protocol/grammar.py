"""RFC 5321 grammar: command lines, paths, ESMTP parameters, HELO, XCLIENT.

Pure functions; a failure raises :class:`GrammarError` naming the catalogue
reply the session should send, so the grammar never formats a status line.
The smtpf ``rfc2821-*`` strictness options arrive as a :class:`Strictness`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from barricade.idn import to_ascii
from barricade.replies import ReplyId

COMMAND_LIMIT = 512  # RFC 5321 4.5.3.1.4, CRLF included
COMMAND_HARD_LIMIT = 4096  # beyond this no extension is plausible: close
TEXT_LINE_LIMIT = 1000  # RFC 5321 4.5.3.1.6, CRLF included
LOCAL_LIMIT = 64
DOMAIN_LIMIT = 255


class GrammarError(ValueError):
    """Bad syntax; ``reply_id`` and ``fields`` pick the catalogue reply."""

    def __init__(self, reply_id: int, **fields: object):
        super().__init__(f"#{reply_id} {fields}")
        self.reply_id = reply_id
        self.fields = fields


@dataclass(frozen=True)
class Strictness:
    angle_brackets: bool = True
    extra_spaces: bool = False
    local_length: bool = False
    domain_length: bool = False


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
#: A quoted local part: RFC 5321's qtextSMTP and quoted-pairSMTP, no control (TAB neither);
#: other than US-ASCII only in an RFC 6531 address (the caller's test).
_QUOTED = re.compile(r'"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*"\Z')
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_HELO_CHARS = re.compile(r"[A-Za-z0-9._:\[\]-]+\Z")
_XTEXT = re.compile(rb"\+([0-9A-F]{2})")
_PARAM_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")


def split_command(line: str) -> tuple[str, str]:
    """``"mail FROM:<a>"`` → ``("MAIL", "FROM:<a>")``."""
    verb, _, arg = line.strip(" ").partition(" ")
    return verb.upper(), arg.strip(" ")


def valid_domain_literal(text: str) -> bool:
    inner = text[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
        try:
            ipaddress.IPv6Address(inner)
            return True
        except ValueError:
            return False
    try:
        ipaddress.IPv4Address(inner)
        return True
    except ValueError:
        return False


def valid_domain(domain: str) -> bool:
    if domain.startswith("[") and domain.endswith("]"):
        return valid_domain_literal(domain)
    return bool(_DOMAIN.match(domain))


def valid_helo(arg: str) -> bool:
    """smtpf's built-in test: only FQDN or address-literal characters."""
    return bool(arg) and bool(_HELO_CHARS.match(arg))


@dataclass(frozen=True)
class Path:
    """A parsed reverse- or forward-path."""

    address: str  # "" for the null path
    params: dict[str, str | None]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2] if "@" in self.address else ""


def parse_path(arg: str, keyword: str, strict: Strictness, *, mail: bool) -> Path:
    """Parse ``FROM:<path> params`` (``keyword`` is ``FROM`` or ``TO``)."""
    if mail:
        bad_id, extra_id = ReplyId.SENDER_SYNTAX, ReplyId.SENDER_EXTRA_SPACES
    else:
        bad_id, extra_id = ReplyId.RECIPIENT_SYNTAX, ReplyId.RECIPIENT_EXTRA_SPACES
    field = "sender" if mail else "rcpt"
    if arg[: len(keyword) + 1].upper() != keyword + ":":
        raise GrammarError(extra_id)
    rest = arg[len(keyword) + 1 :]
    if rest[:1] == " ":
        if strict.extra_spaces:
            raise GrammarError(extra_id)
        rest = rest.lstrip(" ")
    if not rest:
        raise GrammarError(ReplyId.MISSING_ARGUMENT, command=("MAIL FROM:" if mail else "RCPT TO:"))
    if rest.startswith("<"):
        end = _closing_bracket(rest)
        if end < 0:
            raise GrammarError(bad_id, **{field: rest, "reason": "unbalanced angle brackets"})
        inner, tail = rest[1:end], rest[end + 1 :]
        if tail and not tail.startswith(" "):
            raise GrammarError(bad_id, **{field: rest, "reason": "junk after address"})
    else:
        if strict.angle_brackets:
            raise GrammarError(bad_id, **{field: rest.split(" ")[0], "reason": "angle brackets required"})
        inner, _, tail = rest.partition(" ")
        tail = " " + tail if tail else ""
    address = _strip_source_route(inner)
    if address:
        _check_mailbox(address, strict, bad_id, field, mail)
    elif not mail:
        raise GrammarError(ReplyId.NULL_RECIPIENT)
    return Path(address, parse_params(tail, bad_id, field, address))


def _closing_bracket(text: str) -> int:
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
    return -1


def _strip_source_route(inner: str) -> str:
    """RFC 5321 4.1.2: ``@a,@b:user@d`` — the route is obsolete, drop it."""
    if inner.startswith("@") and ":" in inner:
        return inner.split(":", 1)[1]
    return inner


_UTF8_DOT_ATOM = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+"
                            r"(?:\.(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+)*\Z")


def valid_utf8_domain(domain: str) -> bool:
    """RFC 6531 3.3: a domain of U-labels, checked through its IDNA (A-label) form."""
    if any(label[:1] == "-" or label[-1:] == "-" for label in domain.rstrip(".").split(".")):
        return False
    ascii_form = to_ascii(domain.rstrip("."))
    return ascii_form is not None and valid_domain(ascii_form)


def _check_mailbox(address: str, strict: Strictness, bad_id: int, field: str, mail: bool) -> None:
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    why = None
    if address.isascii():
        local_ok = bool(_DOT_ATOM.match(local) or _QUOTED.match(local))
        domain_ok = not at or valid_domain(domain)
    else:  # internationalised (RFC 6531); whether SMTPUTF8 allows it is the session's call
        local_ok = bool(_UTF8_DOT_ATOM.match(local) or _QUOTED.match(local))
        domain_ok = not at or (valid_domain(domain) if domain.isascii() else valid_utf8_domain(domain))
    if not local_ok:
        why = "invalid local part"
    elif not domain_ok:
        why = "invalid domain"
    elif strict.local_length and len(local) > LOCAL_LIMIT:
        why = f"local part longer than {LOCAL_LIMIT}"
    elif strict.domain_length and len(domain) > DOMAIN_LIMIT:
        why = f"domain longer than {DOMAIN_LIMIT}"
    if why:
        raise GrammarError(bad_id, **{field: f"<{address}>", "reason": why})


def parse_params(tail: str, bad_id: int, field: str, address: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for token in tail.split():
        key, eq, value = token.partition("=")
        if not _PARAM_KEY.match(key) or (eq and not value):
            raise GrammarError(ReplyId.INVALID_PARAMETER, param=token)
        params[key.upper()] = value if eq else None
    return params


def ascii_digits(text: str) -> bool:
    """One or more of 0-9 and nothing else.

    ``str.isdigit`` also says yes to ``²``, ``①`` and ``١``: ``int()`` refuses
    the first two (a ValueError out of a parser) and reads the third as a
    number that would be passed on in non-ASCII text.  Numbers on the wire
    (SIZE=, a port, a reply code) are ASCII.
    """
    return text.isascii() and text.isdigit()


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext (XCLIENT values)."""
    return _XTEXT.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("ascii")).decode(
        "utf-8", "replace"
    )


XCLIENT_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT")


@functools.lru_cache(maxsize=4096)
def _canonical_ip(text: str) -> str:
    """An address in its one text form; remembered (a front MTA sends XCLIENT for every
    session, from a working set of client addresses, and the stdlib parses in Python).

    ValueError for what is no address, and for an IPv6 address with a zone
    (``fe80::1%eth0``): a zone names an interface of the sender's host, means
    nothing here, and its text is anything at all.
    """
    if "%" in text:
        raise ValueError(f"an address with a zone: {text!r}")
    return str(ipaddress.ip_address(text))


def parse_xclient(arg: str) -> dict[str, str | None]:
    """``ADDR=1.2.3.4 NAME=[UNAVAILABLE]`` → dict; unavailable values → None."""
    attrs: dict[str, str | None] = {}
    if not arg:
        raise GrammarError(ReplyId.MISSING_ARGUMENT, command="XCLIENT")
    for token in arg.split():
        key, eq, value = token.partition("=")
        key = key.upper()
        if not eq or key not in XCLIENT_ATTRS:
            raise GrammarError(ReplyId.XCLIENT_BAD_ATTRIBUTE, name=token)
        decoded = xtext_decode(value)
        if decoded.upper() in ("[UNAVAILABLE]", "[TEMPUNAVAIL]"):
            attrs[key] = None
            continue
        if key == "ADDR":
            if decoded.upper().startswith("IPV6:"):
                decoded = decoded[5:]
            try:
                decoded = _canonical_ip(decoded)
            except ValueError:
                raise GrammarError(ReplyId.XCLIENT_BAD_ATTRIBUTE, name=token) from None
        elif key == "PORT" and not (ascii_digits(decoded) and int(decoded) < 65536):
            raise GrammarError(ReplyId.XCLIENT_BAD_ATTRIBUTE, name=token)
        elif key in ("HELO", "NAME") and not valid_helo(decoded):
            raise GrammarError(ReplyId.XCLIENT_BAD_ATTRIBUTE, name=token)
        elif key == "PROTO" and decoded.upper() not in ("SMTP", "ESMTP"):
            raise GrammarError(ReplyId.XCLIENT_BAD_ATTRIBUTE, name=token)
        elif not (decoded.isascii() and decoded.isprintable()):
            raise GrammarError(ReplyId.XCLIENT_BAD_ATTRIBUTE, name=token)
        attrs[key] = decoded
    return attrs


_QUEUE_NAME = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")


def valid_etrn(arg: str) -> bool:
    """RFC 1985: ``domain``, ``@domain`` (subdomains too) or ``#queue-name``."""
    if arg.startswith("#"):
        return bool(_QUEUE_NAME.match(arg[1:]))
    domain = arg[1:] if arg.startswith("@") else arg
    return bool(domain) and valid_domain(domain)
