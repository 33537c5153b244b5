"""smtpf's attachment policy: refuse messages carrying names or types the postmaster denies.

With ``+deny-content``, the message's top-level Content-Type is checked at
the end of the headers (``deny-top-content-type``), and at the dot every
MIME part's file name (``deny-content-name``), every part's type
(``deny-content-type``) and the member names of ZIP attachments
(``deny-compressed-name``), all from the one shared decoding of the message
(:mod:`barricade.content.shared`).  The access map's ``Filename-``,
``Mimetype-``, ``Top-Mimetype-`` and ``Archname-`` entries (``-To:`` for a
recipient, then ``-From:`` for the sender, then ``-Connect:`` for the
client) replace the option's list.  A password-protected or unreadable
archive is refused only when the postmaster says so
(``deny-compressed-encrypted``, ``deny-compressed-corrupt``).  RAR
archives are not opened: no maintained library lists them without the
non-free unrar.
"""

from __future__ import annotations

from typing import ClassVar

from twisted.logger import Logger

from barricade.content import shared
from barricade.content.archive import is_archive, list_names
from barricade.content.attachments import base_name, denied, parse_patterns
from barricade.maps import client_keys, mail_keys
from barricade.options import Config
from barricade.plugin import Plugin, PluginOption, Services
from barricade.policy.pipeline import Context, immediate
from barricade.policy.verdict import CONTINUE, Verdict, reject
from barricade.replies import ReplySpec

log = Logger()

NAME, TYPE, TOP, ARCHIVED, ENCRYPTED, CORRUPT = 974, 975, 976, 977, 978, 979

DENY_NAMES = [f"*.{e}" for e in (
    "ade adp bas bat chm cmd com cpl crt exe hlp hta inf ins isp js jse lnk mdb mde msc msi msp mst pcd "
    "pif reg scr sct shs shb url vb vbe vbs wsc wsf wsh").split()]
DENY_TYPES = ["application/*executable", "application/*msdos-program", "application/*msdownload",
              "message/partial"]
DENY_TOP = ["!application/pdf", "application/*", "text/*script", "audio/*", "image/*", "video/*"]
DENY_COMPRESSED = ["*.bat", "*.com", "*.cpl", "*.exe", "*.inf", "*.msi", "*.msp", "*.pif", "*.scr"]


