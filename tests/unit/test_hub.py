"""The sans-IO hub: ordering, late join, resume, wildcards, encode-once, overflow policies."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.fanout.outbox as outbox_module
from bench.downstream_model import Model
from gateway.contract.protocol import CLOSE_GOING_AWAY, CLOSE_SLOW, Encoding, Pong, ResumeFrom
from gateway.fanout.hub import Hub, Subscriber
from gateway.ingest.book import OrderBook
from gateway.io.metrics import HubStatsCollector, Metrics
from tests.support.fake_feed import EPOCH, FakeFeed


def drain(sub: Subscriber) -> list[Any]:
    """Everything queued for ``sub``, decoded."""
    out: list[Any] = []
    while batch := sub.take():
        for payload in batch:
            if isinstance(payload, bytes):
                out.append(msgspec.msgpack.decode(payload))
            else:
                out.append(json.loads(payload))
        sub.sent()
    return out


def consume(model: Model, sub: Subscriber) -> Model:
    for msg in drain(sub):
        model.feed(msg)
    return model


def request(hub: Hub, sub: Subscriber, **req: Any) -> None:
    hub.receive(sub, json.dumps(req))


def test_hello_first() -> None:
    hub = Hub(EPOCH, max_request_bytes=300, max_subscriptions=5, slow_policy="disconnect")
    hello = drain(hub.connect())[0]
    assert hello == {
        "type": "hello", "version": 2, "server": hello["server"], "epoch": EPOCH,
        "encoding": "json", "max_request_bytes": 300, "max_subscriptions": 5,
        "buffer_bytes": 4 * 1024 * 1024, "slow_policy": "disconnect",
    }  # fmt: skip


def test_many_subscribers_gap_free_interleaved_with_draining() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    subs = [hub.connect() for _ in range(20)]
    models = [Model() for _ in subs]
    for sub in subs:
        request(hub, sub, op="subscribe", streams=["book.BTCUSD", "trades.BTCUSD"])
    for i in range(400):
        feed.publish(feed.update(), feed.update(), feed.trade())
        # Subscribers drain at different paces; none may see a gap.
        for k, (sub, model) in enumerate(zip(subs, models, strict=True)):
            if i % (k + 1) == 0:
                consume(model, sub)
    for sub, model in zip(subs, models, strict=True):
        consume(model, sub)
        assert model.problems == []
        assert model.book("book.BTCUSD") == feed.book_levels()
        assert model.seqs("trades.BTCUSD") == list(range(1, 401))
        assert model.expected["book.BTCUSD"] == feed.seqs["book.BTCUSD"] + 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6), st.integers(0, 99))
def test_late_joiner_snapshot_plus_updates_equals_book(joins: list[int], seed: int) -> None:
    hub = Hub(EPOCH, history=16)
    feed = FakeFeed(hub, seed=seed)
    feed.publish(feed.snapshot())
    joined: list[tuple[Subscriber, Model]] = []
    for gap in joins:
        for _ in range(gap):
            feed.publish(feed.update())
        sub = hub.connect()
        request(hub, sub, op="subscribe", streams=["book.BTCUSD"])
        joined.append((sub, Model()))
    for _ in range(10):
        feed.publish(feed.update())
    for sub, model in joined:
        consume(model, sub)
        assert model.problems == []
        assert [s["reason"] for s in model.snapshots] == ["subscribe"]
        assert model.snapshots[0]["resync"] is False
        assert model.book("book.BTCUSD") == feed.book_levels()


def test_book_without_snapshot_yet_gets_it_from_the_stream() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)  # registered, no snapshot yet
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["book.BTCUSD"])
    feed.publish(feed.snapshot())
    model = consume(Model(), sub)
    assert [s["reason"] for s in model.snapshots] == ["initial"]
    assert model.problems == []


def test_trades_and_prices_deliver_last_value_then_status() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub, market="USDCUSD")
    feed.publish(feed.price("1.0001"), feed.price("1.0002"))
    feed.publish(*feed.status("disconnected", ("price",)))
    feed.publish(feed.trade(), feed.trade())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["price.USDCUSD", "trades.USDCUSD"])
    msgs = drain(sub)[2:]
    assert [(m["type"], m["stream"], m["seq"]) for m in msgs] == [
        ("price", "price.USDCUSD", 2),
        ("status", "price.USDCUSD", 3),
        ("trade", "trades.USDCUSD", 2),
    ]
    assert msgs[0]["price"] == "1.0002"
    feed.publish(feed.price("1.0003"))
    model = Model()
    request(hub, sub, op="ping")
    assert [m["seq"] for m in drain(sub) if m["type"] == "price"] == [4]
    assert model.problems == []


def test_status_records_reach_book_subscribers_and_late_joiners() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    early = hub.connect()
    request(hub, early, op="subscribe", streams=["book.*"])
    feed.publish(feed.snapshot())
    feed.publish(*feed.status("disconnected"))
    late = hub.connect()
    request(hub, late, op="subscribe", streams=["book.BTCUSD"])
    early_msgs = [m for m in drain(early) if m["type"] not in ("hello", "subscribed")]
    assert [m["type"] for m in early_msgs] == ["book_snapshot", "status"]
    late_msgs = [m for m in drain(late) if m["type"] not in ("hello", "subscribed")]
    # Late joiner: the feed's state first, then the book valid at the head (seq 2).
    assert [(m["type"], m["seq"]) for m in late_msgs] == [("status", 2), ("book_snapshot", 2)]
    assert late_msgs[0]["state"] == "disconnected"
    feed.publish(feed.snapshot(reason="reconnect"))
    resync = drain(late)[0]
    assert (resync["type"], resync["resync"], resync["reason"]) == (
        "book_snapshot",
        True,
        "reconnect",
    )


def test_wildcards_match_streams_appearing_later() -> None:
    hub = Hub(EPOCH)
    btc = FakeFeed(hub, "BTCUSD")
    sub = hub.connect()
    drain(sub)
    request(hub, sub, op="subscribe", id=1, streams=["book.*"])
    answer = drain(sub)[0]
    assert answer == {
        "type": "subscribed", "id": 1, "patterns": ["book.*"],
        "streams": [{"stream": "book.BTCUSD", "epoch": EPOCH, "seq": 0}],
    }  # fmt: skip
    eth = FakeFeed(hub, "ETHUSD")  # registering its book creates the stream
    eth.publish(eth.snapshot(), eth.trade())
    btc.publish(btc.snapshot())
    msgs = drain(sub)
    assert msgs[0] == {
        "type": "subscribed", "id": None, "patterns": [],
        "streams": [{"stream": "book.ETHUSD", "epoch": EPOCH, "seq": 0}],
    }  # fmt: skip
    assert [(m["type"], m["stream"]) for m in msgs[1:]] == [
        ("book_snapshot", "book.ETHUSD"),
        ("book_snapshot", "book.BTCUSD"),
    ]
    request(hub, sub, op="unsubscribe", id=2, streams=["book.*"])
    assert drain(sub) == [
        {"type": "unsubscribed", "id": 2, "streams": ["book.BTCUSD", "book.ETHUSD"],
         "patterns": ["book.*"]},
    ]  # fmt: skip
    FakeFeed(hub, "LTCUSD")
    btc.publish(btc.update())
    assert drain(sub) == []


def test_unsubscribe_keeps_streams_still_covered_by_a_pattern() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot(), feed.trade())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["book.BTCUSD", "*.BTCUSD"])
    drain(sub)
    request(hub, sub, op="unsubscribe", streams=["book.BTCUSD"])
    assert drain(sub)[0]["streams"] == []
    feed.publish(feed.update())
    assert [m["type"] for m in drain(sub)] == ["book_update"]
    request(hub, sub, op="unsubscribe", id="x", streams=["book.BTCUSD"])
    error = drain(sub)[0]
    assert (error["type"], error["code"], error["id"]) == ("error", "not_subscribed", "x")


def test_resubscribe_is_idempotent() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    sub = hub.connect()
    model = consume(Model(), sub)
    request(hub, sub, op="subscribe", streams=["book.BTCUSD"])
    feed.publish(feed.update())
    request(hub, sub, op="subscribe", streams=["book.BTCUSD"])
    feed.publish(feed.update())
    consume(model, sub)
    assert len(model.snapshots) == 1
    assert model.problems == []
    assert model.book("book.BTCUSD") == feed.book_levels()


@pytest.mark.parametrize(
    ("req", "code"),
    [
        ({"op": "subscribe", "streams": ["book.NOPE"]}, "unknown_stream"),
        ({"op": "subscribe", "streams": ["book.BTCUSD", "book.NOPE"]}, "unknown_stream"),
        ({"op": "subscribe", "streams": ["*.*", "book.*", "trades.*"]}, "too_many_subscriptions"),
        (
            {
                "op": "subscribe",
                "streams": ["book.*"],
                "resume": {"book.NOPE": {"epoch": 1, "seq": 1}},
            },
            "bad_resume",
        ),
        ({"op": "unsubscribe", "streams": ["trades.BTCUSD"]}, "not_subscribed"),
    ],
)
def test_semantic_errors_change_nothing(req: dict[str, Any], code: str) -> None:
    hub = Hub(EPOCH, max_subscriptions=2)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot(), feed.trade())
    sub = hub.connect()
    drain(sub)
    request(hub, sub, **req, id=5)
    error = drain(sub)
    assert [(e["type"], e["code"], e["id"]) for e in error] == [("error", code, 5)]
    assert sub.streams == {}
    assert hub.stats.request_errors == 1
    # The connection stays usable.
    request(hub, sub, op="subscribe", streams=["trades.BTCUSD"])
    assert drain(sub)[0]["type"] == "subscribed"


def test_resume_for_an_already_subscribed_stream_is_refused() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["book.BTCUSD"])
    drain(sub)
    request(hub, sub, op="subscribe", streams=["book.BTCUSD"],
            resume={"book.BTCUSD": {"epoch": EPOCH, "seq": 1}})  # fmt: skip
    assert drain(sub)[0]["code"] == "bad_resume"


def _resume(hub: Hub, stream: str, epoch: int, seq: int) -> tuple[Subscriber, list[Any]]:
    sub = hub.connect()
    request(
        hub, sub, op="subscribe", streams=[stream], resume={stream: {"epoch": epoch, "seq": seq}}
    )
    return sub, drain(sub)[1:]


def test_resume_served_delivers_exactly_the_missed_records() -> None:
    hub = Hub(EPOCH, history=50)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    first = hub.connect()
    request(hub, first, op="subscribe", streams=["book.BTCUSD"])
    for _ in range(20):
        feed.publish(feed.update())
    model = consume(Model(), first)
    hub.disconnect(first)  # the client goes away holding seq 21
    for _ in range(30):
        feed.publish(feed.update())
    sub, msgs = _resume(hub, "book.BTCUSD", EPOCH, 21)
    assert msgs[0]["type"] == "subscribed" and msgs[0]["streams"][0]["seq"] == 51
    assert msgs[1] == {
        "type": "resumed", "stream": "book.BTCUSD", "epoch": EPOCH, "from_seq": 22, "to_seq": 51,
    }  # fmt: skip
    assert [m["seq"] for m in msgs[2:]] == list(range(22, 52))
    for msg in msgs:
        model.feed(msg)
    assert model.problems == []
    assert model.book("book.BTCUSD") == feed.book_levels()
    assert hub.stats.resumes_served == 1
    # Live records continue right after the replay.
    feed.publish(feed.update())
    assert [m["seq"] for m in drain(sub)] == [52]


def test_resume_at_head_replays_nothing() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot(), feed.trade())
    _, msgs = _resume(hub, "trades.BTCUSD", EPOCH, 1)
    assert [m["type"] for m in msgs] == ["subscribed", "resumed"]
    assert (msgs[1]["from_seq"], msgs[1]["to_seq"]) == (2, 1)


@pytest.mark.parametrize(
    ("epoch", "seq", "reason"),
    [
        ("1699999999999999999", 40, "epoch_changed"),
        (EPOCH, 99, "ahead_of_head"),
        (EPOCH, 30, "history_exhausted"),  # history holds 32..51; 31 is missing
        (EPOCH, 0, "history_exhausted"),
    ],
)
def test_resume_refused_never_partial(epoch: str, seq: int, reason: str) -> None:
    hub = Hub(EPOCH, history=20)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    for _ in range(50):
        feed.publish(feed.update())
    _, msgs = _resume(hub, "book.BTCUSD", epoch, seq)
    assert [m["type"] for m in msgs] == ["subscribed", "resume_failed", "book_snapshot"]
    failed, snap = msgs[1], msgs[2]
    assert (failed["reason"], failed["seq"], failed["epoch"]) == (reason, 51, EPOCH)
    assert (snap["reason"], snap["resync"], snap["seq"]) == ("resume_failed", True, 51)
    assert hub.stats.resumes_refused == 1


def test_resume_at_the_oldest_kept_record_is_served() -> None:
    hub = Hub(EPOCH, history=20)
    feed = FakeFeed(hub)
    for _ in range(51):
        feed.publish(feed.trade())
    _, msgs = _resume(hub, "trades.BTCUSD", EPOCH, 31)  # history holds 32..51
    assert msgs[1]["type"] == "resumed"
    assert [m["seq"] for m in msgs[2:]] == list(range(32, 52))


def test_resume_refused_for_trades_sends_last_value() -> None:
    hub = Hub(EPOCH, history=0)
    feed = FakeFeed(hub)
    feed.publish(feed.trade(), feed.trade())
    _, msgs = _resume(hub, "trades.BTCUSD", EPOCH, 1)
    assert [(m["type"], m.get("seq")) for m in msgs[1:]] == [("resume_failed", 2), ("trade", 2)]


def test_sequence_break_clears_history_so_resume_cannot_lie() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    for _ in range(5):
        feed.publish(feed.trade())
    feed.seqs["trades.BTCUSD"] += 3  # a buggy producer skips 6..8
    feed.publish(feed.trade(), feed.trade())
    assert hub.stats.sequence_breaks == 1
    _, msgs = _resume(hub, "trades.BTCUSD", EPOCH, 4)
    assert msgs[1]["type"] == "resume_failed"
    _, msgs = _resume(hub, "trades.BTCUSD", EPOCH, 9)
    assert msgs[1]["type"] == "resumed" and [m["seq"] for m in msgs[2:]] == [10]


class CountingEncoder:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def encode(self, obj: Any) -> bytes:
        self.calls += 1
        result: bytes = self.inner.encode(obj)
        return result


def test_each_record_is_encoded_once_per_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    json_enc = CountingEncoder(outbox_module._json_encoder)
    msgpack_enc = CountingEncoder(outbox_module._msgpack_encoder)
    monkeypatch.setattr(outbox_module, "_json_encoder", json_enc)
    monkeypatch.setattr(outbox_module, "_msgpack_encoder", msgpack_enc)
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.trade())
    subs = [hub.connect(Encoding.JSON) for _ in range(50)]
    subs += [hub.connect(Encoding.MSGPACK) for _ in range(50)]
    for sub in subs:
        request(hub, sub, op="subscribe", streams=["trades.BTCUSD"])
        sub.take(10**9)  # hello, subscribed, last trade
        sub.sent()
    json_enc.calls = msgpack_enc.calls = 0
    feed.publish(feed.trade(), feed.trade())
    assert (json_enc.calls, msgpack_enc.calls) == (2, 2)
    payloads = [sub.take() for sub in subs]
    assert all(p[0] is payloads[0][0] for p in payloads[:50])  # the very same object
    assert all(p[0] is payloads[50][0] for p in payloads[50:])
    assert isinstance(payloads[0][0], str) and isinstance(payloads[50][0], bytes)
    second = payloads[50][1]
    assert isinstance(second, bytes) and msgspec.msgpack.decode(second)["seq"] == 3
    assert hub.stats.deliveries == 200


def test_late_joiners_at_one_head_share_one_snapshot() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    subs = [hub.connect() for _ in range(3)]
    for sub in subs:
        request(hub, sub, op="subscribe", streams=["book.BTCUSD"])
    snaps = [sub.take(10**9)[-1] for sub in subs]
    assert snaps[0] is snaps[1] is snaps[2]
    feed.publish(feed.update())
    late = hub.connect()
    request(hub, late, op="subscribe", streams=["book.BTCUSD"])
    assert late.take(10**9)[-1] is not snaps[0]


def test_metrics_are_updated() -> None:
    metrics = Metrics()
    hub = Hub(EPOCH)
    metrics.add_collector(HubStatsCollector(hub.stats))
    feed = FakeFeed(hub)
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["*.BTCUSD"])
    hub.publish([feed.snapshot(), feed.trade()])
    request(hub, sub, op="nope")
    reg = metrics.registry
    assert (
        reg.get_sample_value("paxos_gateway_records_published_total", {"stream_kind": "book"}) == 1
    )
    assert reg.get_sample_value("paxos_gateway_deliveries_total") == 2
    assert reg.get_sample_value("paxos_gateway_subscriptions", {"stream_kind": "book"}) == 1
    assert reg.get_sample_value("paxos_gateway_request_errors_total", {"code": "unknown_op"}) == 1
    hub.disconnect(sub)
    assert reg.get_sample_value("paxos_gateway_subscriptions", {"stream_kind": "book"}) == 0


# -- slow subscribers -------------------------------------------------------------------------


def test_disconnect_policy_closes_slow_subscriber_and_spares_the_others() -> None:
    hub = Hub(EPOCH, buffer_bytes=4096, slow_policy="disconnect")
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    slow, fast = hub.connect(), hub.connect()
    woken: list[int] = []
    slow.on_ready = lambda: woken.append(1)
    fast_model = Model()
    for sub in (slow, fast):
        request(hub, sub, op="subscribe", streams=["book.BTCUSD", "trades.BTCUSD"])
    for _ in range(200):
        feed.publish(feed.update(), feed.trade())
        consume(fast_model, fast)
    assert slow.close_code == CLOSE_SLOW
    assert slow.close_reason == "slow subscriber: buffer overflow"
    assert slow.take() == [] and slow.queued_bytes == 0
    assert slow.streams == {} and woken  # the writer was woken to close it
    assert hub.stats.slow_disconnects == 1
    assert fast_model.problems == []
    assert fast_model.book("book.BTCUSD") == feed.book_levels()
    assert fast_model.seqs("trades.BTCUSD") == list(range(1, 201))


def test_conflate_policy_replaces_book_backlog_with_snapshot() -> None:
    hub = Hub(EPOCH, buffer_bytes=8192, slow_policy="conflate")
    btc, eth = FakeFeed(hub, "BTCUSD"), FakeFeed(hub, "ETHUSD", seed=2)
    btc.publish(btc.snapshot())
    eth.publish(eth.snapshot())
    slow, fast = hub.connect(), hub.connect()
    for sub in (slow, fast):
        request(hub, sub, op="subscribe", streams=["book.*", "price.BTCUSD"])
    slow_model, fast_model = consume(Model(), slow), Model()
    for i in range(300):
        btc.publish(btc.update(), btc.update())
        eth.publish(eth.update())
        if i % 50 == 0:
            btc.publish(btc.price())
        consume(fast_model, fast)
        if i % 100 == 99:
            consume(slow_model, slow)  # it reads now and then, far too rarely
    consume(slow_model, slow)
    assert slow.close_code is None
    assert hub.stats.conflations >= 2
    conflations = [s for s in slow_model.snapshots if s["reason"] == "conflation"]
    assert conflations and all(s["resync"] for s in conflations)
    # Gap-free by the snapshot rule, and the books end up right.
    assert slow_model.problems == []
    for feed in (btc, eth):
        assert slow_model.book(f"book.{feed.market}") == feed.book_levels()
        assert fast_model.book(f"book.{feed.market}") == feed.book_levels()
    # Non-book records are never conflated away.
    assert slow_model.seqs("price.BTCUSD") == [1, 2, 3, 4, 5, 6]
    assert fast_model.problems == [] and not fast_model.snapshots[2:]


def test_conflation_resends_a_dropped_status() -> None:
    hub = Hub(EPOCH, buffer_bytes=2048, slow_policy="conflate")
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["book.BTCUSD"])
    model = consume(Model(), sub)
    feed.publish(*feed.status("disconnected"))
    for _ in range(100):
        feed.publish(feed.update())
    consume(model, sub)
    assert model.problems == []
    statuses = [r for r in model.records if r["type"] == "status"]
    assert [s["state"] for s in statuses] == ["disconnected"]
    assert model.snapshots[-1]["reason"] == "conflation"
    assert model.book("book.BTCUSD") == feed.book_levels()


def test_conflate_policy_disconnects_when_non_book_backlog_overflows() -> None:
    hub = Hub(EPOCH, buffer_bytes=4096, slow_policy="conflate")
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["book.BTCUSD", "trades.BTCUSD"])
    for _ in range(100):
        feed.publish(feed.trade())
    assert sub.close_code == CLOSE_SLOW


def test_conflation_within_one_publish_batch_uses_the_batch_end_state() -> None:
    hub = Hub(EPOCH, buffer_bytes=3000, slow_policy="conflate")
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["book.BTCUSD"])
    model = consume(Model(), sub)
    # One upstream frame's worth of records, overflowing midway: the book (already at the
    # end of the batch) must not be paired with a mid-batch seq.
    feed.publish(*[feed.update() for _ in range(60)])
    consume(model, sub)
    assert model.snapshots[-1]["seq"] == feed.seqs["book.BTCUSD"]
    assert model.problems == []
    assert model.book("book.BTCUSD") == feed.book_levels()


def test_in_flight_bytes_count_against_the_buffer() -> None:
    hub = Hub(EPOCH, buffer_bytes=2048, slow_policy="disconnect")
    feed = FakeFeed(hub)
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["trades.BTCUSD"])
    for _ in range(5):
        feed.publish(feed.trade())
    taken = sub.take()  # the writer is stuck sending these
    assert taken and sub.queued_bytes == sub.inflight_bytes
    for _ in range(10):
        feed.publish(feed.trade())
    assert sub.close_code == CLOSE_SLOW


def test_close_with_drain_keeps_the_buffer_and_stops_deliveries() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["trades.BTCUSD"])
    feed.publish(feed.trade())
    hub.close(sub, CLOSE_GOING_AWAY, "bye")
    feed.publish(feed.trade())
    msgs = drain(sub)
    assert [m["type"] for m in msgs] == ["hello", "subscribed", "trade"]
    assert sub.close_code == CLOSE_GOING_AWAY
    request(hub, sub, op="ping")
    assert drain(sub) == []


# -- pending subscriptions and mirror encoding ---------------------------------------------------


def test_wait_for_streams_subscribes_before_the_stream_exists() -> None:
    hub = Hub(EPOCH)
    sub = hub.connect()
    assert hub.subscribe(sub, ["book.BTCUSD"]) is not None  # unknown for a request
    assert [m["type"] for m in drain(sub)] == ["hello", "error"]
    assert hub.subscribe(sub, ["book.BTCUSD"], wait_for_streams=True) is None
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot(), feed.update())
    model = consume(Model(), sub)
    assert model.problems == [] and model.book("book.BTCUSD") == feed.book_levels()


def test_mirror_subscriber_gets_paxos_frames_and_no_responses() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot(), feed.trade())
    sub = hub.connect(Encoding.PAXOS, hello=False)
    hub.subscribe(sub, ["book.BTCUSD"], wait_for_streams=True)
    feed.publish(feed.update())
    feed.publish(*feed.status("disconnected"))
    feed.publish(feed.snapshot(reason="reconnect"))
    request(hub, sub, op="ping")
    msgs = [json.loads(p) for p in sub.take(10**9)]
    assert [m["type"] for m in msgs] == ["SNAPSHOT", "UPDATE", "SNAPSHOT"]
    assert msgs[0]["final_snapshot"] is True
    assert msgs[1]["side"] in ("BUY", "SELL")


def test_resume_with_a_mix_of_streams_and_patterns() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot(), feed.trade(), feed.trade())
    sub = hub.connect()
    hub.subscribe(sub, ["*.BTCUSD"], resume={"trades.BTCUSD": ResumeFrom(epoch=EPOCH, seq=1)})
    msgs = drain(sub)[1:]
    assert [(m["type"], m.get("stream")) for m in msgs] == [
        ("subscribed", None),
        ("book_snapshot", "book.BTCUSD"),
        ("resumed", "trades.BTCUSD"),
        ("trade", "trades.BTCUSD"),
    ]
    assert msgs[-1]["seq"] == 2


def test_list_streams() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    feed.publish(feed.trade())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["trades.*"])
    drain(sub)
    request(hub, sub, op="list", id=3)
    assert drain(sub) == [
        {"type": "streams", "id": 3, "streams": [
            {"stream": "book.BTCUSD", "kind": "book", "epoch": EPOCH, "seq": 0,
             "subscribed": False},
            {"stream": "price.BTCUSD", "kind": "price", "epoch": EPOCH, "seq": 0,
             "subscribed": False},
            {"stream": "trades.BTCUSD", "kind": "trades", "epoch": EPOCH, "seq": 1,
             "subscribed": True},
        ]},
    ]  # fmt: skip


def test_invalid_slow_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        Hub(EPOCH, slow_policy="drop")  # type: ignore[arg-type]


def test_history_is_invisible_to_the_cyclic_garbage_collector() -> None:
    """Records and frames are not tracked by ``gc`` (``hub.OutFrame``): a full collection must not
    walk the whole history, or its pause lands on every subscriber's tail latency. Nothing a
    frame refers to may lead back to it, so untracked frames still die by reference count."""
    hub = Hub(EPOCH, history=100)
    feed = FakeFeed(hub)
    feed.publish(feed.snapshot())
    sub = hub.connect(Encoding.MSGPACK)
    request(hub, sub, op="subscribe", streams=["book.BTCUSD", "trades.BTCUSD"])
    gc.collect()  # what earlier tests left behind must not count here
    tracked_before = len(gc.get_objects())
    for _ in range(300):
        feed.publish(feed.update(), feed.trade())
    consume(Model(), sub)
    gc.collect()
    grown = len(gc.get_objects()) - tracked_before
    frames = [f for st in hub._streams.values() for f in st.history]
    assert len(frames) >= 200
    assert not any(gc.is_tracked(f) or gc.is_tracked(f.message) for f in frames)
    # 600 records published, each encoded, queued and sent: the tracked heap did not grow
    # with the 200 frames kept (tracked, they and their records made 800 objects); the
    # margin is for the hub's own bookkeeping.
    assert grown < 500
    # Evicted from history, a frame is referred to by nothing else: it is freed at once by
    # its reference count, without the collector.
    oldest = frames[0]
    del frames
    for _ in range(200):
        feed.publish(feed.update(), feed.trade())
    consume(Model(), sub)
    assert all(f is not oldest for st in hub._streams.values() for f in st.history)
    assert sys.getrefcount(oldest) == 2  # ``oldest`` and getrefcount's own argument


def test_after_ready_once_per_operation_that_made_a_subscriber_ready() -> None:
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    woken: list[int] = []
    hub.after_ready = lambda: woken.append(1)
    subs = [hub.connect() for _ in range(3)]
    for sub in subs:
        hub.subscribe(sub, [feed.stream("trades")])
        drain(sub)
    ready: list[int] = []
    for sub in subs:
        sub.on_ready = lambda sub=sub: ready.append(sub.id)
    hub.publish([feed.trade(), feed.trade()])
    assert sorted(ready) == sorted(s.id for s in subs)  # once each: the queue was empty once
    assert woken == [1]  # once for the whole publish
    hub.publish([feed.trade()])  # buffers not drained: nobody becomes ready
    assert woken == [1] and len(ready) == 3
    drain(subs[0])
    hub.reply(subs[0], Pong(id=1))  # a response to one subscriber
    assert woken == [1, 1] and len(ready) == 4
    hub.close(subs[1], CLOSE_GOING_AWAY, "bye")
    assert woken == [1, 1, 1] and len(ready) == 5


def test_publish_calls_after_publish_instead_of_after_ready() -> None:
    """A publish's records are complete when it returns (the I/O side writes them at once);
    the cold paths queue frame by frame and only wake the I/O side."""
    hub = Hub(EPOCH)
    feed = FakeFeed(hub)
    calls: list[str] = []
    hub.after_ready = lambda: calls.append("ready")
    hub.after_publish = lambda: calls.append("publish")
    sub = hub.connect()
    hub.subscribe(sub, [feed.stream("trades")])
    drain(sub)
    sub.on_ready = lambda: None
    hub.publish([feed.trade(), feed.trade()])
    assert calls == ["publish"]
    drain(sub)
    hub.reply(sub, Pong(id=1))
    assert calls == ["publish", "ready"]


@pytest.mark.parametrize("op", ["ping", "list", "unsubscribe", "Hub.unsubscribe"])
def test_an_answer_that_overflows_is_settled_within_its_request(op: str) -> None:
    """Every request ends with its conflations settled, not only a subscribe: an answer that
    takes a book subscriber over its buffer leaves it conflated (within the bound) or closed
    when ``receive`` returns, never over the bound until some later publish."""
    hub = Hub(EPOCH, buffer_bytes=4096, slow_policy="conflate")
    btc, eth = FakeFeed(hub, "BTCUSD"), FakeFeed(hub, "ETHUSD", seed=2)
    btc.publish(btc.snapshot())
    eth.publish(eth.snapshot())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["book.BTCUSD", "book.ETHUSD"])
    before = _to_the_brim(hub, sub, btc)
    if op == "Hub.unsubscribe":
        hub.unsubscribe(sub, ["book.ETHUSD"])
    elif op == "unsubscribe":
        request(hub, sub, op="unsubscribe", streams=["book.ETHUSD"])
    else:
        request(hub, sub, op=op)
    _assert_settled(hub, sub, before)


def _to_the_brim(hub: Hub, sub: Subscriber, feed: FakeFeed) -> int:
    """Queue book updates for ``sub`` and leave its buffer 5 bytes of room, so that any answer
    takes it over; returns the hub's conflation count before that answer."""
    drain(sub)
    for _ in range(5):
        feed.publish(feed.update())
    sub.buffer_bytes = sub.queued_bytes + 5
    return hub.stats.conflations


