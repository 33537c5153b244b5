"""smtpf's hash lists: ``digest-bl`` (MIME parts) and ``mail-bl`` (mail addresses), by MD5 in DNS.

``digest`` looks the MD5 of each decoded MIME part (the octets after
base64 or quoted-printable, as a list's feeders compute them) up in the
``digest-bl`` lists, ``<md5 hex>.<suffix>``, and refuses a listed part
at the dot (#980: smtpf's "message contains blocked MIME part").

``mail-bl`` looks up the MD5 of lower-case mail addresses: the sender's at
MAIL (#982), and at the dot those in the ``mail-bl-headers`` and the
message text (#981), up to ``mail-bl-max`` addresses, only those whose
domain matches ``mail-bl-domains`` (globs, ``*`` for all: by default the
free-mail providers that such lists cover).  ``mail-bl-policy`` says
what a hit does: reject, discard or none (log only).

Both decode the message once with the other content plugins
(:mod:`barricade.content.shared`) and ask every DNS question of a message
at once, each list lookup bounded by ``dns-max-timeout``; a list that does
not answer counts as not listing.
"""

from __future__ import annotations

import asyncio
import hashlib
from email.utils import getaddresses
from fnmatch import fnmatchcase
from typing import ClassVar

from twisted.logger import Logger

from barricade.aio import aio
from barricade.content import shared
from barricade.dns import DnsList, Listing, parse_lists
from barricade.options import Config
from barricade.plugin import Plugin, PluginOption, Services
from barricade.policy.pipeline import Context, immediate
from barricade.policy.verdict import CONTINUE, Action, Verdict
from barricade.replies import ReplySpec

log = Logger()

BLOCKED_PART, LISTED_ADDRESS, LISTED_SENDER = 980, 981, 982
MAX_PARTS = 50  # parts looked up per message
FREE_MAIL = ["gmail.*", "hotmail.*", "live.*", "yahoo.*", "aol.*", "aim.com", "googlemail.*", "msn.*",
             "outlook.*", "ymail.*", "rocketmail.*", "mail.com", "gmx.*", "web.de", "yandex.*", "mail.ru",
             "inbox.ru", "list.ru", "bk.ru", "rambler.ru", "qq.com", "163.com", "126.com", "sina.com",
             "rediffmail.com", "libero.it", "tiscali.*", "orange.fr", "wanadoo.fr", "laposte.net",
             "zoho.com", "protonmail.*"]


