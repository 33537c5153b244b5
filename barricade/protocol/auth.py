"""SMTP AUTH (RFC 4954) on the client side of the proxy: PLAIN and LOGIN, sans-IO.

Barricade does not check passwords: it collects the credentials with the
client's mechanism (LOGIN is two 334 prompts, PLAIN one response, or an
initial response on the AUTH line) and the proxy hands them, as one AUTH
PLAIN, to the downstream that decides.  This module is the exchange only:
which challenge to send next, and the credentials or the refusal at the
end.  The credentials never print their password (``repr``, logs).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from barricade.replies import ReplyId

MECHANISMS = ("PLAIN", "LOGIN")
#: The EHLO keyword when AUTH is offered.
KEYWORD = "AUTH " + " ".join(MECHANISMS)
#: RFC 4954 4: "*" alone cancels the exchange.
CANCEL = "*"
#: LOGIN's prompts, as every client expects them (base64 of "Username:" and "Password:").
USERNAME_PROMPT = base64.b64encode(b"Username:").decode("ascii")
PASSWORD_PROMPT = base64.b64encode(b"Password:").decode("ascii")
#: A PLAIN field (RFC 4616 allows 255 octets of UTF-8 each); longer is an attack.
FIELD_LIMIT = 255


@dataclass(frozen=True)
class Credentials:
    """What the client authenticates as; the password is kept out of every repr."""

    authcid: str
    password: str = field(repr=False)
    authzid: str = ""

    def plain(self) -> str:
        """The RFC 4616 PLAIN response, base64: what the downstream is sent."""
        raw = f"{self.authzid}\0{self.authcid}\0{self.password}".encode()
        return base64.b64encode(raw).decode("ascii")

    @property
    def domain(self) -> str:
        """The domain part of the user name ("" without one): it picks the route."""
        _, at, domain = self.authcid.rpartition("@")
        return domain.lower() if at else ""

    def __str__(self) -> str:
        return self.authcid


class AuthError(Exception):
    """The exchange ends with this catalogue reply (cancelled, undecodable ...)."""

    def __init__(self, reply_id: ReplyId):
        super().__init__(reply_id.name)
        self.reply_id = reply_id


def decode(text: str) -> bytes:
    """Strict base64 (RFC 4954 4); "=" alone is the empty response."""
    text = text.strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError(ReplyId.AUTH_BAD_RESPONSE) from None


def _field(raw: bytes) -> str:
    if len(raw) > FIELD_LIMIT:
        raise AuthError(ReplyId.AUTH_BAD_RESPONSE)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthError(ReplyId.AUTH_BAD_RESPONSE) from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise AuthError(ReplyId.AUTH_BAD_RESPONSE)
    return text


def parse_plain(raw: bytes) -> Credentials:
    """RFC 4616: ``[authzid] NUL authcid NUL passwd``, authcid and password not empty."""
    parts = raw.split(b"\0")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise AuthError(ReplyId.AUTH_BAD_RESPONSE)
    authzid, authcid, password = (_field(p) for p in parts)
    return Credentials(authcid, password, authzid)


class Exchange:
    """One AUTH command's exchange.

    :meth:`start` and :meth:`respond` return the next challenge (a str to
    send as 334) or the :class:`Credentials`; they raise :class:`AuthError`
    when the exchange ends in a refusal.
    """

    def __init__(self, mechanism: str):
        self.mechanism = mechanism.upper()
        if self.mechanism not in MECHANISMS:
            raise AuthError(ReplyId.AUTH_UNKNOWN_MECHANISM)
        self._user: str | None = None

    @property
    def cancelled(self) -> ReplyId:
        return ReplyId.AUTH_CANCELLED_LOGIN if self.mechanism == "LOGIN" else ReplyId.AUTH_CANCELLED

    def start(self, initial: str | None) -> str | Credentials:
        """The AUTH line's optional initial response decides the first step."""
        if initial is None:
            return "" if self.mechanism == "PLAIN" else USERNAME_PROMPT
        return self.respond(initial)

    def respond(self, line: str) -> str | Credentials:
        if line.strip() == CANCEL:
            raise AuthError(self.cancelled)
        raw = decode(line)
        if self.mechanism == "PLAIN":
            return parse_plain(raw)
        if self._user is None:
            self._user = _field(raw)
            if not self._user:
                raise AuthError(ReplyId.AUTH_BAD_RESPONSE)
            return PASSWORD_PROMPT
        password = _field(raw)
        if not password:
            raise AuthError(ReplyId.AUTH_BAD_RESPONSE)
        return Credentials(self._user, password)


def parse_command(arg: str) -> tuple[str, str | None]:
    """``AUTH mechanism [initial-response]`` → (mechanism, response or None)."""
    mechanism, _, initial = arg.strip().partition(" ")
    initial = initial.strip()
    return mechanism.upper(), (initial or None)
