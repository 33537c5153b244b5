"""The metrics tally: batched updates must expose exactly what direct updates would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from barricade.metrics import LATENCY_BUCKETS, Metrics
from barricade.net.forward import DownstreamReply
from barricade.replies import Catalogue, ReplyId
from tests.unit.test_deadlines import _Downstream, _in_data
from tests.unit.test_server import Session

# On and between bucket bounds, below the first, above the last (+Inf only).
SECONDS = [0.0, 0.0005, 0.001, 0.0011, 0.0025, 0.03, 1, 2.6, 30, 60, 61, 1e6]


def exposition(metrics: Metrics) -> str:
    lines = generate_latest(metrics.registry).decode().splitlines()
    return "\n".join(x for x in lines if "_created" not in x)  # creation times differ


def test_tallied_updates_expose_what_direct_updates_do():
    cat = Catalogue()
    tallied, direct = Metrics(cat, CollectorRegistry()), Metrics(cat, CollectorRegistry())
    reply = cat.reply(ReplyId.GREY_LISTED)
    for i, seconds in enumerate(SECONDS):
        tallied.check("grey", "rcpt", "continue", seconds)
        tallied.downstream("rcpt", seconds)
        tallied.store("add", seconds, failed=i % 3 == 0)
        tallied.reply(reply)
        direct.checks.labels("grey", "rcpt", "continue").inc()
        direct.check_seconds.labels("grey", "rcpt").observe(seconds)
        direct.downstream_seconds.labels("rcpt").observe(seconds)
        direct.store_seconds.labels("add").observe(seconds)
        if i % 3 == 0:
            direct.store_errors.labels("add").inc()
        direct.reply(reply)
        direct.flush()  # the reply counter is tallied in both
    assert exposition(tallied) == exposition(direct)
    assert 'barricade_check_seconds_bucket{check="grey",le="+Inf",phase="rcpt"} 12.0' in exposition(tallied)
    assert len(LATENCY_BUCKETS) + 1 == len(tallied.check_seconds.labels("grey", "rcpt")._buckets)


def test_every_read_sees_the_pending_updates():
    """A scrape, STAT (registry.collect) and get_sample_value apply the tally first."""
    metrics = Metrics(Catalogue(), CollectorRegistry())
    metrics.check("dupmsg", "mail", "continue", 0.002)
    assert metrics.tally.pending  # not yet in the series
    assert metrics.registry.get_sample_value(
        "barricade_checks_total", {"check": "dupmsg", "phase": "mail", "outcome": "continue"}) == 1
    assert not metrics.tally.pending
    metrics.check("dupmsg", "mail", "continue", 0.002)
    assert 'barricade_checks_total{check="dupmsg",outcome="continue",phase="mail"} 2.0' in exposition(metrics)
    assert metrics.registry.get_sample_value(
        "barricade_check_seconds_bucket", {"check": "dupmsg", "phase": "mail", "le": "0.0025"}) == 2


def test_a_flush_with_nothing_pending_changes_nothing():
    metrics = Metrics(Catalogue(), CollectorRegistry())
    before = exposition(metrics)
    metrics.flush()
    assert exposition(metrics) == before


# --- with workers: counted before the client hears -------------------------------------


class _Takes(_Downstream):
    """A route that takes the message and says 250 at the dot."""

    async def dot(self):
        return DownstreamReply(250, ("2.0.0 queued",))


def test_with_workers_a_message_is_counted_on_metrics_before_its_250_is_written(tmp_path):
    """A worker killed right after answering must not take the message's counts with it."""
    s = Session(tmp_path)
    metrics = s.ctx.metrics
    metrics.flush_each_session = True  # as with PROMETHEUS_MULTIPROC_DIR (workers)
    seen: list[tuple[bytes, dict]] = []
    flush = metrics.flush

    def flushed() -> None:
        seen.append((s.transport.value(), metrics.tally.pending))
        flush()

    metrics.flush = flushed
    _in_data(s)
    s.proto.proxy.txn["fake"] = _Takes()
    assert s.send(b"DATA\r\n").startswith(b"354 ")
    assert seen == []  # nothing decided yet: no flush for a 354
    assert s.send(b"Subject: x\r\n\r\nbody\r\n.\r\n").startswith(b"250 ")
    assert len(seen) == 1
    written, pending = seen[0]
    assert b"250 " not in written and pending  # the counts went out before the reply
    assert not metrics.tally.pending  # and nothing of the message is left pending


def test_check_runs_tallied_across_flushes_expose_what_direct_updates_do():
    """A check run's two updates share one pending entry; entries made again after each
    flush add up to what every run observed directly would show."""
    cat = Catalogue()
    tallied, direct = Metrics(cat, CollectorRegistry()), Metrics(cat, CollectorRegistry())
    # Binary fractions, so that sums taken in another grouping are equal to the last bit.
    dyadic = [0.0, 2 ** -11, 2 ** -10, 2 ** -9, 2 ** -6, 2 ** -2, 1.0, 4.0, 32.0, 64.0, 1024.0, 2.0 ** 20]
    for i, seconds in enumerate(dyadic * 3):
        outcome = ("continue", "reject", "error")[i % 3]
        for metrics in (tallied, direct):
            metrics.check("grey", "rcpt", outcome, seconds)
        direct.flush()
        if i % 4 == 0:
            tallied.flush()
    assert exposition(tallied) == exposition(direct)
    assert 'barricade_checks_total{check="grey",outcome="reject",phase="rcpt"} 12.0' in exposition(tallied)
