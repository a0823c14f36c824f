"""The ``/metrics`` endpoint of a running gateway, scraped over a real socket and read with the
official Prometheus text parser, while traffic flows and faults happen.

Everything runs in-process: the simulator (a faithful Paxos), the gateway, and trio-websocket
subscribers on 127.0.0.1 with ephemeral ports. Every wait is a bounded poll (``trio.fail_after``)
on a scraped value or on a message, never a timed assertion.

The running gateway, the scrapes and ``drive_traffic`` live in ``tests/support/metrics_traffic.py``
(the dashboard check uses them too).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any, get_args

import pytest
import trio

from gateway.app import Gateway
from gateway.config import load_config
from gateway.contract.protocol import ErrorCode
from gateway.io.delivery import DisconnectReason
from gateway.io.handshake import RejectReason
from gateway.io.metrics import Metrics
from gateway.io.upstream_reasons import CONNECT_FAILURE_REASONS, RECONNECT_REASONS
from gateway.logs import setup_logging
from tests.support.metrics_traffic import (
    ALLOWED_LABELS,
    BUFFER_BYTES,
    EXPECTED_TYPES,
    FEEDS,
    INFO_LABELS,
    TIMEOUT,
    P,
    Scrape,
    client,
    drive_traffic,
    running_gateway,
    scrape,
    scrape_until,
    wait_ready,
)


async def test_metrics_move_as_traffic_flows_and_reconnects_happen() -> None:
    async with running_gateway() as r:
        o = await drive_traffic(r)
    start, mid, end = o.start, o.with_subscribers, o.end

    # Every metric of the issue exists, with its type.
    for name, kind in EXPECTED_TYPES.items():
        assert end.types.get(P + name) == kind, f"{P}{name}: {end.types.get(P + name)}"

    def grew(name: str, before: Scrape = start, **labels: str) -> None:
        b, a = before.value(name, **labels), end.value(name, **labels)
        assert a > b, f"{name}{labels} did not grow: {b} -> {a}"

    # -- lag
    for feed in ("executiondata", "marketdata-stablecoin"):  # the feeds with exchange times
        grew("upstream_lag_seconds_count", feed=feed)
    assert end.value("upstream_lag_seconds_count", feed="marketdata") == 0  # no timestamps
    grew("publish_latency_seconds_count")
    ages = {s.labels["feed"]: s.value for s in end.find("upstream_last_message_age_seconds")}
    assert set(ages) == set(FEEDS) and all(0 <= v < TIMEOUT for v in ages.values())
    # Buffer depth: gauges of the buffers as they are at the scrape.
    for s in (start, mid, end):
        assert s.value("subscriber_buffer_limit_bytes") == BUFFER_BYTES
        assert 0 <= s.value("subscriber_buffer_max_bytes") <= s.value("subscriber_buffered_bytes")
        assert s.value("subscriber_buffer_max_records") <= s.value("subscriber_buffered_records")
    for name in ("buffer_max_bytes", "buffered_bytes", "buffer_max_records", "buffered_records"):
        assert start.value("subscriber_" + name) == end.value("subscriber_" + name) == 0

    # -- reconnects
    for feed in FEEDS:
        assert start.value("upstream_connected", feed=feed) == 1
        assert o.upstream_down.value("upstream_connected", feed=feed) == 0
        assert end.value("upstream_connected", feed=feed) == 1
        grew("upstream_reconnects_total", feed=feed, reason="connection_lost")
        grew("upstream_connect_failures_total", feed=feed, reason="handshake_rejected")
        grew("upstream_disconnected_seconds_total", feed=feed)
    grew("book_resnapshots_total", feed="marketdata")
    grew("crossed_books_total", feed="marketdata")
    grew("upstream_reconnects_total", feed="marketdata", reason="crossed_book")

    # -- traffic
    for kind in ("snapshot", "update", "invalid"):
        grew("upstream_messages_total", feed="marketdata", kind=kind)
    grew("upstream_messages_total", feed="executiondata", kind="execution")
    grew("upstream_messages_total", feed="marketdata-stablecoin", kind="price")
    for feed in FEEDS:
        grew("upstream_received_bytes_total", feed=feed)
    for kind in ("book", "trades", "price", "status"):
        grew("records_published_total", stream_kind=kind)
    grew("deliveries_total")
    grew("sent_bytes_total")
    grew("decode_errors_total", feed="marketdata")
    # Paxos replays the last execution per market on connect: the reconnect's are duplicates.
    grew("duplicates_suppressed_total", feed="executiondata")

    # -- subscribers
    assert start.value("subscribers") == 0 and end.value("subscribers") == 0
    assert mid.value("subscribers") == 2
    assert o.more_subscribers.value("subscribers") == 4
    # a: *.* (2 books, 2 trades, price and status streams); b: book.BTCUSD.
    assert mid.value("subscriptions", stream_kind="book") == 3
    assert mid.value("subscriptions", stream_kind="trades") == 2
    assert mid.value("subscriptions", stream_kind="status") == len(FEEDS)
    assert mid.value("subscriptions", stream_kind="price") >= 1
    assert end.value("subscriptions") == 0
    grew("subscriber_disconnects_total", reason="client_close")
    grew("subscriber_disconnects_total", reason="slow")
    grew("subscriber_disconnects_total", reason="error")
    assert end.value("subscriber_disconnects_total", reason="ping_timeout") == 0  # exposed at 0
    grew("conflations_total")
    grew("resumes_total", result="served")
    grew("resumes_total", result="refused")
    grew("request_errors_total", code="unknown_op")
    grew("request_errors_total", code="too_large")
    grew("rejected_connections_total", reason="not_found")
    grew("ops_http_requests_total", path="/metrics", code="200")
    assert end.value("ready") == 1
    (info,) = end.find("info")
    assert info.value == 1 and info.labels["epoch"] == str(r.gateway.epoch)
    # And Prometheus's own linter finds nothing in the exposition after all that traffic.
    promtool_check_metrics(end.text)


def promtool_check_metrics(exposition: str) -> None:
    """``promtool check metrics`` (Debian's prometheus package; .ci/run installs it) on a real
    scrape: fails in CI without promtool, skips elsewhere."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=exposition.encode(), capture_output=True,
        check=False, timeout=60,
    )  # fmt: skip
    report = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0 and not report.strip(), report


