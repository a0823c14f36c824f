"""The configuration's shape: one frozen msgspec Struct per TOML section, with its defaults.

``forbid_unknown_fields`` everywhere, so that a typo (``[server] prot = 8766``) is an error at
start instead of a silently ignored setting. Constraints that fit a type live here (``Meta``);
rules that span fields are in ``validate.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.config.resolve import resolve_feed, rest_url_for
from gateway.contract.records import JS_SAFE_MAX
from gateway.ingest import feeds as feeds_mod
from gateway.ingest.feeds import FeedSpec

DEFAULT_FEED_PATHS = ("/executiondata", "/marketdata", "/marketdata/stablecoin")

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]
SlowPolicy = Literal["conflate", "disconnect"]
Role = Literal["all", "ingest", "edge"]


class Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class UpstreamConfig(Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    base_url: NonEmpty = feeds_mod.PRODUCTION_URL
    backoff_initial: Positive = 1.0
    backoff_max: Positive = 60.0
    ping_interval: Positive = 10.0
    ping_timeout: Positive = 10.0
    connect_timeout: Positive = 10.0
    connect_interval: NonNegative = 1.0
    # Reads of one feed at least this far apart (io.upstream_ws): fewer wake-ups and writes
    # per message at high rates, at most this much (plus the 1 ms timer tick) added latency.
    coalesce_window: Annotated[float, msgspec.Meta(ge=0, le=0.1)] = 0.0
    dedup_capacity: Count = 65536
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 16 * 1024 * 1024
    allow_fast_retry: bool = False


class BackfillConfig(Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """REST backfill of the executions missed during upstream outages (issue 17)."""

    enabled: bool = True
    # "" derives it from upstream.base_url (resolve.REST_URLS); any other upstream needs it set.
    rest_url: str = ""
    # Paxos: 10 requests/s per IP, averaged; never more, whatever the file says.
    requests_per_second: Annotated[float, msgspec.Meta(gt=0, le=10)] = 10.0
    burst: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    request_timeout: Positive = 10.0  # s per REST request (each of connect, read, ...)
    timeout: Positive = 60.0  # s for the whole backfill after one reconnect
    max_held: Count = 10000  # live executions held per feed while a backfill runs
    window: Count = 2000  # Paxos's recent-executions window: a full one may hide a gap
    markets_refresh: Positive = 60.0  # s between refreshes of the REST market list


class FeedConfig(Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str | None = None
    url: str | None = None
    name: str | None = None
    required: bool = True


def _default_feeds() -> tuple[FeedConfig, ...]:
    return tuple(FeedConfig(path=p) for p in DEFAULT_FEED_PATHS)


class ServerConfig(Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: NonEmpty = "127.0.0.1"
    port: Port = 8765
    max_subscribers: Count = 10000
    # Sent to subscribers in hello: bounded by what a JavaScript client reads exactly.
    max_subscriptions: Annotated[int, msgspec.Meta(ge=1, le=JS_SAFE_MAX)] = 1000
    max_request_bytes: Annotated[int, msgspec.Meta(ge=256, le=JS_SAFE_MAX)] = 65536
    buffer_bytes: Annotated[int, msgspec.Meta(ge=1024, le=JS_SAFE_MAX)] = 4 * 1024 * 1024
    slow_policy: SlowPolicy = "conflate"
    history: Annotated[int, msgspec.Meta(ge=0)] = 10000
    ping_interval: Positive = 20.0
    ping_timeout: Positive = 20.0
    handshake_timeout: Positive = 10.0
    # Connections accepted whose upgrade request is not read yet, in all and per client
    # address; beyond: 503 at accept (fanout/admission.py has the numbers).
    max_pending: Count = 1024
    max_pending_per_ip: Count = 64
    # SO_SNDBUF of each subscriber socket (Linux reserves twice this); 0: the kernel's
    # autotuned default (up to net.ipv4.tcp_wmem's max, 4 MiB). See docs/operations.md "Memory".
    send_buffer_bytes: Annotated[int, msgspec.Meta(ge=0)] = 256 * 1024
    # New connections per client address (IPv4, or IPv6 /64): token-bucket rate and burst.
    connections_per_ip_per_second: Positive = 20.0
    connection_burst_per_ip: Count = 50
    # Bearer tokens, one per line; with PAXOS_GATEWAY_AUTH_TOKENS. Any token => auth required.
    auth_token_file: str = ""


class MetricsConfig(Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Loopback like server.host; the image and the chart set 0.0.0.0 (probes, scrapes).
    host: NonEmpty = "127.0.0.1"
    port: Port = 9108
    ready_grace: NonNegative = 30.0
    # Ops connections; beyond either cap the oldest idle one is shed (io/ops_slots.py).
    max_connections: Count = 64
    max_connections_per_address: Count = 8


class ShutdownConfig(Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    drain_timeout: NonNegative = 10.0


class LogConfig(Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    level: LogLevel = "info"
    format: LogFormat = "text"


class ClusterConfig(Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Past one machine: NATS JetStream between an ingest leader and fan-out edges.

    No ``nats_urls`` is today's single process, untouched (docs/cluster.md).
    """

    # nats://host:port or tls://host:port; in an override also one comma-separated string.
    nats_urls: tuple[str, ...] = ()
    # ingest: Paxos connections, normalize, publish; edge: consume, serve subscribers; all: both.
    role: Role = "all"
    # The lease holder's id; "" is the host name (the pod name on Kubernetes).
    holder: str = ""
    lease_ttl: Annotated[float, msgspec.Meta(ge=0.5, le=60)] = 3.0
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    max_age: Positive = 86400.0  # s of records kept in JetStream: the durable replay window
    duplicate_window: Positive = 120.0
    checkpoint_interval: Positive = 5.0  # s between a leader's checkpoints of each book
    # An edge that has not yet seen a requested seq waits this long before resume_failed.
    resume_wait: NonNegative = 0.5
    connect_timeout: Positive = 5.0  # s, one NATS connect attempt

    @property
    def enabled(self) -> bool:
        return bool(self.nats_urls)


class Config(Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    upstream: UpstreamConfig = msgspec.field(default_factory=UpstreamConfig)
    backfill: BackfillConfig = msgspec.field(default_factory=BackfillConfig)
    feeds: tuple[FeedConfig, ...] = msgspec.field(default_factory=_default_feeds)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)

    def feed_specs(self) -> tuple[FeedSpec, ...]:
        """The feeds as ``FeedSpec``, in ``feeds`` order. Only valid on a validated config."""
        return tuple(resolve_feed(self.upstream.base_url, f) for f in self.feeds)

    def rest_url(self) -> str:
        """Paxos's REST base URL for the backfill ("" if none can be derived)."""
        return self.backfill.rest_url or rest_url_for(self.upstream.base_url)

    def required_feeds(self) -> frozenset[str]:
        """Names of the feeds that count for readiness."""
        return frozenset(
            spec.name for spec, f in zip(self.feed_specs(), self.feeds, strict=True) if f.required
        )


# The tables that take SECTION.KEY overrides ([[feeds]] is an array: --feed replaces it).
SECTIONS: dict[str, type[Section]] = {
    "upstream": UpstreamConfig,
    "backfill": BackfillConfig,
    "server": ServerConfig,
    "metrics": MetricsConfig,
    "shutdown": ShutdownConfig,
    "log": LogConfig,
    "cluster": ClusterConfig,
}
