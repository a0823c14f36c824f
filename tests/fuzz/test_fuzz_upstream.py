"""Fuzzing ``FeedNormalizer.receive`` for every feed kind (single- and all-markets paths).

Inputs: arbitrary bytes and text, and structure-aware mutations of valid Paxos frames (fields
deleted, types changed, numbers instead of strings, bad decimals and timestamps, bad enums and
market names, unknown fields, nested garbage, truncation, duplicated keys, raw byte damage),
interleaved with valid frames and reconnects.

Invariants checked after every frame:

* ``receive`` never raises;
* a rejected frame (``stats.decode_errors`` goes up by exactly one) returns no record and leaves
  books, sequence heads, dedup window, held updates, fragments and every other piece of session
  state exactly as it was;
* a mutation that must be rejected (e.g. a missing required field) is rejected; a valid frame
  never is;
* memory stays bounded: held updates, the dedup window and snapshot fragments never exceed their
  caps;
* the whole interleaved run produces exactly the records (and books and heads) of a clean run
  that only saw the frames the fuzzed session accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from random import Random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.contract.records import Record
from gateway.ingest.feeds import feed_from_url
from gateway.ingest.normalizer import FeedNormalizer

EPOCH = "1700000000000000000"
SEC = 1_000_000_000
BASE = "wss://ws.sandbox.paxos.com"

DEDUP_CAP = 6  # below the match_number pool, so the window evicts
MAX_HELD = 12
MAX_SNAPSHOT_LEVELS = 30

PATHS = (
    "/executiondata",
    "/executiondata/BTCUSD",
    "/marketdata",
    "/marketdata/BTCUSD",
    "/marketdata/stablecoin",
    "/marketdata/stablecoin/USDCUSD",
)

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Json = Any


def new_session(path: str) -> FeedNormalizer:
    return FeedNormalizer(
        feed_from_url(BASE + path),
        EPOCH,
        dedup_capacity=DEDUP_CAP,
        max_held_updates=MAX_HELD,
        max_snapshot_levels=MAX_SNAPSHOT_LEVELS,
    )


def dumps(obj: Json) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# -- valid frames ---------------------------------------------------------------------------
#
# Frames and mutations are built from a ``random.Random`` seeded by hypothesis, one seed per
# frame: cheap enough for long runs of frames per example, and hypothesis still shrinks a
# failure to the shortest list of (kind, seed) steps that reproduces it.


def markets_for(path: str) -> list[str]:
    feed = feed_from_url(BASE + path)
    if feed.market is not None:
        return [feed.market]
    return ["USDCUSD", "USDPUSD"] if feed.kind == "stablecoin" else ["BTCUSD", "ETHUSD"]


def fmt(value: Decimal, pad: bool) -> str:
    text = format(value, "f")
    if "." in text and not pad:
        text = text.rstrip("0").rstrip(".")
    return text


BID_PRICES = [Decimal(95) + Decimal("0.5") * k for k in range(10)]  # 95 .. 99.5
ASK_PRICES = [Decimal("100.5") + Decimal("0.5") * k for k in range(10)]  # 100.5 .. 105
MATCH_NUMBERS = [f"6AJVAX7BTC{k:02d}" for k in range(10)]  # more than DEDUP_CAP


def amount(rng: Random) -> Decimal:
    return Decimal(rng.randint(1, 5 * 10**8)).scaleb(-8)


def timestamp(rng: Random) -> str:
    frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 9)))
    return f"2023-03-13T18:46:{rng.randint(0, 59):02d}" + (f".{frac}" if frac else "") + "Z"


def level(rng: Random, prices: list[Decimal]) -> Json:
    size = rng.choice([Decimal(0), amount(rng), amount(rng)])
    return {"price": fmt(rng.choice(prices), rng.random() < 0.3), "amount": fmt(size, False)}


def snapshot(rng: Random, markets: list[str]) -> Json:
    bids = sorted(
        (level(rng, BID_PRICES) for _ in range(rng.randint(0, 5))),
        key=lambda lv: Decimal(lv["price"]),
        reverse=True,
    )
    asks = sorted(
        (level(rng, ASK_PRICES) for _ in range(rng.randint(0, 5))),
        key=lambda lv: Decimal(lv["price"]),
    )
    frame: Json = {"type": "SNAPSHOT", "market": rng.choice(markets), "bids": bids, "asks": asks}
    final = rng.choice([True, True, True, True, "true", None, False, "false"])
    if final is not None:
        frame["final_snapshot"] = final
    return frame


def update(rng: Random, markets: list[str]) -> Json:
    side = rng.choice(["BUY", "SELL"])
    # Mostly its own side's prices; now and then the other side's, which crosses the book.
    own, other = (BID_PRICES, ASK_PRICES) if side == "BUY" else (ASK_PRICES, BID_PRICES)
    prices = other if rng.random() < 0.05 else own
    size = Decimal(0) if rng.random() < 0.3 else amount(rng)
    return {
        "type": "UPDATE",
        "market": rng.choice(markets),
        "side": side,
        "price": fmt(rng.choice(prices), rng.random() < 0.3),
        "amount": fmt(size, rng.random() < 0.3),
    }


def execution(rng: Random, markets: list[str]) -> Json:
    return {
        "market": rng.choice(markets),
        "price": fmt(rng.choice(BID_PRICES + ASK_PRICES), rng.random() < 0.3),
        "amount": fmt(amount(rng), rng.random() < 0.3),
        "executed_at": timestamp(rng),
        "match_number": rng.choice(MATCH_NUMBERS),
    }


def stablecoin_price(rng: Random, markets: list[str]) -> Json:
    return {
        "market": rng.choice(markets),
        "price": f"{rng.randint(9990, 10010) / 10000:.4f}",
        "timestamp": timestamp(rng),
    }


def valid_frame(rng: Random, path: str) -> Json:
    kind = feed_from_url(BASE + path).kind
    markets = markets_for(path)
    if kind == "book":
        return snapshot(rng, markets) if rng.random() < 0.25 else update(rng, markets)
    if kind == "executions":
        return execution(rng, markets)
    return stablecoin_price(rng, markets)


def any_valid_frame(rng: Random) -> Json:
    """A valid frame of any kind (a frame of another kind is garbage on this feed)."""
    make = rng.choice([snapshot, update, execution, stablecoin_price])
    return make(rng, ["BTCUSD", "ETHUSD", "USDCUSD"])


# -- mutations --------------------------------------------------------------------------------

DECIMAL_FIELDS = frozenset({"price", "amount"})
TIMESTAMP_FIELDS = frozenset({"executed_at", "timestamp"})
KNOWN_FIELDS = frozenset(
    {"type", "market", "side", "price", "amount", "bids", "asks", "final_snapshot"}
    | {"executed_at", "match_number", "timestamp", "error"}
)
BAD_DECIMALS = [
    "",
    " 1",
    "1 ",
    "-1",
    "-0",
    "+1",
    "1e5",
    "1E-8",
    "1.5e3",
    "NaN",
    "nan",
    "Infinity",
    "-inf",
    "sNaN",
    "1_000",
    ".5",
    "5.",
    "1..2",
    "1.2.3",
    "0x10",
    "\u0661\u0662",
    "\uff11\uff12",
    "9" * 19,
    "0." + "1" * 19,
    "1" * 70,
    "12,5",
    "½",
    "0.0.0",
]
BAD_TIMESTAMPS = [
    "",
    "yesterday",
    "2023-13-01T00:00:00Z",
    "2023-02-30T00:00:00Z",
    "2023-03-13 18:46:53Z",
    "2023-03-13T18:46:53",
    "2023-03-13T24:00:00Z",
    "2023-03-13T18:60:00Z",
    "2023-03-13T18:46:53.1234567890Z",
    "2023-03-13T18:46:53.Z",
    "2023-03-13T18:46:53.12aZ",
    "2023-03-13T18:46:53+25:00",
    "2023-03-13T18:46:53+0000",
    "1678733213386",
    "\uff12\uff10\uff12\uff13-03-13T18:46:53Z",
    "2023-03-13T18:46:53.386Z" + "0" * 20,
]
BAD_ENUMS = {
    "type": ["snapshot", "update", "DELETE", "", "SNAPSHOT ", "Update"],
    "side": ["buy", "sell", "BID", "ASK", "", "BUY "],
    "final_snapshot": ["yes", "TRUE", "1", "", "True"],
}
BAD_MARKETS = ["", "btcusd", "BTC-USD", "B", "X" * 21, "BTCUSD\n", "ÄBCUSD", "BTC USD", "BTC.USD"]
BAD_MATCH_NUMBERS = ["", "X" * 65]
MUTATIONS = (
    "delete",
    "type",
    "number",
    "decimal",
    "timestamp",
    "enum",
    "market",
    "match",
    "zero_price",
    "unknown",
    "nested",
    "truncate",
    "duplicate",
    "wrap",
    "byte",
    "error_key",
)


def text(rng: Random, max_size: int = 8) -> str:
    alphabet = 'abcXYZ09 _."\\\n\u00e9\u4e2d\U0001f600'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_size)))


def scalar(rng: Random) -> Json:
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            2**64,
            -(2**63) - 1,
            10**30,
            1.5,
            -0.0,
            1e300,
            1e-300,
            rng.randint(-(10**6), 10**6),
            rng.random(),
            text(rng),
        ]
    )


def json_value(rng: Random, depth: int = 3) -> Json:
    roll = rng.random()
    if depth <= 0 or roll < 0.6:
        return scalar(rng)
    if roll < 0.8:
        return [json_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {text(rng, 5): json_value(rng, depth - 1) for _ in range(rng.randint(0, 3))}


def non_string(rng: Random) -> Json:
    while isinstance(value := json_value(rng), str):
        pass
    return value


def nested(depth: int, leaf: Json) -> Json:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"x": leaf}
    return leaf


@dataclass(frozen=True)
class Mutant:
    payload: bytes | str
    must_reject: bool
    how: str


FieldPath = tuple[str | int, ...]


def paths_in(frame: Json) -> list[FieldPath]:
    """Every field of a frame, levels' fields included, as paths."""
    out: list[FieldPath] = []
    for key, value in frame.items():
        out.append((key,))
        if key in ("bids", "asks") and isinstance(value, list):
            for i, lv in enumerate(value):
                out += [(key, i, k) for k in lv]
    return out