async def test_every_known_series_is_exposed_at_zero_before_its_first_event() -> None:
    """A labelled counter that appears only at its first event makes increase() miss that
    event: every known label set is there, at 0, from the first scrape."""
    async with running_gateway() as r:
        await wait_ready(r.gateway)
        first = await scrape(r.gateway)

    def zero(name: str, **labels: str) -> None:
        found = first.find(name, **labels)
        assert len(found) == 1 and found[0].value == 0, (name, labels, found)

    for feed in FEEDS:
        for reason in RECONNECT_REASONS:
            zero("upstream_reconnects_total", feed=feed, reason=reason)
        for reason in CONNECT_FAILURE_REASONS:
            zero("upstream_connect_failures_total", feed=feed, reason=reason)
    for why in get_args(RejectReason):
        zero("rejected_connections_total", reason=why)
    for reason in get_args(DisconnectReason):
        zero("subscriber_disconnects_total", reason=reason)
    for code in get_args(ErrorCode):
        zero("request_errors_total", code=code)
    for result in ("served", "refused"):
        zero("resumes_total", result=result)
    for path, code in (("/healthz", "200"), ("/readyz", "503"), ("other", "404")):
        zero("ops_http_requests_total", path=path, code=code)
    for name in ("conflations_total", "connection_task_failures_total", "config_errors_total"):
        zero(name)
    # The standard process and Python collectors are on the gateway's registry.
    names = {sample.name for sample in first.samples}
    assert {
        "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
        "process_start_time_seconds", "python_info", "python_gc_collections_total",
    } <= names  # fmt: skip
    (rss,) = (s for s in first.samples if s.name == "process_resident_memory_bytes")
    assert rss.value > 0
    promtool_check_metrics(first.text)


async def test_a_malformed_resume_epoch_is_answered_and_counted() -> None:
    async with running_gateway() as r:
        gw = r.gateway
        await wait_ready(gw)
        async with client(gw) as sub:
            for epoch in ("not-an-epoch", 1.7e18):
                await sub.request(
                    {"op": "subscribe", "id": 9, "streams": ["book.BTCUSD"],
                     "resume": {"book.BTCUSD": {"epoch": epoch, "seq": 1}}}
                )  # fmt: skip
            await sub.wait_for("two error answers", lambda c: len(c.of_type("error")) == 2)
            for error in sub.of_type("error"):
                assert (error["id"], error["code"]) == (9, "bad_resume")
                assert "epoch is the string the gateway sent" in error["message"]
            assert sub.of_type("subscribed") == []  # nothing of the request took effect
        await scrape_until(
            gw,
            "two bad_resume request errors",
            lambda s: s.value("request_errors_total", code="bad_resume") == 2,
        )


