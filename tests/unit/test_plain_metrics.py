"""``io.plain_metrics`` exports exactly what ``prometheus_client`` would for the same updates:
the exposition of a registry with the plain metrics equals one with the library's own, save
the ``_created`` timestamps."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.io.metrics import LAG_BUCKETS, LATENCY_BUCKETS
from gateway.io.plain_metrics import PlainCounter, PlainHistogram

VALUES = (0.0, 0.00001, 0.000011, 0.0004, 0.001, 0.1, 0.1000001, 7.0, 31.0, 1e9, -0.5)


def _exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [re.sub(r"(_created\{?[^ ]*) .*", r"\1 <time>", line) for line in text.splitlines()]


def test_labelled_histogram_and_counter_match_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("x_lag_seconds", "Lag.", ["feed"], buckets=LAG_BUCKETS, registry=theirs)
    h2 = PlainHistogram("x_lag_seconds", "Lag.", ["feed"], ours, LAG_BUCKETS)
    c1 = Counter("x_bytes", "Bytes.", ["feed"], registry=theirs)
    c2 = PlainCounter("x_bytes", "Bytes.", ["feed"], ours)
    for feed in ("a", "b"):
        h1.labels(feed=feed)  # a series at 0 in both
        h2.labels(feed=feed)
    for v in VALUES:
        h1.labels(feed="a").observe(v)
        h2.labels(feed="a").observe(v)
        c1.labels("a").inc(abs(v))
        c2.labels("a").inc(abs(v))
    c1.labels(feed="c").inc(3)
    c2.labels(feed="c").inc(3)
    assert _exposition(ours) == _exposition(theirs)
    assert any("x_lag_seconds_bucket" in line for line in _exposition(ours))


def test_unlabelled_histogram_and_counter_match_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("y_latency_seconds", "Latency.", buckets=LATENCY_BUCKETS, registry=theirs)
    h2 = PlainHistogram("y_latency_seconds", "Latency.", (), ours, LATENCY_BUCKETS)
    c1 = Counter("y_sent_bytes", "Sent.", registry=theirs)
    c2 = PlainCounter("y_sent_bytes", "Sent.", (), ours)
    assert _exposition(ours) == _exposition(theirs)  # all at 0 from the start
    for v in VALUES:
        h1.observe(max(v, 0.0))
        h2.observe(max(v, 0.0))
        c1.inc(240)
        c2.inc(240)
    assert _exposition(ours) == _exposition(theirs)


def test_bad_use_is_refused_as_prometheus_client_refuses_it() -> None:
    registry = CollectorRegistry()
    counter = PlainCounter("z_bytes", "Bytes.", ["feed"], registry)
    with pytest.raises(ValueError):
        counter.labels("a").inc(-1)
    with pytest.raises(ValueError):
        counter.labels(market="a")
    with pytest.raises(ValueError):
        counter.labels("a", "b")