def get_at(obj: Json, path: FieldPath) -> Json:
    for p in path:
        obj = obj[p]
    return obj


def set_at(obj: Json, path: FieldPath, value: Json) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def del_at(obj: Json, path: FieldPath) -> None:
    for p in path[:-1]:
        obj = obj[p]
    del obj[path[-1]]


def mutant(rng: Random, path: str) -> Mutant:
    """A structure-aware mutation of a valid frame of this feed (or of another kind), and
    whether the session must reject it (False: either outcome is legitimate)."""
    feed = feed_from_url(BASE + path)
    own = rng.random() < 0.8
    frame = valid_frame(rng, path) if own else any_valid_frame(rng)
    original = dumps(frame)
    fields = paths_in(frame)
    how = rng.choice(MUTATIONS)
    must = False
    target = rng.choice(fields)
    leaf = target[-1]

    def pick(names: frozenset[str] | dict[str, list[str]]) -> FieldPath | None:
        chosen = [p for p in fields if p[-1] in names]
        return rng.choice(chosen) if chosen else None

    if how == "delete":
        del_at(frame, target)
        must = leaf != "final_snapshot"
    elif how == "type":
        value = non_string(rng)
        set_at(frame, target, value)
        must = not (
            (leaf == "final_snapshot" and isinstance(value, bool))
            or (leaf in ("bids", "asks") and value == [])
        )
    elif how == "number" and (where := pick(DECIMAL_FIELDS)):
        value = get_at(frame, where)
        set_at(frame, where, float(value) if "." in value else int(value))
        must = True
    elif how == "decimal" and (where := pick(DECIMAL_FIELDS)):
        set_at(frame, where, rng.choice(BAD_DECIMALS))
        must = True
    elif how == "timestamp" and (where := pick(TIMESTAMP_FIELDS)):
        set_at(frame, where, rng.choice(BAD_TIMESTAMPS))
        must = True
    elif how == "enum" and (where := pick(BAD_ENUMS)):
        set_at(frame, where, rng.choice(BAD_ENUMS[str(where[-1])]))
        # "type" is an unknown field to the executions and stablecoin decoders.
        must = where[-1] != "type" or feed.kind == "book"
    elif how == "market":
        others = ["ETHUSD", "USDPUSD", "ZZZUSD"] if feed.market is not None else []
        frame["market"] = rng.choice(BAD_MARKETS + others)
        must = True
    elif how == "match" and "match_number" in frame:
        frame["match_number"] = rng.choice(BAD_MATCH_NUMBERS)
        must = True
    elif how == "zero_price" and (where := pick(frozenset({"price"}))):
        set_at(frame, where, rng.choice(["0", "0.000"]))
        must = True
    elif how == "unknown":
        key = text(rng, 12)
        if key not in KNOWN_FIELDS:
            frame[key] = json_value(rng)
    elif how == "nested":
        set_at(frame, target, nested(rng.randint(1, 200), scalar(rng)))
        must = True
    elif how == "wrap":
        frame = rng.choice([[frame], {"data": frame}, [], "x", 1, None])
        must = True

    payload = dumps(frame)
    if not own and not _same_kind(frame, feed.kind):
        # Another kind's frame lacks this kind's required fields (or its tag).
        must = must or isinstance(frame, dict)
    if how == "truncate":
        payload, must = original[: rng.randrange(len(original))], True
    elif how == "duplicate":
        # The same key twice with another value: which one wins is the decoder's business.
        key = str(rng.choice(fields)[0])
        payload = payload[:-1] + "," + dumps(key) + ":" + dumps(json_value(rng)) + "}"
        must = False
    elif how == "error_key" and payload.endswith("}"):
        payload = payload[:-1] + ',"error":' + dumps(json_value(rng)) + "}"
        must = False
    if how == "byte":
        raw = payload.encode()
        pos = rng.randint(0, len(raw))
        return Mutant(raw[:pos] + bytes([rng.randrange(256)]) + raw[pos:], False, how)
    return Mutant(payload.encode() if rng.random() < 0.5 else payload, must, how)


