"""The I/O edges: the only package that imports trio, trio-websocket, prometheus_client or httpx.

Everything with a socket, a clock, a task or a Prometheus metric lives here, and drives the
sans-IO packages: it feeds bytes and the time to ``ingest``, hands the resulting batch to
``fanout``, and writes the frames ``fanout`` queued.

Modules, in the data's order: ``connect_gate`` (``ConnectGate``: at most one new upstream connection
per interval, shared by all feeds; awaits trio; the reconnect delays are the sans-IO
``gateway.retry.backoff``), ``upstream`` (``run_feed``: one trio task per feed, the retry loop),
``upstream_conn`` (``FeedConnection``: one connection's connect/read/keepalive/close, one published
batch per socket read), ``upstream_ws`` (``UpstreamWebSocket``: the open connection's writes, pings
and closing handshake), ``upstream_target`` (where to connect; the verifying TLS context),
``upstream_health`` (``UpstreamHealth``, ``FeedState``: connection state, metrics and log lines at
attempt boundaries), ``upstream_reasons`` (why an attempt ends: the fixed label set and the error
classification), ``server`` (the subscriber WebSocket server on trio-websocket: listen, run each
connection, shutdown drain), ``accept`` (accept → upgrade request: pending admission, send buffer,
close frames for protocol violations), ``handshake`` (``HandshakeGate``: rate limit, token, route,
capacity, and the refusals), ``subscriber_conn`` (one connection's reader, pinger and end reason),
``contained_nursery`` (a library failure ends one connection, not the server), ``delivery`` (hub
outbox → socket in one place: the ``Flusher`` and each connection's ``Delivery`` with its writer
task), ``socket_writer`` (the fast send path's socket side: pre-built frames written straight to the
socket, ``SocketWriter``, ``adopt``), ``ops_http`` (``/metrics``, ``/healthz``, ``/readyz`` over
h11), ``ops_slots`` (ops connections shed oldest first), ``readiness`` (``Readiness``: ``/readyz``
from per-feed health), ``metrics`` (``Metrics``: the Prometheus registry, and the collectors that
read sans-IO counters at scrape time). The REST backfill (docs/upstream.md): ``rest_client``
(``PaxosRestClient`` on httpx, one rate-limited ``RequestBudget`` per process), ``backfiller``
(``run_backfills``: each executions feed's backfill after every connect), ``market_watch`` (the
market-list refresh: halts, delistings, new markets).

May import: anything, including ``gateway.contract``, ``gateway.ingest`` and ``gateway.fanout``;
nothing outside ``io`` may import trio, trio-websocket or prometheus_client except the
composition root (``gateway.app``), the client library's adapters (``gateway.client.trio_client``,
``asyncio_client``) and the commands (``gateway.tools``, ``gateway.recording``,
``gateway.simulator``).
"""