def _assert_settled(hub: Hub, sub: Subscriber, before: int) -> None:
    """One conflation, finished: ``sub`` conflated within its bound, or closed."""
    assert sub.conflating is None
    assert sub.close_code is not None or sub.queued_bytes <= sub.buffer_bytes
    assert hub.stats.conflations == before + 1


@pytest.mark.parametrize("entry", ["declare_stream", "register_book", "seed_stream"])
def test_a_new_stream_announced_over_the_buffer_is_settled_at_once(entry: str) -> None:
    """A stream created outside a publish is announced (``subscribed``) to the matching pattern
    subscribers; an announcement that takes one over its buffer is settled before the call
    returns, not at some later publish."""
    hub = Hub(EPOCH, buffer_bytes=4096, slow_policy="conflate")
    btc = FakeFeed(hub, "BTCUSD")
    btc.publish(btc.snapshot())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["book.*"])
    before = _to_the_brim(hub, sub, btc)  # the announcement takes it over
    if entry == "declare_stream":
        hub.declare_stream("book.ETHUSD")
    elif entry == "register_book":
        hub.register_book("book.ETHUSD", OrderBook("ETHUSD"))
    else:
        hub.seed_stream("book.ETHUSD", EPOCH, 41)
    _assert_settled(hub, sub, before)