def _same_kind(frame: Json, kind: str) -> bool:
    if not isinstance(frame, dict):
        return False
    if kind == "book":
        return ("type" in frame and "side" in frame) or "bids" in frame
    if kind == "executions":
        return "match_number" in frame
    return "timestamp" in frame


def arbitrary(rng: Random) -> bytes | str:
    if rng.random() < 0.5:
        return rng.randbytes(rng.randint(0, 64))
    return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 64)))


# -- session state ------------------------------------------------------------------------------


def state_of(s: FeedNormalizer) -> Json:
    """Everything a frame may change, as plain comparable values (deep copies)."""
    messages = {k: v for k, v in s.stats.messages.items() if k != "invalid"}
    return {
        "books": {m: (b.has_snapshot, b.bids(), b.asks()) for m, b in s.books.items()},
        "heads": dict(s._seq._heads),
        "dedup": (list(s._dedup._order), set(s._dedup._present)),
        "held": {m: list(h) for m, h in s._held.items()},
        "fragments": {m: (list(b), list(a)) for m, (b, a) in s._fragments.items()},
        "synced": set(s._synced),
        "dropping": set(s._dropping),
        "crossed": set(s._crossed),
        "streams": dict(s._streams),
        "flags": (s.resync_reason, s.upstream_error, s.is_connected, s.ready),
        "stats": (
            messages,
            s.stats.duplicates_suppressed,
            s.stats.resnapshots,
            s.stats.crossed_books,
            s.stats.error_frames,
        ),
    }