def md5_name(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def first_listed(resolver, items: list[str], lists: tuple[DnsList, ...]) -> tuple[str, Listing] | None:
    """Every item in every list at once; the first listed, in item order."""
    results = await asyncio.gather(*(resolver.dnsbl(item, lists) for item in items))
    for item, result in zip(items, results, strict=True):
        if result.hit is not None:
            return item, result.hit
    return None


class _HashList(Plugin):
    """What both share: the resolver, the deadline, counting a hit."""

    def __init__(self, config: Config, services: Services):
        super().__init__(config, services)
        self.deadline = float(config["dns-max-timeout"]) + 1
        self.timeout = max(float(config["check-timeout"]), self.deadline + 2)

    async def lookup(self, ctx: Context, items: list[str], lists) -> tuple[str, Listing] | None:
        if not items or not lists or self.services.resolver is None:
            return None

        async def run():
            try:
                return await asyncio.wait_for(first_listed(self.services.resolver, items, lists), self.deadline)
            except TimeoutError:
                log.warn("session {sid}: {name}: lookups not done in {t}s; skipped", sid=ctx.session_id,
                         name=self.name, t=self.deadline)
                return None

        return await aio(run())

    def count(self, test: str, dnslist: DnsList) -> None:
        metrics = self.services.metrics
        if metrics is not None and hasattr(metrics, "content_hits"):
            metrics.child(metrics.content_hits, self.name, test, dnslist.suffix).inc()

    @immediate
    def body(self, ctx: Context, chunk: bytes) -> Verdict:
        shared.feed(ctx, self.config, chunk, self.name)
        return CONTINUE


class Digest(_HashList):
    name = "digest"
    order = 220
    options: ClassVar[tuple[PluginOption, ...]] = (
        PluginOption("digest-bl", [], "DNS lists of MD5s of MIME parts (decoded), <md5>.<suffix>; a listed "
                     "part refuses the message (#980). Write each as suffix[/mask], like dns-bl."),
    )
    replies: ClassVar[tuple[ReplySpec, ...]] = (
        ReplySpec(BLOCKED_PART, 550, "5.7.0", "message contains blocked MIME part", "dot",
                  "The MD5 of a decoded MIME part is listed in a digest-bl list. smtpf gives this reply "
                  "with another number."),
        shared.TOO_COMPLEX_REPLY,
    )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return bool(config.get("digest-bl"))

    def __init__(self, config: Config, services: Services):
        super().__init__(config, services)
        self.lists = parse_lists("digest-bl", config.get("digest-bl") or [])

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        shared.want(ctx, md5=True)
        return CONTINUE

    async def end_of_data(self, ctx: Context) -> Verdict:
        scan = shared.finish(ctx, self.config)
        if scan is None or scan.decoder is None:
            return CONTINUE
        shared.observe(scan, self.services.metrics)
        limited = shared.limit_verdict(scan, self.config)
        if limited.decisive:
            return limited
        digests = list(dict.fromkeys(p.md5 for p in scan.decoder.parts if p.md5 and p.size))[:MAX_PARTS]
        found = await self.lookup(ctx, digests, self.lists)
        if found is None:
            return CONTINUE
        self.count("digest-bl", found[1].dnslist)
        log.warn("session {sid}: digest: message {qid} part MD5 {md5} listed by {list} (#980)",
                 sid=ctx.session_id, qid=ctx.qid, md5=found[0], list=found[1].dnslist.suffix)
        return Verdict(Action.REJECT, BLOCKED_PART, {})


class MailBl(_HashList):
    name = "mail-bl"
    order = 230
    options: ClassVar[tuple[PluginOption, ...]] = (
        PluginOption("mail-bl", [], "DNS lists of MD5s of mail addresses (lower case), <md5>.<suffix>: the "
                     "sender at MAIL (#982), addresses in mail-bl-headers and the text at the dot (#981). "
                     "Write each as suffix[/mask], like dns-bl."),
        PluginOption("mail-bl-domains", FREE_MAIL, "Only addresses in domains matching these globs are "
                     "looked up (* for all)."),
        PluginOption("mail-bl-headers", ["From", "Reply-To"], "Headers whose addresses mail-bl looks up."),
        PluginOption("mail-bl-max", 10, "The most addresses looked up per message.", kind="int", minimum=1),
        PluginOption("mail-bl-policy", "reject", "What a listed address does: reject, discard or none "
                     "(log only).", choices=("none", "reject", "discard")),
    )
    replies: ClassVar[tuple[ReplySpec, ...]] = (
        ReplySpec(LISTED_ADDRESS, 550, "5.7.1", "mail address <{address}> black listed by {list}", "dot",
                  "A mail address in the message (mail-bl-headers or its text) is listed in a mail-bl list. "
                  "See mail-bl-policy."),
        ReplySpec(LISTED_SENDER, 550, "5.7.1", "sender <{sender}> black listed by {list}", "mail",
                  "The MAIL FROM address is listed in a mail-bl list. See mail-bl-policy."),
        shared.TOO_COMPLEX_REPLY,
    )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return bool(config.get("mail-bl"))

    def __init__(self, config: Config, services: Services):
        super().__init__(config, services)
        self.lists = parse_lists("mail-bl", config.get("mail-bl") or [])
        self.domains = tuple(d.lower() for d in config.get("mail-bl-domains") or ())
        self.header_names = frozenset(h.lower().rstrip(":") for h in config.get("mail-bl-headers") or ())
        self.max = int(config.get("mail-bl-max", 10) or 10)
        self.policy = config.get("mail-bl-policy", "reject")

    def wanted(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower()
        return bool(domain) and any(fnmatchcase(domain, pattern) for pattern in self.domains)

    def _verdict(self, ctx: Context, rid: int, who: str, listing: Listing, **fields: str) -> Verdict:
        self.count("mail-bl", listing.dnslist)
        log.warn("session {sid}: mail-bl: #{rid} <{address}> listed by {list} (mail-bl-policy={policy})",
                 sid=ctx.session_id, rid=rid, address=who, list=listing.dnslist.suffix, policy=self.policy)
        fields["list"] = listing.dnslist.suffix
        if self.policy == "reject":
            return Verdict(Action.REJECT, rid, fields)
        if self.policy == "discard":
            return Verdict(Action.DISCARD, rid, fields)
        return CONTINUE

    async def mail(self, ctx: Context) -> Verdict:
        sender = (ctx.sender or "").lower()
        if not sender or not self.wanted(sender):
            return CONTINUE
        found = await self.lookup(ctx, [md5_name(sender)], self.lists)
        if found is None:
            return CONTINUE
        if self.policy == "discard":  # nothing to discard yet: remember it for the dot
            ctx.notes["mail-bl.sender"] = (sender, found[1])
            return CONTINUE
        return self._verdict(ctx, LISTED_SENDER, sender, found[1], sender=sender)

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        shared.want(ctx, uris=True)
        values = [v for n, v in ctx.headers if n.lower() in self.header_names]
        ctx.notes["mail-bl.headers"] = [a.lower() for _, a in getaddresses(values) if "@" in a]
        return CONTINUE

    async def end_of_data(self, ctx: Context) -> Verdict:
        held = ctx.notes.get("mail-bl.sender")
        if held is not None:
            return self._verdict(ctx, LISTED_ADDRESS, held[0], held[1], address=held[0])
        scan = shared.finish(ctx, self.config)
        addresses = list(ctx.notes.get("mail-bl.headers", ()))
        if scan is not None and scan.collector is not None:
            scan.collector.flush()
            addresses += list(scan.collector.addresses)
        chosen = [a for a in dict.fromkeys(addresses) if self.wanted(a)][: self.max]
        by_hash = {md5_name(a): a for a in chosen}
        found = await self.lookup(ctx, list(by_hash), self.lists)
        if found is None:
            return CONTINUE
        address = by_hash[found[0]]
        return self._verdict(ctx, LISTED_ADDRESS, address, found[1], address=address)
