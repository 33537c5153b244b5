"""smtpf's RFC 2822 header checks, at the end of the message headers.

* ``rfc2822-7bit-headers``: header octets must be US-ASCII (#456).
* ``rfc2822-min-headers``: the fields RFC 2822 requires, Date and From,
  must be there (#462), and a Message-ID must follow its grammar (#971).
* ``rfc2822-missing-eoh``: a line that is no header field before the body
  means the blank line that ends the headers is missing (#972).
* ``rfc2822-strict-date``: Date, Resent-Date and the date after each
  Received's ``;`` must be RFC 2822 date-times (#973).

The checks look at the header block as the client sent it, before
Barricade adds its own Received line; a refusal at the headers closes the
downstream connections before any dot, and the client hears it at the dot.
"""

from __future__ import annotations

from typing import ClassVar

from twisted.logger import Logger

from barricade.content.headers import bad_date, bad_message_id, first_8bit, missing_eoh, missing_required
from barricade.options import Config
from barricade.plugin import Plugin, PluginOption
from barricade.policy.pipeline import Context, immediate
from barricade.policy.verdict import CONTINUE, Verdict, reject
from barricade.replies import ReplySpec

log = Logger()

EIGHT_BIT, MISSING, MESSAGE_ID, NO_EOH, BAD_DATE = 456, 462, 971, 972, 973
SWITCHES = ("rfc2822-7bit-headers", "rfc2822-min-headers", "rfc2822-missing-eoh", "rfc2822-strict-date")


class Rfc2822(Plugin):
    name = "rfc2822"
    order = 190
    options: ClassVar[tuple[PluginOption, ...]] = (
        PluginOption("rfc2822-7bit-headers", False, "Refuse a message whose headers are not US-ASCII "
                     "(#456, RFC 2822 section 2.2)."),
        PluginOption("rfc2822-min-headers", False, "Refuse a message without Date: or From: (#462), or "
                     "with a Message-ID: that breaks RFC 2822's grammar (#971)."),
        PluginOption("rfc2822-missing-eoh", False, "Refuse a message whose headers run into the body "
                     "without the blank line between them (#972)."),
        PluginOption("rfc2822-strict-date", False, "Refuse a message whose Date:, Resent-Date: or "
                     "Received: date is not an RFC 2822 date-time (#973)."),
    )
    replies: ClassVar[tuple[ReplySpec, ...]] = (
        ReplySpec(MESSAGE_ID, 554, "5.6.0", "malformed Message-ID {value}; RFC 2822 section 3.6.4", "dot",
                  "See rfc2822-min-headers option. smtpf gives this reply with another number."),
        ReplySpec(NO_EOH, 554, "5.6.0", "missing blank line after the headers, found {line}; "
                  "RFC 2822 section 2.1", "dot", "See rfc2822-missing-eoh option."),
        ReplySpec(BAD_DATE, 554, "5.6.0", "malformed {header}: date {value}; RFC 2822 section 3.3", "dot",
                  "See rfc2822-strict-date option. smtpf gives this reply with another number."),
    )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return any(config.get(name) for name in SWITCHES)

    @immediate
    def headers(self, ctx: Context) -> Verdict:
        cfg = self.config
        block = ctx.header_block
        if cfg.get("rfc2822-7bit-headers"):
            octet = first_8bit(block)
            if octet is not None:
                return self._refuse(ctx, EIGHT_BIT, "rfc2822-7bit-headers", octet=f"{octet:02X}")
        if cfg.get("rfc2822-missing-eoh"):
            line = missing_eoh(block)
            if line is not None:
                return self._refuse(ctx, NO_EOH, "rfc2822-missing-eoh", line=repr(line))
        if cfg.get("rfc2822-min-headers"):
            if missing_required(ctx.headers):
                return self._refuse(ctx, MISSING, "rfc2822-min-headers")
            value = bad_message_id(ctx.headers)
            if value is not None:
                return self._refuse(ctx, MESSAGE_ID, "rfc2822-min-headers", value=repr(value))
        if cfg.get("rfc2822-strict-date"):
            bad = bad_date(ctx.headers)
            if bad is not None:
                return self._refuse(ctx, BAD_DATE, "rfc2822-strict-date", header=bad[0], value=repr(bad[1]))
        return CONTINUE

    def _refuse(self, ctx: Context, rid: int, test: str, **fields: str) -> Verdict:
        log.warn("session {sid}: rfc2822: message {qid} #{rid} {test} {fields}", sid=ctx.session_id,
                 qid=ctx.qid, rid=rid, test=test, fields=" ".join(f"{k}={v}" for k, v in fields.items()))
        metrics = self.services.metrics
        if metrics is not None and hasattr(metrics, "content_hits"):
            metrics.child(metrics.content_hits, self.name, test, "-").inc()
        return reject(rid, **fields)