def check_bounds(s: FeedNormalizer) -> None:
    assert len(s._dedup) <= DEDUP_CAP
    assert len(s._dedup._order) == len(s._dedup) <= DEDUP_CAP
    for held in s._held.values():
        assert len(held) <= MAX_HELD
    for bids, asks in s._fragments.values():
        assert len(bids) + len(asks) <= MAX_SNAPSHOT_LEVELS


def receive_checked(s: FeedNormalizer, payload: bytes | str, now: int) -> tuple[list[Record], bool]:
    """Feed one frame; check the rejection invariants. Returns (records, rejected)."""
    before = state_of(s)
    errors = s.stats.decode_errors
    records = s.receive(payload, now)
    rejected = s.stats.decode_errors - errors
    assert rejected in (0, 1)
    if rejected:
        assert records == []
        assert state_of(s) == before
    check_bounds(s)
    return records, bool(rejected)


# -- the properties -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    what: str  # "valid", "garbage", "reconnect"
    payload: bytes | str = ""
    must_reject: bool = False
    how: str = ""


STEPS = ("valid", "valid", "valid", "garbage", "garbage", "garbage", "arbitrary", "reconnect")


def build_op(path: str, step: str, seed: int) -> Op:
    rng = Random(seed)
    if step == "valid":
        text = dumps(valid_frame(rng, path))
        return Op("valid", text.encode() if rng.random() < 0.5 else text)
    if step == "garbage":
        m = mutant(rng, path)
        return Op("garbage", m.payload, m.must_reject, m.how)
    if step == "arbitrary":
        return Op("garbage", arbitrary(rng), False, "arbitrary")
    return Op("reconnect")


