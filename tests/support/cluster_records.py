"""Records for the NATS bridge and cluster tests: trades of the contract, as publish items."""

from __future__ import annotations

from decimal import Decimal

from gateway.cluster.codec import encode_record
from gateway.contract.records import Trade
from gateway.io.nats_bridge import PublishItem

EPOCH = "1795582622048325592"
NEXT_EPOCH = "1795582622048325593"


def trade(stream: str, seq: int, epoch: str = EPOCH) -> Trade:
    return Trade(
        stream=stream,
        seq=seq,
        epoch=epoch,
        receive_time=str(1_795_582_622_048_325_999 + seq),
        market=stream.split(".")[1],
        price=Decimal("64998.75"),
        amount=Decimal(seq) / 1000,
        match_number=f"M{seq}",
        exchange_time="1795582622048000000",
    )


def items(stream: str, seqs: range, epoch: str = EPOCH) -> list[PublishItem]:
    return [PublishItem.of(epoch, stream, s, encode_record(trade(stream, s, epoch))) for s in seqs]
