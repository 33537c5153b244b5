"""Call-back sender verification at DATA: smtpf's ``+call-back`` (README, "Call-back sender verification").

Before the 354, the sender's MX is asked whether the sender exists, the way
a bounce would be delivered to it::

    HELO <interface-name>
    MAIL FROM:<postmaster@interface-name>
    RCPT TO:<sender>
    RCPT TO:<false address>     (the local part reversed, plus a Luhn digit)
    QUIT

It runs in the DATA phase after the access map and before grey-listing
(smtpf's data table: access, sav, grey), so every envelope test has had its
chance and a refused sender costs no grey-list record.  The sender is
``postmaster@`` our name, as in smtpf, not the null sender: a real address
every MX must accept (RFC 5321 4.5.1), where some refuse or ration RCPTs
for ``MAIL FROM:<>``.

* **Exempt** (``exempt``): the null sender, ``postmaster@``, address-literal
  domains, localhost, LAN and route-map RELAY clients (smtpf's usual
  suspects) and CONTENT/``dns-gl`` envelopes; white-listed mail never gets
  here.  smtpf also exempts AUTH clients; Barricade has no AUTH yet.
* **Cache** (the shared store, smtpf's key tags and value coding):
  ``sav:<domain>`` = ``2`` marks an MX that accepts everything: its senders
  are not called back (``skip``) for ``cache-accept-ttl``; ``5`` says it
  does not, and the false address is not asked again.  ``sav:<sender>`` =
  ``2``/``4``/``5`` is the sender's result for ``cache-accept-ttl``,
  ``cache-temp-fail-ttl`` or ``cache-reject-ttl``.  A hit is touched
  (its TTL starts again), as in smtpf.  MX trouble is never cached.
* **MX** (:meth:`CallBack.exchangers`): the resolver's MX list (implicit MX
  included) in preference order, its first ``MAX_HOSTS`` hosts (as the MX
  checks); addresses that are not global (loopback,
  LAN, link-local, reserved, multicast) are pruned unless listed in
  ``call-back-allow-networks``.  Each address is called on
  ``call-back-port`` until one answers; at most :data:`MAX_ATTEMPTS`.
* **Verdict** (:func:`decide`): the sender's RCPT answer, 2/4/5, unless the
  false address tells more: accepted, the MX takes anything (a "dumb" host:
  the message passes unverified); 4xx, smtpf takes it for grey-listing and
  temp-fails the sender too; 5xx or the MX hanging up, it is not dumb.
  A 4xx/5xx greeting or MAIL reply, or a greeting that breaks
  ``call-back-strict-greeting``, fails the call-back with its class (not
  cached, as in smtpf).

**Replies.**  A failed verification is ``451 4.7.0`` or ``550 5.7.0 sender
<x> verification failed`` (#572).  smtpf's reply list has two families of
MX errors with the same texts (#488-#493 and #496-#501); smtpf 2.6's MX code
only uses the first, so Barricade answers with it: no MX answered (refused,
silent, garbled, ``call-back-timeout`` spent) ``451 4.4.4`` #488; the domain
does not exist ``553 5.4.4`` #489; the MX lookup failed ``451 4.4.3`` #491;
no MX left after pruning (or neither MX nor address) ``550 5.4.4`` #493.
Two cases smtpf folds into those get the generic ``%s %s`` members of the
second family: the MX hosts' addresses could not be looked up, ``451
4.4.3`` #498; a null MX (RFC 7505: the domain takes no mail, so a bounce
cannot reach the sender), ``553 5.4.4`` #499.  smtpf 2.6 reports every MX
failure to the client as #572 (only its class survives); Barricade shows
the specific reply, which tells the sender's postmaster what to fix.

**Differences from smtpf**, besides the replies: every MX address is tried
in turn when one does not answer, even after it accepted the connection
(smtpf stops at the first that connects); smtpf's mxConnect skips MX hosts
whose preference is not below the client's own (it was written for
forwarding), which would temp-fail every message a domain's primary MX
sends, so Barricade asks them all.  ``call-back-uri-greeting`` looks the
host name of the MX's greeting up in the uri plugin's ``uri-bl`` (registered
domain) and ``domain-bl``; a listed one fails the call-back like a strict
greeting that names no host (550 #572).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from twisted.logger import Logger

from barricade.aio import aio
from barricade.client import unmap
from barricade.content.uri import is_ip, normalize_host, registered_domain
from barricade.dns import Resolver, Status, parse_lists
from barricade.net.probe import ProbeError, ProbeResult, probe
from barricade.options import Config, OptionError
from barricade.policy.domains import usual_suspect
from barricade.policy.grey import SKIP_NOTE
from barricade.policy.mx import MAX_HOSTS
from barricade.policy.pipeline import Check, Context
from barricade.policy.verdict import CONTINUE, Action, Verdict, reject, tempfail
from barricade.replies import ReplyId
from barricade.state import Store, StoreError

log = Logger()

ACCEPT, TEMPFAIL, REJECT = "2", "4", "5"
#: MX addresses called at most per call-back: a domain cannot make us knock on
#: a hundred doors (they all count against call-back-timeout as well).
MAX_ATTEMPTS = 10
MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1: the false local part stays a valid length

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def sender_key(sender: str) -> str:
    return f"sav:{sender.lower()}"


def domain_key(domain: str) -> str:
    return f"sav:{domain.lower()}"


# --- sans-IO pieces ------------------------------------------------------------------


_BASE36 = {c: i for i, c in enumerate("0123456789abcdefghijklmnopqrstuvwxyz")}


def luhn_digit(text: str) -> int:
    """The Luhn (mod 10) check digit of ``text`` read as base-36 digits.

    libsnert's LuhnGenerate, which smtpf appends to the false address: each
    character is a base-36 digit (anything else counts as 0) whose decimal
    digits enter the usual double-every-second-digit sum, right to left.
    ``luhn_digit("7992739871") == 3``; for an ISIN, ``"US037833100"`` gives 5.
    """
    total = 0
    even = False
    for ch in reversed(text + "0"):
        value = _BASE36.get(ch.lower(), 0)
        while True:
            decimal = value % 10
            if even:
                decimal *= 2
                if decimal > 9:
                    decimal -= 9
            total += decimal
            value //= 10
            even = not even
            if value <= 0:
                break
    return (10 - total % 10) % 10


def false_local_part(local: str) -> str:
    """A local part the sender's MX should not know: ``local`` reversed plus a Luhn digit.

    ``john.doe`` gives ``eod.nhoj`` and its check digit.  Dots are kept off
    the ends of an unquoted result and a quoted one stays quoted, so the
    made-up address is still valid syntax.
    """
    quoted = len(local) >= 2 and local[0] == local[-1] == '"'
    if quoted:
        text = local[1:-1].replace("\\", "").replace('"', "")[::-1]
    else:
        text = local[::-1].strip(".")
    text = text[: MAX_LOCAL - 3]
    text += str(luhn_digit(text))
    return f'"{text}"' if quoted else text


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)


def greeting_names_host(text: str) -> bool:
    """``call-back-strict-greeting``: is the greeting's first word a FQDN or an address literal?

    RFC 5321 4.2 (``220 Domain / address-literal``) and 4.3.1.  Like smtpf,
    ``[192.0.2.1]`` passes and a bare IP, a single label (``smtp-sink``) or
    a name ending in a dot does not.
    """
    words = text.split(None, 1)
    if not words:
        return False
    word = words[0]
    if word.startswith("[") and word.endswith("]"):
        inner = word[1:-1]
        if inner[:5].lower() == "ipv6:":
            inner = inner[5:]
        try:
            ipaddress.ip_address(inner)
        except ValueError:
            return False
        return True
    labels = word.split(".")
    if len(labels) < 2 or len(word) > 253 or labels[-1].isdigit():
        return False
    return all(_LABEL.fullmatch(label) for label in labels)


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """``call-back-allow-networks``; a bad entry is an OptionError naming the option."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise OptionError(f"option call-back-allow-networks: {exc}") from None
    return tuple(out)


