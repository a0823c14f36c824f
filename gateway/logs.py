"""Logging: human text or JSON lines, with structured context from ``extra``.

Context goes in ``extra`` (``log.warning("upstream lost", extra={"feed": name, "reason": r})``),
never formatted into the message, so that the JSON output can be filtered by field and the text
output still shows it as ``key=value``.

Rule for every module: nothing is logged per message or per record. The data path runs at tens of
thousands of records per second; a log line there would be the bottleneck and flood the sink.
Log state changes (connected, disconnected, resync, subscriber rejected) and count the rest in
metrics.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal, TextIO

import msgspec

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)

_HANDLER_NAME = "paxos-gateway"


def _timestamp(record: logging.LogRecord) -> str:
    # RFC 3339 UTC with milliseconds: sortable, unambiguous, what log pipelines parse natively.
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the ``extra`` fields."""

    def __init__(self) -> None:
        super().__init__()
        # Unknown types (Decimal, Path, exceptions) become their str(): a log line must never
        # fail to be written because of what was attached to it.
        self._encoder = msgspec.json.Encoder(enc_hook=str, decimal_format="string")

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            # The fixed keys win: a context field must not be able to forge them.
            obj.setdefault(key, value)
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        try:
            return self._encoder.encode(obj).decode()
        except (TypeError, ValueError, OverflowError, RecursionError):
            # e.g. a self-referencing container: degrade to text values, keep the line.
            safe = {k: v if isinstance(v, str | int | float | bool | None) else str(v)
                    for k, v in obj.items()}  # fmt: skip
            return self._encoder.encode(safe).decode()


class TextFormatter(logging.Formatter):
    """``2024-11-04T18:11:09.042Z INFO gateway.upstream: message feed=x reason="y z"``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return msgspec.json.encode(text).decode()
    return text


def setup_logging(
    level: str = "info",
    fmt: Literal["text", "json"] = "text",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Configure the root logger; calling it again replaces our handler instead of adding one.

    Logs go to stderr by default so that stdout stays free for what a subcommand prints (the
    demo's connection instructions, ``tail``'s records).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # trio-websocket and wsproto log every frame at DEBUG; that is per-message logging.
    for noisy in ("trio-websocket", "trio_websocket", "wsproto", "websockets"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    return handler