def ops_for(path: str) -> st.SearchStrategy[list[Op]]:
    step = st.tuples(st.sampled_from(STEPS), st.integers(0, 2**32 - 1))
    return st.lists(step, min_size=30, max_size=150).map(
        lambda steps: [build_op(path, kind, seed) for kind, seed in steps]
    )


def synced_books(path: str) -> list[Op]:
    """Complete snapshots of every market of a book feed: garbage then meets synced books."""
    if feed_from_url(BASE + path).kind != "book":
        return []
    return [
        Op(
            "valid",
            dumps(
                {
                    "type": "SNAPSHOT",
                    "market": market,
                    "bids": [{"price": "99.5", "amount": "1"}, {"price": "99", "amount": "2"}],
                    "asks": [{"price": "100.5", "amount": "1"}, {"price": "101", "amount": "2"}],
                }
            ),
        )
        for market in markets_for(path)
    ]


def run_interleaved(path: str, ops: list[Op]) -> None:
    ops = [*synced_books(path), *ops]
    fuzzed, clean = new_session(path), new_session(path)
    fuzzed_out: list[Record] = [*fuzzed.connected(0)]
    clean_out: list[Record] = [*clean.connected(0)]
    rejected_count = 0
    for i, op in enumerate(ops, start=1):
        now = i * SEC
        if op.what == "reconnect":
            for s, out in ((fuzzed, fuzzed_out), (clean, clean_out)):
                out += s.disconnected("connection_lost", now)
                out += s.connected(now)
            continue
        records, rejected = receive_checked(fuzzed, op.payload, now)
        fuzzed_out += records
        if op.what == "valid":
            assert not rejected, f"valid frame rejected: {op.payload!r}"
        elif op.must_reject:
            assert rejected, f"{op.how} mutation accepted: {op.payload!r}"
        if rejected:
            rejected_count += 1
        else:
            clean_records, clean_rejected = receive_checked(clean, op.payload, now)
            assert not clean_rejected
            clean_out += clean_records
    assert fuzzed.stats.decode_errors == rejected_count
    assert clean.stats.decode_errors == 0
    assert fuzzed_out == clean_out
    for stream in {r.stream for r in fuzzed_out}:
        assert fuzzed.head(stream) == clean.head(stream)
    assert state_of(fuzzed) == state_of(clean)


