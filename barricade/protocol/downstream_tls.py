"""STARTTLS towards the downstream: the per-route policy, sans-IO.

Levels, as Postfix's ``smtp_tls_security_level`` names them:

* ``none``: never STARTTLS;
* ``may``: STARTTLS when the downstream offers it; a refusal or a failed
  handshake falls back to plaintext (the mail is not held up by TLS);
* ``encrypt`` (``require``): STARTTLS or no delivery to that host;
* ``verify``: as ``encrypt``, and the certificate must chain to
  ``forward-tls-ca-file`` (or the system's roots) and name the host
  (``verify:name`` names it for a route whose FORWARD: host is an address).
"""

from __future__ import annotations

from dataclasses import dataclass

LEVELS = ("none", "may", "encrypt", "require", "verify")


@dataclass(frozen=True)
class TlsPolicy:
    level: str = "may"
    name: str = ""  # the name the certificate must carry (verify); "" = the forward host

    @property
    def required(self) -> bool:
        return self.level in ("encrypt", "require", "verify")

    @property
    def verify(self) -> bool:
        return self.level == "verify"


def parse_policy(text: str) -> TlsPolicy:
    """``"verify:mx.example.com"`` → TlsPolicy("verify", "mx.example.com"); ValueError if unknown."""
    text = text.strip()
    level, _, name = text.partition(":")
    level = level.strip().lower()
    if level not in LEVELS or (name and level != "verify"):
        raise ValueError(f"TLS policy {text!r}: expected one of {', '.join(LEVELS)} (verify:name)")
    return TlsPolicy(level, name.strip())


PLAIN, STARTTLS, REFUSE = "plain", "starttls", "refuse"


def decide(policy: TlsPolicy, offered: bool) -> str:
    """After the EHLO: go on in plaintext, send STARTTLS, or give this host up."""
    if policy.level == "none":
        return PLAIN
    if offered:
        return STARTTLS
    return REFUSE if policy.required else PLAIN