class Attachment(Plugin):
    name = "attachment"
    order = 210
    options: ClassVar[tuple[PluginOption, ...]] = (
        PluginOption("deny-content", False, "Apply the deny-content-* and deny-compressed-name lists "
                     "(smtpf's master switch)."),
        PluginOption("deny-content-name", DENY_NAMES, "Attachment file names refused (globs, any case)."),
        PluginOption("deny-content-type", DENY_TYPES, "MIME part types refused (globs)."),
        PluginOption("deny-top-content-type", DENY_TOP, "Top-level message types refused (globs); a "
                     "leading ! exempts, the first pattern that matches decides."),
        PluginOption("deny-compressed-name", DENY_COMPRESSED, "Names inside ZIP attachments refused "
                     "(globs)."),
        PluginOption("deny-compressed-encrypted", False, "Refuse a ZIP attachment with a "
                     "password-protected member (#978); off: it passes unlisted."),
        PluginOption("deny-compressed-corrupt", False, "Refuse a ZIP attachment that cannot be read "
                     "(#979); off: it passes unlisted."),
    )
    replies: ClassVar[tuple[ReplySpec, ...]] = (
        ReplySpec(NAME, 550, "5.7.1", "attachment name {name} denied", "dot",
                  "A MIME part's file name matches deny-content-name (or the access map's Filename- entry). "
                  "See deny-content."),
        ReplySpec(TYPE, 550, "5.7.1", "attachment type {type} denied", "dot",
                  "A MIME part's type matches deny-content-type (or Mimetype-). See deny-content."),
        ReplySpec(TOP, 550, "5.7.1", "message content type {type} denied", "dot",
                  "The message's top-level Content-Type matches deny-top-content-type (or Top-Mimetype-). "
                  "See deny-content."),
        ReplySpec(ARCHIVED, 550, "5.7.1", "attachment {archive} contains {name}, denied", "dot",
                  "A name inside a ZIP attachment matches deny-compressed-name (or Archname-). See deny-content."),
        ReplySpec(ENCRYPTED, 550, "5.7.1", "attachment {archive} is password protected", "dot",
                  "See deny-compressed-encrypted."),
        ReplySpec(CORRUPT, 550, "5.7.1", "attachment {archive} cannot be read: {reason}", "dot",
                  "See deny-compressed-corrupt."),
        shared.TOO_COMPLEX_REPLY,
    )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return bool(config.get("deny-content"))

    def __init__(self, config: Config, services: Services):
        super().__init__(config, services)
        self.lists = {tag: parse_patterns(config.get(option) or ()) for tag, option in (
            ("filename", "deny-content-name"), ("mimetype", "deny-content-type"),
            ("top-mimetype", "deny-top-content-type"), ("archname", "deny-compressed-name"))}

    def patterns(self, ctx: Context, tag: str) -> tuple[str, ...]:
        """The list for this message: To, From, Connect entries of the access map, then the option."""
        access = self.services.access_map
        if access is not None:
            keys = []
            for rcpt in ctx.rcpts:
                keys += list(mail_keys(f"{tag}-to", rcpt, bare=False))
            keys += list(mail_keys(f"{tag}-from", ctx.sender or "", bare=False)) if ctx.sender else []
            keys += list(client_keys(f"{tag}-connect", ctx.client.ip, ctx.client.name))
            found = access.first(iter(keys))
            if found is not None:
                return parse_patterns(found[1])
        return self.lists[tag]

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        top = ctx.content_type.partition(";")[0].strip()
        if top and denied(top, self.patterns(ctx, "top-mimetype")):
            return self._refuse(ctx, TOP, "deny-top-content-type", type=top)
        archives = self.patterns(ctx, "archname")
        shared.want(ctx, keep=_keep_archives if archives else None)
        ctx.notes["attachment.archname"] = archives
        return CONTINUE

    @immediate
    def body(self, ctx: Context, chunk: bytes) -> Verdict:
        shared.feed(ctx, self.config, chunk, self.name)
        return CONTINUE

    @immediate
    def end_of_data(self, ctx: Context) -> Verdict:
        scan = shared.finish(ctx, self.config)
        if scan is None or scan.decoder is None:
            return CONTINUE
        shared.observe(scan, self.services.metrics)
        limited = shared.limit_verdict(scan, self.config)
        if limited.decisive:
            return limited
        names, types = self.patterns(ctx, "filename"), self.patterns(ctx, "mimetype")
        archives = ctx.notes.get("attachment.archname", ())
        for part in scan.decoder.parts:
            filename = base_name(part.filename)
            if filename and denied(filename, names):
                return self._refuse(ctx, NAME, "deny-content-name", name=filename)
            if not part.top and denied(part.content_type, types):
                return self._refuse(ctx, TYPE, "deny-content-type", type=part.content_type)
            if archives and part.data is not None:
                verdict = self._archive(ctx, filename or "(unnamed)", part.data, part.truncated, archives)
                if verdict.decisive:
                    return verdict
        return CONTINUE

    def _archive(self, ctx: Context, archive: str, data: bytes, truncated: bool, patterns) -> Verdict:
        listing = list_names(data)
        if listing.corrupt:
            reason = "too large to list" if truncated else listing.corrupt
            log.info("session {sid}: attachment: {archive}: {reason}", sid=ctx.session_id, archive=archive,
                     reason=reason)
            if self.config.get("deny-compressed-corrupt") and not truncated:
                return self._refuse(ctx, CORRUPT, "deny-compressed-corrupt", archive=archive, reason=reason)
            return CONTINUE
        for name in listing.names:
            if denied(base_name(name), patterns):
                return self._refuse(ctx, ARCHIVED, "deny-compressed-name", archive=archive, name=base_name(name))
        if listing.encrypted and self.config.get("deny-compressed-encrypted"):
            return self._refuse(ctx, ENCRYPTED, "deny-compressed-encrypted", archive=archive)
        return CONTINUE

    def _refuse(self, ctx: Context, rid: int, test: str, **fields: str) -> Verdict:
        log.warn("session {sid}: attachment: message {qid} #{rid} {test}: {fields}", sid=ctx.session_id,
                 qid=ctx.qid, rid=rid, test=test, fields=", ".join(f"{k}={v}" for k, v in fields.items()))
        metrics = self.services.metrics
        if metrics is not None and hasattr(metrics, "content_hits"):
            metrics.child(metrics.content_hits, self.name, test, "-").inc()
        return reject(rid, **fields)


def _keep_archives(part) -> bool:
    return is_archive(part.filename, part.content_type)