def test_config_errors_count_the_problems_a_gateway_starts_despite() -> None:
    """Fatal configuration errors stop the gateway before it serves (exit 2, tests/unit/
    test_config.py); the ones it runs despite are logged at start and counted."""

    def config_errors(*sets: str, feeds: list[str] | None = None) -> float | None:
        config = load_config(None, {}, ["server.port=0", "metrics.port=0", *sets], feeds=feeds)
        gateway = Gateway(config, handle_signals=False, auth_tokens=())  # built, never served
        return gateway.metrics.registry.get_sample_value(P + "config_errors_total")

    paxos = ["wss://ws.sandbox.paxos.com/marketdata/BTCUSD"]
    assert config_errors(feeds=paxos) == 0
    fast = ["upstream.allow_fast_retry=true", "upstream.connect_interval=0"]
    assert config_errors(*fast, feeds=["ws://127.0.0.1:1/marketdata"]) == 0  # a local simulator
    assert config_errors(*fast, feeds=paxos) == 1  # Paxos refuses > 1 new connection/s per IP
    open_to_all = 'server.host="0.0.0.0"'  # and no token configured: anyone may subscribe
    assert config_errors(open_to_all, feeds=paxos) == 1
    assert config_errors(*fast, open_to_all, feeds=paxos) == 2


async def test_no_series_per_subscriber_and_prometheus_naming() -> None:
    async with running_gateway() as r:
        o = await drive_traffic(r)
    # Two more subscribers of the same kinds add no series at all.
    assert o.more_subscribers.series() == o.with_subscribers.series()
    for s in (o.start, o.with_subscribers, o.more_subscribers, o.end):
        for sample in s.samples:
            if not sample.name.startswith(P):
                continue
            names = set(sample.labels)
            allowed = ALLOWED_LABELS | (INFO_LABELS if sample.name == P + "info" else set())
            assert names <= allowed, f"{sample.name} has labels {sorted(names - allowed)}"
            for value in sample.labels.values():
                # no peer address or port, no subscriber id
                assert not re.search(r"\d+\.\d+\.\d+\.\d+|127\.0\.0\.1|::1|:\d+$", value), sample
            if "feed" in sample.labels:
                assert sample.labels["feed"] in FEEDS
    end = o.end
    for family, kind in end.types.items():
        if family.startswith(("process_", "python_")):
            continue  # prometheus_client's standard collectors
        assert family.startswith(P), family
        samples = {s.name for s in end.samples if s.name.startswith(family)}
        if kind == "counter":
            # Counters end in _total in the exposition (and carry prometheus_client's _created).
            assert samples <= {family + "_total", family + "_created"}, samples
        else:
            assert not family.endswith("_total"), family
        # Base units only.
        assert not re.search(r"(milli|micro|nano)seconds|_ms(_|$)|(kilo|mega)bytes", family)
    # The exposition itself, not only the parser's reading of it (which strips _total).
    counters = [line.split()[2] for line in end.text.splitlines() if line.endswith(" counter")]
    assert len(counters) >= 20
    assert all(name.endswith("_total") for name in counters), counters