def callable_address(address: str, allowed: Sequence[Network] = ()) -> bool:
    """May an MX at this address be called?

    smtpf prunes MX hosts that resolve to localhost, LAN or RFC 3330
    reserved addresses (pdqListPrune with IS_IP_RESTRICTED|IS_IP_LAN): no
    Internet sender can have its mail server there, and a call-back must not
    be turned against our own networks.  ``allowed`` networks are let through.
    """
    try:
        addr = unmap(ipaddress.ip_address(address))
    except ValueError:
        return False
    if any(addr in net for net in allowed if net.version == addr.version):
        return True
    return addr.is_global and not addr.is_multicast


def result_of(code: int) -> str:
    """2, 4 or 5 for a reply code: anything neither 2xx nor 5xx is temporary."""
    if 200 <= code < 300:
        return ACCEPT
    if 500 <= code < 600:
        return REJECT
    return TEMPFAIL


@dataclass(frozen=True)
class Decision:
    """What the RCPT answers mean (:func:`decide`)."""

    value: str  # 2 accept, 4 temp-fail, 5 reject
    verified: bool  # the MX knows the sender and refuses made-up addresses
    cache_sender: bool  # remember ``value`` as sav:<sender>
    domain: str | None  # remember as sav:<domain>: 2 accepts everything, 5 does not
    note: str


