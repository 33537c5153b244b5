"""One MIME decoding per message, shared by every content check.

Each content plugin says in its ``headers`` hook what it needs from the
message (:func:`want`: URIs, part digests, attachment octets); the first
``body`` chunk starts one :class:`~barricade.content.mime.MimeDecoder`
with the union of those wishes, every plugin's ``body`` hook passes the
chunk on (:func:`feed` decodes each chunk once, for whichever plugin
passes it first: each plugin's count of chunks says which are new), and
at the dot :func:`finish` closes it once and hands the result to all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from barricade.content.mime import Limits, MimeDecoder, Part
from barricade.content.uri import UriCollector
from barricade.policy.verdict import CONTINUE, Verdict, reject
from barricade.replies import ReplySpec

KEY = "content.scan"
#: "554 5.6.0 message too complex to scan: {reason}" (mime-limit-policy=reject).
TOO_COMPLEX = 970
TOO_COMPLEX_REPLY = ReplySpec(
    TOO_COMPLEX, 554, "5.6.0", "message too complex to scan: {reason}", "dot",
    "The message nests MIME parts deeper than mime-max-depth or has more than mime-max-parts parts, "
    "and mime-limit-policy=reject. smtpf has no such limit.")


@dataclass
class MessageScan:
    """What the content checks asked for, and the decoder once it runs."""

    uris: bool = False
    md5: bool = False
    keep: list[Any] = field(default_factory=list)  # callables Part -> bool
    decoder: MimeDecoder | None = None
    collector: UriCollector | None = None
    chunks: int = 0  # body chunks decoded so far
    seen: dict[str, int] = field(default_factory=dict)  # body chunks each plugin has passed on
    finished: bool = False
    observed: bool = False  # its metrics counted

    def start(self, header_block: bytes, limits: Limits) -> MimeDecoder:
        self.collector = UriCollector() if self.uris else None
        keep = self.keep

        def keeper(part: Part) -> bool:
            return any(k(part) for k in keep)

        self.decoder = MimeDecoder(limits, self.collector, self.md5, keeper if keep else None)
        self.decoder.feed(header_block)
        return self.decoder


def limits_of(config: Any) -> Limits:
    return Limits(max_depth=int(config.get("mime-max-depth", 10) or 10),
                  max_parts=int(config.get("mime-max-parts", 1000) or 1000))


def want(ctx: Any, uris: bool = False, md5: bool = False, keep: Any = None) -> MessageScan:
    """Ask for something from this message's decoding (call from a ``headers`` hook)."""
    scan = ctx.notes.get(KEY)
    if scan is None:
        scan = ctx.notes[KEY] = MessageScan()
    scan.uris |= uris
    scan.md5 |= md5
    if keep is not None and keep not in scan.keep:
        scan.keep.append(keep)
    return scan


def feed(ctx: Any, config: Any, chunk: bytes, plugin: str) -> None:
    """Decode one body chunk, once: every plugin passes each chunk on, the first decodes it."""
    scan = ctx.notes.get(KEY)
    if scan is None or scan.finished:
        return
    count = scan.seen[plugin] = scan.seen.get(plugin, 0) + 1
    if count <= scan.chunks:
        return  # another plugin has decoded this chunk already
    scan.chunks = count
    decoder = scan.decoder or scan.start(ctx.header_block, limits_of(config))
    decoder.feed(chunk)


def finish(ctx: Any, config: Any) -> MessageScan | None:
    """The finished decoding of this message (None when no check asked for one)."""
    scan = ctx.notes.get(KEY)
    if scan is None:
        return None
    if not scan.finished:
        decoder = scan.decoder or scan.start(ctx.header_block, limits_of(config))
        decoder.close()
        scan.finished = True
    return scan


def limit_verdict(scan: MessageScan | None, config: Any) -> Verdict:
    """mime-limit-policy: refuse a message the decoder could not go all through, or let it be."""
    if scan is None or scan.decoder is None or not scan.decoder.limited:
        return CONTINUE
    if config.get("mime-limit-policy", "none") == "reject":
        return reject(TOO_COMPLEX, reason=scan.decoder.limited)
    return CONTINUE


def observe(scan: MessageScan | None, metrics: Any) -> None:
    """Count the message's URIs and decoding problems once, whichever plugin finishes first."""
    if scan is None or scan.observed or metrics is None or not hasattr(metrics, "content_uris"):
        return
    scan.observed = True
    if scan.collector is not None:
        metrics.content_uris.observe(scan.collector.count)
    decoder = scan.decoder
    if decoder is not None:
        if decoder.errors:
            metrics.child(metrics.content_decode_errors, "decode").inc(len(decoder.errors))
        if decoder.limited:
            metrics.child(metrics.content_decode_errors, "limit").inc()
