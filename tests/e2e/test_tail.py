"""``paxos-gateway tail``: the checker, the formatter and a run against a live server."""

from __future__ import annotations

import argparse
import io
import json

import trio

from gateway.client import ClientSession
from gateway.config import ServerConfig
from gateway.fanout.hub import Hub
from gateway.io.server import Server
from gateway.tools import tail
from tests.support.fake_feed import EPOCH, FakeFeed


def record(stream: str, seq: int, kind: str = "trade", epoch: str = EPOCH) -> str:
    """A minimal record of its type, as the gateway would send it."""
    fields: dict[str, object] = {"type": kind, "stream": stream, "seq": seq, "epoch": epoch,
                                 "receive_time": "1", "market": "X"}  # fmt: skip
    if kind == "trade":
        fields |= {"price": "1", "amount": "0.00000001", "match_number": "M", "exchange_time": "1"}
    elif kind == "book_snapshot":
        fields |= {"bids": [], "asks": [], "resync": True, "reason": "conflation"}
    elif kind == "book_update":
        fields |= {"side": "bid", "price": "1", "amount": "2"}
    return json.dumps(fields)


def notes(session: ClientSession, *frames: str) -> list[str]:
    """The stderr notes ``tail`` prints for these frames."""
    out = []
    for frame in frames:
        for event in session.receive(frame):
            note = tail.event_line(event)[1]
            if note is not None:
                out.append(note)
    return out


def test_checks_follow_subscribed_snapshot_and_resume() -> None:
    c = ClientSession(["trades.X", "book.X"])
    c.connection_made()
    subscribed = {"type": "subscribed", "id": "s1", "patterns": [],
                  "streams": [{"stream": "trades.X", "epoch": EPOCH, "seq": 5}]}  # fmt: skip
    assert notes(c, json.dumps(subscribed)) == []
    assert notes(c, record("trades.X", 5)) == []  # the last value, at the head
    assert notes(c, record("trades.X", 6)) == []
    assert notes(c, record("book.X", 10, "book_snapshot")) == []
    assert notes(c, record("book.X", 11, "book_update")) == []
    assert notes(c, record("book.X", 30, "book_snapshot")) == []  # conflation: a reset
    assert notes(c, record("book.X", 31, "book_update")) == []
    assert (c.stats.gaps, c.stats.problems, c.stats.records) == (0, 0, 6)


def test_checks_report_gaps_repeats_and_restarts() -> None:
    c = ClientSession(["trades.X", "trades.Y", "trades.Z"])
    c.connection_made()
    assert notes(c, record("trades.X", 1)) == []
    assert "GAP" in notes(c, record("trades.X", 4))[0]
    assert notes(c, record("trades.Y", 1), record("trades.Y", 3 - 1)) == []
    assert "back" in notes(c, record("trades.Y", 1))[0]
    assert "epoch changed" in notes(c, record("trades.Z", 1), record("trades.Z", 2, epoch="1"))[0]
    assert "does not match" in notes(c, '{"type": "trade"}')[0]
    assert (c.stats.gaps, c.stats.duplicates, c.stats.problems) == (1, 1, 2)


def test_format_message_lines() -> None:
    assert tail.format_message(
        {"type": "book_update", "stream": "book.X", "seq": 3, "side": "bid", "price": "1",
         "amount": "2"}
    ) == "book.X #3 bid 1 = 2"  # fmt: skip
    line = tail.format_message(
        {"type": "book_snapshot", "stream": "book.X", "seq": 9, "reason": "conflation",
         "resync": True, "bids": [["10", "1"]], "asks": []}
    )  # fmt: skip
    assert (
        line
        == "book.X #9 SNAPSHOT (conflation, resync) 1 bids / 0 asks, best bid 1 @ 10, best ask -"
    )
    assert tail.format_message({"type": "error", "code": "bad_stream", "message": "m"}) == (
        "# error bad_stream: m"
    )


def test_stream_url() -> None:
    assert tail.stream_url("ws://h:1", "json") == "ws://h:1/v1/stream"
    assert tail.stream_url("ws://h:1/", "msgpack") == "ws://h:1/v1/stream?encoding=msgpack"
    assert tail.stream_url("ws://h:1/v1/book/X", "json") == "ws://h:1/v1/book/X"


def test_register_adds_the_subcommand() -> None:
    parser = argparse.ArgumentParser()
    tail.register(parser.add_subparsers())
    args = parser.parse_args(["tail", "ws://h:1", "book.X", "trades.*", "--count", "3"])
    assert (args.url, args.streams, args.count, args.func) == (
        "ws://h:1", ["book.X", "trades.*"], 3, tail.main,
    )  # fmt: skip
    bad = parser.parse_args(["tail", "ws://h:1", "--count", "0"])
    assert bad.func(bad) == tail.EXIT_REFUSED


async def _serve(hub: Hub, nursery: trio.Nursery) -> Server:
    server = Server(hub, ServerConfig(host="127.0.0.1", port=0))
    await nursery.start(server.run)
    return server


async def test_tail_against_a_live_server() -> None:
    with trio.fail_after(20):
        hub = Hub(EPOCH)
        feed = FakeFeed(hub)
        feed.publish(feed.snapshot())
        async with trio.open_nursery() as nursery:
            server = await _serve(hub, nursery)
            out, err = io.StringIO(), io.StringIO()

            async def publish() -> None:
                for _ in range(20):
                    await trio.sleep(0.01)
                    feed.publish(feed.update(), feed.trade())

            nursery.start_soon(publish)
            code = await tail.tail(
                f"ws://127.0.0.1:{server.port}", ["book.BTCUSD", "trades.*"], count=15,
                out=out, err=err,
            )  # fmt: skip
            assert code == tail.EXIT_OK, err.getvalue()
            lines = out.getvalue().splitlines()
            assert lines[0].startswith("# hello")
            # Records flow while it connects, so the heads are whatever they were then.
            assert lines[1].startswith("# subscribed book.BTCUSD@")
            assert ", trades.BTCUSD@" in lines[1]
            assert "SNAPSHOT (subscribe)" in lines[2]
            assert sum(not line.startswith("#") for line in lines) == 15
            assert "0 gaps" in err.getvalue()

            out = io.StringIO()
            refused = await tail.tail(
                f"ws://127.0.0.1:{server.port}", ["book.nope"], duration=0.5, out=out, err=err
            )
            assert refused == tail.EXIT_REFUSED
            assert "# error bad_stream" in out.getvalue()

            closed = await tail.tail(
                f"ws://127.0.0.1:{server.port}/nowhere", [], duration=1, out=out, err=err
            )
            assert closed == tail.EXIT_CONNECTION
            nursery.cancel_scope.cancel()


async def test_tail_reports_gateway_close() -> None:
    with trio.fail_after(20):
        hub = Hub(EPOCH)
        async with trio.open_nursery() as nursery:
            server = await _serve(hub, nursery)
            err = io.StringIO()

            async def stop() -> None:
                await trio.sleep(0.3)
                await server.shutdown(1)

            nursery.start_soon(stop)
            code = await tail.tail(f"ws://127.0.0.1:{server.port}", [], out=io.StringIO(), err=err)
            assert code == tail.EXIT_CONNECTION
            assert "1001 gateway shutting down" in err.getvalue()