@pytest.mark.parametrize("path", PATHS)
def test_garbage_interleaved_with_valid_frames(path: str) -> None:
    @FUZZ
    @given(ops_for(path))
    def prop(ops: list[Op]) -> None:
        run_interleaved(path, ops)

    prop()


@pytest.mark.parametrize("path", PATHS)
def test_arbitrary_bytes_and_text_never_raise(path: str) -> None:
    @FUZZ
    @given(st.lists(st.one_of(st.binary(max_size=200), st.text(max_size=200)), max_size=20))
    def prop(payloads: list[bytes | str]) -> None:
        s = new_session(path)
        s.connected(0)
        for i, payload in enumerate(payloads, start=1):
            _, rejected = receive_checked(s, payload, i * SEC)
            if not rejected:
                # Only an error frame could be accepted out of random input.
                assert s.upstream_error is not None
        assert s.stats.decode_errors + s.stats.error_frames == len(payloads)

    prop()


SAMPLES: dict[str, dict[str, Json]] = {
    "executions": {
        "market": "BTCUSD",
        "price": "24228.75",
        "amount": "0.00000412",
        "executed_at": "2023-03-13T18:46:53.386Z",
        "match_number": "6AJVAX7BTCH8",
    },
    "book": {
        "type": "SNAPSHOT",
        "market": "BTCUSD",
        "bids": [{"price": "19994.25", "amount": "0.7755"}],
        "asks": [{"price": "19994.5", "amount": "0.97548541"}],
        "final_snapshot": True,
    },
    "update": {
        "type": "UPDATE",
        "market": "BTCUSD",
        "side": "BUY",
        "price": "19958.5",
        "amount": "0.62649999",
    },
    "stablecoin": {"market": "USDCUSD", "price": "1.0001", "timestamp": "2024-11-04T18:11:09.0Z"},
}


@pytest.mark.parametrize("path", PATHS)
def test_truncation_at_every_position_is_rejected(path: str) -> None:
    kind = feed_from_url(BASE + path).kind
    frames = [SAMPLES["book"], SAMPLES["update"]] if kind == "book" else [SAMPLES[kind]]
    s = new_session(path)
    s.connected(0)
    # A synced book first, so that a truncated UPDATE would have something to damage.
    if kind == "book":
        s.receive(dumps(SAMPLES["book"]), 1)
    now = 2
    for frame in frames:
        text = dumps(frame)
        for cut in range(len(text)):
            for payload in (text[:cut], text[:cut].encode()):
                _, rejected = receive_checked(s, payload, now)
                assert rejected, payload
                now += 1
        _, rejected = receive_checked(s, text, now)
        assert not rejected


@pytest.mark.parametrize("path", PATHS)
def test_moderately_nested_garbage_is_rejected(path: str) -> None:
    kind = feed_from_url(BASE + path).kind
    base = SAMPLES["update" if kind == "book" else kind]
    s = new_session(path)
    s.connected(0)
    for depth in (1, 10, 100, 500):
        for key in [*base, "unknown"]:
            frame: dict[str, Json] = {**base, key: nested(depth, "x")}
            _, rejected = receive_checked(s, dumps(frame), depth)
            assert rejected or key == "unknown"


@pytest.mark.parametrize("path", ["/executiondata", "/marketdata", "/marketdata/stablecoin"])
def test_deeply_nested_unknown_field_is_rejected_not_raised(path: str) -> None:
    s = new_session(path)
    deep = "[" * 5000 + "]" * 5000
    for payload in ('{"x":' + deep + "}", '{"error":' + deep + "}"):
        _, rejected = receive_checked(s, payload, 1)
        assert rejected
