"""Subscriber requests: one frame's data in, a typed request or the ``Error`` to answer out.

``parse_request`` never raises, whatever the input (``tests/fuzz/test_fuzz_requests.py``), and
its error says precisely what is wrong: over the size limit (``too_large``), not JSON or
MessagePack or UTF-8 (``malformed``), not an object of a known ``op`` with the right fields
(``invalid_request``, ``unknown_op``), a bad stream name or pattern (``bad_stream``), too many
streams (``too_many_subscriptions``), or a resume point that does not fit the request
(``bad_resume``). The request types and error codes are ``contract.protocol``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from gateway.contract.protocol import (
    OPS,
    Error,
    ErrorCode,
    Request,
    StreamName,
    StreamNameError,
    SubscribeRequest,
    UnsubscribeRequest,
    parse_stream,
)

__all__ = ["parse_request"]

_json_decoder: Final = msgspec.json.Decoder()
_msgpack_decoder: Final = msgspec.msgpack.Decoder()


def _byte_length(data: bytes | str) -> int:
    if isinstance(data, bytes):
        return len(data)
    return len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))


def _request_id(raw: dict[Any, Any]) -> int | str | None:
    """The id to echo in an error, if the request has a usable one."""
    value = raw.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and -(2**53) <= value <= 2**53:
        return value
    if isinstance(value, str) and len(value) <= 64:
        return value
    return None


def _error(code: ErrorCode, message: str, request_id: int | str | None = None) -> Error:
    return Error(id=request_id, code=code, message=message)


def parse_request(
    data: bytes | str, *, max_bytes: int, max_streams: int, msgpack: bool = False
) -> Request | Error:
    """Parse one request frame: a typed request, or the ``Error`` to answer with. Never raises.

    ``msgpack`` decodes ``bytes`` as MessagePack (binary frames on a msgpack connection);
    otherwise frames of either type are JSON. ``max_streams`` bounds one request's stream
    list; the per-connection total is the hub's business.
    """
    size = _byte_length(data)
    if size > max_bytes:
        return _error("too_large", f"request is {size} bytes; the limit is {max_bytes}")
    try:
        if msgpack and isinstance(data, bytes):
            raw = _msgpack_decoder.decode(data)
        else:
            raw = _json_decoder.decode(data)
    except msgspec.DecodeError as exc:
        what = "MessagePack" if msgpack and isinstance(data, bytes) else "JSON"
        return _error("malformed", f"request is not valid {what}: {exc}")
    except UnicodeDecodeError as exc:
        return _error("malformed", f"request is not valid UTF-8: {exc.reason} at byte {exc.start}")
    except RecursionError:
        return _error("malformed", "request is nested too deeply")
    if not isinstance(raw, dict):
        return _error(
            "invalid_request",
            f"request must be an object with an 'op' field, got {_json_type(raw)}",
        )
    request_id = _request_id(raw)
    op = raw.get("op")
    if op is None:
        return _error("invalid_request", "request has no 'op' field", request_id)
    if not isinstance(op, str):
        return _error("invalid_request", f"'op' must be a string, got {_json_type(op)}", request_id)
    if op not in OPS:
        return _error(
            "unknown_op",
            f"unknown op {op[:40]!r}; expected one of {', '.join(sorted(OPS))}",
            request_id,
        )
    try:
        request: Request = msgspec.convert(raw, type=Request, strict=True)
    except msgspec.ValidationError as exc:
        if "`$.resume[" in str(exc):  # a resume point that is not (epoch string, seq)
            return _error(
                "bad_resume",
                f"{op}: {exc} (resume: epoch is the string the gateway sent, seq an integer)",
                request_id,
            )
        return _error("invalid_request", f"{op}: {exc}", request_id)
    except (RecursionError, TypeError) as exc:  # hostile shapes msgspec cannot even walk
        return _error(
            "invalid_request", f"{op}: unusable request ({type(exc).__name__})", request_id
        )
    if isinstance(request, SubscribeRequest | UnsubscribeRequest):
        return _check_streams(request, max_streams)
    return request


def _check_streams(
    request: SubscribeRequest | UnsubscribeRequest, max_streams: int
) -> Request | Error:
    if len(request.streams) > max_streams:
        return _error(
            "too_many_subscriptions",
            f"{len(request.streams)} streams in one request; the limit is {max_streams}",
            request.id,
        )
    parsed: dict[str, StreamName] = {}
    for name in request.streams:
        try:
            parsed[name] = parse_stream(name)
        except StreamNameError as exc:
            return _error("bad_stream", str(exc), request.id)
    # Duplicates are harmless; keep the first occurrence so the answer follows the request.
    request.streams = list(parsed)
    if isinstance(request, SubscribeRequest) and request.resume:
        for name in request.resume:
            try:
                target = parse_stream(name)
            except StreamNameError as exc:
                return _error("bad_resume", f"resume: {exc}", request.id)
            if target.is_pattern:
                return _error(
                    "bad_resume", f"resume: {name!r} is a pattern; resume names one stream",
                    request.id,
                )  # fmt: skip
            if not any(p.matches(name) for p in parsed.values()):
                return _error(
                    "bad_resume",
                    f"resume: {name!r} is not among the streams of this request",
                    request.id,
                )
    return request


def _json_type(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list() | tuple():
            return "an array"
        case None:
            return "null"
        case bytes():
            return "binary data"
    return type(value).__name__
