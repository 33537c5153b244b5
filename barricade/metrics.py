"""Prometheus metrics: one place that names every series.

Every reply the proxy sends is counted by code, enhanced status, catalogue
id and the catalogue's event, so a dashboard can show "#288 relaying
denied per minute" without parsing logs.  Each :class:`Metrics` owns its
registry (tests build many); the service exposes it on ``/metrics``.

The updates every message makes (its replies, each check run, each store
call and downstream reply: about seventy) go through :class:`Tally`
first: a dictionary addition instead of prometheus_client's locked value
behind three calls, and for a histogram a bucket found by ``bisect``
instead of a Python loop over the bounds.  The tally is applied to the
prometheus_client series when they are read (a collector runs it before
the others on every scrape), when a session ends with workers (the
master reads the workers' files, so a finished session is exact there
too), and once a second.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.twisted import MetricsResource
from twisted.internet.protocol import ServerFactory
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

from barricade.replies import Catalogue, Reply

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Tally:
    """Pending counter and histogram updates, applied to their series by :meth:`flush`.

    Keyed by the prometheus_client child itself.  A histogram's pending
    entry is its per-bucket counts and the sum of what was observed; the
    flush adds them to the child's ``_buckets`` and ``_sum`` values, which
    is what ``Histogram.observe`` does one observation at a time (the unit
    tests check that both give the same exposition).
    """

    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}
        self.observed: dict[Any, list] = {}
        #: A check run's counter and histogram in one entry per (check, phase, outcome):
        #: [counter child, histogram child, runs, sum, per-bucket counts, bounds].  The
        #: pipeline records some forty runs per message: one update here, not two.
        self.checks: dict[tuple[str, str, str], list] = {}

    @property
    def pending(self) -> bool:
        """Are there updates not yet applied to their series?"""
        return bool(self.counts or self.observed or self.checks)

    def inc(self, child: Any, amount: float = 1.0) -> None:
        counts = self.counts
        counts[child] = counts.get(child, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        found = self.observed.get(child)
        if found is None:
            found = self.observed[child] = [0.0, [0] * len(child._upper_bounds), child._upper_bounds]
        found[0] += value
        found[1][bisect_left(found[2], value)] += 1

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for child, amount in counts.items():
            child.inc(amount)
        observed, self.observed = self.observed, {}
        for child, (total, buckets, _bounds) in observed.items():
            _add_observed(child, total, buckets)
        checks, self.checks = self.checks, {}
        for counter, histogram, runs, total, buckets, _bounds in checks.values():
            counter.inc(runs)
            _add_observed(histogram, total, buckets)

    def check_entry(self, key: tuple[str, str, str], children: tuple[Any, Any]) -> list:
        """The pending entry of a check's runs (its counter's child and its histogram's),
        made empty if there is none since the last flush."""
        entry = self.checks.get(key)
        if entry is None:
            bounds = children[1]._upper_bounds
            entry = self.checks[key] = [*children, 0, 0.0, [0] * len(bounds), bounds]
        return entry

    def collect(self) -> list:
        """As a registry's first collector: every scrape sees what is pending."""
        self.flush()
        return []

    def describe(self) -> list:
        return []


def _add_observed(child: Any, total: float, buckets: list[int]) -> None:
    """What ``observe`` would have done for the observations tallied: their sum and buckets."""
    child._sum.inc(total)
    for value, n in zip(child._buckets, buckets, strict=True):
        if n:
            value.inc(n)


