"""Counters and histograms for the per-message path: plain numbers, exported at scrape time.

A ``prometheus_client`` ``Counter.inc`` takes a lock; a ``Histogram.observe`` takes two and
walks the bucket bounds in Python. The upstream read loop made three such updates per message
(received bytes, publish latency, lag) and the flusher one per round (sent bytes): replacing
them alone took one paced upstream message from ~261,000 to ~221,000 user-space instructions
(callgrind, ``bench.message_cost``, docs/performance.md). These classes keep the same numbers as
plain attributes (an add; a C ``bisect`` and two adds) and a collector builds exactly the
samples ``prometheus_client`` would (``_total`` and ``_created``; ``_bucket`` with the same
``le`` strings, ``_count``, ``_sum``, ``_created``), with the same name, help and labels.

They are updated from the trio thread only; a scrape from another thread may read a histogram
between its bucket and its sum add, which a rate() does not notice (``FeedStats`` and
``HubStats`` are read the same way).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Final, cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import INF, floatToGoString

__all__ = ["CounterValue", "HistogramCounts", "PlainCounter", "PlainHistogram"]

# prometheus_client's own ``le`` formatting (untyped there).
_le_string: Final = cast(Callable[[float], str], floatToGoString)


class CounterValue:
    """One series of a ``PlainCounter``."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class HistogramCounts:
    """One series of a ``PlainHistogram``: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # the upper bounds, +Inf last
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # The first bound >= value: prometheus_client's ``value <= bound`` walk, in C.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family(Collector):
    """Name, help, label names and the series by label values, registered on ``registry``."""

    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        registry.register(self)

    def _key(self, values: tuple[str, ...], by_name: dict[str, str]) -> tuple[str, ...]:
        if by_name:
            if values or set(by_name) != set(self.labelnames):
                raise ValueError(f"{self.name}: labels {sorted(by_name)} != {self.labelnames}")
            values = tuple(str(by_name[label]) for label in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(values)} label values for {self.labelnames}")
        return tuple(str(v) for v in values)


class PlainCounter(_Family):
    """A labelled counter: ``labels(...)`` gives the series to ``inc``."""

    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        super().__init__(name, doc, labelnames, registry)
        self._series: dict[tuple[str, ...], CounterValue] = {}
        if not self.labelnames:
            self._series[()] = CounterValue()

    def labels(self, *values: str, **by_name: str) -> CounterValue:
        key = self._key(values, by_name)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = CounterValue()
        return series

    def inc(self, amount: float = 1.0) -> None:
        """The unlabelled counter's ``inc``."""
        self._series[()].inc(amount)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for key, series in list(self._series.items()):
            family.add_metric(list(key), series.value, created=series.created)
        yield family


class PlainHistogram(_Family):
    """A histogram with fixed buckets: ``labels(...)`` gives the series to ``observe``."""

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        super().__init__(name, doc, labelnames, registry)
        bounds = tuple(float(b) for b in buckets)
        self.bounds = bounds if bounds[-1] == INF else (*bounds, INF)
        self._le = [_le_string(b) for b in self.bounds]
        self._series: dict[tuple[str, ...], HistogramCounts] = {}
        if not self.labelnames:
            self._series[()] = HistogramCounts(self.bounds)

    def labels(self, *values: str, **by_name: str) -> HistogramCounts:
        key = self._key(values, by_name)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = HistogramCounts(self.bounds)
        return series

    def observe(self, value: float) -> None:
        """The unlabelled histogram's ``observe``."""
        self._series[()].observe(value)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for key, series in list(self._series.items()):
            cumulative, buckets = 0, []
            for le, n in zip(self._le, list(series.counts), strict=True):
                cumulative += n
                buckets.append((le, float(cumulative)))
            family.add_metric(list(key), buckets, series.sum)
            labels = dict(zip(self.labelnames, key, strict=True))
            family.add_sample(f"{self.name}_created", labels, series.created)
        yield family
