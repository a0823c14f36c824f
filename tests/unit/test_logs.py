from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from decimal import Decimal

import pytest

from gateway.logs import setup_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_json_lines_carry_the_fixed_fields_and_the_context() -> None:
    out = io.StringIO()
    setup_logging("info", "json", out)
    log = logging.getLogger("gateway.upstream")
    log.info("upstream lost", extra={"feed": "marketdata", "reason": "ping timeout", "n": 3})
    log.warning("second", extra={"subscriber": "127.0.0.1:5000", "amount": Decimal("1.50")})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert TS.match(first.pop("ts"))
    assert first == {
        "level": "info",
        "logger": "gateway.upstream",
        "message": "upstream lost",
        "feed": "marketdata",
        "reason": "ping timeout",
        "n": 3,
    }
    assert second["level"] == "warning"
    assert second["amount"] == "1.50"  # exact decimal, as a string
    assert second["subscriber"] == "127.0.0.1:5000"


def test_json_context_cannot_overwrite_the_fixed_fields() -> None:
    out = io.StringIO()
    setup_logging("info", "json", out)
    logging.getLogger("x").info("real", extra={"level": "forged", "logger": "forged"})
    obj = json.loads(out.getvalue())
    assert (obj["level"], obj["logger"], obj["message"]) == ("info", "x", "real")


def test_json_unencodable_values_degrade_to_text() -> None:
    out = io.StringIO()
    setup_logging("info", "json", out)
    loop: list[object] = []
    loop.append(loop)
    log = logging.getLogger("x")
    log.info("odd", extra={"mapping": {(1, 2): 3}, "thing": object()})
    log.info("loop", extra={"loop": loop, "feed": "f"})
    odd, looped = (json.loads(line) for line in out.getvalue().splitlines())
    assert odd["mapping"] == {"(1, 2)": 3}
    assert odd["thing"].startswith("<object object")
    assert looped["message"] == "loop"
    assert looped["feed"] == "f"
    assert looped["loop"] == "[[...]]"


def test_json_exception_is_one_line_with_the_traceback() -> None:
    out = io.StringIO()
    setup_logging("info", "json", out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed", extra={"event": "crash"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["event"] == "crash"
    assert "RuntimeError: boom" in obj["exception"]


def test_text_format_shows_context_as_key_value() -> None:
    out = io.StringIO()
    setup_logging("info", "text", out)
    logging.getLogger("gateway.server").info(
        "subscriber closed", extra={"subscriber": "s1", "reason": "slow consumer", "empty": ""}
    )
    line = out.getvalue().rstrip("\n")
    ts, rest = line.split(" ", 1)
    assert TS.match(ts)
    assert rest == (
        'INFO gateway.server: subscriber closed subscriber=s1 reason="slow consumer" empty=""'
    )


def test_level_filters_and_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("warning", "text", first)
    setup_logging("debug", "json", second)
    log = logging.getLogger("gateway.test")
    log.debug("visible")
    assert first.getvalue() == ""  # the first handler is gone, not duplicated
    assert json.loads(second.getvalue())["message"] == "visible"
    setup_logging("error", "json", second)
    log.warning("hidden")
    assert len(second.getvalue().splitlines()) == 1


def test_websocket_libraries_are_kept_out_of_debug_frame_logging() -> None:
    out = io.StringIO()
    setup_logging("debug", "text", out)
    logging.getLogger("trio-websocket").debug("frame")
    logging.getLogger("wsproto").debug("frame")
    assert out.getvalue() == ""
