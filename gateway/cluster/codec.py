"""A record's JetStream payload: exactly the msgspec JSON the hub sends a JSON subscriber.

The hub encodes a record with ``msgspec.json.Encoder(enc_hook=decimals.enc_hook)``; the leader
publishes those bytes, and an edge can decode them into the same record (and so re-encode the
same bytes), which is what lets a subscriber resume on any edge. The schema is the published one
(``schemas/``), so external JetStream consumers need nothing of ours.
"""

from __future__ import annotations

from typing import Final

import msgspec

from gateway.contract.records import Record
from gateway.ingest import decimals

_encoder: Final = msgspec.json.Encoder(enc_hook=decimals.enc_hook)
_decoder: Final = msgspec.json.Decoder(Record)


def encode_record(record: Record) -> bytes:
    return _encoder.encode(record)


def decode_record(payload: bytes) -> Record:
    """Raises ``msgspec.DecodeError`` (a ``ValueError``) on bytes that are not one record."""
    return _decoder.decode(payload)
