"""Domain-name predicates shared by the client, HELO, MAIL and RCPT tests.

Pure functions and data, no I/O once loaded:

* :func:`reserved_domain` is libsnert's ``isReservedTLD``, which smtpf's
  ``rfc2606-special-domains`` uses: the RFC 2606 / 6761 names ``.test``,
  ``.example``, ``.invalid``, ``.localhost``, the second-level
  ``example.<tld>`` (example.com, example.net, example.org ...), and three
  names in common private use: ``.localdomain``, ``.local`` (RFC 6762) and
  ``.lan``.  The HELO test allows ``.local`` and ``.lan``, which LAN hosts
  legitimately call themselves.
* :class:`TopLevelDomains` is the IANA list behind ``reject-unknown-tld``:
  the top-level domains of the ICANN section of the Public Suffix List, as
  the ``publicsuffixlist`` package ships it (a maintained package that
  follows the list, so ``pip install -U publicsuffixlist`` refreshes it; a
  snapshot of our own would go stale).  ``tld-level-one-file`` replaces it,
  as in smtpf.
* :func:`client_name`, :func:`domain_of`, :func:`usual_suspect`: how the
  checks read the session, in one place.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from barricade.client import ClientInfo, unmap
from barricade.idn import to_ascii

#: Reserved top-level names: RFC 2606 / 6761, plus names in private use.
RESERVED_TLDS = frozenset(("test", "example", "invalid", "localhost", "localdomain", "local", "lan"))
#: Allowed in HELO: LAN hosts are legitimately called host.local or host.lan.
HELO_ALLOWED_TLDS = frozenset(("local", "lan"))


def _tld_and_head(name: str) -> tuple[str, str] | None:
    """``mx.example.com`` → ``("com", "mx.example")``; None without a dot."""
    name = name.strip().lower()
    if name.endswith("."):
        name = name[:-1]  # the root: "host.test." is host.test
    head, dot, tld = name.rpartition(".")
    return (tld, head) if dot else None


def reserved_domain(name: str, *, helo: bool = False) -> bool:
    """Is ``name`` (a domain, or an address: the domain is its end) reserved?

    A name without a dot (``localhost``) is not: smtpf tests the last label
    after a dot.  ``example.<tld>`` counts when ``example`` is a whole label
    (``myexample.com`` and ``my-example.com`` do not).
    """
    parts = _tld_and_head(name)
    if parts is None:
        return False
    tld, head = parts
    if tld in RESERVED_TLDS and not (helo and tld in HELO_ALLOWED_TLDS):
        return True
    if not head.endswith("example"):
        return False
    before = head[: -len("example")]
    return not before or not (before[-1].isascii() and (before[-1].isalnum() or before[-1] == "-"))


class TldFileError(ValueError):
    """``tld-level-one-file`` cannot be read or lists no domain."""


def parse_tlds(text: str) -> frozenset[str]:
    """White-space separated names, ``#`` comments, optional leading dots."""
    names = set()
    for line in text.splitlines():
        for word in line.split("#", 1)[0].split():
            word = word.strip(".").lower()
            if word:
                names.add(word)
    return frozenset(names)


def ascii_label(label: str) -> str:
    """A TLD in the form it takes in an SMTP envelope (``xn--`` for IDNs)."""
    if label.isascii():
        return label.lower()
    found = to_ascii(label)
    if found is None:  # a rule IDNA refuses: its punycode, as it would be written
        return "xn--" + label.lower().encode("punycode").decode("ascii")
    return found.lower()


def icann_tlds(text: str) -> frozenset[str]:
    """The last labels of the rules in the Public Suffix List's ICANN section:
    every IANA top-level domain is there, as a rule or as the end of one."""
    tlds: set[str] = set()
    inside = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("// ===BEGIN ICANN DOMAINS==="):
            inside = True
        elif line.startswith("// ===END ICANN DOMAINS==="):
            break
        elif inside and line and not line.startswith("//"):
            rule = line.split()[0].lstrip("!*.")
            tlds.add(ascii_label(rule.rsplit(".", 1)[-1]))
    return frozenset(tlds)


class TopLevelDomains:
    """A set of top-level domains and the test ``reject-unknown-tld`` makes."""

    def __init__(self, names: Iterable[str], source: str):
        self.names = frozenset(n.lower() for n in names)
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> TopLevelDomains:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TldFileError(f"tld-level-one-file: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise TldFileError(f"tld-level-one-file: {path} is not UTF-8: {exc}") from None
        names = parse_tlds(text)
        if not names:
            raise TldFileError(f"tld-level-one-file: {path} lists no top-level domain")
        return cls(names, str(path))

    @classmethod
    @functools.cache
    def builtin(cls) -> TopLevelDomains:
        """The ICANN top-level domains of the ``publicsuffixlist`` package's list."""
        import publicsuffixlist

        text = Path(publicsuffixlist.PSLFILE).read_text(encoding="utf-8")
        version = metadata.version("publicsuffixlist")
        return cls(icann_tlds(text), f"publicsuffixlist {version}")

    @classmethod
    def from_option(cls, path: str) -> TopLevelDomains:
        return cls.from_file(path) if path else cls.builtin()

    def valid(self, domain: str) -> bool:
        """Does ``domain`` end in a known top-level domain?

        A single label is its own TLD (``com`` is valid, ``localhost`` is
        not); a trailing root dot is ignored.
        """
        name = domain.strip().lower()
        if name.endswith("."):
            name = name[:-1]
        return bool(name) and name.rpartition(".")[2] in self.names

    def __len__(self) -> int:
        return len(self.names)


# --- reading the session --------------------------------------------------------------


def client_name(client: ClientInfo) -> str:
    """The client's PTR name, or "" when it has none ("unknown", an address literal)."""
    name = client.name or ""
    if name.lower() == "unknown" or name.startswith("["):
        return ""
    return name


def domain_of(address: str | None) -> str:
    """The domain of a path ("" for the null path and unqualified addresses)."""
    if not address:
        return ""
    local, at, domain = address.rpartition("@")
    return domain if at else ""


def local_part(address: str) -> str:
    return address.rpartition("@")[0] if "@" in address else address


def usual_suspect(client: ClientInfo) -> bool:
    """smtpf's CLIENT_HOLY_TRINITY (localhost, LAN, RELAY): exempt from most tests.

    White-listed sessions (smtpf adds them to make the "usual suspects")
    never reach the checks: the pipeline skips them.
    """
    return client.localhost or client.private or client.relay


@functools.lru_cache(maxsize=4096)
def literal_ip(text: str) -> str | None:
    """The address a HELO names: ``[192.0.2.1]``, ``[IPv6:…]`` or a bare IP, normalised.

    Remembered: the HELO and envelope tests ask it of the same few names in
    every session, and the stdlib's parse costs microseconds, most of them
    raising for a name that is no address; a name with neither a colon nor
    only digits and dots is none, without asking.
    """
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    if ":" not in inner and not inner.replace(".", "").isdigit():
        return None
    try:
        return str(unmap(ipaddress.ip_address(inner)))
    except ValueError:
        return None