def decide(rcpt: int, false: int | None) -> Decision:
    """smtpf's verdict from the answers to ``RCPT TO:<sender>`` and to the false address.

    ``false`` is None when the false address was not asked (the sender was
    refused, or ``sav:<domain>`` already says the MX is not dumb) and 0 when
    the MX went away instead of answering it (some drop the connection after
    a refused recipient: smtpf keeps the sender's answer).
    """
    value = result_of(rcpt)
    if false is None:
        return Decision(value, value == ACCEPT, True, None, f"sender answer {rcpt}")
    if 200 <= false < 300:
        return Decision(ACCEPT, False, False, ACCEPT, "dumb mail host found")
    if 400 <= false < 500:
        # smtpf: "assume 4xx for false recipient is a grey-list response".
        return Decision(TEMPFAIL, False, True, None, "dumb mail host inconclusive")
    return Decision(value, value == ACCEPT, True, REJECT,
                    f"sender answer {rcpt}, not a dumb mail host")


def verification_failed(value: str, sender: str) -> Verdict:
    """#572 with smtpf's ``%d %d.7.0``: 451 4.7.0 for a 4 result, 550 5.7.0 for a 5."""
    if value == TEMPFAIL:
        return tempfail(ReplyId.CALLBACK_FAILED, code=451, status="4.7.0", sender=sender)
    return reject(ReplyId.CALLBACK_FAILED, code=550, status="5.7.0", sender=sender)


# --- the check ------------------------------------------------------------------------


