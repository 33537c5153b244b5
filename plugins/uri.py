"""smtpf's URI black lists (``uri-bl`` and friends) on the message, its headers and the envelope.

The message is decoded as it streams (:mod:`barricade.content.mime`, shared
with the other content plugins): the hosts of the URLs, bare host names
and mail addresses in its text and HTML, and in the headers named by
``uri-bl-headers``, are judged at the dot by :mod:`barricade.content.uribl`
(every host at once, each DNS question once, bounded by ``uri-max-test``
and one ``dns-max-timeout``).  ``uri-bl-policy`` says what a hit does:
reject (the catalogue reply of the test that fired), discard, or none (log
only).  ``-uri-bl-ptr``, ``-uri-bl-helo`` and ``-uri-bl-mail`` judge the
client's name, the HELO argument and the sender's domain against the
domain lists (``uri-bl``, ``domain-bl``) and drop the session on a hit
(#790, #792, #794), as smtpf does.

The access map's ``Body:`` entries are honoured whenever this plugin runs:
``Body:<domain> OK`` passes a host, ``REJECT`` refuses it (#763).  Name the
plugin in ``plugins`` to use ``Body:`` without any list.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from twisted.logger import Logger

from barricade.aio import aio
from barricade.content import shared
from barricade.content.uribl import Asker, Hit, Judge, Settings, choose, envelope_names
from barricade.options import Config
from barricade.plugin import Plugin, PluginOption, Services
from barricade.policy.pipeline import Context, immediate
from barricade.policy.verdict import CONTINUE, Action, Verdict
from barricade.replies import ReplyId, ReplySpec

log = Logger()

HEADERS_NOTE = "uri.headers"
_LISTS_HELP = "Write each as suffix[/mask], like dns-bl."


def _opt(name: str, default, text: str, **kw) -> PluginOption:
    return PluginOption(name, default, text, **kw)


class Uri(Plugin):
    name = "uri"
    order = 200
    replies: ClassVar[tuple[ReplySpec, ...]] = (shared.TOO_COMPLEX_REPLY,)
    options: ClassVar[tuple[PluginOption, ...]] = (
        _opt("uri-bl", [], "Domain URI black lists (SURBL style, e.g. multi.surbl.org): the registered "
             "domain of every host a message names is looked up (an IP address reversed). " + _LISTS_HELP),
        _opt("uri-dns-bl", [], "IP black lists for the addresses URI hosts resolve to. " + _LISTS_HELP),
        _opt("domain-bl", [], "Wildcard domain black lists (DBL style, e.g. dbl.spamhaus.org): each URI "
             "host name is looked up as it is, one lookup; IP hosts are not. " + _LISTS_HELP),
        _opt("ns-bl", [], "Name-based black lists for the name servers of each URI domain. " + _LISTS_HELP),
        _opt("ns-a-bl", [], "IP black lists for the addresses of each URI domain's name servers. "
             + _LISTS_HELP),
        _opt("uri-bl-headers", [], "Message headers whose values are searched for URIs too "
             "(e.g. From; Reply-To; Message-ID)."),
        _opt("uri-bl-helo", False, "Look the HELO argument up in uri-bl and domain-bl; a hit drops the "
             "session (#792)."),
        _opt("uri-bl-mail", False, "Look the MAIL FROM domain up in uri-bl and domain-bl; a hit drops "
             "the session (#794)."),
        _opt("uri-bl-ptr", False, "Look the client's PTR name up in uri-bl and domain-bl; a hit drops "
             "the session (#790)."),
        _opt("uri-bl-policy", "reject", "What a URI found in the message and refused does, at the dot: "
             "reject (the reply of the test that fired), discard (accept and drop), none (log only).",
             choices=("none", "reject", "discard")),
        _opt("uri-cite-list", True, "Name the DNS list in the reject text."),
        _opt("uri-max-test", 10, "The most distinct URI domains tested per message (0: all).", kind="int",
             minimum=0),
        _opt("uri-sub-domains", False, "Also look up the sub-domains of each URI host in uri-bl, "
             "right to left after the registered domain."),
        _opt("uri-ip-in-name", False, "Refuse a URI host whose name contains one of its IP addresses "
             "(#754)."),
        _opt("uri-ip-in-ptr", 0, "When a URI host has at least this many addresses, refuse it if one's "
             "PTR name contains the address (#758); 0 is off.", kind="int", minimum=0),
        _opt("uri-require-ptr", 0, "When a URI host has at least this many addresses, refuse it if one "
             "has no PTR record (#760); 0 is off.", kind="int", minimum=0),
        _opt("uri-require-domain", False, "Refuse URLs whose host is an IP address, scheme://192.0.2.1/ "
             "(#765)."),
        _opt("uri-reject-unknown", False, "Refuse a URI host that does not exist, NXDOMAIN (#757)."),
        _opt("uri-reject-on-timeout", False, "Refuse a URI host whose lookup timed out or failed (#756)."),
        _opt("uri-valid-soa", False, "Refuse a URI domain without an SOA record (#745)."),
        _opt("mime-max-depth", 10, "MIME nesting (multipart and message/rfc822) decoded by the content "
             "plugins; deeper parts are skipped (see mime-limit-policy).", kind="int", minimum=1),
        _opt("mime-max-parts", 1000, "MIME parts decoded per message by the content plugins; later "
             "parts are skipped (see mime-limit-policy).", kind="int", minimum=1),
        _opt("mime-limit-policy", "none", "A message past mime-max-depth or mime-max-parts: none "
             "(the rest is not scanned; logged and counted) or reject (#970).",
             choices=("none", "reject")),
    )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        settings = Settings.from_config(config)
        return settings.active or any(config.get(o) for o in ("uri-bl-helo", "uri-bl-mail", "uri-bl-ptr"))

    def __init__(self, config: Config, services: Services):
        super().__init__(config, services)
        self.settings = Settings.from_config(config)
        self.header_names = frozenset(h.lower().rstrip(":") for h in config.get("uri-bl-headers") or ())
        self.policy = config.get("uri-bl-policy", "reject")
        # one round of lookups, then each step after it, within the proxy's check timeout
        self.deadline = float(config["dns-max-timeout"]) + 1
        self.timeout = max(float(config["check-timeout"]), 2 * self.deadline + 2)

    # --- envelope ---

    async def connect(self, ctx: Context) -> Verdict:
        client = ctx.client
        if not self.config.get("uri-bl-ptr") or client.localhost or client.relay or not client.name:
            return CONTINUE
        hit = await self._envelope(ctx, client.name, "uri-bl-ptr")
        if hit is None:
            return CONTINUE
        return Verdict(Action.DROP, ReplyId.URI_BL_CLIENT, {"reason": self._reason(hit)})

    async def helo(self, ctx: Context) -> Verdict:
        if not self.config.get("uri-bl-helo") or ctx.client.localhost or ctx.client.relay:
            return CONTINUE
        hit = await self._envelope(ctx, ctx.helo, "uri-bl-helo")
        if hit is None:
            return CONTINUE
        return Verdict(Action.DROP, ReplyId.URI_BL_HELO, {"reason": self._reason(hit)})

    async def mail(self, ctx: Context) -> Verdict:
        sender = ctx.sender or ""
        if not self.config.get("uri-bl-mail") or "@" not in sender or ctx.client.localhost or ctx.client.relay:
            return CONTINUE
        hit = await self._envelope(ctx, sender.rpartition("@")[2], "uri-bl-mail")
        if hit is None:
            return CONTINUE
        return Verdict(Action.DROP, ReplyId.URI_BL_MAIL, {"reason": self._reason(hit)})

    @staticmethod
    def _reason(hit: Hit) -> str:
        return f"{hit.fields.get('domain', hit.found.host)} black listed by {hit.fields.get('list', '?')}"

    async def _envelope(self, ctx: Context, name: str, option: str) -> Hit | None:
        """The domain lists only, as smtpf's uri-bl-helo/-mail/-ptr."""
        s = self.settings
        if not (s.uri_bl or s.domain_bl):
            return None
        settings = Settings(uri_bl=s.uri_bl, domain_bl=s.domain_bl, sub_domains=s.sub_domains,
                            cite_list=s.cite_list)
        hit = await self._judge(ctx, settings, envelope_names(name), body=False)
        if hit is not None:
            self._count(hit, option)
            log.warn("session {sid}: uri: {option}: {name} black listed: {what}", sid=ctx.session_id,
                     option=option, name=name, what=hit.describe())
        return hit

    # --- the message ---

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        shared.want(ctx, uris=True)
        if self.header_names:
            ctx.notes[HEADERS_NOTE] = [v for n, v in ctx.headers if n.lower() in self.header_names]
        return CONTINUE

    @immediate
    def body(self, ctx: Context, chunk: bytes) -> Verdict:
        shared.feed(ctx, self.config, chunk, self.name)
        return CONTINUE

    async def end_of_data(self, ctx: Context) -> Verdict:
        scan = shared.finish(ctx, self.config)
        if scan is None or scan.collector is None:
            return CONTINUE
        collector = scan.collector
        for value in ctx.notes.get(HEADERS_NOTE, ()):
            collector.feed_text(value + "\n")
        collector.flush()
        self._observe(ctx, scan)
        limited = shared.limit_verdict(scan, self.config)
        if limited.decisive:
            return limited
        found = choose(collector, self.settings.max_test)
        hit = await self._judge(ctx, self.settings, found, body=True)
        if hit is None:
            return CONTINUE
        self._count(hit)
        log.warn("session {sid}: uri: message {qid} #{rid} {what} (uri-bl-policy={policy})",
                 sid=ctx.session_id, qid=ctx.qid, rid=hit.reply_id, what=hit.describe(), policy=self.policy)
        if self.policy == "reject":
            return Verdict(Action.REJECT, hit.reply_id, hit.fields)
        if self.policy == "discard":
            return Verdict(Action.DISCARD, hit.reply_id, hit.fields)
        return CONTINUE

    async def _judge(self, ctx: Context, settings: Settings, found, body: bool) -> Hit | None:
        if not found:
            return None
        access = self.services.access_map
        lookup = self._body_word if (body and access is not None) else None
        resolver = self.services.resolver
        if resolver is None and (settings.active or not body):
            log.warn("session {sid}: uri: no resolver; URI lists skipped", sid=ctx.session_id)
            settings = Settings()
        judge = Judge(settings, Asker(resolver), lookup)

        async def run() -> Hit | None:
            try:
                return await asyncio.wait_for(judge.first_hit(found), self.deadline)
            except TimeoutError:
                log.warn("session {sid}: uri: lookups not done in {t}s; untested hosts pass",
                         sid=ctx.session_id, t=self.deadline)
                return None
            finally:
                judge.asker.cancel()

        return await aio(run())

    def _body_word(self, host: str) -> str | None:
        hit = self.services.access_map.body(host)
        if hit is None:
            return None
        return "OK" if hit.action.word == "OK" else "REJECT" if hit.action.word == "REJECT" else None

    # --- metrics ---

    def _count(self, hit: Hit, test: str = "") -> None:
        metrics = self.services.metrics
        if metrics is not None and hasattr(metrics, "content_hits"):
            metrics.child(metrics.content_hits, self.name, test or hit.reason, hit.list or "-").inc()

    def _observe(self, ctx: Context, scan) -> None:
        decoder = scan.decoder
        if decoder is not None and (decoder.errors or decoder.limited) and not scan.observed:
            log.info("session {sid}: message {qid}: MIME: {errors}{limited}", sid=ctx.session_id, qid=ctx.qid,
                     errors="; ".join(decoder.errors), limited=f" [{decoder.limited}]" if decoder.limited else "")
        shared.observe(scan, self.services.metrics)
