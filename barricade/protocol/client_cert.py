"""Client certificates after STARTTLS, and the access map's ``VERIFY[:CN=name]`` (sans-IO).

The TLS layer asks every client for a certificate when CAs are configured
(``tls-cert-chain-file``, ``tls-cert-dir``) but never fails the handshake
for a missing or bad one: a client without a certificate may still use
TLS where none is required.  What it learnt is a :class:`ClientCert`;
:func:`judge` decides whether a ``REQUIRE`` or ``VERIFY`` word of
``Tls-Connect:``, ``Tls-From:`` or ``Tls-To:`` is met and, if not, which
reply says why.

Names: ``VERIFY:CN=name`` is met by a verified certificate whose subject
CN or one of whose subjectAltName DNS entries equals ``name``, ignoring
case and a trailing dot.  A certificate name ``*.example.com`` stands for
exactly one whole left-most label (``mx.example.com``, not
``example.com`` nor ``a.mx.example.com``), as RFC 6125 6.4.3 allows; a
wildcard with fewer than two labels after it (``*.com``) or inside a label
(``mx*.example.com``) only matches that same text.  The map's name is
never a pattern: ``CN=*.example.com`` asks for a certificate that names
``*.example.com`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from barricade.replies import ReplyId

REQUIRE, VERIFY, SKIP = "REQUIRE", "VERIFY", "SKIP"

#: OpenSSL's X.509 verification codes (x509_vfy.h) that clients meet in
#: practice: the text the log and the reply give, and the short word that
#: labels the metric.  Other codes are "other".
VERIFY_ERRORS: dict[int, tuple[str, str]] = {
    2: ("unable to get issuer certificate", "untrusted"),
    7: ("certificate signature failure", "invalid"),
    9: ("certificate is not yet valid", "not-yet-valid"),
    10: ("certificate has expired", "expired"),
    18: ("self-signed certificate", "untrusted"),
    19: ("self-signed certificate in certificate chain", "untrusted"),
    20: ("unable to get local issuer certificate", "untrusted"),
    21: ("unable to verify the first certificate", "untrusted"),
    23: ("certificate revoked", "revoked"),
    24: ("invalid CA certificate", "invalid"),
    26: ("unsupported certificate purpose", "purpose"),
}


def verify_error(code: int, text: str = "") -> tuple[str, str]:
    """(description, metric word) for an OpenSSL verification ``code``."""
    if code in VERIFY_ERRORS:
        return VERIFY_ERRORS[code]
    return (text or f"certificate verify error {code}"), "other"


def printable(text: str, limit: int = 256) -> str:
    """A certificate's name as it may go into a log line or a reply.

    The names are the client's to choose: control characters (a forged log
    line) become ``\\xNN`` and the text is cut at ``limit`` characters.
    """
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


@dataclass(frozen=True)
class ClientCert:
    """What the handshake showed of the client's certificate.

    ``error`` is empty when the chain verified against the configured CAs,
    else why not; ``reason`` is its one-word class (for the metric).
    """

    subject: str  # RFC 4514, e.g. "CN=client.example.org,O=Example"
    issuer: str
    cn: str = ""
    dns_names: tuple[str, ...] = ()
    verified: bool = False
    error: str = ""
    reason: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """The names :func:`name_matches` compares: the CN, then the DNS subjectAltNames."""
        return ((self.cn,) if self.cn else ()) + self.dns_names


@dataclass(frozen=True)
class Requirement:
    """An access-map TLS word: ``REQUIRE``, ``VERIFY``, ``VERIFY:CN=name``, ``SKIP`` or none."""

    word: str = ""
    cn: str = ""

    @property
    def demands_tls(self) -> bool:
        return self.word in (REQUIRE, VERIFY)


def parse(value: str | None) -> Requirement:
    """``"verify:CN=mx.example.com"`` → ``Requirement("VERIFY", "mx.example.com")``.

    Unknown words are no requirement (``DUNNO`` is smtpf's ``SKIP`` spelling
    and, like an unknown word, demands nothing).
    """
    head, _, rest = (value or "").strip().partition(":")
    word = head.strip().upper()
    if word not in (REQUIRE, VERIFY, SKIP, "DUNNO"):
        return Requirement()
    cn = ""
    if word == VERIFY and rest.strip().upper().startswith("CN="):
        cn = rest.strip()[3:].strip().strip('"')
    return Requirement(word, cn)


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def name_matches(wanted: str, cert_name: str) -> bool:
    """Does the certificate's ``cert_name`` name ``wanted`` (rules in the module text)?"""
    want, have = _norm(wanted), _norm(cert_name)
    if not want or not have:
        return False
    if want == have:
        return True
    if not have.startswith("*.") or have.count(".") < 2:
        return False
    label, dot, rest = want.partition(".")
    return bool(dot) and label not in ("", "*") and rest == have[2:]


def names_match(wanted: str, cert: ClientCert) -> bool:
    """Is ``wanted`` the CN or one of the DNS subjectAltNames of ``cert``?"""
    return any(name_matches(wanted, name) for name in cert.names)


@dataclass(frozen=True)
class Refusal:
    """Why a requirement is not met: the reply, its fields, and a sentence for the log."""

    reply: ReplyId
    why: str
    fields: dict


def judge(required: Requirement, tls: bool, cert: ClientCert | None) -> Refusal | None:
    """None when a session with (``tls``) or without TLS and ``cert`` meets ``required``."""
    if not required.demands_tls:
        return None
    if not tls:
        return Refusal(ReplyId.TLS_REQUIRED, "the session is plaintext", {})
    if required.word == REQUIRE:
        return None
    if cert is None:
        return Refusal(ReplyId.CLIENT_CERT_REQUIRED, "no client certificate", {})
    if not cert.verified:
        return Refusal(ReplyId.CLIENT_CERT_NOT_VERIFIED,
                       f"client certificate {cert.subject} not verified: {cert.error}",
                       {"why": cert.error})
    if required.cn and not names_match(required.cn, cert):
        names = ", ".join(cert.names) or "no name"
        return Refusal(ReplyId.CLIENT_CERT_WRONG_NAME,
                       f"client certificate names {names}, not {required.cn}", {"name": required.cn})
    return None