async def test_ping_timeout_is_a_disconnect_reason() -> None:
    sets = {"server.ping_interval": "0.1", "server.ping_timeout": "0.2"}
    async with running_gateway(**sets) as r:
        gw = r.gateway
        before = await scrape(gw)
        # A raw WebSocket client that completes the handshake and then never answers a ping.
        host, port = gw.subscriber_url.removeprefix("ws://").rsplit(":", 1)
        with trio.socket.socket() as sock:
            await sock.connect((host, int(port)))
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            await sock.send(
                f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            # Read until the close frame (the server's frames are not masked), then go away
            # rather than answer it: the server stops waiting for the closing handshake.
            with trio.fail_after(TIMEOUT):
                assert await close_code_of(sock) == 4009
        after = await scrape_until(
            gw,
            "a ping timeout",
            lambda s: s.value("subscriber_disconnects_total", reason="ping_timeout") == 1,
        )
        assert before.value("subscriber_disconnects_total", reason="ping_timeout") == 0
        assert after.value("subscribers") == 0


async def close_code_of(sock: trio.socket.SocketType) -> int:
    """Skip the HTTP response and the frames before the close frame; its close code."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await sock.recv(65536)
    data = data.split(b"\r\n\r\n", 1)[1]
    while True:
        if len(data) >= 2:
            opcode, n = data[0] & 0x0F, data[1] & 0x7F
            head = 2 + (2 if n == 126 else 8 if n == 127 else 0)
            if len(data) >= head:
                if n >= 126:
                    n = int.from_bytes(data[2:head], "big")
                if len(data) >= head + n:
                    if opcode == 0x8:
                        return int.from_bytes(data[head : head + 2], "big")
                    data = data[head + n :]
                    continue
        chunk = await sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed without a close frame")
        data += chunk


async def test_disconnected_time_counts_up_to_the_scrape() -> None:
    """A feed that is down and waiting out a long backoff still shows its time disconnected
    growing: it is added up to the scrape, not only when an attempt ends."""
    sets = {"upstream.backoff_initial": "30", "upstream.backoff_max": "30"}
    async with running_gateway(**sets) as r:
        gw = r.gateway
        await wait_ready(gw)
        # Refused from now on: the prompt reconnect after the drop fails, then the backoff.
        r.sim.refuse_upgrades(503)
        r.sim.drop_all()
        first = await scrape_until(
            gw,
            "every feed down",
            lambda s: all(s.value("upstream_connected", feed=f) == 0 for f in FEEDS),
        )
        # Backoff is now >= 30 s * jitter: no attempt ends while this waits.
        await scrape_until(
            gw,
            "time disconnected growing between attempts",
            lambda s: all(
                s.value("upstream_disconnected_seconds_total", feed=f)
                > first.value("upstream_disconnected_seconds_total", feed=f)
                for f in FEEDS
            ),
        )


def test_before_collect_hooks_run_first_and_can_be_removed() -> None:
    metrics = Metrics()
    gauge = metrics.upstream_connected.labels(feed="x")
    remove = metrics.before_collect(lambda: gauge.set(1))

    def value() -> float | None:
        return metrics.registry.get_sample_value(f"{P}upstream_connected", {"feed": "x"})

    # The hook's change is in the same scrape: it ran before the gauge was collected.
    assert value() == 1
    remove()
    remove()  # harmless
    gauge.set(5)
    assert value() == 5


# -- logs -------------------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    setup_logging("info", "json", out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def _gateway_lines(out: io.StringIO, skip: int = 0) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines()[skip:]]
    return [
        line
        for line in lines
        if line["logger"].startswith("gateway.")
        and not line["logger"].startswith("gateway.simulator")
    ]


async def test_a_reconnect_logs_one_structured_line_per_state_change(
    json_log: io.StringIO,
) -> None:
    async with running_gateway() as r:
        gw = r.gateway
        async with client(gw) as sub:
            await sub.request({"op": "subscribe", "id": 1, "streams": ["*.*"]})
            await wait_ready(gw)
            await sub.wait_for("records", lambda c: len(c.records()) > 20)
            mark = len(json_log.getvalue().splitlines())
            messages_before = sum(f.state.messages for f in gw.feeds)
            connections = [f.state.connections for f in gw.feeds]
            delivered = len(sub.records())

            r.sim.drop_all()
            with trio.fail_after(TIMEOUT):
                while not all(
                    f.state.connected and f.state.connections == n + 1
                    for f, n in zip(gw.feeds, connections, strict=True)
                ):
                    await trio.sleep(0.02)
            await wait_ready(gw)
            # Plenty of traffic after the reconnect, none of which may be logged.
            await sub.wait_for(
                "many records after the reconnect", lambda c: len(c.records()) > delivered + 400
            )
            messages = sum(f.state.messages for f in gw.feeds) - messages_before
            lines = _gateway_lines(json_log, mark)

    upstream = [line for line in lines if line["logger"] == "gateway.upstream"]
    for feed in FEEDS:
        events = [(x["event"], x["reason"]) for x in upstream if x.get("feed") == feed]
        assert events == [("disconnected", "connection_lost"), ("connected", None)], (feed, events)
    for line in upstream:
        assert {"ts", "level", "message", "feed", "event", "reason"} <= set(line), line
    # Nothing per message: the whole window logged a handful of lines for hundreds of frames.
    assert len(lines) <= 3 * len(FEEDS), [x["message"] for x in lines]
    assert messages > 20 * len(lines), (messages, len(lines))
