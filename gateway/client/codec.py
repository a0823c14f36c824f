"""Frames to typed messages and requests to frames, with the contract's own msgspec types.

One decoder per encoding over the union of every record and answer type (they share the
``type`` tag), so a record costs one msgspec call and arrives as a ``Trade``, a
``BookUpdate``... with exact ``Decimal`` prices and amounts. A frame that does not decode is
returned as a string saying why, never raised: the session reports it and carries on.

Requests always go as JSON text frames, which the gateway accepts on msgpack connections too.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from gateway.contract.protocol import (
    Epoch,
    ListRequest,
    PingRequest,
    Response,
    ResumeFrom,
    SubscribeRequest,
    UnsubscribeRequest,
)
from gateway.contract.records import Record

__all__ = ["ClientEncoding", "Decoded", "FrameDecoder", "encode_request"]

ClientEncoding = Literal["json", "msgpack"]
Message = Record | Response
Decoded = Message | str
"""A typed message, or why the frame is unusable."""

_MAX_SHOWN: Final = 200


class FrameDecoder:
    __slots__ = ("_json", "_json_any", "_msgpack", "_msgpack_any")

    def __init__(self) -> None:
        self._json = msgspec.json.Decoder(Message)
        self._msgpack = msgspec.msgpack.Decoder(Message)
        self._json_any = msgspec.json.Decoder()
        self._msgpack_any = msgspec.msgpack.Decoder()

    def decode(self, data: bytes | str) -> Decoded:
        """A text frame is JSON, a binary frame MessagePack (what the gateway sends on a
        ``?encoding=msgpack`` connection)."""
        try:
            if isinstance(data, str):
                return self._json.decode(data)
            return self._msgpack.decode(data)
        except msgspec.ValidationError as exc:
            return _why_invalid(
                self._json_any if isinstance(data, str) else self._msgpack_any, data, exc
            )
        except msgspec.DecodeError as exc:
            return f"undecodable frame ({exc}): {_excerpt(data)}"
        except (RecursionError, UnicodeDecodeError) as exc:
            return f"undecodable frame ({type(exc).__name__}): {_excerpt(data)}"


def _why_invalid(loose: Any, data: bytes | str, exc: msgspec.ValidationError) -> str:
    try:
        raw = loose.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raw = None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if isinstance(kind, str) and "Invalid value" in str(exc) and "$.type" in str(exc):
        return f"unknown message type {kind[:40]!r} (a newer gateway?): {_excerpt(data)}"
    return f"message does not match the contract ({exc}): {_excerpt(data)}"


def _excerpt(data: bytes | str) -> str:
    text = repr(data[:_MAX_SHOWN])
    return text + ("..." if len(data) > _MAX_SHOWN else "")


def encode_request(
    request: SubscribeRequest | UnsubscribeRequest | PingRequest | ListRequest,
) -> str:
    return msgspec.json.encode(request).decode()


def subscribe_request(
    request_id: int | str | None,
    streams: list[str],
    resume: dict[str, tuple[Epoch, int]] | None = None,
) -> str:
    """The epoch goes back exactly as the gateway sent it: it is an opaque token here."""
    resume_from = (
        {name: ResumeFrom(epoch=epoch, seq=seq) for name, (epoch, seq) in resume.items()}
        if resume
        else None
    )
    return encode_request(SubscribeRequest(id=request_id, streams=streams, resume=resume_from))
