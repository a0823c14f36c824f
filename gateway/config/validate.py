"""Rules that span fields or need more than a type; the first broken one is the error."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NoReturn

from gateway.config.errors import ConfigError
from gateway.config.resolve import (
    REST_URLS,
    FeedProblem,
    base_url_problem,
    nats_url_problem,
    resolve_feed,
    rest_url_for,
    rest_url_problem,
)
from gateway.config.sections import SECTIONS, Config
from gateway.config.wording import show
from gateway.ingest.feeds import FeedSpec

# Paxos delays connections beyond one per second per IP; retrying faster than that only queues
# us behind ourselves. Tests and the demo talk to the local simulator and opt out explicitly.
MIN_PRODUCTION_INTERVAL = 1.0


def validate(config: Config, sources: Mapping[str, str]) -> None:
    def fail(key: str, text: str) -> NoReturn:
        source = sources.get("feeds" if key.startswith("feeds") else key)
        raise ConfigError(f"{key}: {text}" + (f" (from {source})" if source else ""))

    for section_name in SECTIONS:
        section = getattr(config, section_name)
        for field in section.__struct_fields__:
            value = getattr(section, field)
            if isinstance(value, float) and not math.isfinite(value):
                fail(f"{section_name}.{field}", f"expected a finite number, got {value}")

    up = config.upstream
    if not up.allow_fast_retry:
        for key, value in (
            ("backoff_initial", up.backoff_initial),
            ("connect_interval", up.connect_interval),
        ):
            if value < MIN_PRODUCTION_INTERVAL:
                fail(
                    f"upstream.{key}",
                    f"must be >= {MIN_PRODUCTION_INTERVAL} (Paxos allows one new connection per "
                    f"second per IP), got {value}; set upstream.allow_fast_retry = true only "
                    "for tests against a local simulator",
                )
    if up.backoff_max < up.backoff_initial:
        fail(
            "upstream.backoff_max",
            f"must be >= upstream.backoff_initial ({up.backoff_initial}), got {up.backoff_max}",
        )
    if config.metrics.port != 0 and config.metrics.port == config.server.port:
        fail("metrics.port", f"must differ from server.port ({config.server.port})")
    problem = base_url_problem(up.base_url)
    if problem:
        fail("upstream.base_url", problem)
    backfill = config.backfill
    if backfill.rest_url:
        problem = rest_url_problem(backfill.rest_url)
        if problem:
            fail("backfill.rest_url", problem)
    elif backfill.enabled and not rest_url_for(up.base_url):
        fail(
            "backfill.rest_url",
            f"cannot be derived from upstream.base_url {show(up.base_url)} (only "
            f'{", ".join(REST_URLS)} are known): set it (e.g. "https://api.paxos.com/v2") '
            "or set backfill.enabled = false",
        )

    cluster = config.cluster
    for url in cluster.nats_urls:
        problem = nats_url_problem(url)
        if problem:
            fail("cluster.nats_urls", problem)
    if not cluster.enabled and cluster.role != "all":
        fail(
            "cluster.role",
            f"{show(cluster.role)} needs NATS: set cluster.nats_urls (e.g. "
            '["nats://nats:4222"]), or leave the role "all" for a single process',
        )

    if not config.feeds:
        fail("feeds", "at least one feed is required")
    specs: list[FeedSpec] = []
    for i, feed in enumerate(config.feeds):
        try:
            specs.append(resolve_feed(up.base_url, feed))
        except FeedProblem as e:
            fail(f"feeds[{i}]" + (f".{e.field}" if e.field else ""), e.text)
    for i, a in enumerate(specs):
        for j in range(i):
            b = specs[j]
            if a.kind == b.kind and (a.market is None or b.market is None or a.market == b.market):
                market = a.market or b.market
                stream = b.stream_for(market) if market else f"every {a.stream_kind}.* stream"
                fail(
                    "feeds",
                    f"feeds[{j}] ({b.name}: {b.url}) and feeds[{i}] ({a.name}: {a.url}) overlap: "
                    f"both would publish {stream}; keep one of them",
                )
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.name in seen:
            fail(
                f"feeds[{i}].name",
                f"duplicate feed name {spec.name!r} (also feeds[{seen[spec.name]}])",
            )
        seen[spec.name] = i