def test_a_seeded_stream_is_announced_at_its_seeded_head() -> None:
    """An edge seeds a stream mid-way (``seed_stream``): a pattern subscriber is told the
    seeded head, so the first record (head + 1) follows it without a gap."""
    hub = Hub(EPOCH)
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["trades.*"])
    drain(sub)
    hub.seed_stream("trades.ETHUSD", "7", 41)
    announced = drain(sub)
    assert announced[0]["type"] == "subscribed"
    assert announced[0]["streams"] == [{"stream": "trades.ETHUSD", "epoch": "7", "seq": 41}]


def test_a_subscriber_closed_by_one_pattern_s_announcement_is_not_attached_by_another() -> None:
    """Two of its patterns match a new stream: the first announcement overflows it and, under
    the disconnect policy, closes it; the second pattern attaches nothing to it."""
    hub = Hub(EPOCH, buffer_bytes=4096, slow_policy="disconnect")
    btc = FakeFeed(hub, "BTCUSD")
    btc.publish(btc.snapshot())
    sub = hub.connect()
    request(hub, sub, op="subscribe", streams=["book.*", "*.ETHUSD"])
    _to_the_brim(hub, sub, btc)
    hub.declare_stream("book.ETHUSD")
    assert sub.close_code == CLOSE_SLOW
    assert sub.streams == {}
    assert all(not st.subscribers for st in hub.streams_by_name())