class CallBack(Check):
    """Call-back sender verification at DATA (#572, #488 #489 #491 #493 #498 #499)."""

    name = "call-back"

    def __init__(self, config: Config, store: Store | None, resolver: Resolver, hostname: str,
                 metrics=None):
        self.store = store
        self.resolver = resolver
        self.hostname = hostname
        self.metrics = metrics
        self.port = config["call-back-port"]
        self.step = float(config["call-ahead-command-timeout"])
        self.budget = float(config["call-back-timeout"])
        self.pass_grey = config["call-back-pass-grey"]
        self.strict = config["call-back-strict-greeting"]
        # call-back-uri-greeting: the greeting's host name against the uri plugin's domain lists
        self.uri_lists = ((parse_lists("uri-bl", config.get("uri-bl") or []),
                           parse_lists("domain-bl", config.get("domain-bl") or []))
                          if config.get("call-back-uri-greeting") else ((), ()))
        self.allowed = parse_networks(config["call-back-allow-networks"])
        self.ttl = {ACCEPT: float(config["cache-accept-ttl"]),
                    TEMPFAIL: float(config["cache-temp-fail-ttl"]),
                    REJECT: float(config["cache-reject-ttl"])}
        # call-back-timeout bounds a call-back, not check-timeout: give up on
        # our own terms (#488) before the pipeline would (#907).
        self.timeout = self.budget + 5

    def exempt(self, ctx: Context) -> str | None:
        """Why this sender is not called back, or None."""
        sender = ctx.sender or ""
        if not sender:
            return "null sender"
        if usual_suspect(ctx.client):
            return "localhost, LAN or relay client"
        if ctx.white_envelope:
            return "content"
        local, at, domain = sender.rpartition("@")
        if not at or not domain:
            return "no domain"
        if domain.startswith("["):
            return "address literal"
        if local.strip('"').lower() == "postmaster":
            return "postmaster"
        return None

    async def data(self, ctx: Context) -> Verdict:
        reason = self.exempt(ctx)
        if reason is not None:
            self.count("exempt")
            log.debug("session {sid}: call-back <{sender}> skipped: {reason}",
                      sid=ctx.session_id, sender=ctx.sender or "", reason=reason)
            return CONTINUE
        started = time.monotonic()
        try:
            verdict, verified = await aio(self.verify(ctx.sender or "", ctx.session_id))
        finally:
            if self.metrics is not None:
                self.metrics.call_back_seconds.observe(time.monotonic() - started)
        if verified and self.pass_grey:
            ctx.notes[SKIP_NOTE] = "call-back"
        return verdict

    # --- one call-back (an asyncio coroutine: resolver, store and probe are) ---

    async def verify(self, sender: str, sid: str) -> tuple[Verdict, bool]:
        """The verdict on ``sender`` and whether it was verified (for call-back-pass-grey)."""
        local, _, domain = sender.rpartition("@")
        domain = domain.lower()
        dumb = await self.cached(domain_key(domain), sid)
        if dumb == ACCEPT:
            await self.remember(domain_key(domain), dumb, sid)
            self.count("skip")
            log.info("session {sid}: call-back <{sender}>: dumb mail host, skipping",
                     sid=sid, sender=sender)
            return CONTINUE, False
        known = await self.cached(sender_key(sender), sid)
        if known is not None:
            await self.remember(sender_key(sender), known, sid)
            self.count("cache")
            verdict = CONTINUE if known == ACCEPT else verification_failed(known, sender)
            return self.outcome(sid, sender, verdict, "cached"), known == ACCEPT
        try:
            async with asyncio.timeout(self.budget):
                return await self.call(sender, local, domain, dumb is None, sid)
        except TimeoutError:
            verdict = tempfail(ReplyId.CALLBACK_NO_ANSWER, domain=domain)
            return self.outcome(sid, sender, verdict,
                                f"no answer within call-back-timeout ({self.budget:g}s)"), False

    async def call(self, sender: str, local: str, domain: str, ask_false: bool,
                   sid: str) -> tuple[Verdict, bool]:
        targets = await self.exchangers(domain)
        if isinstance(targets, Verdict):
            return self.outcome(sid, sender, targets, "MX trouble"), False
        rcpts = [sender, f"{false_local_part(local)}@{domain}"] if ask_false else [sender]
        for host, address in targets:
            try:
                result = await probe(address, self.port, helo=self.hostname,
                                     sender=f"postmaster@{self.hostname}", rcpts=rcpts,
                                     timeout=self.step, stop_on_reject=True,
                                     greeting_ok=greeting_names_host if self.strict else None)
            except ProbeError as exc:
                log.info("session {sid}: call-back MX {host} [{ip}] for <{sender}>: {err}",
                         sid=sid, host=host, ip=address, sender=sender, err=str(exc))
                continue
            self.count("made")
            return await self.judge(result, sender, domain, f"{host} [{address}]", ask_false, sid)
        verdict = tempfail(ReplyId.CALLBACK_NO_ANSWER, domain=domain)
        return self.outcome(sid, sender, verdict, "no MX answered"), False

    async def exchangers(self, domain: str) -> list[tuple[str, str]] | Verdict:
        """The (host, address) pairs to call, in MX preference order, or the MX reply."""
        mx = await self.resolver.mx(domain)
        if mx.status is Status.NXDOMAIN:
            return reject(ReplyId.CALLBACK_NO_DOMAIN, domain=domain)
        if mx.status is Status.TEMPFAIL:
            return tempfail(ReplyId.CALLBACK_MX_ERROR, domain=domain)
        if mx.null:
            return reject(ReplyId.CALLBACK_MX_REFUSED, domain=domain, reason="accepts no mail (null MX)")
        if not mx.hosts:
            return reject(ReplyId.CALLBACK_NO_ACCEPTABLE_MX, domain=domain)
        # As many as the MX checks look at: an answer of thousands of MX records would
        # otherwise be thousands of address lookups for one MAIL FROM.
        hosts = list(dict.fromkeys(h.host for h in mx.hosts))[:MAX_HOSTS]
        found = await asyncio.gather(*(self.resolver.addresses(h) for h in hosts))
        targets: dict[str, str] = {}
        for host, addresses in zip(hosts, found, strict=True):
            for address in addresses.records:
                if address not in targets and callable_address(address, self.allowed):
                    targets[address] = host
        if targets:
            return [(host, address) for address, host in targets.items()][:MAX_ATTEMPTS]
        if any(a.tempfail for a in found):
            return tempfail(ReplyId.CALLBACK_MX_TEMPORARY, domain=domain,
                            reason="MX host address lookup error")
        return reject(ReplyId.CALLBACK_NO_ACCEPTABLE_MX, domain=domain)

    async def judge(self, result: ProbeResult, sender: str, domain: str, mx: str,
                    ask_false: bool, sid: str) -> tuple[Verdict, bool]:
        """The verdict on one MX's answers; caches what smtpf caches."""
        greeting = result.greeting
        if not greeting.accepted:
            value = result_of(greeting.code)
            return self.outcome(sid, sender, verification_failed(value, sender),
                                f"{mx} greeting {greeting.code} {greeting.text}"), False
        if self.strict and not greeting_names_host(greeting.text):
            self.count("strict-greeting")
            return self.outcome(sid, sender, verification_failed(REJECT, sender),
                                f"{mx}: 220 response missing FQDN host name"), False
        listed = await self.greeting_listed(greeting.text)
        if listed:
            self.count("uri-greeting")
            return self.outcome(sid, sender, verification_failed(REJECT, sender),
                                f"{mx}: 220 host name {listed}"), False
        if not result.mail.accepted or not result.rcpts:
            mail = result.mail
            return self.outcome(sid, sender, verification_failed(result_of(mail.code), sender),
                                f"{mx} refused MAIL: {mail.code} {mail.text}"), False
        answer = result.rcpts[0]
        false: int | None = None
        if ask_false and not answer.rejected:
            false = result.rcpts[1].code if len(result.rcpts) > 1 else 0
        decision = decide(answer.code, false)
        if decision.domain is not None:
            await self.remember(domain_key(domain), decision.domain, sid)
        if decision.cache_sender:
            await self.remember(sender_key(sender), decision.value, sid)
        if decision.domain == ACCEPT:
            self.count("dumb")
        verdict = CONTINUE if decision.value == ACCEPT else verification_failed(decision.value, sender)
        note = f"{mx} {decision.note}: {answer.code} {answer.text}"
        return self.outcome(sid, sender, verdict, note), decision.verified

    async def greeting_listed(self, text: str) -> str | None:
        """``call-back-uri-greeting``: "<name> black listed by <list>" when the host name
        the MX greets with is in ``uri-bl`` (its registered domain) or ``domain-bl``."""
        uri_bl, domain_bl = self.uri_lists
        host = normalize_host(text.split(" ", 1)[0]) if (uri_bl or domain_bl) and text else None
        if host is None or is_ip(host):
            return None
        for name, lists in ((registered_domain(host) or host, uri_bl), (host, domain_bl)):
            if lists:
                found = await self.resolver.dnsbl(name, lists)
                if found.hit is not None:
                    return f"{name} black listed by {found.hit.dnslist.suffix}"
        return None

    # --- bookkeeping ---

    def outcome(self, sid: str, sender: str, verdict: Verdict, note: str) -> Verdict:
        """Count and log the end of a call-back (smtpf's #573 summary line)."""
        result = {Action.TEMPFAIL: "tempfail", Action.REJECT: "reject"}.get(verdict.action, "accept")
        self.count(result)
        reply = f" #{verdict.reply_id}" if verdict.reply_id is not None else ""
        log.info("session {sid}: call-back <{sender}>: {result}{reply} ({note})",
                 sid=sid, sender=sender, result=result, reply=reply, note=note)
        return verdict

    def count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.count(self.metrics.call_backs, result)

    async def cached(self, key: str, sid: str) -> str | None:
        if self.store is None:
            return None
        try:
            value = await self.store.get(key)
        except StoreError as exc:  # a cache, not a limit: call back instead
            log.warn("session {sid}: call-back cache unavailable: {err}", sid=sid, err=str(exc))
            return None
        return value if value in self.ttl else None

    async def remember(self, key: str, value: str, sid: str) -> None:
        """Cache (or touch) ``value`` with the TTL of its kind."""
        if self.store is None:
            return
        try:
            await self.store.set(key, value, ttl=self.ttl[value])
        except StoreError as exc:
            log.warn("session {sid}: call-back cache unavailable: {err}", sid=sid, err=str(exc))


def callback_checks(config: Config, store: Store | None, resolver: Resolver | None, hostname: str,
                    metrics=None) -> list[Check]:
    """The call-back check with ``+call-back`` (it needs the resolver); else none."""
    if not config["call-back"] or resolver is None:
        return []
    return [CallBack(config, store, resolver, hostname, metrics)]