class Metrics:
    def __init__(self, catalogue: Catalogue, registry: CollectorRegistry | None = None):
        self.catalogue = catalogue
        self._children: dict[tuple[int, tuple[str, ...]], object] = {}
        self._reply_children: dict[tuple[int, str, int], object] = {}
        self._check_children: dict[tuple[str, str, str], tuple] = {}
        self._store_children: dict[str, object] = {}
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.tally = Tally()
        r.register(self.tally)  # first: its collect() runs before the series are read
        self.flush = self.tally.flush
        #: With workers the master reads each worker's files: a session's updates are
        #: applied when it ends, so what a client has seen finished is on /metrics.
        self.flush_each_session = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.replies = Counter(
            "barricade_replies", "SMTP replies sent to clients",
            ["code", "status", "id", "event"], registry=r,
        )
        self.sessions_active = Gauge(
            "barricade_sessions_active", "Client sessions open now",
            registry=r, multiprocess_mode="livesum",
        )
        self.sessions = Counter("barricade_sessions", "Client sessions accepted", registry=r)
        self.refused = Counter(
            "barricade_connections_refused", "Connections answered 421 and closed before a session: "
            "descriptors (#941, no room for another session), per-client (#943, client-max-sessions)",
            ["reason"], registry=r,
        )
        self.descriptors_in_use = Gauge(
            "barricade_descriptors_in_use", "File descriptors held (sampled every few seconds)",
            registry=r, multiprocess_mode="livesum",
        )
        self.descriptors_limit = Gauge(
            "barricade_descriptors_limit", "Soft RLIMIT_NOFILE (summed over workers)",
            registry=r, multiprocess_mode="livesum",
        )
        self.session_capacity = Gauge(
            "barricade_session_capacity", "Sessions the descriptors admit (summed over workers)",
            registry=r, multiprocess_mode="livesum",
        )
        self.messages = Counter(
            "barricade_messages", "Messages by outcome at the dot", ["outcome"], registry=r,
        )
        self.downstream_errors = Counter(
            "barricade_downstream_errors", "Downstream connect, lost, timeout and protocol errors",
            ["kind"], registry=r,
        )
        self.auth = Counter(
            "barricade_auth", "SMTP AUTH outcomes: pass, fail (the downstream refused the "
            "credentials: 535 or 5.7.8), tempfail (downstream unavailable, without AUTH PLAIN, a 4xx, "
            "or a refusal not about the credentials: 534, 538 ...), blocked "
            "(smtp-auth-max-failures reached); cancelled and undecodable exchanges are counted "
            "in barricade_replies (#259, #264, #987)", ["outcome"], registry=r,
        )
        self.downstream_tls = Counter(
            "barricade_downstream_tls", "Downstream connections secured with STARTTLS",
            ["protocol", "cipher"], registry=r,
        )
        self.client_certificates = Counter(
            "barricade_client_certificates",
            "Client certificates after STARTTLS by verification outcome (pass, fail, none) and reason",
            ["outcome", "reason"], registry=r,
        )
        self.downstream_seconds = Histogram(
            "barricade_downstream_seconds", "Downstream reply latency by command",
            ["command"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.checks = Counter(
            "barricade_checks", "Check and plugin hook results",
            ["check", "phase", "outcome"], registry=r,
        )
        self.scanner_results = Counter(
            "barricade_scanner_results", "Scanner results (clean, infected, spam, error, ...)",
            ["scanner", "result"], registry=r,
        )
        self.scanner_seconds = Histogram(
            "barricade_scanner_seconds", "Scan latency", ["scanner"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.scanner_wait_seconds = Histogram(
            "barricade_scanner_wait_seconds", "Time waiting for a free scanner connection",
            ["scanner"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.check_seconds = Histogram(
            "barricade_check_seconds", "Check and plugin hook latency",
            ["check", "phase"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.store_seconds = Histogram(
            "barricade_store_seconds", "Shared-state store operation latency (failures included)",
            ["operation"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.store_errors = Counter(
            "barricade_store_errors", "Shared-state store operations that failed (StoreError)",
            ["operation"], registry=r,
        )
        self.state_failures = Counter(
            "barricade_state_failures", "Checks that met a store failure, by the policy applied",
            ["check", "policy"], registry=r,
        )
        self.limit_hits = Counter(
            "barricade_limit_hits",
            "Limit hits by check (rate-connect, concurrent-connect, rate-throttle, msg-limit, "
            "null-rate-to, length, dupmsg, descriptors, smtp-session-timeout, tls-handshake-timeout)",
            ["limit"], registry=r,
        )
        self.call_aheads = Counter(
            "barricade_call_aheads", "Call-ahead outcomes (accept, reject, inconclusive, cached-*)",
            ["result"], registry=r,
        )
        self.call_ahead_seconds = Histogram(
            "barricade_call_ahead_seconds", "Duration of one call-ahead conversation",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        # Call-back (barricade.policy.callback): smtpf's call-back-* counters as labels.
        self.call_backs = Counter(
            "barricade_call_backs", "Call-back outcomes: exempt, skip (accept-all MX cached), cache, "
            "made (an MX answered), dumb (accept-all MX found), strict-greeting, accept, reject, tempfail",
            ["result"], registry=r,
        )
        self.call_back_seconds = Histogram(
            "barricade_call_back_seconds", "Duration of one call-back (MX lookup and MXes tried)",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.grey = Counter(
            "barricade_grey", "Grey-list decisions per message: new, early, pass, known, "
            "exempt, mismatch (grey-content) and reject (an operator's reject record)",
            ["outcome"], registry=r,
        )
        self.grey_remembered = Counter(
            "barricade_grey_remembered", "Grey-list lookups a worker answered KNOWN from its memory "
            "of passed tuples (redis-grey-known-ttl) without asking Redis; they are counted in "
            "barricade_grey_total too, but not in barricade_store_seconds", registry=r,
        )
        # DNS (barricade.dns): every lookup by record type and result
        # (answer, nxdomain, nodata, timeout, servfail, refused, error, bad-name),
        # cache hits included; latency of the queries that went to a server.
        self.dns_lookups = Counter(
            "barricade_dns_lookups", "DNS lookups by record type and result (cache hits included)",
            ["type", "result"], registry=r,
        )
        self.dns_cache_hits = Counter(
            "barricade_dns_cache_hits", "DNS lookups answered from the cache", ["type"], registry=r,
        )
        self.dns_seconds = Histogram(
            "barricade_dns_seconds", "DNS query latency (queries sent to a server)",
            ["type"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.dns_lists = Counter(
            "barricade_dns_list_hits", "Clients and header IPs found in DNS lists (dns-bl, dns-wl, dns-gl, "
            "dns-bl-headers)", ["check", "list"], registry=r,
        )
        # SPF (barricade.policy.spf): one per identity evaluated; scope helo or mail,
        # result one of RFC 7208's seven (pass, fail, softfail, neutral, none, temperror, permerror).
        self.spf_results = Counter(
            "barricade_spf_results", "SPF results by identity (helo, mail) and result",
            ["scope", "result"], registry=r,
        )

        # Content plugins (barricade.content): what decided, per plugin, test and DNS list;
        # distinct-or-not URIs per message; MIME decoding errors and limits hit.
        self.content_hits = Counter(
            "barricade_content_hits", "Content checks that found something, by plugin, test (uri-bl, "
            "domain-bl, uri-ip-in-name, deny-content-name ...) and DNS list ('-' for none)",
            ["plugin", "test", "list"], registry=r,
        )
        self.content_uris = Histogram(
            "barricade_content_uris", "URIs found per message by the uri plugin",
            buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=r,
        )
        self.content_decode_errors = Counter(
            "barricade_content_decode_errors", "MIME decoding problems: decode (bad base64, unknown "
            "charset, broken headers) and limit (mime-max-depth, mime-max-parts)", ["kind"], registry=r,
        )

    def scanner(self, name: str, outcome: str, seconds: float) -> None:
        self.scanner_results.labels(name, outcome).inc()
        self.scanner_seconds.labels(name).observe(seconds)

    def scanner_wait(self, name: str, seconds: float) -> None:
        self.scanner_wait_seconds.labels(name).observe(seconds)

    def reply(self, reply: Reply) -> None:
        # Every reply of every session lands here: its counter is found by the
        # reply's own fields, without building the label strings again.
        key = (reply.code, reply.status, reply.id)
        found = self._reply_children.get(key)
        if found is None:
            event = self.catalogue.spec(reply.id).event if reply.id in self.catalogue else "relayed"
            found = self._reply_children[key] = self.replies.labels(
                str(reply.code), reply.status or "-", str(reply.id), event)
        self.tally.inc(found)

    def count(self, metric, *labels: str) -> None:
        """``metric.labels(*labels).inc()`` through the tally, for counters a message
        may touch (grey-listing, SPF, DNS lists, limits)."""
        self.tally.inc(self.child(metric, *labels))

    def downstream(self, command: str, seconds: float) -> None:
        self.tally.observe(self.child(self.downstream_seconds, command), seconds)

    def store(self, operation: str, seconds: float, failed: bool) -> None:
        # Every store call lands here: its histogram is found by the operation alone.
        found = self._store_children.get(operation)
        if found is None:
            found = self._store_children[operation] = self.store_seconds.labels(operation)
        self.tally.observe(found, seconds)
        if failed:
            self.store_errors.labels(operation).inc()

    def dns(self, rdtype: str, result: str, seconds: float | None, cached: bool) -> None:
        tally = self.tally
        tally.inc(self.child(self.dns_lookups, rdtype, result))
        if cached:
            tally.inc(self.child(self.dns_cache_hits, rdtype))
        elif seconds is not None:
            tally.observe(self.child(self.dns_seconds, rdtype), seconds)

    def check(self, name: str, phase: str, outcome: str, seconds: float) -> None:
        key = (name, phase, outcome)
        entry = self.tally.checks.get(key)  # the usual case: one dictionary hit
        if entry is None:
            found = self._check_children.get(key)
            if found is None:  # both of a check run's metrics in one lookup
                found = self._check_children[key] = (self.checks.labels(name, phase, outcome),
                                                      self.check_seconds.labels(name, phase))
            entry = self.tally.check_entry(key, found)
        entry[2] += 1  # what Counter.inc and Histogram.observe would record, in one entry
        entry[3] += seconds
        entry[4][bisect_left(entry[5], seconds)] += 1

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, remembered.

        The counters and histograms a message may touch land here (check
        runs, replies and store calls have caches of their own): a
        dictionary hit is several times cheaper than prometheus_client's
        locked lookup, and the label sets are few.
        """
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels) if labels else metric
        return found


def scrape_registry(own: CollectorRegistry) -> CollectorRegistry:
    """What /metrics serves: all workers' files in multiprocess mode, else ours."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return own


def metrics_root(registry: CollectorRegistry) -> Resource:
    """``/metrics`` serving ``registry`` as it is."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))
    return root


#: /metrics connections open at once; more are closed as they come.
METRICS_CONNECTIONS = 16
#: seconds a /metrics connection may sit idle (a scraper reconnects at its next scrape)
METRICS_IDLE = 30


def metrics_site(root: Resource) -> ServerFactory:
    """The /metrics HTTP server, bounded.

    Its connections are descriptors of the process that serves SMTP
    (``workers=1``) and come out of ``descriptor-reserve``: unbounded, idle
    connections to the metrics port could take the descriptors an admitted
    session needs for its downstream.  A scraper needs one connection.
    """
    return _Bounded(Site(root, timeout=METRICS_IDLE))


class _Bounded(WrappingFactory):
    """Closes a connection beyond ``METRICS_CONNECTIONS`` as it comes."""

    def buildProtocol(self, addr):
        if len(self.protocols) >= METRICS_CONNECTIONS:
            return None
        return super().buildProtocol(addr)
